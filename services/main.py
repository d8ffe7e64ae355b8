"""Run one migbed service (source or target) until SIGTERM/SIGINT: what containers run.

gRPC (Migration or Control, plus grpc.health.v1) on --listen; Prometheus /metrics on
--metrics-listen. Binds exactly the addresses it is given.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from migbed.measure.metrics import SourceMetrics, TargetMetrics, serve_metrics
from migbed.runtime.malloc import keep_stream_buffers_mapped
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.channel import make_server, mark_serving

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
                multifd_ssl_context: Any = None) -> None:
    # Ticks of the guest's vCPU thread must not wait 5 ms (the default) for the GIL.
    sys.setswitchinterval(0.0005)
    # Stream buffers reuse mapped heap instead of faulting in fresh pages per message.
    keep_stream_buffers_mapped()
    metrics: Any
    if role == "source":
        from .source.server import SourceService

        metrics = SourceMetrics()
        service: Any = SourceService(metrics, channel_credentials, max_running=max_sessions,
                                     multifd_ssl=multifd_ssl_context)
        names = ["migbed.v1.Control"]
    elif role == "target":
        from migbed.core.limits import DEFAULT_IDLE_TIMEOUT_S

        from .target.server import TargetService

        metrics = TargetMetrics()
        service = TargetService(metrics, max_sessions=max_sessions, memory_budget=memory_budget,
                                idle_timeout_s=idle_timeout_s or DEFAULT_IDLE_TIMEOUT_S,
                                multifd=_multifd_listener(listen, multifd_listen, multifd_ssl_context))
        names = ["migbed.v1.Migration", "migbed.v1.Control"]
    else:
        raise ValueError(f"role must be source or target, not {role!r}")
    server, health, port = make_server(listen, names, server_credentials)
    pbg.add_ControlServicer_to_server(service, server)
    if role == "target":
        pbg.add_MigrationServicer_to_server(service, server)
    metrics_server = serve_metrics(metrics.registry, metrics_listen) if metrics_listen else None
    await server.start()
    await mark_serving(health, names)
    log.info("%s serving on %s (port %d)%s", role, listen, port,
             f", metrics on {metrics_listen}" if metrics_listen else "")
    print(f"migbed {role} serving on {listen}", flush=True)
    # Everything imported and built so far lives as long as the process: out of the
    # collector's generations, so a collection has less to walk (runtime/gcpause.py).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s shutting down", role)
    await health.enter_graceful_shutdown()
    await service.shutdown()  # sessions stop now (a target's prefault too), memory freed
    await server.stop(grace=2)
    if metrics_server is not None:
        metrics_server.shutdown()
