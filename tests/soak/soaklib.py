"""A Jepsen-style randomized fault soak: a seeded generator of migrations, a nemesis that
kills, freezes and cuts source, target and link, and strikes the orchestrator, at random
moments, and a checker of migbed's promises after every run.

Real parts only: `migbed serve source|target` processes, the target in its own network
namespace (a veth pair the nemesis can pull like a cable), Control.Start/Watch/Cancel/Status
over real gRPC, real SIGKILL/SIGSTOP/SIGCONT.

Reproducibility: everything random (scenarios, which fault, when, how long) comes from one
`random.Random(seed)`; the seed is printed first and with every violation, so
`bench/soak.py --seed N` replays the same sequence of migrations and faults. What cannot
replay exactly is the machine's timing: a fault scheduled 0.4 s after Start lands in
whatever stage the run reached by then.

Shared by tests/soak (a short soak in the suite) and bench/soak.py (the long one).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faultlab import NetnsLink, Watched, scenario_toml, start_run
from orchlab import Orchestrator, bound_services, cmdline, journal, wait_gone

from migbed.core.policy import POLICIES
from migbed.core.scenario import QEMU_VERSIONS
from migbed.core.watch import WATCHER_GRACE_S
from migbed.experiments.controller import ControlError, SourceControl
from migbed.experiments.localstack import Service
from migbed.measure.record import RunRecord
from testkit.harness import Lab, kill9, port_is_free, sessions
from testkit.procstat import rss_bytes

MiB = 1 << 20
# Faults of the services, on runs the soak starts itself through Control.Start...
SERVICE_FAULT_KINDS = ("kill-source", "kill-target", "freeze-source", "freeze-target",
                       "cut-link", "cancel")
# ...and of the orchestrator, on runs a real `migbed run` process starts with its own two
# services: SIGTERM or SIGKILL of that process, or SIGKILL of the source service it started;
# and SIGKILL of a `migbed run --source/--target` on the soak's own services (its source
# cancels the run once unwatched for the watcher grace, and writes the record to its
# --orphan-records file: core/watch.py).
REMOTE_CLI_FAULT_KINDS = ("kill-cli-remote",)
CLI_FAULT_KINDS = ("term-cli", "kill-cli", "kill-cli-source", *REMOTE_CLI_FAULT_KINDS)
FAULT_KINDS = SERVICE_FAULT_KINDS + CLI_FAULT_KINDS
CLI_SHARE_WITHOUT_FAULT = 0.2  # runs with no fault that go through `migbed run` all the same
GONE_WITHIN_S = 5.0  # how long a run's services may outlive its orchestrator
# A killed remote CLI's run: its record reaches --orphan-records once the run has been
# unwatched for the grace (it ends by itself sooner: max-time 5 s), plus slack for load.
ORPHAN_WITHIN_S = WATCHER_GRACE_S + 20.0
NEMESIS_REASON = "soak nemesis cancel"


# ---------------------------------------------------------------- the generator


@dataclass(frozen=True)
class Plan:
    """One migration to run: its scenario file and policy, and a one-line description."""

    index: int
    name: str
    policy: str
    toml: str
    describe: str
    heartbeat_s: float


@dataclass(frozen=True)
class Fault:
    kind: str
    delay_s: float  # after Control.Start
    hold_s: float  # how long a freeze or a cut lasts (0 for the others)


class Generator:
    """Seeded migrations and faults. Fault kinds come from a shuffled bag (every kind once
    per round), so even a short soak injects each kind it is allowed."""

    def __init__(self, seed: int, kinds: tuple[str, ...] = FAULT_KINDS,
                 fault_share: float = 0.7) -> None:
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.fault_share = fault_share
        self._bag: list[str] = []

    def migration(self, index: int) -> Plan:
        r = self.rng
        policy = r.choice(POLICIES)
        version = r.choice(QEMU_VERSIONS)
        multifd = r.random() < 0.5
        transfer = "multifd" if multifd and version == "10.0" and r.random() < 0.5 else "main"
        ram = r.choice((8, 16, 32, 64))
        guest = {"ram-size": f"{ram}MiB", "dirty-rate": r.choice(("1MiB/s", "4MiB/s", "16MiB/s")),
                 "working-set": f"{min(ram, 4)}MiB"}
        devices = [{"name": f"vf{i}", "initial-bytes": r.choice(("1MB", "4MB", "16MB")),
                    "stop-copy-size": r.choice(("256KB", "1MB", "4MB")),
                    "load-setup-time": r.choice(("0ms", "100ms", "400ms")),
                    "load-rate": r.choice(("256MB/s", "1GB/s"))}
                   for i in range(r.choice((0, 1, 1, 2)))]
        heartbeat = r.choice((2.0, 3.0))
        migration: dict[str, object] = {
            "qemu-version": version, "max-bandwidth": r.choice(("16MiB/s", "64MiB/s", "256MiB/s")),
            "heartbeat-timeout": f"{heartbeat:g}s", "max-time": "5s", "warmup": "100ms"}
        if multifd:
            migration |= {"multifd": True, "multifd-channels": r.randint(1, 4),
                          "device-state-transfer": transfer}
        name = f"soak-{index}"
        describe = (f"{policy} qemu {version} {ram}MiB {len(devices)} dev "
                    f"multifd={'on' if multifd else 'off'} state-on={transfer}")
        return Plan(index, name, policy, scenario_toml(name, guest, devices, migration),
                    describe, heartbeat)

    def via_cli(self, fault: Fault | None) -> bool:
        """Whether the run goes through a `migbed run` process (always for the orchestrator's
        faults; for some runs without a fault, so its normal end is checked too). Draws once
        whatever the answer, so a seed replays the same sequence."""
        draw = self.rng.random()
        if fault is not None:
            return fault.kind in CLI_FAULT_KINDS
        return draw < CLI_SHARE_WITHOUT_FAULT

    def fault(self) -> Fault | None:
        r = self.rng
        if not self.kinds or r.random() >= self.fault_share:
            return None
        if not self._bag:
            self._bag = list(self.kinds)
            r.shuffle(self._bag)
        kind = self._bag.pop()
        hold = {"freeze-source": r.uniform(0.2, 3.0), "freeze-target": r.uniform(0.2, 3.0),
                "cut-link": r.uniform(0.5, 4.0)}.get(kind, 0.0)
        # A `migbed run` of a small guest ends about a second after it prints "started":
        # its faults come sooner, or most would come too late.
        late = 0.8 if kind in CLI_FAULT_KINDS else 1.5
        return Fault(kind, r.uniform(0.05, late), hold)


# ---------------------------------------------------------------- the checker (pure)


def check_record(rec: RunRecord | None, watch_error: str, injected: str,
                 cancel_reply: tuple[bool, str] | None) -> list[str]:
    """The promises a run's end must keep, given the fault that really landed ('' if none).
    Returns the violations (empty: all held)."""
    if rec is None:
        if injected == "kill-source":
            return []  # no source, no record: the target must free the session (checked apart)
        return [f"no record: {watch_error or 'the watch ended without one'}"]
    out = []
    if rec.outcome == "completed":
        if not rec.verified:
            out.append(f"completed but not verified: {rec.error}")
    elif rec.outcome in ("failed", "cancelled"):
        if not rec.source_guest_running_after:
            out.append(f"{rec.outcome} and the source guest is not running: {rec.error}")
        if not rec.source_integrity_ok:
            out.append(f"{rec.outcome} and the source guest is damaged: {rec.error}")
        if rec.verified:
            out.append(f"{rec.outcome} but marked verified")
        if not injected:
            out.append(f"{rec.outcome} with no fault injected: {rec.error}")
    else:
        out.append(f"unknown outcome {rec.outcome!r}")
    if cancel_reply is not None and injected == "cancel":
        said, state = cancel_reply
        if said and rec.outcome != "cancelled":
            out.append(f"Cancel replied cancelled=true (state {state!r}) but the record says "
                       f"{rec.outcome}")
        if not said and rec.outcome == "cancelled" and NEMESIS_REASON in rec.error:
            out.append(f"Cancel replied cancelled=false (state {state!r}) but the record is "
                       f"cancelled by it: {rec.error}")
    return out


def check_cli_run(injected: str, code: int | None, started: list[str], records: list[dict],
                  survivors: list[int], journal_error: str = "") -> list[str]:
    """The promises a `migbed run` process keeps, whatever struck it ('' if nothing did):
    every run it started has exactly one record in its results.jsonl (written by it, or by
    its source when it was killed), a whole file; no service it started outlives it by more
    than GONE_WITHIN_S; every record keeps the guest promises (a lost source's is the
    orchestrator's: failed, saying so); the exit code is the documented one."""
    out = []
    if code is None:
        return ["the CLI did not exit (a hang)"]
    if survivors:
        out.append(f"services {survivors} outlived the CLI by more than {GONE_WITHIN_S:g} s")
    if journal_error:
        return [*out, f"results.jsonl is not whole: {journal_error}"]
    ids = [str(r.get("run_id")) for r in records]
    if sorted(ids) != sorted(started) or len(set(ids)) != len(ids):
        out.append(f"runs started {started} but records for {ids}")
    for rec in records:
        out += _check_cli_record(injected, rec)
    expected = _expected_exit(injected, records)
    if code not in expected:
        out.append(f"exit code {code}, expected {' or '.join(map(str, sorted(expected)))}")
    return out


def _check_cli_record(injected: str, rec: dict) -> list[str]:
    outcome, error = rec.get("outcome"), rec.get("error", "")
    if rec.get("labels", {}).get("recorded-by") == "orchestrator":
        if injected != "kill-cli-source" or outcome != "failed" or \
                not error.startswith("lost the source"):
            return [f"an orchestrator's record ({outcome}: {error}) after {injected or 'no fault'}"]
        return []
    if outcome == "completed":
        return [] if rec.get("verified") else [f"completed but not verified: {error}"]
    if outcome not in ("failed", "cancelled"):
        return [f"unknown outcome {outcome!r}"]
    out = []
    if not (rec.get("source_guest_running_after") and rec.get("source_integrity_ok")):
        out.append(f"{outcome} and the source guest is not running intact: {error}")
    if not injected:
        out.append(f"{outcome} with no fault injected: {error}")
    elif injected == "term-cli" and "got SIGTERM" not in error:
        out.append(f"cancelled after SIGTERM without the signal named: {error}")
    elif injected == "kill-cli" and "orchestrator" not in error:
        out.append(f"{outcome} after the CLI was killed, but not by its source's cancel: {error}")
    return out


def check_remote_cli_run(code: int | None, started: list[str], cli_records: list[dict],
                         orphans: list[dict]) -> list[str]:
    """The promises kept for a `migbed run --source/--target` SIGKILLed with a run in flight:
    every run it started has exactly one record, in its results.jsonl (it ended before the
    kill) or in the source's --orphan-records file (written by the source); the latter is
    completed and verified, or cancelled by the source because nobody watched the run any
    more, its guest running and intact."""
    out = [] if code == -9 else [f"exit code {code}, expected -9 (SIGKILL)"]
    mine = [r for r in orphans if r.get("run_id") in started]
    ids = [str(r.get("run_id")) for r in [*cli_records, *mine]]
    if sorted(ids) != sorted(started):
        out.append(f"runs started {started} but records for {ids} (results.jsonl and "
                   "--orphan-records together)")
    out += [f"in results.jsonl: {v}" for r in cli_records for v in _check_cli_record("", r)]
    for rec in mine:
        outcome, error = rec.get("outcome"), rec.get("error", "")
        if rec.get("labels", {}).get("recorded-by") != "source service (no Watch delivered it)":
            out.append(f"an orphan record labelled {rec.get('labels', {}).get('recorded-by')!r}")
        if outcome == "completed":
            out += [] if rec.get("verified") else [f"orphan completed but not verified: {error}"]
        elif outcome != "cancelled" or "its orchestrator stopped watching" not in error:
            out.append(f"orphan record {outcome}, not cancelled for want of a watcher: {error}")
        elif not (rec.get("source_guest_running_after") and rec.get("source_integrity_ok")):
            out.append(f"cancelled and the source guest is not running intact: {error}")
    return out


def _expected_exit(injected: str, records: list[dict]) -> set[int]:
    if injected == "kill-cli":
        return {-9}
    if injected == "term-cli":
        return {143, -15}  # -15: the signal came after the handlers were gone (at exit)
    if any(r.get("labels", {}).get("recorded-by") == "orchestrator" for r in records):
        return {3}
    ok = bool(records) and all(r.get("outcome") == "completed" and r.get("verified")
                               for r in records)
    return {0} if ok else {1}


# ---------------------------------------------------------------- what a process holds


def listening_ports(pid: int) -> set[int]:
    """TCP ports this process listens on (seen in its own network namespace)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                    ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


@dataclass
class Baseline:
    rss: int
    threads: int
    ports: int


# ---------------------------------------------------------------- the soak


@dataclass
class SoakConfig:
    seed: int
    duration_s: float = 60.0  # no new run starts after this
    max_runs: int = 1000
    fault_share: float = 0.7
    netns: bool = True  # the target in its own namespace (link cuts); needs root + iproute2
    # An idle service may exceed its baseline by this much: the largest generated guest is
    # 64 MiB, and the target holds up to about two guests' worth until its cyclic GC runs
    # (measured: 110-200 MiB over 30 runs from a 66 MiB baseline, not growing with runs).
    rss_slack: int = 160 * MiB
    thread_slack: int = 8
    settle_s: float = 15.0  # how long resources get to come back after a run
    log_dir: Path = Path("/tmp/migbed-soak")
    command: str = ""
    orchestrator_faults: bool = True  # SIGTERM/SIGKILL of `migbed run`, SIGKILL of its source


@dataclass
class Summary:
    seed: int
    command: str
    runs: int = 0
    wall_s: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)  # injected, by kind
    too_late: Counter[str] = field(default_factory=Counter)  # drawn, but the run had ended
    outcomes: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    cli_runs: int = 0  # runs started by a `migbed run` process (its own services)
    cli_exits: Counter[str] = field(default_factory=Counter)  # their exit codes
    violations: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    netns: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "command": self.command, "runs": self.runs,
                "wall_s": round(self.wall_s, 1), "netns": self.netns,
                "faults": dict(self.faults), "too_late": dict(self.too_late),
                "outcomes": dict(self.outcomes), "restarts": dict(self.restarts),
                "cli_runs": self.cli_runs, "cli_exits": dict(self.cli_exits),
                "violations": self.violations, "load_before": self.load_before,
                "load_after": self.load_after}

    def text(self) -> str:
        def fmt(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"
        lines = [
            f"soak summary: seed {self.seed}; command: {self.command}",
            f"  runs {self.runs} in {self.wall_s:.0f} s wall; target in a netns: "
            f"{'yes' if self.netns else 'no'}",
            f"  faults injected: {sum(self.faults.values())} ({fmt(self.faults)})",
            f"  faults drawn but too late (run already ended): {fmt(self.too_late)}",
            f"  outcomes: {fmt(self.outcomes)}",
            f"  service restarts: {fmt(self.restarts)}",
            f"  runs through `migbed run`: {self.cli_runs} (exit codes: {fmt(self.cli_exits)})",
            f"  load average before {self.load_before[0]:.2f} / after {self.load_after[0]:.2f} "
            f"(1 min), {os.cpu_count()} cores",
            f"  invariant violations: {len(self.violations)}",
        ]
        lines += [f"    {v}" for v in self.violations]
        return "\n".join(lines)


class Soak:
    """Runs the soak; `run()` returns the summary. Every service it started is gone after."""

    def __init__(self, cfg: SoakConfig, say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.say = say
        kinds = tuple(k for k in FAULT_KINDS if (cfg.netns or k != "cut-link")
                      and (cfg.orchestrator_faults or k not in CLI_FAULT_KINDS))
        self.gen = Generator(cfg.seed, kinds, cfg.fault_share)
        self.summary = Summary(cfg.seed, cfg.command, netns=cfg.netns)
        self.lab = Lab(cfg.log_dir)
        self.link: NetnsLink | None = None
        self.source: Service | None = None
        self.target: Service | None = None
        self.ctl: SourceControl | None = None
        self.base: dict[str, Baseline] = {}
        self._frozen: set[int] = set()
        # The shared source's --orphan-records, and the killed remote CLIs whose records are
        # still to come there: (plan, fault, pid, started run ids, its results.jsonl, deadline).
        self.orphans = cfg.log_dir / "orphans.jsonl"
        self._pending: list[tuple[Plan, Fault | None, int, list[str], Path, float]] = []
        # Children the process had before the soak (other tests in the same pytest run):
        # not the soak's to account for.
        self._children_before = set(children(os.getpid()))

    # ------------------------------------------------------------ services

    def _start(self, role: str) -> Service:
        if role == "target" and self.link is not None:
            return self.lab.start("target", host=self.link.ns_ip, wrapper=self.link.wrapper)
        if role == "source":
            return self.lab.start(role, extra_args=["--orphan-records", str(self.orphans)])
        return self.lab.start(role)

    def _restart(self, role: str) -> None:
        svc = self.target if role == "target" else self.source
        assert svc is not None
        if svc.process.poll() is None:
            return
        self.summary.restarts[role] += 1
        if not svc.address.startswith("10."):
            self._expect(port_is_free(svc.address), f"killed {role}'s port {svc.address} still bound")
        new = self._start(role)
        if role == "target":
            self.target = new
        else:
            self.source = new
            if self.ctl is not None:
                self.ctl.close()
            self.ctl = SourceControl(new.address)

    def _services(self) -> list[Service]:
        return [s for s in (self.source, self.target) if s is not None]

    # ------------------------------------------------------------ run

    def run(self) -> Summary:
        cfg = self.cfg
        self.say(f"soak: seed {cfg.seed} (replay: {cfg.command or f'--seed {cfg.seed}'})")
        self.summary.load_before = os.getloadavg()
        t0 = time.monotonic()
        cfg.log_dir.mkdir(parents=True, exist_ok=True)
        self.orphans.unlink(missing_ok=True)
        with contextlib.ExitStack() as stack:
            if cfg.netns:
                self.link = stack.enter_context(NetnsLink())
            stack.callback(self.lab.close)
            stack.callback(self._thaw_all)
            self.target, self.source = self._start("target"), self._start("source")
            self.ctl = SourceControl(self.source.address)
            stack.callback(lambda: self.ctl.close() if self.ctl else None)
            self._warm_up()
            index = 1
            while (time.monotonic() - t0 < cfg.duration_s and index <= cfg.max_runs):
                plan, fault = self.gen.migration(index), self.gen.fault()
                if self.gen.via_cli(fault):
                    self._one_cli(plan, fault)
                else:
                    self._one(plan, fault)
                self._check_orphans()
                index += 1
            self.summary.runs = index - 1
            self._check_orphans(final=True)
        if self.link is not None:
            self._expect(self.link.leftovers() == [], f"namespace left behind: {self.link.leftovers()}")
        self.summary.wall_s = time.monotonic() - t0
        self.summary.load_after = os.getloadavg()
        return self.summary

    def _warm_up(self) -> None:
        """One clean migration, then each service's idle footprint is its baseline."""
        plan = self.gen.migration(0)
        assert self.ctl is not None and self.target is not None
        w = start_run(self.ctl, plan.toml, plan.policy, self.target.address, "soak-warmup")
        rec = w.result(120)
        if rec.outcome != "completed" or not rec.verified:
            raise AssertionError(f"seed {self.cfg.seed}: the warm-up migration did not complete "
                                 f"and verify: {rec.outcome} {rec.error}")
        time.sleep(1.0)
        for svc in self._services():
            pid = svc.process.pid
            self.base[svc.role] = Baseline(rss_bytes(pid), threads(pid), len(listening_ports(pid)))
        self.say("soak: baselines " + "; ".join(
            f"{r} RSS {b.rss / MiB:.0f} MiB, {b.threads} threads, {b.ports} listening"
            for r, b in self.base.items()))

    def _one(self, plan: Plan, fault: Fault | None) -> None:
        assert self.ctl is not None and self.target is not None
        run_id = f"soak-{self.cfg.seed}-{plan.index}"
        t_start = time.monotonic()
        try:
            w = start_run(self.ctl, plan.toml, plan.policy, self.target.address, run_id)
        except ControlError as e:
            self._violation(plan, fault, f"Start refused: {e}")
            return
        box: dict[str, object] = {}
        nem = threading.Thread(target=self._nemesis, args=(fault, w, box), daemon=True)
        nem.start()
        hold = fault.hold_s if fault else 0.0
        with w._cond:
            w._cond.wait_for(lambda: w.ended > 0, 90 + hold)
        nem.join(30)
        self._thaw_all()
        injected = str(box.get("injected", ""))
        if w.ended == 0:
            self._violation(plan, fault, f"no record within {90 + hold:.0f} s (a hang)")
            self._reset()
            return
        reply = box.get("cancel_reply")
        for v in check_record(w.record, str(w.error or ""), injected,
                              reply if isinstance(reply, tuple) else None):
            self._violation(plan, fault, v)
        self.summary.outcomes[w.record.outcome if w.record else "no record (source killed)"] += 1
        t_end = time.monotonic()
        self._recover_and_check(plan, fault, injected)
        struck = (f"{injected} at {fault.delay_s:.2f}s" if fault and injected
                  else f"{fault.kind} too late" if fault else "none")
        self.say(f"[{t_end - t_start:.1f}s run, {time.monotonic() - t_end:.1f}s checks] "
                 f"run {plan.index}: {plan.describe}; fault {struck}"
                 f" -> {w.record.outcome if w.record else 'no record'}; RSS "
                 + ", ".join(f"{v.role} {rss_bytes(v.process.pid) / MiB:.0f} MiB"
                             for v in self._services()))

    # ------------------------------------------------------------ runs of `migbed run`

    def _one_cli(self, plan: Plan, fault: Fault | None) -> None:
        """The run through a real `migbed run` process with its own services; the nemesis
        strikes that process or its source; then check_cli_run."""
        folder = self.cfg.log_dir / f"cli-{plan.index}"
        folder.mkdir(parents=True, exist_ok=True)
        scenario = folder / "scenario.toml"
        scenario.write_text(plan.toml)
        out = folder / "out"
        remote = fault is not None and fault.kind in REMOTE_CLI_FAULT_KINDS
        assert self.source is not None and self.target is not None
        pair = ["--source", self.source.address, "--target", self.target.address] if remote else []
        cli = Orchestrator(["run", *pair, "--scenario", str(scenario), "--policy", plan.policy,
                            "--repeat", "1", "--no-report", "--no-progress", "--out", str(out)],
                           folder)
        self.summary.cli_runs += 1
        t_start = time.monotonic()
        try:
            injected, died_at, services = self._strike_cli(cli, fault)
            code = self._cli_exit(cli)
        finally:
            cli.kill()
        if injected in REMOTE_CLI_FAULT_KINDS:
            self._after_remote_kill(plan, fault, cli, code, out)
            return
        survivors = wait_gone(services, max(0.0, (died_at or time.monotonic()) + GONE_WITHIN_S
                                            - time.monotonic()))
        survivors += [p for p in bound_services(cli.pid) if p not in survivors]
        try:
            records, journal_error = journal(out / "results.jsonl"), ""
        except ValueError as e:
            records, journal_error = [], str(e)
        self.summary.cli_exits[str(code)] += 1
        for rec in records:
            self.summary.outcomes[f"{rec.get('outcome')} (migbed run)"] += 1
        for v in check_cli_run(injected, code, cli.started(), records, survivors, journal_error):
            self._violation(plan, fault, f"migbed run (pid {cli.pid}): {v}")
        for pid in survivors:  # leave nothing behind for the next run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        struck = (f"{injected} at {fault.delay_s:.2f}s" if fault and injected
                  else f"{fault.kind} too late" if fault else "none")
        self.say(f"[{time.monotonic() - t_start:.1f}s] run {plan.index} via migbed run: "
                 f"{plan.describe}; fault {struck} -> exit {code}, "
                 + (", ".join(f"{r.get('outcome')}" for r in records) or "no record"))

    def _strike_cli(self, cli: Orchestrator, fault: Fault | None) -> tuple[str, float, list[int]]:
        """Wait for the run to start, then the fault; (kind injected or '', when the CLI
        died or was told to stop, the pids of its services)."""
        try:
            cli.wait_started(1, timeout=90)
        except AssertionError as e:
            self.summary.violations.append(f"seed {self.cfg.seed}: migbed run (pid {cli.pid}) "
                                           f"started no run: {e}"[:2000])
            return "", 0.0, bound_services(cli.pid)
        services = bound_services(cli.pid)
        if fault is None:
            return "", 0.0, services
        deadline = time.monotonic() + fault.delay_s
        while time.monotonic() < deadline:
            if cli.proc.poll() is not None or (cli.folder / "out" / "results.jsonl").exists():
                self.summary.too_late[fault.kind] += 1
                return "", 0.0, services
            time.sleep(0.01)
        if cli.proc.poll() is not None:
            self.summary.too_late[fault.kind] += 1
            return "", 0.0, services
        self.summary.faults[fault.kind] += 1
        if fault.kind == "kill-cli-source":
            sources = [p for p in services if "source" in cmdline(p)]
            for pid in sources:
                os.kill(pid, signal.SIGKILL)
            return fault.kind, 0.0, services
        cli.signal(signal.SIGTERM if fault.kind == "term-cli" else signal.SIGKILL)
        return fault.kind, time.monotonic(), services

    @staticmethod
    def _cli_exit(cli: Orchestrator, timeout: float = 120.0) -> int | None:
        try:
            return cli.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _after_remote_kill(self, plan: Plan, fault: Fault | None, cli: Orchestrator,
                           code: int | None, out: Path) -> None:
        """A SIGKILLed `migbed run --source/--target`: its run goes on, unwatched, on the
        soak's source until it ends or the source cancels it; then the usual checks of the
        services. Its record comes to --orphan-records later: checked by _check_orphans."""
        started, source = cli.started(), self.source
        assert source is not None
        def ended() -> bool:
            on_source = self._sessions(source)  # None: no answer
            return on_source is not None and not set(started) & set(on_source)

        left = self._settle(ended, WATCHER_GRACE_S + 10)
        if not left:
            self._violation(plan, fault, f"the killed CLI's run is still on the source "
                            f"{WATCHER_GRACE_S + 10:g} s after the kill")
        if code != -9:
            self._violation(plan, fault, f"migbed run (pid {cli.pid}): exit {code}, expected -9")
        self.summary.cli_exits[str(code)] += 1
        self._pending.append((plan, fault, cli.pid, started, out / "results.jsonl",
                              time.monotonic() + ORPHAN_WITHIN_S))
        self._recover_and_check(plan, fault, "kill-cli-remote")
        self.say(f"run {plan.index} via migbed run --source/--target: {plan.describe}; "
                 f"fault kill-cli-remote at {fault.delay_s if fault else 0:.2f}s -> exit {code}; "
                 "its record is awaited in --orphan-records")

    def _check_orphans(self, final: bool = False) -> None:
        """The killed remote CLIs' records: checked once each run has one (in the CLI's
        results.jsonl or the source's --orphan-records), or when its deadline passes; at the
        end (`final`) waits for the last ones."""
        while self._pending:
            now = time.monotonic()
            still = []
            for plan, fault, pid, started, results, deadline in self._pending:
                try:
                    cli_records, orphans = journal(results), journal(self.orphans)
                except ValueError as e:  # a torn line: the files must hold whole records only
                    self._violation(plan, fault, f"results.jsonl or --orphan-records not whole: {e}")
                    continue
                have = {r.get("run_id") for r in [*cli_records, *orphans]}
                if not set(started) <= have and now < deadline:
                    still.append((plan, fault, pid, started, results, deadline))
                    continue
                mine = [r for r in orphans if r.get("run_id") in started]
                for rec in mine:
                    self.summary.outcomes[f"{rec.get('outcome')} (migbed run, orphan)"] += 1
                for v in check_remote_cli_run(-9, started, cli_records, orphans):
                    self._violation(plan, fault, f"migbed run --source/--target (pid {pid}): {v}")
            self._pending = still
            if not final or not still:
                return
            time.sleep(0.5)

    def _nemesis(self, fault: Fault | None, w: Watched, box: dict[str, object]) -> None:
        if fault is None:
            return
        with w._cond:
            if w._cond.wait_for(lambda: w.ended > 0, fault.delay_s):
                self.summary.too_late[fault.kind] += 1
                return
        assert self.source is not None and self.target is not None and self.ctl is not None
        kind = fault.kind
        box["injected"] = kind
        self.summary.faults[kind] += 1
        if kind in ("kill-source", "kill-target"):
            kill9(self.source if kind == "kill-source" else self.target)
        elif kind in ("freeze-source", "freeze-target"):
            pid = (self.source if kind == "freeze-source" else self.target).process.pid
            self._frozen.add(pid)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(fault.hold_s)
            self._thaw_all()
        elif kind == "cut-link":
            assert self.link is not None
            self.link.cut()
            try:
                time.sleep(fault.hold_s)
            finally:
                self.link.restore()
        elif kind == "cancel":
            try:
                r = self.ctl.cancel(w.run_id, NEMESIS_REASON)
                box["cancel_reply"] = (bool(r.cancelled), str(r.state))
            except ControlError as e:
                box["cancel_error"] = str(e)

    def _thaw_all(self) -> None:
        for pid in list(self._frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self._frozen.discard(pid)

    # ------------------------------------------------------------ after each run

    def _recover_and_check(self, plan: Plan, fault: Fault | None, injected: str) -> None:
        assert self.source is not None and self.target is not None
        bound = plan.heartbeat_s + 8.0 + (fault.hold_s if fault else 0.0)
        freed = injected != "kill-source" or self._settle(lambda: self._target_sessions() == [], bound)
        if not freed:
            self._violation(plan, fault, f"the target kept session(s) {self._target_sessions()} "
                            f"{bound:.0f} s after the source was killed")
        self._restart("source")
        self._restart("target")
        for svc, bound_s in ((self.source, 10.0), (self.target, bound)):
            if not self._settle(lambda s=svc: self._sessions(s) == [], bound_s):  # type: ignore[misc]
                self._violation(plan, fault, f"{svc.role} still lists session(s) "
                                f"{self._sessions(svc)} after {bound_s:.0f} s")
        for svc in self._services():
            for problem in self._leaks(svc):
                self._violation(plan, fault, problem)
        alive = {s.process.pid for s in self._services()}

        def stray() -> set[int]:
            return set(children(os.getpid())) - alive - self._children_before

        # A helper command still exiting (ip, ss) is not a leak: give it a moment.
        if not self._settle(lambda: not stray(), 2.0):
            self._violation(plan, fault, f"stray child processes of the soak: {sorted(stray())}")

    def _leaks(self, svc: Service) -> list[str]:
        """What a service holds beyond its baseline once it had time to settle."""
        b, pid = self.base[svc.role], svc.process.pid
        def problems() -> list[str]:
            out = []
            if len(listening_ports(pid)) != b.ports:
                out.append(f"{svc.role} listens on {sorted(listening_ports(pid))} "
                           f"(baseline {b.ports} ports)")
            if children(pid):
                out.append(f"{svc.role} has child processes {children(pid)}")
            if threads(pid) > b.threads + self.cfg.thread_slack:
                out.append(f"{svc.role} has {threads(pid)} threads (baseline {b.threads}, "
                           f"bound +{self.cfg.thread_slack})")
            if rss_bytes(pid) > b.rss + self.cfg.rss_slack:
                out.append(f"{svc.role} RSS {rss_bytes(pid) / MiB:.0f} MiB (baseline "
                           f"{b.rss / MiB:.0f} MiB, bound +{self.cfg.rss_slack / MiB:.0f} MiB)")
            return out
        last: list[str] = []
        def ok() -> bool:
            nonlocal last
            last = problems()
            return not last
        self._settle(ok, self.cfg.settle_s)
        return last

    def _sessions(self, svc: Service) -> list[str] | None:
        try:
            return sessions(svc.address, timeout=2.0)
        except Exception:  # unreachable counts as "not empty"
            return None

    def _target_sessions(self) -> list[str] | None:
        assert self.target is not None
        return self._sessions(self.target)

    @staticmethod
    def _settle(pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if pred():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def _reset(self) -> None:
        """After a hang: kill both services and start afresh, so the soak goes on."""
        for svc in self._services():
            if svc.process.poll() is None:
                kill9(svc)
        self._restart("source")
        self._restart("target")

    def _expect(self, cond: bool, what: str) -> None:
        if not cond:
            self.summary.violations.append(f"seed {self.cfg.seed}: {what}")
            self.say(f"VIOLATION (seed {self.cfg.seed}): {what}")

    def _violation(self, plan: Plan, fault: Fault | None, what: str) -> None:
        f = f"{fault.kind} at {fault.delay_s:.2f}s hold {fault.hold_s:.2f}s" if fault else "no fault"
        self._expect(False, f"run {plan.index} ({plan.describe}; {f}): {what}")
