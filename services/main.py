"""Run one migbed service (source or target) until SIGTERM/SIGINT: what containers run.

gRPC (Migration or Control, plus grpc.health.v1) on --listen; Prometheus /metrics on
--metrics-listen. Binds exactly the addresses it is given.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migbed.measure.metrics import SourceMetrics, TargetMetrics, serve_metrics
from migbed.runtime.malloc import keep_stream_buffers_mapped
from migbed.runtime.parent import ParentWatch
from migbed.wire.channel import make_server, mark_serving
from migbed.wire.servicers import add_servicer

if TYPE_CHECKING:
    from migbed.dataplane.receiver import MultifdListener

log = logging.getLogger("migbed.serve")


def _multifd_listener(listen: str, multifd_listen: str | None, ssl_context: Any) -> MultifdListener:
    """The target's multifd channels: on --multifd-listen, or the gRPC host with any free port."""
    from migbed.dataplane.receiver import MultifdListener

    mf_host, _, mf_port = (multifd_listen or f"{listen.rpartition(':')[0]}:0").rpartition(":")
    try:
        multifd = MultifdListener(mf_host.strip("[]"), int(mf_port), ssl_context)
    except OSError as e:
        what = "--multifd-listen" if multifd_listen else "--listen's host, for multifd,"
        raise OSError(f"{what} {mf_host}:{mf_port}: cannot listen: {e.strerror or e}") from None
    log.info("multifd channels on %s:%d", mf_host, multifd.port)
    return multifd


async def serve(role: str, listen: str, metrics_listen: str = "",
                server_credentials: Any = None, channel_credentials: Any = None,
                max_sessions: int = 16, memory_budget: int | None = None,
                idle_timeout_s: float | None = None, multifd_listen: str | None = None,
                multifd_ssl_context: Any = None, parent_pid: int | None = None,
                orphan_records: str | None = None) -> None:
    watch = ParentWatch(parent_pid) if parent_pid else None
    # Ticks of the guest's vCPU thread must not wait 5 ms (the default) for the GIL.
    sys.setswitchinterval(0.0005)
    # Stream buffers reuse mapped heap instead of faulting in fresh pages per message.
    keep_stream_buffers_mapped()
    if role not in ("source", "target"):
        raise ValueError(f"role must be source or target, not {role!r}")
    names = ["migbed.v1.Control"] if role == "source" else ["migbed.v1.Migration", "migbed.v1.Control"]
    # The ports the caller chose first (gRPC, metrics), the target's multifd listener on a
    # port of the kernel's choosing last: bound the other way round, the kernel could hand
    # out the very port a caller had picked as free for metrics (it did, in CI).
    server, health, port = make_server(listen, names, server_credentials)
    metrics: Any = SourceMetrics() if role == "source" else TargetMetrics()
    metrics_server = serve_metrics(metrics.registry, metrics_listen) if metrics_listen else None
    service: Any
    if role == "source":
        from .source.server import SourceService

        service = SourceService(metrics, channel_credentials, max_running=max_sessions,
                                multifd_ssl=multifd_ssl_context, listen=listen,
                                orphan_records=Path(orphan_records) if orphan_records else None)
    else:
        from migbed.core.limits import DEFAULT_IDLE_TIMEOUT_S

        from .target.server import TargetService

        service = TargetService(metrics, max_sessions=max_sessions, memory_budget=memory_budget,
                                idle_timeout_s=idle_timeout_s or DEFAULT_IDLE_TIMEOUT_S,
                                multifd=_multifd_listener(listen, multifd_listen, multifd_ssl_context))
    # Requests gRPC cannot decode (a string that is not UTF-8) are refused naming the field.
    add_servicer(server, "Control", service)
    if role == "target":
        add_servicer(server, "Migration", service)
    await server.start()
    await mark_serving(health, names)
    log.info("%s serving on %s (port %d)%s", role, listen, port,
             f", metrics on {metrics_listen}" if metrics_listen else "")
    print(f"migbed {role} serving on {listen}", flush=True)
    # Everything imported and built so far lives as long as the process: out of the
    # collector's generations, so a collection has less to walk (runtime/gcpause.py).
    gc.freeze()
    await _until_stopped(watch)
    await health.enter_graceful_shutdown()
    if watch is not None and watch.gone():
        log.warning("%s shutting down: %s", role, watch.reason())
        await _orphaned_shutdown(role, service, watch, orphan_records)
    else:
        log.info("%s shutting down", role)
        await service.shutdown()  # sessions stop now (a target's prefault too), memory freed
    await server.stop(grace=2)
    if metrics_server is not None:
        metrics_server.shutdown()


async def _until_stopped(watch: ParentWatch | None) -> None:
    """Until SIGTERM or SIGINT, or the parent that started us (--exit-with-parent) dies;
    from then on the process is gone within SHUTDOWN_DEADLINE_S, whatever hangs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    poller = None
    if watch is not None:
        watch.arm(loop)
        poller = loop.create_task(_watch_parent(watch, stop))
    await stop.wait()
    _exit_anyway_after(SHUTDOWN_DEADLINE_S)
    if poller is not None:
        poller.cancel()


SHUTDOWN_DEADLINE_S = 30.0  # after a stop signal the process is gone by then, whatever hangs
ORPHAN_TARGET_WAIT_S = 3.0
ORPHAN_RECENT_S = 10.0


def _exit_anyway_after(seconds: float) -> None:
    """A stop that hangs (a thread that never returns) must not leave the process running."""
    def give_up() -> None:
        log.error("still running %.0f s after the stop signal: exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


async def _watch_parent(watch: ParentWatch, stop: asyncio.Event) -> None:
    await watch.wait_gone()
    stop.set()


async def _orphaned_shutdown(role: str, service: Any, watch: ParentWatch,
                             orphan_records: str | None) -> None:
    """The orchestrator died without stopping us. A source cancels its runs with that reason
    (each guest restarted here) and appends the records the orchestrator could not write to
    --orphan-records; a target first gives its sources a moment to abort their sessions
    themselves (so the records say why), then closes what is left."""
    if role == "target":
        deadline = asyncio.get_running_loop().time() + ORPHAN_TARGET_WAIT_S
        while service.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await service.shutdown()
        return
    stopped = time.monotonic()
    await service.shutdown(watch.reason(), "its orchestrator died")
    if orphan_records:
        # Also those that ended just before the stop and were delivered: the orchestrator
        # may have died before writing them (keep_record skips the ones it wrote).
        for record in service.records_since(stopped - ORPHAN_RECENT_S):
            service.keep_orphan(record, "its orchestrator died")
