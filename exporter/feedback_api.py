"""Alert review over HTTP: ``POST /api/v1/feedback`` on the metrics port.

A person (or a tool behind Alertmanager) marks an anomaly, by the ``anomaly.id`` its events
and ``otel_anomaly_open_info`` carry, as a ``false_positive`` or ``true_positive``, and/or
silences the series a set of label matchers selects for a window of event time::

    {"anomaly_id": "3f9c0d2a7be41c55", "verdict": "false_positive", "author": "ana",
     "silence": {"matchers": {"job": "shop/cart"}, "start": "2026-12-03T10:00:00Z",
                 "end": "2026-12-03T12:00:00Z"}}

The verdict is applied on the pipeline's worker (the engine's one owner), in queue order
with the requests; what it taught is answered as JSON. 400 names what is wrong with the
body, 404 an anomaly no longer remembered, 503 a full or stopping pipeline.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from otel_anomaly.exporter.pipeline import Pipeline
from otel_anomaly.processors.alerting.feedback import UnknownAnomalyError
from otel_anomaly.processors.engine import Engine

FEEDBACK_PATH = "/api/v1/feedback"
_MAX_BODY = 64 * 1024
_LATEST_S = (2**63 - 1) / 1e9 - 1.0


def _unix_nano(value: object) -> int:
    """RFC 3339 text or Unix seconds to Unix nanoseconds, from 1970 to 2262 (int64)."""
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            seconds = math.inf
    elif isinstance(value, str):
        try:
            seconds = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    if not math.isfinite(seconds):
        msg = f"a time must be RFC 3339 (2026-12-03T10:00:00Z) or Unix seconds; got {value!r}"
        raise ValueError(msg)
    if not 0 <= seconds < _LATEST_S:
        msg = f"a time must be from 1970 to 2262 (event times are int64 nanoseconds); got {value!r}"
        raise ValueError(msg)
    return int(seconds * 1e9)


class SilenceRequest(BaseModel):
    """Mute opens on the series ``matchers`` select (label equality) from start to end."""

    model_config = ConfigDict(extra="forbid")
    matchers: dict[str, str]
    start: int
    end: int

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: object) -> int:
        return _unix_nano(value)

    @model_validator(mode="after")
    def _window(self) -> SilenceRequest:
        if not self.matchers:
            msg = "silence.matchers must name at least one label, e.g. {\"job\": \"shop/cart\"}"
            raise ValueError(msg)
        if self.end <= self.start:
            msg = "silence.end must be after silence.start"
            raise ValueError(msg)
        return self


class FeedbackRequest(BaseModel):
    """A verdict on one anomaly, a silence, or both."""

    model_config = ConfigDict(extra="forbid")
    anomaly_id: str = ""
    verdict: Literal["false_positive", "true_positive"] | None = None
    author: str = ""
    silence: SilenceRequest | None = None

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if bool(self.anomaly_id) != (self.verdict is not None):
            msg = "anomaly_id and verdict go together"
            raise ValueError(msg)
        if not self.anomaly_id and self.silence is None:
            msg = "nothing to do: give anomaly_id and verdict, or silence, or both"
            raise ValueError(msg)
        return self


class FeedbackApi:
    """The handler, and ``otel_anomaly_feedback_total{verdict}`` on the sidecar's registry."""

    def __init__(self, pipeline: Pipeline, registry: CollectorRegistry) -> None:
        self._pipeline = pipeline
        self._count = Counter("otel_anomaly_feedback", "Alert-review verdicts and silences "
                              "applied, by kind.", ["verdict"], registry=registry)

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the metrics server's application."""
        return [web.post(FEEDBACK_PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        """Validate, apply on the worker, answer what was taught."""
        if request.content_length is not None and request.content_length > _MAX_BODY:
            return _error(413, f"body over {_MAX_BODY} bytes")
        body = await _body_within(request, _MAX_BODY)  # a chunked one has no length
        if body is None:
            return _error(413, f"body over {_MAX_BODY} bytes")
        try:
            feedback = FeedbackRequest.model_validate_json(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _error(400, f"invalid feedback: {problems}")
        future = self._pipeline.call(lambda engine: _apply(engine, feedback))
        if future is None:
            return _error(503, "otel-anomaly is busy or shutting down; retry later")
        try:
            answer = await asyncio.wrap_future(future)
        except UnknownAnomalyError as exc:
            return _error(404, str(exc.args[0]))
        if feedback.verdict is not None and answer.get("changed", False):
            self._count.labels(feedback.verdict).inc()
        if feedback.silence is not None:
            self._count.labels("silence").inc()
        return web.json_response(answer)


async def _body_within(request: web.Request, limit: int) -> bytes | None:
    """The request's body, or None once it passes ``limit`` bytes (read no further)."""
    chunks, size = [], 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _apply(engine: Engine, feedback: FeedbackRequest) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    if feedback.anomaly_id and feedback.verdict is not None:
        judged = engine.judge(feedback.anomaly_id, feedback.verdict, feedback.author)
        answer.update(anomaly_id=judged.anomaly_id, verdict=judged.verdict,
                      series=dict(engine.series_labels(judged.slot)),
                      peak_score=judged.peak_score, bar=judged.bar, changed=judged.changed)
    if feedback.silence is not None:
        s = feedback.silence
        engine.silence_series(s.matchers, s.start, s.end, feedback.author)
        answer["silence"] = {"matchers": s.matchers, "start_unix_nano": s.start,
                             "end_unix_nano": s.end}
    return answer


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}) + "\n",
                        content_type="application/json")
