"""What the metrics, traces and logs adapters share: resources, attributes, versions, times."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_anomaly.processors.alerting.deploys import split_version
from otel_anomaly.processors.types import Labels, Observations


def any_value_text(value: AnyValue) -> str:
    """Render an attribute value as label text.

    A scalar as Prometheus' OTLP translator would (bytes as hex); an array or a key-value
    list as one JSON document whose scalars are their texts (``["x", "1"]``), written
    once at the top: rendering each level as a JSON string inside its parent escaped the
    levels below again, doubling the text with each level (a 180-byte request nesting 30
    arrays took 42 s and gigabytes).
    """
    kind = value.WhichOneof("value")
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_plain(value))
    return _scalar_text(value, kind)


def _scalar_text(value: AnyValue, kind: str | None) -> str:
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return ""


def _plain(value: AnyValue) -> Any:
    """``value`` as JSON-ready data: lists, dicts and scalar texts (protobuf caps the depth)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return _scalar_text(value, kind)


LATEST_EVENT_TIME_NS = 2**62
"""Event times beyond this (the year 2116) are rejected on every OTLP path: windows, rates
and grace periods add to them in int64."""


def time_problem(ts_unix_nano: int, latest: int) -> str | None:
    """Why an item's event time cannot be used (``None`` if it can).

    >>> time_problem(0, LATEST_EVENT_TIME_NS), time_problem(5, 4), time_problem(5, 9)
    ('missing_timestamp', 'future_timestamp', None)
    """
    if ts_unix_nano == 0:
        return "missing_timestamp"
    if ts_unix_nano > latest:
        return "future_timestamp"
    return None


def labels_of(attributes: Iterable[KeyValue]) -> Labels:
    """Attributes as sorted ``(name, text)`` pairs; a repeated name keeps its first value."""
    seen: dict[str, str] = {}
    for kv in attributes:
        key = kv.key
        if key not in seen:
            value = kv.value
            # Most attributes are strings: a non-empty string_value settles the kind
            # without asking the oneof (this runs for every attribute of every point).
            text = value.string_value
            seen[key] = text if text else any_value_text(value)
    return tuple(sorted(seen.items()))


def service_labels(resource_labels: Labels) -> Labels:
    """The part of a resource that names a service (what RED and log features key on)."""
    return tuple(
        (k, v) for k, v in resource_labels if k in ("service.name", "service.namespace")
    )


def resource_groups(groups: Iterable[Any]) -> Iterator[tuple[Any, Labels, str]]:
    """Each resource group of a request (``ResourceMetrics``, ``ResourceSpans``...).

    Yields the group, its labels without ``service.version``, and the version apart: a
    release must not restart every series.
    """
    for group in groups:
        resource, version = split_version(labels_of(group.resource.attributes))
        yield group, resource, version


def note_version(
    out: Observations, service: Labels, version: str, times: Iterable[int], latest: int,
) -> None:
    """Record that ``service`` ran ``version`` from the earliest usable item time on.

    Items without a usable time (0, or after ``latest``) do not date a deploy; a resource
    with none of them, or without a version, records nothing.
    """
    if not version:
        return
    usable = [t for t in times if 0 < t <= latest]
    if usable:
        out.versions.append((service, version, min(usable)))
