"""Verification: the source's digests of its stopped state against the target's, answered
with Verified. A run is completed only when they are equal."""

from __future__ import annotations

import asyncio
import hmac

from migbed.wire import migration_pb2 as pb

from .completion import Completion
from .parts import Parts
from .validate import refuse

RESUMED_GUEST_GRACE_S = 0.2  # the resumed guest runs this long before the session ends


class Verification:
    def __init__(self, parts: Parts, completion: Completion) -> None:
        self.p = parts
        self.completion = completion

    async def verify(self, m: pb.Digests) -> str:
        """Compare and answer Verified; returns the session's result: verified or mismatch."""
        devices = self.p.devices
        if self.completion.vcpu is None:
            raise refuse("FAILED_PRECONDITION", "digests before the guest resumed")
        if len(m.devices) != len(devices):
            raise refuse("INVALID_ARGUMENT",
                         f"digests.devices: {len(m.devices)}, expected {len(devices)}")
        # RAM as it was at the stop (the snapshot begun at resume), off the event loop.
        ram = await asyncio.to_thread(self.p.memory.snapshot_digest)
        devs = [await asyncio.to_thread(d.state.digest) for d in devices]
        problems = []
        if not hmac.compare_digest(ram, m.ram):
            problems.append("RAM differs")
        for d, mine, theirs in zip(devices, devs, m.devices, strict=True):
            if not hmac.compare_digest(mine, theirs):
                problems.append(f"device {d.name} differs")
        ok = not problems
        self.p.send(pb.TargetMessage(verified=pb.Verified(ok=ok, ram=ram, devices=devs,
                                                          detail="; ".join(problems))))
        return "verified" if ok else "mismatch"

    async def let_guest_run(self) -> None:
        """The resumed guest runs a little before the session ends; the snapshot taken for
        the digests is dropped."""
        await asyncio.sleep(self.p.real_seconds(RESUMED_GUEST_GRACE_S))
        self.p.memory.end_snapshot()
