/* migbed's QEMU guest: the whole userspace of the comparison VM, run as /init (PID 1).
 *
 * It owns a buffer of MB_MEM bytes. At start it writes every page with self-describing
 * contents (page index and a generation, never zero), then rewrites pages drawn at random
 * from the first MB_WS bytes (the working set) at MB_RATE bytes/s, a page at a time. Every MB_TICK_MS it
 * prints a tick on the console (the serial port) with its own CLOCK_MONOTONIC:
 *
 *   R <pages> <working_set_pages> <rate> <touch_ms> <kernel_used_bytes>
 *   T <seq> <guest_ns> <pages_written> <pages_written / working_set_pages>
 *
 * On a "v" line from the console it checks every page against the generation it recorded
 * for it (a separate array, so a write lost by migration shows) and prints
 *
 *   V <pages> <bad_pages> <checksum>
 *
 * Checks and writes happen in one thread between whole pages, so a page stopped mid-write by
 * the switchover is finished before any check reads it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t env_u64(const char *name, uint64_t fallback) {
    const char *v = getenv(name);
    return v ? strtoull(v, NULL, 0) : fallback;
}

/* The value of word w of page p at generation g: never 0, different per page and per round. */
static inline uint64_t word_value(uint64_t p, uint64_t g, uint64_t w) {
    uint64_t x = (p << 24) ^ (g << 44) ^ (w * 0x9E3779B97F4A7C15ull) ^ 0x5A5A5A5A5A5A5A5Aull;
    x ^= x >> 29;
    return x | 1u;
}

static inline uint64_t next_random(uint64_t *state) { /* xorshift64* */
    uint64_t x = *state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void write_page(uint64_t *page, uint64_t p, uint64_t g) {
    for (uint64_t w = 0; w < WORDS; w++) page[w] = word_value(p, g, w);
}

static void verify(uint64_t *buf, const uint32_t *gen, uint64_t pages) {
    uint64_t bad = 0, sum = 0;
    for (uint64_t p = 0; p < pages; p++) {
        const uint64_t *page = buf + p * WORDS;
        int ok = 1;
        for (uint64_t w = 0; w < WORDS; w++) {
            if (page[w] != word_value(p, gen[p], w)) { ok = 0; break; }
        }
        bad += !ok;
        sum = sum * 31u + page[WORDS - 1];
    }
    printf("V %llu %llu %016llx\n", (unsigned long long)pages, (unsigned long long)bad,
           (unsigned long long)sum);
    fflush(stdout);
}

/* A "v" line on the console asks for a check. Non-blocking: the loop never waits here. */
static int verify_requested(void) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    char line[64];
    if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLIN)) return 0;
    ssize_t n = read(0, line, sizeof line);
    for (ssize_t i = 0; i < n; i++) if (line[i] == 'v') return 1;
    return 0;
}

/* Free memory still holds what the boot left (the unpacked kernel, the initramfs): QEMU would
 * migrate it as data. Take all free memory once (the kernel hands it out zeroed) and give it
 * back, so the guest's non-zero memory is the kernel's own plus our buffer. */
static void zero_free_memory(uint64_t keep) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) return;
    uint64_t free_bytes = (uint64_t)si.freeram * si.mem_unit;
    if (free_bytes <= keep) return;
    size_t len = (size_t)(free_bytes - keep);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p != MAP_FAILED) munmap(p, len);
}

static uint64_t used_bytes(void) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) return 0;
    return (uint64_t)(si.totalram - si.freeram) * si.mem_unit;
}

int main(void) {
    uint64_t mem = env_u64("MB_MEM", 64ull << 20), ws = env_u64("MB_WS", mem);
    uint64_t rate = env_u64("MB_RATE", 0), tick_ns = env_u64("MB_TICK_MS", 10) * 1000000ull;
    uint64_t pages = mem / PAGE, ws_pages = ws / PAGE;
    if (ws_pages == 0 || ws_pages > pages) ws_pages = pages;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getpid() == 1) zero_free_memory(16ull << 20); /* only as the guest's init, never on a host */
    uint64_t kernel_used = used_bytes();
    uint64_t *buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    uint32_t *gen = calloc(pages, sizeof *gen);
    if (buf == MAP_FAILED || !gen) {
        printf("E cannot allocate %llu bytes: %s\n", (unsigned long long)mem, strerror(errno));
        for (;;) pause();
    }
    uint64_t t0 = now_ns();
    for (uint64_t p = 0; p < pages; p++) { gen[p] = 1; write_page(buf + p * WORDS, p, 1); }
    printf("R %llu %llu %llu %llu %llu\n", (unsigned long long)pages, (unsigned long long)ws_pages,
           (unsigned long long)rate, (unsigned long long)((now_ns() - t0) / 1000000u),
           (unsigned long long)kernel_used);
    uint64_t start = now_ns(), next_tick = start, written = 0, seq = 0, rounds = 0;
    uint64_t rng = env_u64("MB_SEED", 1) * 0x9E3779B97F4A7C15ull + 1;
    for (;;) {
        uint64_t t = now_ns();
        /* The budget is set by the guest's own clock: pages due since start at MB_RATE. */
        uint64_t due = rate ? (uint64_t)((double)(t - start) * 1e-9 * (double)rate / PAGE) : 0;
        while (written < due) {
            /* A page drawn uniformly from the working set, repeats allowed: the writable
             * working set as migbed's workload draws it (migbed/core/workload.py). */
            uint64_t p = next_random(&rng) % ws_pages;
            gen[p] += 1;
            write_page(buf + p * WORDS, p, gen[p]);
            written++;
            if ((written & 63u) == 0 && now_ns() >= next_tick) break;
        }
        rounds = written / ws_pages;
        t = now_ns();
        if (t >= next_tick) {
            printf("T %llu %llu %llu %llu\n", (unsigned long long)seq++, (unsigned long long)t,
                   (unsigned long long)written, (unsigned long long)rounds);
            next_tick += tick_ns;
            if (next_tick < t) next_tick = t + tick_ns; /* after a long stall: no burst of ticks */
        }
        if (verify_requested()) verify(buf, gen, pages);
        if (written >= due) {
            struct timespec nap = {0, 1000000}; /* idle the vCPU (HLT): the host's CPU is shared */
            nanosleep(&nap, NULL);
        }
    }
}
