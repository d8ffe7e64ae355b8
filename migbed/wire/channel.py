"""gRPC plumbing shared by both services and the orchestrator: limits, servers, channels.

Payload chunks are at most CHUNK_BYTES (1 MiB: the grpc.aio sweet spot on this kind of
machine, reference section 9); message limits are set explicitly on both sides, a little
above a chunk plus its framing, so an oversized message is refused by gRPC itself.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

CHUNK_BYTES = 1 << 20
# A RAM message carries whole pages, at least one: with 2 MiB guest pages (a page size
# scenarios allow) one page is larger than a chunk, so the limit holds the larger of the two.
MAX_PAGE_BYTES = 2 << 20
MAX_MESSAGE_BYTES = max(CHUNK_BYTES, MAX_PAGE_BYTES) + (64 << 10)  # + page indices, framing
CONTROL_MAX_MESSAGE_BYTES = 64 << 20  # run records with long timelines

STREAM_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Dead peers are found by application heartbeats (ms); keepalive is a backstop (s).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
CONTROL_OPTIONS = [
    ("grpc.max_send_message_length", CONTROL_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", CONTROL_MAX_MESSAGE_BYTES),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", CONTROL_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    # The target's HTTP/2 receive window: 8 MiB in flight instead of what BDP probing
    # settles on for a sub-millisecond RTT (a few hundred KiB). With a small window every
    # stall of the target's process (GIL, a busy CPU) idles the link at once; 8 MiB
    # rides out ~70 ms of stall at 1 Gbit. Costs at most 8 MiB per stream.
    ("grpc.http2.lookahead_bytes", 8 << 20),
    ("grpc.http2.bdp_probe", 0),
    # The target's reader does not read while a device loads (as QEMU's destination), so a
    # source's pings cannot show it alive then: HTTP/2 keepalive finds a peer behind a cut
    # link (answered by the peer's transport, whatever its application does).
    ("grpc.keepalive_time_ms", 1_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def make_server(
    listen: str, service_names: list[str], credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, health.HealthServicer, int]:
    """An asyncio gRPC server bound to exactly `listen`, with the standard health service."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen) if credentials is None else server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, health_servicer, port


async def mark_serving(health_servicer: health.HealthServicer, names: list[str]) -> None:
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def stream_channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=STREAM_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, options=STREAM_OPTIONS)


def control_channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A blocking channel for the orchestrator (it is not an asyncio program)."""
    if credentials is None:
        return grpc.insecure_channel(address, options=CONTROL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=CONTROL_OPTIONS)


def check_health(address: str, timeout: float = 2.0,
                 credentials: grpc.ChannelCredentials | None = None) -> bool:
    try:
        with (grpc.secure_channel(address, credentials) if credentials is not None
              else grpc.insecure_channel(address)) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
