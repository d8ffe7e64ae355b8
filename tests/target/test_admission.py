"""Admission by memory, and a target that stops promptly: real target processes.

Each session is charged its guest RAM and device buffers against the target's memory
budget before anything is allocated; what does not fit is refused with RESOURCE_EXHAUSTED
naming the budget, what is in use and what was asked. SIGTERM stops a target even while
it is prefaulting a large guest.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from faultlab import Lab, no_sessions, rss_bytes, sessions, wait_until
from streamclient import MiB, Stream, device, setup

from migbed.wire import migration_pb2 as pb

pytestmark = pytest.mark.timeout(120)
GiB = 1 << 30


def hold(address: str, first: pb.SourceMessage, release: threading.Event) -> Stream:
    """Open a session and keep it (no data) until `release` is set."""
    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield first
        release.wait(30)

    st = Stream(address)
    st.run(script)
    return st


def refusal(address: str, first: pb.SourceMessage) -> grpc.RpcError:
    st = hold(address, first, threading.Event())
    assert st.done.wait(15), "the target neither accepted nor refused"
    assert st.error is not None, "accepted"
    return st.error


def test_a_setup_beyond_the_budget_is_refused_naming_it(lab: Lab) -> None:
    svc = lab.start("target", extra_args=["--memory-budget", "96MiB"])
    err = refusal(svc.address, setup(ram=128 * MiB))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    text = str(err.details())
    assert text.startswith("setup.guest.ram_bytes"), text  # the field first
    assert "needs 0.12 GiB" in text and "budget is 0.09 GiB" in text and "0.00 GiB in use" in text

    # Two sessions of 40 MiB (32 MiB RAM + 8 MiB device) fit; a third does not, and the
    # refusal says what the others hold. Freed, the budget is whole again.
    release = threading.Event()
    small = [hold(svc.address, setup(ram=32 * MiB, heartbeat_timeout_s=30,
                                     devices=[device(initial=4 * MiB, stop=4 * MiB)]), release)
             for _ in range(2)]
    wait_until(lambda: len(sessions(svc.address)) == 2, 15, "two sessions")
    err = refusal(svc.address, setup(ram=32 * MiB))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "0.08 GiB in use by 2 session(s)" in str(err.details()), err.details()
    release.set()
    for st in small:
        st.done.wait(15)
    wait_until(lambda: no_sessions(svc.address), 10, "the sessions to end")
    ok = hold(svc.address, setup(ram=64 * MiB), threading.Event())
    ok.wait_for("setup_accepted", 15)


def test_under_an_address_space_limit_a_large_claim_is_refused_not_killed(lab: Lab) -> None:
    """RLIMIT_AS of 1.5 GiB (the default budget follows it): a 4 GiB claim gets a clear
    refusal, the target lives on and still takes a guest that fits."""
    svc = lab.start("target", wrapper=["prlimit", f"--as={3 * GiB // 2}", "--"])
    err = refusal(svc.address, setup(ram=4 * GiB))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "memory budget" in str(err.details()), err.details()
    assert svc.process.poll() is None, "the target died"
    ok = hold(svc.address, setup(ram=64 * MiB), threading.Event())
    ok.wait_for("setup_accepted", 15)
    assert svc.process.poll() is None


def test_sigterm_stops_a_target_while_it_prefaults(lab: Lab) -> None:
    """A 4 GiB guest being made resident (seconds of page faults here): SIGTERM stops the
    target within a couple of seconds, without faulting in the rest first."""
    svc = lab.start("target", extra_args=["--memory-budget", "6GiB"])
    base = rss_bytes(svc.process.pid)
    hold(svc.address, setup(ram=4 * GiB), threading.Event())
    wait_until(lambda: rss_bytes(svc.process.pid) > base + 200 * MiB, 20, "the prefault to start")
    at_signal = rss_bytes(svc.process.pid)
    t0 = time.monotonic()
    svc.process.send_signal(signal.SIGTERM)
    peak = at_signal
    while svc.process.poll() is None and time.monotonic() - t0 < 10:
        try:
            peak = max(peak, rss_bytes(svc.process.pid))
        except (RuntimeError, OSError):  # it exited between poll() and the read (no VmRSS)
            break
        time.sleep(0.02)
    try:
        rc = svc.process.wait(0.1)
    except subprocess.TimeoutExpired:
        raise AssertionError("the target did not stop within 10 s of SIGTERM") from None
    took = time.monotonic() - t0
    print(f"RSS at SIGTERM {at_signal / MiB:.0f} MiB, peak after {peak / MiB:.0f} MiB, "
          f"stopped in {took:.2f}s")
    assert rc == 0
    assert took < 3.0, took
    assert peak < at_signal + 512 * MiB, "it went on faulting in after the signal"
