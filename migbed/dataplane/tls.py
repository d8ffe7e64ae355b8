"""Mutual TLS for the multifd channels, from the same lab folder as the main channel.

The files are those migbed.wire.tls names (`migbed certs DIR`): ca.pem, and per identity
NAME.pem / NAME-key.pem. The target serves the channels as "target" and requires a client
certificate of the lab CA; the source dials as "source" and checks the target's certificate
against the CA and the address it dials, as the gRPC main channel does.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from migbed.wire.tls import CA_FILE, TlsError, cert_file, key_file


def _paths(tls_dir: str | os.PathLike[str], identity: str) -> tuple[Path, Path, Path]:
    folder = Path(tls_dir)
    paths = (folder / CA_FILE, folder / cert_file(identity), folder / key_file(identity))
    for p in paths:
        if not p.is_file():
            raise TlsError(f"{p} does not exist; make the lab certificates with "
                           f"`migbed certs {folder}`")
    return paths


def server_context(tls_dir: str | os.PathLike[str], identity: str = "target") -> ssl.SSLContext:
    """The target's side: its certificate, and every channel must present one of the lab CA."""
    return _lab_context(tls_dir, identity, ssl.PROTOCOL_TLS_SERVER)


def client_context(tls_dir: str | os.PathLike[str], identity: str = "source") -> ssl.SSLContext:
    """The source's side: trusts only the lab CA and checks the dialled host name."""
    return _lab_context(tls_dir, identity, ssl.PROTOCOL_TLS_CLIENT)


def _lab_context(tls_dir: str | os.PathLike[str], identity: str, protocol: ssl._SSLMethod) -> ssl.SSLContext:
    """IDENTITY's certificate; the peer must present one of the lab CA."""
    ca, cert, key = _paths(tls_dir, identity)
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    # A server asks for no client certificate unless told; PROTOCOL_TLS_CLIENT requires the
    # server's already (and checks the host name), so this changes nothing on the source.
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
