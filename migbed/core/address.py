"""HOST:PORT, parsed once: every command-line flag, the Control API, bench/ and the tests use it.

Accepted: ``name:port``, ``1.2.3.4:port``, ``[v6]:port`` (IPv6 always in brackets, as in a
URL), with a port from 1 to 65535 (0 only where `allow_zero` says "pick a free one"). What is
refused gets an AddressError whose text names the value (clipped) and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from migbed.core.bounded import clip

# RFC 1123 host names (letters, digits, hyphens, dots), up to 253 characters.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
ALLOWED = "HOST:PORT (a name, an IPv4 address or [IPv6]) with a port 1-65535"


class AddressError(ValueError):
    """A HOST:PORT that is not one; str() names the value and what is allowed."""


@dataclass(frozen=True)
class HostPort:
    host: str  # without brackets
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: object, what: str = "address", allow_zero: bool = False) -> HostPort:
        if not isinstance(text, str):
            raise AddressError(f"{what} = {clip(repr(text))}: expected {ALLOWED}")
        value = text.strip()
        if len(value) > 300:
            raise AddressError(f"{what} = {clip(repr(value))}: too long (at most 300 characters)")
        host, port_text = _split(value, what)
        port = _port(port_text, value, what, allow_zero)
        return cls(_host(host, value, what), port)


def _split(value: str, what: str) -> tuple[str, str]:
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(f"{what} = {clip(repr(value))}: expected [IPv6]:PORT")
        return host, rest[1:]
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise AddressError(f"{what} = {clip(repr(value))}: expected {ALLOWED}")
    if ":" in host:
        raise AddressError(f"{what} = {clip(repr(value))}: an IPv6 address goes in brackets, "
                           "e.g. [::1]:50051")
    return host, port


def _port(text: str, value: str, what: str, allow_zero: bool) -> int:
    lo = 0 if allow_zero else 1
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not lo <= int(text) <= 65535:
        raise AddressError(f"{what} = {clip(repr(value))}: the port must be a number {lo}-65535")
    return int(text)


def _host(host: str, value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ":" in host or not _HOSTNAME.match(host):
        raise AddressError(f"{what} = {clip(repr(value))}: {clip(repr(host))} is not a host name "
                           "or IP address")
    return host


def parse_address(text: object, what: str = "address", allow_zero: bool = False) -> str:
    """The canonical text of a HOST:PORT (what gRPC dials), or AddressError."""
    return str(HostPort.parse(text, what, allow_zero))
