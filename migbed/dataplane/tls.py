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
    ca, cert, key = _paths(tls_dir, identity)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls_dir: str | os.PathLike[str], identity: str = "source") -> ssl.SSLContext:
    """The source's side: trusts only the lab CA and checks the dialled host name."""
    ca, cert, key = _paths(tls_dir, identity)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    return ctx  # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname already on
