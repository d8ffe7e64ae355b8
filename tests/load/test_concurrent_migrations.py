"""Several migrations at once between one source service and one target service.

Eight guests (and sixteen over mutual TLS), each with its own seed (so their memory and device state differ: a page or a
chunk delivered to the wrong session would fail that session's digest check), started
together through Control.Start. Every one must complete and verify, the target must have
held them concurrently under distinct session ids, and nothing may be left over.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faultlab import (
    Lab,
    Watched,
    idle_cpu,
    metric_value,
    metrics_text,
    scenario_toml,
    sessions,
    start_run,
    stop_cleanly,
)

from migbed.env.certs import make_certs
from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service
from migbed.measure.record import RunRecord
from migbed.wire.tls import TlsDir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

GUESTS = 8
POLICIES = ("legacy", "switchover-ack", "time-aware", "initial-bytes-sent")


@contextlib.contextmanager
def _sampling_sessions(address: str, creds: grpc.ChannelCredentials | None) -> Iterator[set[frozenset[str]]]:
    """What the target holds at once, sampled every 50 ms while the block runs."""
    seen: set[frozenset[str]] = set()
    stop = threading.Event()

    def watch_target() -> None:
        while not stop.is_set():
            with contextlib.suppress(grpc.RpcError):  # sampling only
                seen.add(frozenset(sessions(address, credentials=creds)))
            time.sleep(0.05)

    sampler = threading.Thread(target=watch_target, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join(5)


def _start_all(ctl: SourceControl, target_address: str, guests: int) -> list[Watched]:
    """One run per guest, each with its own seed, the policies in turn."""
    runs = []
    for i in range(guests):
        policy = POLICIES[i % 4]
        toml = scenario_toml(f"load{guests}", guest={"ram-size": "16MiB", "seed": 100 + i},
                             migration={"max-bandwidth": "64MiB/s", "max-time": "90s",
                                        "heartbeat-timeout": "5s"})
        runs.append(start_run(ctl, toml, policy, target_address, run_id=f"load-{i}-{policy}"))
    return runs


def _each_verified_and_concurrent(records: list[RunRecord], runs: list[Watched],
                                  seen: set[frozenset[str]], guests: int) -> frozenset[str]:
    """Every run completed and verified under its own record, and the target held several
    at once: the most it was seen holding."""
    bad = [(r.run_id, r.outcome, r.error) for r in records if not (
        r.outcome == "completed" and r.verified)]
    assert not bad, bad
    assert [r.run_id for r in records] == [w.run_id for w in runs]  # each its own record
    assert len({r.run_id for r in records}) == guests
    # Concurrency really happened: the target held several sessions at once, every one
    # under the id the source gave it.
    most = max(seen, key=len)
    assert len(most) >= guests // 2, sorted(map(sorted, seen), key=len)[-1]
    assert set().union(*seen) <= {w.run_id for w in runs}
    return most


def _nothing_left(source: Service, target: Service, creds: grpc.ChannelCredentials | None,
                  guests: int) -> None:
    """The source counted every run completed; no session and no guest is left anywhere."""
    completed = sum(metric_value(metrics_text(source), "migbed_migrations_total",
                                 scenario=f"load{guests}", policy=p, outcome="completed") or 0
                    for p in POLICIES)
    assert completed == guests
    assert sessions(source.address, credentials=creds) == []
    assert sessions(target.address, credentials=creds) == []
    # No guest left running anywhere (each would burn CPU and hold its memory).
    assert idle_cpu(target) < 0.1 and idle_cpu(source) < 0.1


@pytest.mark.parametrize(("guests", "tls"), [(GUESTS, False), (2 * GUESTS, True)],
                         ids=["8-plaintext", "16-mtls"])
def test_concurrent_migrations_each_verified(lab: Lab, tmp_path: Path, guests: int,
                                             tls: bool) -> None:
    tls_dir = None
    if tls:
        tls_dir = tmp_path / "tls"
        make_certs(tls_dir)
    creds = TlsDir(tls_dir).channel_credentials("client") if tls_dir else None
    limit = ["--max-sessions", str(guests)]
    target = lab.start("target", extra_args=limit, tls_dir=tls_dir)
    source = lab.start("source", extra_args=limit, tls_dir=tls_dir)
    ctl = SourceControl(source.address, creds)
    with _sampling_sessions(target.address, creds) as seen:
        t0 = time.monotonic()
        runs = _start_all(ctl, target.address, guests)
        records = [w.result(300) for w in runs]
        took = time.monotonic() - t0
    ctl.close()

    most = _each_verified_and_concurrent(records, runs, seen, guests)
    _nothing_left(source, target, creds, guests)
    print(f"{guests} concurrent migrations in {took:.1f}s; at most {len(most)} at once "
          f"on the target; guest downtimes (ms): "
          f"{sorted(round(r.guest_downtime_ms) for r in records)}")
    stop_cleanly(source)
    stop_cleanly(target)
