"""Containers on a tbf-shaped link: the source's bandwidth vs rate x 1448/1514 and vs raw TCP
across the same two containers, measured in one run.

    .venv/bin/python bench/container_link.py [--rate 10Gbit] [--ram 2GiB] [--repeat 3]
                                             [--channels 2] [--tcp-seconds 5] [--no-build]
                                             [--time-dilation K|auto] [--modes multifd,main]

Needs Docker (as root or in the docker group) and docker-compose or `docker compose`.

Set up as `bin/migbed up` does it: the images (migbed.env.images.ensure_images, no registry;
--no-build runs the ones last built instead), then compose.yaml's `source` and `target`
services only, as a compose project of their own on a free 172.30.N.0/24 (a user's `migbed up`
stack, project "migbed" on 172.30.0.0/24, is never touched), both healthy; then tbf on the
source's eth0 egress from the scenario's [link] (migbed.env.compose.shape_source, the call `up`
makes: burst rate x 5 ms, latency 50 ms). On every way out (error, Ctrl-C, SIGTERM) the qdisc
is cleared and the project is removed (migbed.env.compose.down: containers, network, volumes).

Before shaping, raw TCP once unshaped: the containers' own ceiling on this machine right now.
Then --repeat rounds, the order alternating (raw TCP first in odd rounds, last in even ones):

  raw TCP   migbed.env.goodput's receivers in the target container and its senders in the
            source container (docker exec), over the shaped link, K connections at once (one
            receiver per port), payload counted at each receiver after a 1 s warm-up, summed:
            K = 1 (the main stream's reference) and K = --channels (multifd's).
  multifd   a RAM-only migration (the `container-link` comparison: an idle guest of --ram,
            max-bandwidth 50 GiB/s, far above the link), multifd on --channels channels,
            started on the source service through its Control API from this host, to the
            target service's address on the bridge. It must complete verified.
  main      the same on the main (gRPC) stream.

The source's bandwidth is its bulk stage as bench/stream_throughput.py takes it: precopy_bytes
/ (decision - precopy), from the run record's counters and events; the median of its 100 ms
timeline windows is printed beside it. The figure, per mode: median bandwidth / min(rate x
1448/1514, median raw TCP with the same number of connections); goal (issue 11): within 5 %.

Links faster than this host (25, 100 Gbit: issue 24) run with --time-dilation K (auto: the
smallest K at which the link's rate is at most half of this host's measured rate on the
modes' transports, the largest over the modes): tc shapes rate / K, the migrations run K times
slower, and every figure printed is virtual: the record's bandwidth as it comes (the record is
in virtual time), raw TCP over the shaped link x K.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from _common import MiB, header, load_average, median, table
from _link_goal import Reference, bulk_stage_rate, free_subnet, goal_reference, within_goal
from docker.models.containers import Container

from migbed.comparisons import comparison
from migbed.core.dilation import shaped_link
from migbed.core.scenario import Scenario, ScenarioError
from migbed.env import compose, images
from migbed.env.shaping import LinkShape, apply_in_container, link_shape
from migbed.experiments.controller import SourceControl
from migbed.measure.record import RunRecord

COMPARISON = "container-link"
SERVICES = ["source", "target"]
GOODPUT_BASE_PORT = 5201
WARMUP_S = 1.0  # tbf's initial burst and slow start, left out of raw TCP's count
CONTROL_PORT = 50051  # compose.yaml: `migbed serve ... --listen 0.0.0.0:50051`


def say(msg: str) -> None:
    print(f"   {msg}", flush=True)


def fmt_rate(bps: float) -> str:
    return f"{bps / 1e9:.3f} Gbit/s ({bps / 8 / MiB:.0f} MiB/s)"


# ---------------------------------------------------------------- the two containers


@dataclass
class Pair:
    """The source and target containers of one compose project, and their bridge addresses."""

    stack: compose.Stack
    source: Container
    target: Container
    source_ip: str
    target_ip: str


def image_env(build: bool) -> dict[str, str]:
    """compose.yaml's MIGBED_*_IMAGE variables: built now as `migbed up` builds them, or (with
    build=False) the names `migbed images` last wrote, which must exist."""
    if build:
        return images.ensure_images(grafana=False, log=say).compose_env()
    env = images.compose_env_defaults()
    c = images.client()
    missing = [env[k] for k in ("MIGBED_SOURCE_IMAGE", "MIGBED_TARGET_IMAGE")
               if not images.image_exists(c, env[k])]
    if missing:
        raise RuntimeError(f"--no-build: image(s) {', '.join(missing)} not found; build them with "
                           "`bin/migbed images`, or run without --no-build")
    return env


def used_subnets(c: docker.DockerClient) -> list[str]:
    cidrs: list[str] = []
    for net in c.networks.list():
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if pool.get("Subnet"):
                cidrs.append(pool["Subnet"])
    return cidrs


def bridge_ip(ct: Container) -> str:
    ct.reload()
    nets = ct.attrs["NetworkSettings"]["Networks"]
    if len(nets) != 1:
        raise RuntimeError(f"{ct.name}: expected one network, found {', '.join(nets)}")
    return str(next(iter(nets.values()))["IPAddress"])


@contextlib.contextmanager
def containers(project: str, net: str, env: dict[str, str], results: Path) -> Iterator[Pair]:
    """compose.yaml's source and target, healthy; everything removed however we leave."""
    stack = compose.Stack(project=project, results=results)
    stack.env.update(env)
    stack.env["MIGBED_NET"] = net
    source: Container | None = None
    try:
        say(f"starting {', '.join(SERVICES)} (project {project}, {net}.0/24, "
            f"compose: {' '.join(stack.cmd)})")
        stack.run("up", "-d", *SERVICES)
        c = images.client()
        compose.wait_healthy(stack, c, SERVICES, compose.HEALTH_TIMEOUT_S)
        source, target = stack.container(c, "source"), stack.container(c, "target")
        yield Pair(stack, source, target, bridge_ip(source), bridge_ip(target))
    finally:
        if source is not None:
            with contextlib.suppress(Exception):  # the container may be gone already
                apply_in_container(source, None)
        left = compose.down(project=project)
        say(f"removed project {project}" + (f" (force-removed {', '.join(left)})" if left else ""))


