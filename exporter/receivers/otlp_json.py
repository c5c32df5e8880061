"""OTLP/JSON decoding and encoding, with trace and span ids as hex.

OTLP/JSON writes ``traceId``, ``spanId`` and ``parentSpanId`` as hex, while protobuf's
JSON mapping reads ``bytes`` fields as base64, without complaint and into the wrong bytes.
So ids are rewritten from hex to base64 before ``json_format`` sees them (and back to
hex when encoding). Every JSON object key in an OTLP message is a proto field name
(attribute names are values of ``key``), so rewriting these keys wherever they appear is
exact.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from otel_anomaly.exporter.errors import ExporterError

_ID_BYTES = {
    "traceId": 16, "trace_id": 16,
    "spanId": 8, "span_id": 8,
    "parentSpanId": 8, "parent_span_id": 8,
}
_M = TypeVar("_M", bound=Message)


class OtlpJsonError(ExporterError, ValueError):
    """The body is not valid OTLP/JSON; the message names the field when it can."""


def parse(body: bytes, message_type: type[_M]) -> _M:
    """Decode an OTLP/JSON request body into ``message_type``.

    Examples
    --------
    >>> from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ...     ExportTraceServiceRequest)
    >>> body = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
    >>> body += b'5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}'
    >>> span = parse(body, ExportTraceServiceRequest).resource_spans[0].scope_spans[0].spans[0]
    >>> span.trace_id.hex(), span.span_id.hex()
    ('5b8efff798038103d269b633813fc60c', 'eee19b7ec3c1b174')
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"invalid JSON: {exc}"
        raise OtlpJsonError(msg) from exc
    if not isinstance(data, dict):
        msg = f"expected a JSON object; got {type(data).__name__}"
        raise OtlpJsonError(msg)
    _ids_to_base64(data, [])
    try:
        return json_format.ParseDict(data, message_type(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        msg = f"invalid OTLP/JSON: {exc}"
        raise OtlpJsonError(msg) from exc


def dumps(message: Message) -> bytes:
    """Encode ``message`` as OTLP/JSON (ids as hex, camelCase names)."""
    data = json_format.MessageToDict(message)
    _ids_to_hex(data)
    return json.dumps(data, separators=(",", ":")).encode()


def _ids_to_base64(node: Any, path: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_BYTES and isinstance(value, str):
                node[key] = _hex_to_base64(value, _ID_BYTES[key], [*path, key])
            elif isinstance(value, dict | list):
                path.append(key)
                _ids_to_base64(value, path)
                path.pop()
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                path.append(f"[{index}]")
                _ids_to_base64(item, path)
                path.pop()


def _hex_to_base64(value: str, size: int, path: list[str]) -> str:
    if not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        where = "".join(part if part.startswith("[") else f".{part}" for part in path)
        msg = f"{where.lstrip('.')}: expected {2 * size} hex digits; got {value!r}"
        raise OtlpJsonError(msg)
    return base64.b64encode(raw).decode()


def _ids_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_BYTES and isinstance(value, str):
                try:
                    node[key] = base64.b64decode(value).hex()
                except binascii.Error:
                    continue
            else:
                _ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_hex(item)
