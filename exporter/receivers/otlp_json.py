"""OTLP/JSON decoding and encoding, with trace and span ids as hex.

OTLP/JSON writes ``traceId``, ``spanId`` and ``parentSpanId`` as hex, while protobuf's
JSON mapping reads ``bytes`` fields as base64, without complaint and into the wrong bytes.
So ids are rewritten from hex to base64 before ``json_format`` sees them (and back to
hex when encoding). The rewrite walks the body along the message's descriptor, so only
real id fields are touched (an unknown field that holds a ``traceId`` is ignored, as
unknown fields are).

The same walk checks what ``json_format.ParseDict(..., ignore_unknown_fields=True)``
lets through silently: an enum name the enum does not have (it reads as 0: an error log's
``"severityNumber": "ERROR"`` would count as unspecified, a span's ``"status": {"code":
"ERROR"}`` as unset) and a message given as something other than an object (a string
``"resource"`` read character by character as unknown fields). The Collector rejects
both ("unknown string value"), and so does this decoder, naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
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
    _check(data, cast(Descriptor, message_type.DESCRIPTOR), [])
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


def _check(node: dict[str, Any], descriptor: Descriptor, path: list[str]) -> None:
    """Check ``node`` (a JSON object of ``descriptor``) and rewrite its ids, in place."""
    fields = _fields(descriptor)
    for key, value in node.items():
        field = fields.get(key)
        if field is None or value is None:
            continue  # unknown fields are ignored; ``json_format`` judges nulls
        is_id = key in _ID_BYTES and field.type == FieldDescriptor.TYPE_BYTES
        if field.message_type is None and field.enum_type is None and not is_id:
            continue
        repeated = field.is_repeated
        if is_id and repeated:  # no OTLP id is repeated; json_format judges what it gets
            continue
        if repeated and not isinstance(value, list):
            continue  # ``json_format`` names it
        items = enumerate(value) if repeated else ((None, value),)
        path.append(key)
        for index, item in items:
            if index is not None:
                path.append(f"[{index}]")
            if field.message_type is not None:
                if not isinstance(item, dict):
                    msg = (f"{_where(path)}: expected an object "
                           f"({field.message_type.name}); got {type(item).__name__}")
                    raise OtlpJsonError(msg)
                _check(item, field.message_type, path)
            elif field.enum_type is not None:
                _check_enum(item, field.enum_type, path)
            elif isinstance(item, str):
                node[key] = _hex_to_base64(item, _ID_BYTES[key], path)
            if index is not None:
                path.pop()
        path.pop()


_FIELDS: dict[str, dict[str, FieldDescriptor]] = {}


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by JSON name and by proto name (``ParseDict`` takes both)."""
    found = _FIELDS.get(descriptor.full_name)
    if found is None:
        found = {}
        for field in descriptor.fields:
            found[field.name] = found[field.json_name] = field
        _FIELDS[descriptor.full_name] = found
    return found


def _check_enum(item: Any, enum: EnumDescriptor, path: list[str]) -> None:
    """An enum value given as a name must be one of the enum's (or a number in a string)."""
    if not isinstance(item, str) or item in enum.values_by_name:
        return
    try:
        int(item)
    except ValueError:
        names = ", ".join(enum.values_by_name)
        msg = f"{_where(path)}: unknown {enum.name} {item!r}; expected one of {names}"
        raise OtlpJsonError(msg) from None


def _where(path: list[str]) -> str:
    return "".join(part if part.startswith("[") else f".{part}" for part in path).lstrip(".")


def _hex_to_base64(value: str, size: int, path: list[str]) -> str:
    if not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        msg = f"{_where(path)}: expected {2 * size} hex digits; got {value!r}"
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
