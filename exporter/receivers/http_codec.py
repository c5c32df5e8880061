"""OTLP/HTTP bodies: media types, Content-Encoding, decoding requests, encoding replies."""

from __future__ import annotations

from typing import Literal, cast

from aiohttp import web
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]  # no stubs
from isal import isal_zlib

from otel_anomaly.exporter.errors import ExporterError
from otel_anomaly.exporter.receivers import otlp_json
from otel_anomaly.exporter.receivers.signals import Received, SignalSpec

_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)  # isal's stub types it as an instance

Encoding = Literal["protobuf", "json"]
MEDIA_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
_CONTENT_TYPES: dict[Encoding, str] = {
    "protobuf": "application/x-protobuf",
    "json": "application/json",
}
_RPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


class HttpError(ExporterError):
    """Answer the request with ``status`` and ``message`` (a ``google.rpc.Status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_response(
    status: int, message: str, encoding: Encoding | None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error reply: a ``google.rpc.Status`` in the request's encoding (else plain text)."""
    if encoding is None:  # the client's encoding is unknown: plain text
        return web.Response(status=status, text=message + "\n", headers=headers)
    body = status_pb2.Status(code=_RPC_CODES.get(status, code_pb2.UNKNOWN), message=message)
    return message_response(body, encoding, status, headers)


def message_response(
    message: Message, encoding: Encoding, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A reply carrying ``message`` in the request's encoding."""
    data = otlp_json.dumps(message) if encoding == "json" else message.SerializeToString()
    all_headers = {"Content-Type": _CONTENT_TYPES[encoding], **(headers or {})}
    return web.Response(status=status, body=data, headers=all_headers)


_SLICE = 1 << 20  # compressed bytes given to the inflater at a time
_MEMBERS = 64  # gzip members one body may hold (one, in practice; a few when concatenated)


def decompress(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, identity), never producing over ``limit``.

    Examples
    --------
    >>> import gzip
    >>> decompress(gzip.compress(b"otlp"), "gzip", limit=10)
    b'otlp'
    """
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding == "gzip":
        wbits = 16 + isal_zlib.MAX_WBITS
    elif coding == "deflate":
        # HTTP "deflate" is zlib-wrapped; some clients send raw deflate.
        wbits = isal_zlib.MAX_WBITS if body[:1] == b"\x78" else -isal_zlib.MAX_WBITS
    else:
        msg = f"unsupported Content-Encoding {content_encoding!r}: expected gzip or deflate"
        raise HttpError(415, msg)
    # A gzip body may be several members one after another (RFC 1952; `cat a.gz b.gz`),
    # each inflated in turn as Go's gzip reader (so the Collector) does: only the first was,
    # and the rest of the request was dropped without a word. Anything after a member that
    # is not another member is an error. The first member gets the whole body (one call,
    # one output: no join); later ones slices of ``_SLICE`` bytes: the inflater copies
    # what follows a member's end (its ``unused_data``), and a whole remaining body per
    # member made a body of many tiny members quadratic (50,000 empty members in 1 MB
    # took 0.67 s); members past ``_MEMBERS`` are refused.
    view = memoryview(body)
    parts: list[bytes] = []
    size = at = 0
    for member in range(_MEMBERS):
        step = len(view) if member == 0 else _SLICE
        # ISA-L inflates about twice as fast as zlib, with zlib's interface and checks.
        inflater = isal_zlib.decompressobj(wbits)
        while not inflater.eof:
            if at >= len(view):
                msg = f"truncated {coding} body"
                raise HttpError(400, msg)
            piece = view[at:at + step]
            at += len(piece)
            try:
                data = inflater.decompress(piece, limit + 1 - size)  # never 0: no limit
            except _INFLATE_ERROR as exc:
                msg = f"cannot decompress {coding} body: {exc}"
                raise HttpError(400, msg) from exc
            size += len(data)
            parts.append(data)
            if size > limit:  # output stopped at the limit, so no input was left unread
                msg = f"decompressed body exceeds {limit} bytes (max_request_body_size_mib)"
                raise HttpError(413, msg)
        at -= len(inflater.unused_data)
        if coding != "gzip" or at >= len(view):
            return parts[0] if len(parts) == 1 else b"".join(parts)
    msg = f"{coding} body of more than {_MEMBERS} members"
    raise HttpError(400, msg)


def decode(spec: SignalSpec, encoding: Encoding, body: bytes, content_encoding: str,
           limit: int) -> Received:
    """Decompress and decode a request body; ``HttpError`` (400, 413, 415) says why not.

    A protobuf body's decompressed bytes come with the message (JSON's do not: the engine
    scans protobuf only).
    """
    data = decompress(body, content_encoding, limit)
    name = spec.request_type.DESCRIPTOR.name
    try:
        if encoding == "json":
            return Received(otlp_json.parse(data, spec.request_type))
        return spec.receive(data)
    except Exception as exc:  # noqa: BLE001 - any decode failure is the client's error
        msg = f"cannot decode {name} ({encoding}): {exc}"
        raise HttpError(400, msg) from exc