# ---------------------------------------------------------------- raw TCP across them

_PORTS = [GOODPUT_BASE_PORT]


def raw_tcp(pair: Pair, conns: int, seconds: float) -> float:
    """Payload bits/s of `conns` TCP connections at once from the source container to the
    target container, each counted by its receiver after WARMUP_S, summed."""
    ports = [_PORTS[0] + i for i in range(conns)]
    _PORTS[0] += conns  # a fresh port per receiver: a stuck one never blocks the next
    for port in ports:
        subprocess.run(["docker", "exec", "-d", pair.target.id, "python", "-m",
                        "migbed.env.goodput", "recv", "--listen", f"0.0.0.0:{port}",
                        "--count", "1", "--warmup", str(WARMUP_S)], check=True,
                       capture_output=True, timeout=60)
    senders = [subprocess.Popen(["docker", "exec", pair.source.id, "python", "-m",
                                 "migbed.env.goodput", "send", "--to",
                                 f"{pair.target_ip}:{port}", "--seconds", str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for port in ports]
    total = 0.0
    for proc in senders:
        out, err = proc.communicate(timeout=seconds * 4 + 60)
        lines = out.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {}
        if not result.get("ok"):
            raise RuntimeError(f"goodput across the containers failed: {out} {err}")
        total += float(result["goodput_bps"])
    return total


# ---------------------------------------------------------------- migrations across them


_RUNS = itertools.count(1)


def migrate(pair: Pair, scenario_toml: str, policy: str) -> RunRecord:
    """One migration through the source's Control API (reached from this host on the bridge)."""
    run_id = f"container-link-{os.getpid()}-{next(_RUNS)}"
    ctl = SourceControl(f"{pair.source_ip}:{CONTROL_PORT}")
    try:
        ctl.start(scenario_toml, policy, f"{pair.target_ip}:{CONTROL_PORT}", run_id)
        rec = ctl.watch(run_id)
    finally:
        ctl.close()
    if rec.outcome != "completed" or not rec.verified:
        raise RuntimeError(f"run {run_id}: {rec.outcome}, verified={rec.verified}: {rec.error}")
    return rec


@dataclass
class Mode:
    """One way to move the guest: its scenario overrides and its raw-TCP reference's width."""

    name: str  # "multifd" or "main"
    overrides: tuple[str, ...]
    connections: int


def modes(channels: int) -> list[Mode]:
    return [Mode("multifd", ("migration.multifd=true", f"migration.multifd-channels={channels}"),
                 channels),
            Mode("main", ("migration.multifd=false",), 1)]


# ---------------------------------------------------------------- the run


@dataclass
class Results:
    tcp: dict[int, list[float]]  # connections -> bits/s per round
    rate: dict[str, list[float]]  # mode -> bulk-stage bits/s per round
    windows: dict[str, list[float]]  # mode -> median 100 ms window, bits/s, per round


def one_round(i: int, pair: Pair, ms: list[Mode], tomls: dict[str, str], policy: str,
              seconds: float, res: Results) -> None:
    """Raw TCP (every width) and each mode once; raw TCP first in odd rounds, last in even."""
    steps: list[str | int] = sorted(res.tcp) + [m.name for m in ms]
    for step in steps if i % 2 == 0 else list(reversed(steps)):
        if isinstance(step, int):
            res.tcp[step].append(raw_tcp(pair, step, seconds))
            say(f"#{i + 1} raw TCP x{step:<2}         {fmt_rate(res.tcp[step][-1])}  "
                f"load {load_average()}")
            continue
        t0 = time.monotonic()
        rec = migrate(pair, tomls[step], policy)
        rate, window = bulk_stage_rate(rec)
        res.rate[step].append(rate * 8)
        res.windows[step].append(window * 8)
        say(f"#{i + 1} migbed {step:<8}        {fmt_rate(rate * 8)} (windows median "
            f"{fmt_rate(window * 8)}; total-time {rec.total_time_ms / 1e3:.1f} s, run {time.monotonic() - t0:.1f} s, "
            f"{rec.dirty_sync_count} syncs)  load {load_average()}")


def report(shape: LinkShape, ms: list[Mode], res: Results, ceiling: float, k: float = 1.0) -> None:
    """The table and the ratios, in virtual time: tc shaped rate / k, raw TCP over it x k."""
    virtual = f" (virtual: x K = {k:g})" if k != 1.0 else ""
    rows = [["measure", "median", "min", "max"],
            [f"raw TCP x1, unshaped (once){virtual}", fmt_rate(ceiling * k), "-", "-"],
            [f"rate x 1448/1514{virtual}", fmt_rate(shape.expected_goodput_bps() * k), "-", "-"]]
    rows += [[f"raw TCP x{n}{virtual}", fmt_rate(median(v) * k), fmt_rate(min(v) * k), fmt_rate(max(v) * k)]
             for n, v in sorted(res.tcp.items())]
    for m in ms:
        for label, xs in (("bulk stage", res.rate[m.name]), ("100 ms windows", res.windows[m.name])):
            rows.append([f"migbed {m.name}, {label}", fmt_rate(median(xs)), fmt_rate(min(xs)),
                         fmt_rate(max(xs))])
    print()
    print(table(rows))
    print()
    for m in ms:
        ref: Reference = goal_reference(shape.rate_bps * k, median(res.tcp[m.connections]) * k)
        got = median(res.rate[m.name])
        print(f"ratio migbed {m.name} / min(rate x 1448/1514, raw TCP x{m.connections}) = "
              f"{got / ref.bps:.3f} (reference: {ref.which}, {fmt_rate(ref.bps)}; goal within "
              f"5 %: {'yes' if within_goal(got, ref) else 'NO'})")


def dilation(flag: str, scenarios: list[Scenario]) -> float:
    """--time-dilation K, or auto: the largest K any mode's transport needs on this host."""
    if flag != "auto":
        return float(flag)
    from migbed.experiments.hostrate import choose

    chosen = max((choose(sc) for sc in scenarios), key=lambda c: c.factor)
    say(f"time-dilation auto: {chosen.reason}")
    return chosen.factor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", default="10Gbit", help="tbf rate on the source's egress (10Gbit)")
    p.add_argument("--ram", default="2GiB", help="guest RAM migrated per run (2GiB)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (raw TCP and each mode once)")
    p.add_argument("--channels", type=int, default=2, help="multifd channels (2)")
    p.add_argument("--tcp-seconds", type=float, default=5.0, help="raw TCP run length (5)")
    p.add_argument("--no-build", action="store_true",
                   help="run the images last built (`bin/migbed images`) instead of building")
    p.add_argument("--net", help="MIGBED_NET for the project, e.g. 172.30.201 "
                   "(default: the first free 172.30.N from 200)")
    p.add_argument("--time-dilation", default="1", metavar="K|auto",
                   help="run K times slower, report virtual (links faster than this host)")
    p.add_argument("--modes", default="multifd,main", help="which of multifd, main (both)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.channels < 1 or args.tcp_seconds <= WARMUP_S:
        p.error(f"--repeat and --channels must be >= 1 and --tcp-seconds > {WARMUP_S}")
    cmp = comparison(COMPARISON)
    ms = [m for m in modes(args.channels) if m.name in args.modes.split(",")]
    base: tuple[str, ...] = (f"link.rate={args.rate}", f"guest.ram-size={args.ram}")
    try:  # bad units or a channel count out of range fail here, before anything starts
        k = dilation(args.time_dilation, [cmp.resolve((*base, *m.overrides)) for m in ms])
        base += (f"time-dilation={k!r}",)
        tomls = {m.name: cmp.resolve((*base, *m.overrides)).source_text for m in ms}
        shape = link_shape(shaped_link(cmp.resolve(base)))
    except ScenarioError as e:
        p.error(str(e))
    if shape is None:
        p.error(f"--rate {args.rate}: the link must be shaped (a rate above 0)")
    header(f"container link: the source's bandwidth over tbf {args.rate} across two containers "
           f"({args.ram} guest, {' and '.join(m.name for m in ms)}, {args.repeat} rounds"
           + (f", time-dilation {k:g}: figures virtual" if k != 1.0 else "") + ")")
    env = image_env(not args.no_build)
    net = args.net or free_subnet(used_subnets(images.client()))
    res = Results({k: [] for k in sorted({1, args.channels})}, {m.name: [] for m in ms},
                  {m.name: [] for m in ms})
    with tempfile.TemporaryDirectory(prefix="migbed-link-") as tmp, \
            containers(f"migbedlink{os.getpid()}", net, env, Path(tmp)) as pair:
        say(f"source {pair.source_ip}, target {pair.target_ip}")
        ceiling = raw_tcp(pair, 1, args.tcp_seconds)
        say(f"raw TCP x1 unshaped: {fmt_rate(ceiling)}")
        say(compose.shape_source(pair.stack, images.client(), shape).replace("\n", "; "))
        for i in range(args.repeat):
            one_round(i, pair, ms, tomls, cmp.policies[0], args.tcp_seconds, res)
    report(shape, ms, res, ceiling, k)
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
