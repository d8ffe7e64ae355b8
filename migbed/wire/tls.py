"""Mutual TLS from a lab certificate folder (made by `migbed certs DIR`).

The folder holds the lab CA (`ca.pem`) and one certificate and key per identity:
`source.pem`/`source-key.pem` (the source: serves Control, dials the target),
`target.pem`/`target-key.pem` and `client.pem`/`client-key.pem` (the operator's `migbed run`,
`cancel`, `health`). Every server requires a client certificate signed by the same CA, and
every client checks the server's certificate against the CA and the address it dials, so a
peer from another lab (another CA) is refused in the TLS handshake, before any message.

Only reading is here (grpcio alone, as in the service images); making the certificates
needs the `cryptography` package and lives in migbed.env.certs.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

IDENTITIES = ("source", "target", "client")
CA_FILE = "ca.pem"
ENV_TLS_DIR = "MIGBED_TLS_DIR"  # default --tls-dir of `migbed run|cancel|health`


class TlsError(ValueError):
    """A TLS folder that cannot be used; the message says what to do."""


def cert_file(identity: str) -> str:
    return f"{identity}.pem"


def key_file(identity: str) -> str:
    return f"{identity}-key.pem"


class TlsDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise TlsError(f"TLS folder {self.path} does not exist: make one with "
                           f"`migbed certs {self.path}`")

    def _read(self, name: str) -> bytes:
        p = self.path / name
        try:
            return p.read_bytes()
        except OSError as e:
            raise TlsError(f"{p}: {e.strerror}; make the lab certificates with "
                           f"`migbed certs {self.path}`") from None

    def _identity(self, identity: str) -> tuple[bytes, bytes]:
        if identity not in IDENTITIES:
            raise TlsError(f"no TLS identity {identity!r} (have: {', '.join(IDENTITIES)})")
        return self._read(key_file(identity)), self._read(cert_file(identity))

    def server_credentials(self, identity: str) -> grpc.ServerCredentials:
        """Serve as `identity`; every client must present a certificate of this lab's CA."""
        key, cert = self._identity(identity)
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=self._read(CA_FILE),
                                           require_client_auth=True)

    def channel_credentials(self, identity: str) -> grpc.ChannelCredentials:
        """Dial as `identity`, trusting only servers with a certificate of this lab's CA."""
        key, cert = self._identity(identity)
        return grpc.ssl_channel_credentials(root_certificates=self._read(CA_FILE),
                                            private_key=key, certificate_chain=cert)


def client_credentials(tls_dir: str | os.PathLike[str] | None) -> grpc.ChannelCredentials | None:
    """The operator's credentials: from `tls_dir`, else $MIGBED_TLS_DIR, else plaintext."""
    folder = tls_dir or os.environ.get(ENV_TLS_DIR) or None
    return TlsDir(folder).channel_credentials("client") if folder else None


def explain_tls_failure(details: str) -> str:
    """A hint for a gRPC error that comes from the TLS handshake ('' when it does not)."""
    d = details.lower()
    if "certificate_verify_failed" in d or "unknown ca" in d or "bad certificate" in d \
            or "certificate required" in d:
        return ("TLS: the peer's certificate is not signed by the CA this side trusts, or it "
                "sent none (both sides need certificates of one lab CA: `migbed certs DIR`)")
    if "handshake" in d or "wrong version number" in d or "ssl" in d:
        return ("TLS handshake failed: are both sides started with --tls-dir and "
                "certificates of the same lab CA?")
    return ""
