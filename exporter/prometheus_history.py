"""Series history from a Prometheus-compatible query API (``/api/v1/query_range``).

What ``otel-anomaly backtest --prometheus`` replays. Prometheus answers at most 11,000
points per series and query, so a long range is asked in consecutive chunks and each
series' chunks are joined (a label set is one series across chunks). Errors name the URL
and carry Prometheus' own ``error`` text.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.exporter.errors import ExporterError

MAX_POINTS_PER_QUERY = 11_000
"""Prometheus refuses a ``query_range`` of more points per series than this."""


class HistoryError(ExporterError):
    """The query API cannot be read: unreachable, an error answer, or not Prometheus."""


@dataclass(frozen=True, slots=True)
class HistorySeries:
    """One returned series: its labels (``__name__`` included when the query keeps it)."""

    labels: tuple[tuple[str, str], ...]
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]

    @property
    def name(self) -> str:
        """The series as PromQL writes it: ``name{label="value",...}``.

        >>> HistorySeries((("__name__", "up"), ("job", "api")), np.zeros(0, np.int64),
        ...               np.zeros(0)).name
        'up{job="api"}'
        """
        labels = dict(self.labels)
        metric = labels.pop("__name__", "")
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{metric}{{{inner}}}" if inner or not metric else metric


def parse_time(text: str) -> float:
    """Unix seconds from RFC 3339 (``2026-11-30T00:00:00Z``) or a number of seconds.

    >>> parse_time("1700000000"), parse_time("2023-11-14T22:13:20Z")
    (1700000000.0, 1700000000.0)
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        msg = f"time {text!r} is neither RFC 3339 (2026-11-30T00:00:00Z) nor Unix seconds"
        raise HistoryError(msg) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def query_range(url: str, query: str, start: float, end: float, step: float,
                timeout: float = 60.0) -> list[HistorySeries]:
    """Every series ``query`` returns over ``[start, end]`` (Unix seconds) at ``step``.

    Raises
    ------
    HistoryError
        If the range is empty, the API cannot be reached, or it answers an error.
    """
    if not end > start or not step > 0:
        msg = f"need start < end and step > 0; got start {start:g}, end {end:g}, step {step:g}"
        raise HistoryError(msg)
    chunk = step * (MAX_POINTS_PER_QUERY - 1)
    points: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    lo = start
    while lo <= end:
        hi = min(end, lo + chunk)
        for result in _query_chunk(url, query, lo, hi, step, timeout):
            labels = tuple(sorted(result.get("metric", {}).items()))
            points.setdefault(labels, []).extend(
                (float(t), _value(v)) for t, v in result.get("values", []))
        lo = hi + step
    return [_series(labels, rows) for labels, rows in sorted(points.items())]


def _query_chunk(url: str, query: str, start: float, end: float, step: float,
                 timeout: float) -> list[dict[str, Any]]:
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    form = urllib.parse.urlencode(
        {"query": query, "start": repr(start), "end": repr(end), "step": repr(step)}).encode()
    request = urllib.request.Request(endpoint, data=form, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        detail = _error_text(body) or f"HTTP {exc.code}"
        msg = f"{endpoint}: query {query!r} failed: {detail}"
        raise HistoryError(msg) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = f"{endpoint}: cannot reach the query API: {reason}"
        raise HistoryError(msg) from None
    try:
        answer = json.loads(body)
        data = answer["data"]
        if answer.get("status") != "success" or data.get("resultType") != "matrix":
            raise ValueError(answer.get("error") or f"resultType {data.get('resultType')!r}")
        return list(data["result"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"{endpoint}: not a Prometheus query_range matrix answer ({exc})"
        raise HistoryError(msg) from None


def _error_text(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace").strip()
    return f"{answer.get('errorType', 'error')}: {answer.get('error', '')}".strip()


def _value(text: object) -> float:
    # Prometheus writes values as strings: "1.5", "NaN", "+Inf".
    try:
        return float(str(text))
    except ValueError:
        return math.nan


def _series(labels: tuple[tuple[str, str], ...], rows: list[tuple[float, float]]
            ) -> HistorySeries:
    rows.sort()
    ts = np.array([round(t * 1e9) for t, _ in rows], np.int64)
    values = np.array([v for _, v in rows], np.float64)
    return HistorySeries(labels, ts, values)


def file_name(series: HistorySeries) -> str:
    """A file name for one series: its name and labels, with only safe characters.

    >>> file_name(HistorySeries((("__name__", "up"), ("instance", "a:80")),
    ...                         np.zeros(0, np.int64), np.zeros(0)))
    'up__instance=a_80'
    """
    labels = dict(series.labels)
    parts = [labels.pop("__name__", "series")]
    parts += [f"{k}={v}" for k, v in sorted(labels.items())]
    return "".join(c if c.isalnum() or c in "_.=-" else "_" for c in "__".join(parts))
