"""Hosts, racks and links: which links a migration from one host to another crosses.

Links, each one direction of a full-duplex port, numbered for the sharing solver:
each host's NIC out and in, each rack's uplink up (to the spine) and down, and the spine
when it is not non-blocking. A migration inside a rack crosses its source's NIC out and its
target's NIC in (the top-of-rack switch is non-blocking); across racks also the source
rack's uplink up, the spine and the target rack's uplink down.
"""

from __future__ import annotations

from dataclasses import dataclass

from migbed.datacenter.spec import Drain, Topology


@dataclass(frozen=True)
class Network:
    topology: Topology

    @property
    def hosts(self) -> int:
        return self.topology.hosts

    def host_name(self, h: int) -> str:
        per = self.topology.hosts_per_rack
        return f"r{h // per}h{h % per}"

    def rack_of(self, h: int) -> int:
        return h // self.topology.hosts_per_rack

    def capacities(self) -> list[float]:
        t = self.topology
        caps = [t.nic] * t.hosts + [t.nic_in or t.nic] * t.hosts + [t.uplink] * (2 * t.racks)
        if t.spine:
            caps.append(t.spine)
        return caps

    def nic_out(self, h: int) -> int:
        return h

    def nic_in(self, h: int) -> int:
        return self.topology.hosts + h

    def uplink_up(self, rack: int) -> int:
        return 2 * self.topology.hosts + rack

    def uplink_down(self, rack: int) -> int:
        return 2 * self.topology.hosts + self.topology.racks + rack

    @property
    def spine_link(self) -> int | None:
        t = self.topology
        return 2 * t.hosts + 2 * t.racks if t.spine else None

    def path(self, src: int, dst: int) -> tuple[int, ...]:
        rs, rt = self.rack_of(src), self.rack_of(dst)
        if rs == rt:
            return (self.nic_out(src), self.nic_in(dst))
        spine = () if self.spine_link is None else (self.spine_link,)
        return (self.nic_out(src), self.uplink_up(rs), *spine, self.uplink_down(rt), self.nic_in(dst))


def drained_hosts(topo: Topology, drain: Drain) -> list[int]:
    """The hosts to drain, in the order they are taken."""
    per = topo.hosts_per_rack
    if drain.mode == "racks":
        return [r * per + i for r in drain.racks for i in range(per)]
    if drain.mode == "hosts":
        return list(drain.hosts)
    if drain.mode == "share":
        n = round(drain.share * topo.hosts)
        return [i * topo.hosts // n for i in range(n)]  # spread evenly over the racks
    if drain.sequence == "across-racks":  # host 0 of every rack, then host 1, ...
        return [r * per + i for i in range(per) for r in range(topo.racks)]
    return list(range(topo.hosts))
