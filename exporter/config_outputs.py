"""The ``outputs`` config section, and where the keys of the former ``events`` section went."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from otel_anomaly.exporter.config_types import Duration, Model, Positive, check_endpoint

_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")


class OtlpExporterConfig(Model):
    """Where an OTLP output sends to (its ``endpoint`` empty: the output is off)."""

    endpoint: str | None = None
    insecure: bool = True
    headers: dict[str, str] = {}
    timeout: Duration = Field(default=10.0, gt=0)

    @field_validator("headers")
    @classmethod
    def _grpc_metadata(cls, headers: dict[str, str]) -> dict[str, str]:
        # gRPC metadata keys are lower case (gRPC-Go, so the Collector, lowercases them;
        # grpcio refuses every call that carries "Authorization"); values are printable
        # ASCII, a newline in one would fail every export.
        out = {}
        for key, value in headers.items():
            name = key.strip().lower()
            if not _METADATA_KEY.fullmatch(name) or name.startswith("grpc-"):
                msg = (f"header {key!r}: a gRPC metadata key is letters, digits, '-', '_' "
                       "and '.' (not starting with 'grpc-')")
                raise ValueError(msg)
            if not name.endswith("-bin") and not _METADATA_VALUE.fullmatch(value):
                msg = f"header {key!r}: the value must be printable ASCII, without line breaks"
                raise ValueError(msg)
            out[name] = value
        return out

    @field_validator("endpoint")
    @classmethod
    def _endpoint_or_empty(cls, value: str | None) -> str | None:
        if not value:
            return None
        check_endpoint(re.sub(r"^https?://", "", value).rstrip("/"))
        return value


class OtlpEventsConfig(OtlpExporterConfig):
    """Anomaly events as OTLP log records (``outputs.otlp_events``)."""

    queue_size: Positive = 2048


class OtlpScoresConfig(OtlpExporterConfig):
    """Every score as OTLP gauges, pushed every ``interval`` (``outputs.otlp_scores``)."""

    interval: Duration = Field(default=60.0, gt=0)


class OutputsConfig(Model):
    """Where scoring rounds go besides ``/metrics`` (``exposition``), and how they queue."""

    queue_size: Positive = 64
    otlp_events: OtlpEventsConfig = OtlpEventsConfig()
    otlp_scores: OtlpScoresConfig = OtlpScoresConfig()


MOVED_KEYS: Mapping[str, str] = {
    "events.endpoint": "outputs.otlp_events.endpoint",
    "events.insecure": "outputs.otlp_events.insecure",
    "events.headers": "outputs.otlp_events.headers",
    "events.queue_size": "outputs.otlp_events.queue_size",
    "events.timeout": "outputs.otlp_events.timeout",
    "events.export_scores_as_metrics": (
        "outputs.otlp_scores.endpoint (scores are pushed when it is set; give it the "
        "events' endpoint for the former behaviour)"
    ),
    "events.metrics_interval": "outputs.otlp_scores.interval",
}
"""Former key -> what replaced it (the ``events`` section became ``outputs``)."""


def moved_key_problems(data: dict[str, Any]) -> list[str]:
    """Remove the former ``events`` section from ``data``; one line per key it held.

    Each line names the old key and the new one (``events.endpoint: moved to
    outputs.otlp_events.endpoint``), so ``check-config`` says how to update a config.
    """
    if "events" not in data:
        return []
    section = data.pop("events")
    if not isinstance(section, Mapping):
        return ["events: this section moved to outputs.otlp_events (and outputs.otlp_scores)"]
    problems = []
    for key in section:
        old = f"events.{key}"
        if old in MOVED_KEYS:
            problems.append(f"{old}: moved to {MOVED_KEYS[old]}")
        else:
            problems.append(f"{old}: unknown key; the events section moved to outputs.otlp_events")
    return problems
