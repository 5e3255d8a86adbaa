"""How a unary gRPC request is taken in: read, decompressed, bounded, then decoded.

Every step is bounded before the work it bounds, so that no request, however
built, holds the event loop (which every other call shares) for long:

1. The 5-byte prefix is read first; a length over the request cap is refused
   unread (RESOURCE_EXHAUSTED).
2. A compressed message (``grpc-encoding: gzip`` or ``deflate``, what grpcio and
   grpc-java clients send with one option) is inflated in chunks, yielding to the
   loop between them, and refused (RESOURCE_EXHAUSTED) as soon as it would grow
   past the cap: a zip bomb costs the cap, not its ratio. Other encodings get
   UNIMPLEMENTED, as the gRPC spec asks.
3. Before protobuf parses anything, a scan of the wire format counts the
   repeated fields (attachments, documents, history) and measures each
   ``variables`` Struct. Parsing a Struct costs per entry (protobuf holds the
   GIL for ~130 ms on 200,000 small variables), so those are refused here,
   naming the field, at the cost of reading a few dozen tags.
4. The decode error for nesting past protobuf's recursion limit names the field
   (only a Struct can nest that deep).

grpclib keeps the request headers to itself and refuses compressed messages, so
:class:`IntakeServer` hands each stream its headers; :func:`recv_request` is used
by every handler instead of ``stream.recv_message()``.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.server import Handler, Server

from actors.domain.validation import MAX_VARIABLE_DEPTH
from protos import email_pb2

if TYPE_CHECKING:
    from grpclib.protocol import H2Protocol

    from config import LimitsConfig

__all__ = [
    "ENCODINGS",
    "MAX_HISTORY",
    "MAX_REQUEST_BATCH",
    "MAX_SAVE_BATCH",
    "IntakeServer",
    "RequestLimits",
    "recv_request",
    "request_limits",
]

MAX_SAVE_BATCH = 1000  # documents in one SaveEmails call
# Requests in one RequestEmails call, whatever [api] max_batch says (that is checked after).
MAX_REQUEST_BATCH = 10_000
MAX_HISTORY = 100  # attempt records in one document (retry.max_attempts is a handful)
# zlib's wbits for each grpc-encoding: gzip has its own wrapper; gRPC's "deflate"
# is the zlib format (RFC 1950), as grpcio and grpc-java send it.
ENCODINGS: dict[str, int] = {"gzip": 31, "deflate": 15}
INFLATE_CHUNK = 256 * 1024  # bytes inflated between two yields to the loop: ~1 ms
# Fields the wire scan reads before it refuses a request (~0.5 us each): a
# SaveEmails batch of 1000 documents needs about 20 fields each; any other
# request a few dozen, however many times a client repeats a field.
MAX_SCANNED_FIELDS = 32 * 1024
MAX_SCANNED_FIELDS_ONE = 1024


@dataclass(frozen=True)
class RequestLimits:
    """What a request may hold before it is parsed; see :func:`request_limits`."""

    max_bytes: int  # the whole message, compressed or not
    max_struct_bytes: int  # one variables Struct as encoded
    max_attachments: int


def request_limits(limits: LimitsConfig) -> RequestLimits:
    from actors.grpc.security import max_request_bytes

    return RequestLimits(
        max_bytes=max_request_bytes(limits),
        # A Struct takes about twice the bytes of the JSON it stands for
        # (more for lists of small numbers: a double is 8 bytes).
        max_struct_bytes=2 * limits.max_variables_bytes + 1024,
        max_attachments=limits.max_attachments,
    )


# -- step 2: compressed messages --------------------------------------------------------


class IntakeServer(Server):
    """A grpclib ``Server`` whose handlers can see the request headers.

    grpclib passes the headers of a request to its own dispatch only (and drops
    ``grpc-*`` ones from the metadata); the one hook before that is the
    per-connection ``Handler.accept``, so each stream is given its headers there.
    """

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        handler = protocol.handler
        accept: Callable[..., None] = handler.accept

        def accept_with_headers(stream: Any, headers: Any, release_stream: Any) -> None:
            stream.request_headers = headers
            accept(stream, headers, release_stream)

        handler.accept = accept_with_headers  # type: ignore[method-assign]
        return protocol


assert hasattr(Handler, "accept")  # the hook above; fails loudly if grpclib changes it


def _encoding(raw: Any) -> str:
    headers = getattr(raw, "request_headers", None) or ()
    for key, value in headers:
        if key == "grpc-encoding":
            return str(value)
    return "identity"


async def _inflate(data: bytes, encoding: str, max_bytes: int) -> bytes:
    wbits = ENCODINGS.get(encoding)
    if wbits is None:
        supported = ", ".join(sorted(ENCODINGS))
        # the status the gRPC spec names for a message encoding the server lacks
        raise GRPCError(
            GrpcStatus.UNIMPLEMENTED,
            f"request: grpc-encoding {encoding!r} is not supported (supported: {supported})",
        )
    inflater = zlib.decompressobj(wbits)
    pieces: list[bytes] = []
    size = 0
    pending = data
    try:
        while True:
            room = min(INFLATE_CHUNK, max_bytes + 1 - size)
            piece = inflater.decompress(pending, room)
            size += len(piece)
            if size > max_bytes:
                raise GRPCError(
                    GrpcStatus.RESOURCE_EXHAUSTED,
                    f"request: more than the limit of {max_bytes} bytes once decompressed",
                )
            pieces.append(piece)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and len(piece) < room):
                break
            await asyncio.sleep(0)  # a large message must not hold the loop while it inflates
    except zlib.error:
        raise GRPCError(
            GrpcStatus.INVALID_ARGUMENT, f"request: not valid {encoding} data"
        ) from None
    if not inflater.eof or inflater.unused_data:
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, f"request: not valid {encoding} data")
    return b"".join(pieces)


# -- step 3: counts and sizes from the wire format ----------------------------------------


class _Malformed(Exception):
    """The bytes are not protobuf: left to the decoder, which says so."""


@dataclass(frozen=True)
class _Shape:
    """What the scan checks in one message type, by field number."""

    structs: dict[int, str] = field(default_factory=dict)  # Struct fields: size-bounded
    counts: dict[int, tuple[str, int]] = field(default_factory=dict)  # repeated: (name, most)
    nested: dict[int, tuple[str, _Shape]] = field(default_factory=dict)  # scanned in turn


def _number(message: Any, name: str) -> int:
    number: int = message.DESCRIPTOR.fields_by_name[name].number
    return number


def _shapes(limits: RequestLimits) -> dict[str, tuple[_Shape, int]]:
    doc = email_pb2.EmailDocument
    document = _Shape(
        structs={_number(doc, "variables"): "variables"},
        counts={
            _number(doc, "attachments"): ("attachments", limits.max_attachments),
            _number(doc, "history"): ("history", MAX_HISTORY),
        },
    )
    req = email_pb2.RequestEmailRequest
    # In a batch only the Structs are bounded here (their parse is the cost); counts are
    # each request's own to fail (validation), so that one bad request fails alone.
    batched = _Shape(structs={_number(req, "variables"): "variables"})
    return {
        "RequestEmailsRequest": (
            _Shape(
                counts={1: ("requests", MAX_REQUEST_BATCH)}, nested={1: ("requests", batched)}
            ),
            4 * MAX_SCANNED_FIELDS,
        ),
        "RequestEmailRequest": (
            _Shape(
                structs={_number(req, "variables"): "variables"},
                counts={_number(req, "attachments"): ("attachments", limits.max_attachments)},
            ),
            MAX_SCANNED_FIELDS_ONE,
        ),
        "SaveEmailRequest": (_Shape(nested={1: ("document", document)}), MAX_SCANNED_FIELDS_ONE),
        "SaveEmailsRequest": (
            _Shape(counts={1: ("documents", MAX_SAVE_BATCH)}, nested={1: ("documents", document)}),
            MAX_SCANNED_FIELDS,
        ),
    }


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise _Malformed


def _fields(data: bytes, pos: int, end: int, budget: list[int]) -> Iterator[tuple[int, int, int]]:
    """``(number, start, end)`` of each field in ``data[pos:end]`` (a value's bytes)."""
    while pos < end:
        budget[1] -= 1
        if budget[1] < 0:
            raise GRPCError(
                GrpcStatus.INVALID_ARGUMENT, f"request: more than {budget[0]} fields"
            )
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
            yield number, pos, pos
            continue
        if wire == 2:
            length, pos = _varint(data, pos, end)
            start, pos = pos, pos + length
        elif wire == 1:
            start, pos = pos, pos + 8
        elif wire == 5:
            start, pos = pos, pos + 4
        else:  # groups: no field of these messages is one
            raise _Malformed
        if pos > end:
            raise _Malformed
        yield number, start, pos


def _check(
    data: bytes, pos: int, end: int, shape: _Shape, path: str, limits: RequestLimits,
    budget: list[int],
) -> list[tuple[str, int, int]]:
    """Refuse counts and Struct sizes over the limits; return where each Struct is."""
    counted: dict[int, int] = {}
    over: list[int] = []  # repeated fields past their limit: counted to the end, not checked
    structs: list[tuple[str, int, int]] = []
    for number, start, stop in _fields(data, pos, end, budget):
        if number in shape.counts:
            most = shape.counts[number][1]
            counted[number] = seen = counted.get(number, 0) + 1
            if seen > most:
                if seen == most + 1:
                    over.append(number)
                continue
        if number in shape.structs:
            name = f"{path}{shape.structs[number]}"
            if stop - start > limits.max_struct_bytes:
                raise GRPCError(
                    GrpcStatus.INVALID_ARGUMENT,
                    f"{name}: {stop - start} bytes as a protobuf Struct, more than the limit "
                    f"of {limits.max_struct_bytes} (twice limits.max_variables_bytes)",
                )
            structs.append((name, start, stop))
        if number in shape.nested:
            name, inner = shape.nested[number]
            if number in shape.counts:
                name = f"{name}[{counted[number] - 1}]"
            structs += _check(data, start, stop, inner, f"{path}{name}.", limits, budget)
    if over:
        name, most = shape.counts[over[0]]
        raise GRPCError(
            GrpcStatus.INVALID_ARGUMENT,
            f"{path}{name}: {counted[over[0]]} {name}, more than {most}",
        )
    return structs


def check_wire(data: bytes, type_name: str, limits: RequestLimits) -> list[tuple[str, int, int]]:
    """Refuse a request whose counts or Struct sizes are over the limits, before parsing.

    Returns ``(field, start, end)`` for each Struct found. Bytes the scan cannot
    read are refused as a whole, before protobuf parses what comes ahead of them.
    """
    found = _shapes(limits).get(type_name)
    if found is None:
        return []
    shape, most = found
    try:
        return _check(data, 0, len(data), shape, "", limits, [most, most])
    except _Malformed:
        raise GRPCError(
            GrpcStatus.INVALID_ARGUMENT, f"request: not a valid {type_name}"
        ) from None


# -- steps 1 and 4 ------------------------------------------------------------------------


def _decode(codec: Any, data: bytes, recv_type: Any, structs: list[tuple[str, int, int]]) -> Any:
    try:
        return codec.decode(data, recv_type)
    except Exception as exc:  # protobuf's DecodeError
        if "depth" in str(exc).lower() and structs:
            # Only a Struct nests: name the first one too deep to parse on its own
            # (a Struct nested past protobuf's limit is past ours: 3 levels a JSON level).
            name = structs[0][0]
            for candidate, start, stop in structs:
                try:
                    struct_pb2.Struct.FromString(data[start:stop])
                except Exception:
                    name = candidate
                    break
            raise GRPCError(
                GrpcStatus.INVALID_ARGUMENT, f"{name}: nested deeper than {MAX_VARIABLE_DEPTH}"
            ) from None
        raise GRPCError(
            GrpcStatus.INVALID_ARGUMENT, f"request: not a valid {recv_type.__name__}"
        ) from None


def _too_big(size: int, limit: int) -> str:
    return f"request: {size} bytes, more than the limit of {limit}"


async def recv_request(stream: Any, limits: RequestLimits | int) -> Any:
    """``stream.recv_message()`` for a unary request, taken in as the module says.

    ``limits`` as a plain int is the request cap alone (no per-field checks).
    """
    if isinstance(limits, int):
        limits = RequestLimits(max_bytes=limits, max_struct_bytes=limits, max_attachments=2**31)
    max_bytes = limits.max_bytes
    raw = getattr(stream, "_stream", None)
    codec = getattr(stream, "_codec", None)
    recv_type = getattr(stream, "_recv_type", None)
    dispatch = getattr(stream, "_dispatch", None)
    if raw is None or codec is None or recv_type is None or dispatch is None:
        message = await stream.recv_message()  # another grpclib: check after the fact
        if message is not None and message.ByteSize() > max_bytes:
            raise GRPCError(GrpcStatus.RESOURCE_EXHAUSTED, _too_big(message.ByteSize(), max_bytes))
        return message
    # grpclib has no size limit and would buffer whatever length the prefix
    # announces; HTTP/2 flow control keeps what the client pushed to one window.
    prefix = await raw.recv_data(5)
    if len(prefix) < 5:
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, "request: no message")
    compressed, length = struct.unpack(">?I", prefix)
    if length > max_bytes:
        raise GRPCError(GrpcStatus.RESOURCE_EXHAUSTED, _too_big(length, max_bytes))
    data = await raw.recv_data(length)
    if len(data) != length:
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, "request: message cut short")
    if compressed:
        data = await _inflate(data, _encoding(raw), max_bytes)
    structs = check_wire(data, recv_type.__name__, limits)
    message = _decode(codec, data, recv_type, structs)
    (message,) = await dispatch.recv_message(message)
    return message
