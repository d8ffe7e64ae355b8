"""Serving a .proto service so that a request gRPC cannot decode is refused clearly.

protobuf's Python runtime refuses a message whose `string` field is not valid UTF-8 while
gRPC decodes the request, before any migbed code runs: the caller got UNKNOWN "Unexpected
DecodeError" and the service's log a traceback. Registered with `add_servicer` instead of
the generated `add_*Servicer_to_server`, every method of a service decodes its requests
itself: an undecodable one is refused with INVALID_ARGUMENT naming the field (found by
walking the message's wire format against its descriptor, nested messages and repeated
fields included), e.g. "scenario_toml: not valid UTF-8 (byte 0xff at offset 3)". A unary
request is refused before the method runs; on a request stream, the method's next read
raises ProtocolError, so the stream ends with that status like any other bad message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from migbed.wire import migration_pb2 as pb
from migbed.wire.errors import ProtocolError

MAX_WHY_CHARS = 400  # a field path and a byte: short; bounded all the same (gRPC metadata)


@dataclass(frozen=True)
class Undecodable:
    """What a request deserializer returns for bytes that are not the message."""

    message: str


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def bad_string_field(desc: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field of `data` (a `desc` message) that is not valid
    UTF-8, with why ("setup.devices[1].name: ... byte 0xff at offset 2"); None if none is
    found (or the bytes are not a message at all)."""
    pos, seen = 0, dict[int, int]()
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
                continue
            if wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
                continue
            if wire_type != 2:
                return None
            length, pos = _varint(data, pos)
            chunk, pos = data[pos:pos + length], pos + length
            found = _check_field(desc.fields_by_number.get(number), chunk, prefix, seen)
            if found:
                return found
    except ValueError:
        return None
    return None


def _check_field(field: FieldDescriptor | None, chunk: bytes, prefix: str,
                 seen: dict[int, int]) -> str | None:
    if field is None:
        return None
    name = prefix + field.name
    if field.is_repeated:
        index = seen.get(field.number, 0)
        seen[field.number] = index + 1
        name += f"[{index}]"
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            return (f"{name}: not valid UTF-8 (byte 0x{chunk[e.start]:02x} at offset "
                    f"{e.start}); a string field takes UTF-8 text")
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return bad_string_field(field.message_type, chunk, name + ".")
    return None


def _deserializer(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as e:
            why = bad_string_field(cls.DESCRIPTOR, data) or f"{cls.DESCRIPTOR.name}: not a " \
                f"valid message ({e})"
            return Undecodable(why[:MAX_WHY_CHARS])
    return parse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise ProtocolError("INVALID_ARGUMENT", request.message)
        yield request


def _wrap(method: Any, client_streaming: bool, server_streaming: bool) -> Any:
    """The servicer's method with undecodable requests refused (see the module doc)."""
    if not client_streaming and not server_streaming:
        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await method(request, context)
        return unary_unary
    if not client_streaming:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for response in method(request, context):
                yield response
        return unary_stream
    if not server_streaming:
        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await method(_checked(requests), context)
        return stream_unary

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for response in method(_checked(requests), context):
            yield response
    return stream_stream


_HANDLER = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}


def add_servicer(server: grpc.aio.Server, service_name: str, servicer: Any) -> None:
    """Serve every method of proto service `service_name` ("Control", "Migration") with
    `servicer`'s methods of the same names."""
    service = pb.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for m in service.methods:
        request_cls = getattr(pb, m.input_type.name)
        response_cls = getattr(pb, m.output_type.name)
        kind = (m.client_streaming, m.server_streaming)
        handlers[m.name] = _HANDLER[kind](
            _wrap(getattr(servicer, m.name), *kind),
            request_deserializer=_deserializer(request_cls),
            response_serializer=response_cls.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name,
                                                                          handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
