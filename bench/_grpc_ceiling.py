"""What grpc.aio alone moves here: a client streaming pre-built 1 MiB SourceMessages to a
server that only counts them, two processes, migbed's message limits. No guest, no
engine: the ceiling the migration stream works under.

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

from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.channel import CHUNK_BYTES, make_server, stream_channel


class Sink(pbg.MigrationServicer):
    async def Migrate(
        self, request_iterator: AsyncIterator[pb.SourceMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TargetMessage]:
        n = 0
        async for m in request_iterator:
            n += len(m.ram.data)
        yield pb.TargetMessage(received=pb.Received(target_recv_ns=n))


async def server(port: int) -> None:
    srv, _, _ = make_server(f"127.0.0.1:{port}", [])
    pbg.add_MigrationServicer_to_server(Sink(), srv)
    await srv.start()
    print("ready", flush=True)
    await srv.wait_for_termination()


async def client(port: int, mib: int) -> None:
    ch = stream_channel(f"127.0.0.1:{port}")
    call = pbg.MigrationStub(ch).Migrate()
    m = pb.SourceMessage()
    m.ram.pages.extend(range(CHUNK_BYTES // 4096))
    m.ram.data = bytes(CHUNK_BYTES)
    await call.write(m)
    t = time.perf_counter()
    for _ in range(mib):
        await call.write(m)
    await call.done_writing()
    await call.read()
    dt = time.perf_counter() - t
    print(mib * CHUNK_BYTES / dt, flush=True)
    await ch.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(int(sys.argv[2])))
    else:
        asyncio.run(client(int(sys.argv[2]), int(sys.argv[3])))
