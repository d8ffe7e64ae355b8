"""Errors that end a gRPC call with a status code and a message naming the field."""

from __future__ import annotations

import grpc


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def describe_rpc_error(e: grpc.RpcError) -> str:
    """'CODE: details' for an RpcError, without a traceback."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    name = code.name if code is not None else "UNKNOWN"
    from migbed.wire.tls import explain_tls_failure

    hint = explain_tls_failure(str(details))
    if not hint and "Internal error from Core" in str(details):
        # gRPC's words when the transport breaks under a call that is writing.
        hint = "the connection broke under the call: the peer died or the link failed"
    return f"{name}: {details}" + (f" [{hint}]" if hint else "")
