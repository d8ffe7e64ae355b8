"""Model fidelity: RAM-only migrations across dirty-rate/bandwidth ratios vs the geometric
pre-copy model (Clark 2005; shared reference section 6) with the measured rates.

    .venv/bin/python bench/model_fidelity.py [--ram 32MiB] [--ratios 0.1,0.2,...,1.2]

Each run: a guest of V bytes with a uniform writer at D = ratio x R, max-bandwidth R (the
rate limiter makes R the pre-copy rate; avail-switchover-bandwidth = R fixes the threshold
at R x downtime-limit, as the model's fixed downtime target). R is then measured as the run
achieved it, pre-copy bytes / pre-copy time (on this 2-core machine a fast writer takes CPU
and the GIL from the sender, so R falls below max-bandwidth at high D: the table shows
the measured D/R), and D is the workload's write rate (it writes exactly D x dt bytes of
page indices per tick); the models use these.

Models (T = R x downtime-limit, the bytes that fit the downtime target):
  geometric   V_0 = V, V_(i+1) = lambda x V_i (lambda = D / R); pre-copy rounds
              0..n-1 with n the first i >= 1 where V_i <= T; V_n goes in the stop-copy.
  overwrite   the same rounds, but a uniform writer re-dirties pages it already dirtied:
              V_(i+1) = V x (1 - exp(-D x (V_i / R) / V)), the expected distinct pages
              written in a round of V_i / R seconds. Equal to geometric while V_i << V;
              round 0 of a high ratio is where they differ.

Mapping to QEMU's counting: ram.dirty-sync-count counts bitmap syncs. Textbook round i
ends with the sync that reveals V_(i+1), and QEMU syncs once more at the stop: n rounds
make n + 1 syncs. (QEMU syncs when the *estimate* of what is left drops below T, not at
the end of a round; with the per-window budget R/10 above T, which these runs keep, the
iteration that crosses T also empties the bitmap, so syncs fall at round ends. The budget
is spent in a burst, though: a round smaller than what is left of the window's budget
takes a few ms, not V_i / R, so high ratios need fewer syncs than the model's rounds.)

Time: pre-copy start -> completion (QEMU's total-time without setup): the model's
sum of V_i / R for i < n plus V_n / R. Ratios >= 1 do not converge: such runs must end by
a cap (max-time here), which the table shows instead of a model error.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _common import MiB, event_ms, header, median, migrate, scenario_toml, stack, table

from migbed.core.units import parse_size
from migbed.measure.record import RunRecord


@dataclass
class Prediction:
    rounds: int  # pre-copy rounds (textbook n)
    syncs: int  # QEMU's dirty-sync-count: n + 1
    time_s: float  # pre-copy start -> completion
    converges: bool


def predict(v: float, d: float, r: float, target: float, overwrite: bool,
            max_rounds: int = 10_000) -> Prediction:
    lam = d / r
    sizes = [v]
    t = 0.0
    while len(sizes) <= max_rounds:
        cur = sizes[-1]
        t += cur / r
        nxt = v * (1 - math.exp(-d * (cur / r) / v)) if overwrite else lam * cur
        sizes.append(nxt)
        if nxt <= target:
            n = len(sizes) - 1
            return Prediction(n, n + 1, t + nxt / r, True)
        if nxt >= cur and lam >= 1:
            break
    return Prediction(len(sizes) - 1, len(sizes), float("inf"), False)


def measured_rates(rec: RunRecord) -> tuple[float, float, float]:
    """(pre-copy bytes / pre-copy time, median 100 ms window, pre-copy seconds)."""
    start = event_ms(rec, "precopy")
    t = (event_ms(rec, "stop") - start) / 1e3
    windows = [s.bandwidth_bytes_per_s for s in rec.timeline
               if s.phase == "precopy" and s.bandwidth_bytes_per_s > 0
               and s.t_ms - start > 150]
    return rec.precopy_bytes / t, median(windows), t


@dataclass
class Run:
    syncs: int
    time_s: float
    bytes_sent: int
    rate: float  # pre-copy average, bytes/s
    window_rate: float
    ended: str
    geo: Prediction
    ovw: Prediction
    ovw_bytes: float


def model_bytes(v: float, d: float, r: float, target: float) -> float:
    """Bytes the overwrite model sends in all (pre-copy rounds and the stop-copy)."""
    p = predict(v, d, r, target, overwrite=True)
    return p.time_s * r if p.converges else float("inf")


def one_run(source: object, target_address: str, toml: str, v: float, d: float,
            target_s: float) -> Run | str:
    rec = migrate(source, target_address, toml, "legacy")  # type: ignore[arg-type]
    if rec.outcome != "completed":
        return f"{rec.outcome}: {rec.error[:60]}"
    r, rw, _ = measured_rates(rec)
    tgt = r * target_s  # the bytes that fit the downtime target at the measured rate
    t = (event_ms(rec, "completed") - event_ms(rec, "precopy")) / 1e3
    return Run(rec.dirty_sync_count, t, rec.precopy_bytes + rec.downtime_bytes, r, rw,
               rec.forced_by_cap or "converged", predict(v, d, r, tgt, overwrite=False),
               predict(v, d, r, tgt, overwrite=True), model_bytes(v, d, r, tgt))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ram", default="32MiB")
    p.add_argument("--bandwidth", default="32MiB", help="max-bandwidth per second (32MiB)")
    p.add_argument("--downtime-limit-ms", type=float, default=30.0)
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.2")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-time", type=float, default=10.0, help="cap for ratios >= 1 (s)")
    args = p.parse_args(argv)
    v = float(parse_size(args.ram))
    r_cfg = float(parse_size(args.bandwidth))
    target_s = args.downtime_limit_ms / 1e3
    ratios = [float(x) for x in args.ratios.split(",") if x]
    header(f"model fidelity: {args.ram} guest, max-bandwidth {args.bandwidth}/s, "
           f"downtime-limit {args.downtime_limit_ms:g} ms, uniform writer, "
           f"{args.repeat} run(s) per ratio (medians)")
    rows = [["D/R set", "D/R measured", "syncs", "geometric", "overwrite", "time s",
             "geometric s", "error", "overwrite s", "error", "bytes vs model",
             "R avg MiB/s", "R windows", "ended by"]]
    goals: list[tuple[float, bool, bool]] = []
    with tempfile.TemporaryDirectory(prefix="migbed-model-") as tmp, \
            stack(Path(tmp)) as (source, target):
        for ratio in ratios:
            d = ratio * r_cfg  # the workload writes exactly this many bytes per second
            toml = scenario_toml(
                "model-fidelity", f"guest.ram-size={args.ram}", f"guest.dirty-rate={int(d)}B/s",
                f"migration.max-bandwidth={int(r_cfg)}B/s",
                f"migration.avail-switchover-bandwidth={int(r_cfg)}B/s",
                f"migration.downtime-limit={args.downtime_limit_ms}ms",
                "migration.max-iterations=1000", f"migration.max-time={args.max_time}s")
            runs: list[Run] = []
            for _ in range(args.repeat):
                res = one_run(source, target.address, toml, v, d, target_s)
                if isinstance(res, str):
                    print(f"   D/R {ratio:.1f}: {res}", flush=True)
                    continue
                runs.append(res)
                print(f"   D/R {ratio:.1f}: {res.syncs} syncs, {res.time_s:.2f} s, {res.ended} "
                      f"(R {res.rate / MiB:.1f} MiB/s; overwrite model "
                      f"{res.ovw.syncs if res.ovw.converges else 'none'} syncs, "
                      f"{res.ovw.time_s:.2f} s)", flush=True)
            if not runs:
                continue
            rows.append(_row(ratio, d, runs))
            conv = [x for x in runs if x.ovw.converges]
            if len(conv) == len(runs):
                syncs = median([x.syncs for x in runs])
                msyncs = median([x.ovw.syncs for x in runs])
                t = median([x.time_s for x in runs])
                mt = median([x.ovw.time_s for x in runs])
                goals.append((ratio, abs(syncs / msyncs - 1) <= 0.10 or abs(syncs - msyncs) <= 1,
                              abs(t / mt - 1) <= 0.10))
    print()
    print(table(rows))
    if goals:
        print(f"\nconverging ratios within 10 % of the overwrite model (medians): iterations "
              f"{sum(g[1] for g in goals)}/{len(goals)} (or within one sync), total time "
              f"{sum(g[2] for g in goals)}/{len(goals)}")
    return 0


def _row(ratio: float, d: float, runs: list[Run]) -> list[str]:
    def med(f: object) -> float:
        return median([f(x) for x in runs])  # type: ignore[operator]

    t = med(lambda x: x.time_s)
    conv_geo = all(x.geo.converges for x in runs)
    conv_ovw = all(x.ovw.converges for x in runs)
    geo_t = med(lambda x: x.geo.time_s) if conv_geo else float("inf")
    ovw_t = med(lambda x: x.ovw.time_s) if conv_ovw else float("inf")
    ended = ",".join(sorted({x.ended for x in runs}))
    return [f"{ratio:.1f}", f"{d / med(lambda x: x.rate):.2f}", f"{med(lambda x: x.syncs):g}",
            f"{med(lambda x: x.geo.syncs):g}" if conv_geo else "none",
            f"{med(lambda x: x.ovw.syncs):g}" if conv_ovw else "none",
            f"{t:.2f}", f"{geo_t:.2f}" if conv_geo else "inf",
            f"{(t / geo_t - 1) * 100:+.1f} %" if conv_geo else "-",
            f"{ovw_t:.2f}" if conv_ovw else "inf",
            f"{(t / ovw_t - 1) * 100:+.1f} %" if conv_ovw else "-",
            f"{(med(lambda x: x.bytes_sent) / med(lambda x: x.ovw_bytes) - 1) * 100:+.1f} %"
            if conv_ovw else "-",
            f"{med(lambda x: x.rate) / MiB:.1f}", f"{med(lambda x: x.window_rate) / MiB:.1f}",
            ended]


if __name__ == "__main__":
    sys.exit(main())
