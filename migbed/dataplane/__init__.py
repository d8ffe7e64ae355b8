"""multifd: RAM pages on N plain TCP (or TLS) channels beside the main channel, as QEMU does.

packet: the wire format (pure); sender: the source's channels; receiver: the target's
listener and per-migration sessions; tls: ssl contexts from the lab certificate folder.
"""

from migbed.dataplane.packet import PacketError
from migbed.dataplane.receiver import MultifdListener, MultifdSession
from migbed.dataplane.sender import ChannelStats, MultifdError, MultifdSender, new_token

__all__ = ["ChannelStats", "MultifdError", "MultifdListener", "MultifdSender", "MultifdSession",
           "PacketError", "new_token"]
