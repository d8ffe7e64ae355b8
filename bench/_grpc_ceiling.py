"""What grpc.aio alone moves here: a client streaming pre-encoded 1 MiB messages (the bytes
of a SourceMessage{ram}) to a server that only counts the bytes it gets, two processes,
migbed's channel and server options and malloc settings (migbed.runtime.malloc). No guest,
no engine, no protobuf on either side: the ceiling of the transport the migration stream is
built on.

    python bench/_grpc_ceiling.py server PORT
    python bench/_grpc_ceiling.py client PORT MIB   (prints bytes/s)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import numpy as np

from migbed.runtime.malloc import keep_stream_buffers_mapped
from migbed.wire.channel import CHUNK_BYTES, make_server, stream_channel
from migbed.wire.encode import MIGRATE_METHOD, encode_ram_pages


async def _sink(request_iterator: AsyncIterator[bytes],
                context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    n = 0
    async for raw in request_iterator:
        n += len(raw)
    yield str(n).encode()


async def server(port: int) -> None:
    srv, _, _ = make_server(f"127.0.0.1:{port}", [])
    service, method = MIGRATE_METHOD.strip("/").split("/")
    handler = grpc.stream_stream_rpc_method_handler(_sink)  # raw bytes in and out
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service,
                                                                        {method: handler})])
    await srv.start()
    print("ready", flush=True)
    await srv.wait_for_termination()


async def client(port: int, mib: int) -> None:
    ch = stream_channel(f"127.0.0.1:{port}")
    call = ch.stream_stream(MIGRATE_METHOD)()  # no serializer: writes take bytes
    pages = np.arange(CHUNK_BYTES // 4096, dtype=np.int64)
    msg = encode_ram_pages(pages, bytes(CHUNK_BYTES))
    await call.write(msg)
    t = time.perf_counter()
    for _ in range(mib):
        await call.write(msg)
    await call.done_writing()
    await call.read()
    dt = time.perf_counter() - t
    print(mib * len(msg) / dt, flush=True)
    await ch.close()


if __name__ == "__main__":
    keep_stream_buffers_mapped()  # as `migbed serve` does: the transport as migbed runs it
    if sys.argv[1] == "server":
        asyncio.run(server(int(sys.argv[2])))
    else:
        asyncio.run(client(int(sys.argv[2]), int(sys.argv[3])))
