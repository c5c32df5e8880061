"""Per-service feature vectors, assembled from the RED and log features of closed windows.

Every service (``service.namespace`` + ``service.name``) gets one vector per window, of
fixed dimension whatever its operations:

========================  ==================================================  =========
feature                   value                                               unit
========================  ==================================================  =========
``call_rate``             ``log1p`` of the calls per second, all operations   calls/s
``error_ratio``           errors / (calls + 50), all operations               ratio
``p95_latency``           ``log1p`` of the call-weighted mean of the
                          operations' p95 duration                            ms
``log_rate``              ``log1p`` of the log records per second            records/s
``log_error_ratio``       error-or-worse records / (records + 50)             ratio
========================  ==================================================  =========

A feature the window lacks (no calls, so no error ratio; a service without logs) is NaN,
except the p95 latency: it is emitted only once enough calls have been pooled
(``signals.quantile_pools``), so a quiet window takes the service's latest p95, at most
``MAX_SPAN_S`` old, as Prometheus lets a sample stand for its five-minute lookback.
Otherwise a service at a few calls per window alternates between windows with and without
its latency, and a latency regression scores as unusual only every other window.
Error ratios are shrunk by ``PRIOR_CALLS`` calls (records) of no error when their counts
are known: a window with few calls says little about the error rate, so 1 error in 4
calls is 1.9 % rather than 25 % (a deviation the model would weigh like an outage), while
30 in 100 is still 20 %. Ratios that come without their counts are used as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.signals.logs import ERROR_RATIO_METRIC as LOG_ERROR_METRIC
from otel_anomaly.processors.signals.logs import RATE_METRIC as LOG_RATE_METRIC
from otel_anomaly.processors.signals.otlp_resources import service_labels
from otel_anomaly.processors.signals.quantile_pools import MAX_SPAN_S
from otel_anomaly.processors.signals.traces import CALLS_METRIC, DURATION_METRIC, ERROR_RATIO_METRIC
from otel_anomaly.processors.state.codec import as_labels
from otel_anomaly.processors.types import Labels, SeriesKey

P95_METRIC = f"{DURATION_METRIC}:p95"
PRIOR_CALLS = 50.0
"""Error-free calls added to every window's calls before dividing its errors by them."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One coordinate of a service vector: its name, how people read it, its noise floor.

    ``floor`` is the smallest standard deviation the models assume (in the transformed
    unit), so a feature that has been constant (an error ratio of 0) does not make the
    first small change look infinitely unusual. ``log`` features are modelled as ``log1p``.
    """

    name: str
    label: str
    floor: float
    log: bool

    def show(self, value: float) -> str:
        """The model-space ``value`` in the feature's own unit, for an explanation."""
        return f"{np.expm1(value) if self.log else value:.3g}"


FEATURES: tuple[Feature, ...] = (
    Feature("call_rate", "call rate", 0.05, log=True),
    Feature("error_ratio", "error ratio", 0.01, log=False),
    Feature("p95_latency", "p95 latency (ms)", 0.05, log=True),
    Feature("log_rate", "log rate", 0.05, log=True),
    Feature("log_error_ratio", "log error ratio", 0.01, log=False),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
CARRIED = (FEATURE_NAMES.index("p95_latency"),)
"""Features a window without its own value takes from the service's latest window (above)."""
FLOORS = np.array([f.floor for f in FEATURES])
SOURCE_METRICS = frozenset({CALLS_METRIC, ERROR_RATIO_METRIC, P95_METRIC, LOG_RATE_METRIC,
                            LOG_ERROR_METRIC})
"""The scored series the per-service vectors are built from."""
_SOURCES = SOURCE_METRICS


_Points = dict[tuple[str, Labels], float]


@dataclass(frozen=True, slots=True)
class ServiceVector:
    """One service's features over the window that ends at ``end_unix_nano``."""

    service: Labels
    end_unix_nano: int
    x: NDArray[np.float64]


def vector_of(
    points: dict[tuple[str, Labels], float],
    counts: dict[tuple[str, Labels], float] | None = None,
) -> NDArray[np.float64]:
    """Aggregate one window's ``(metric, attributes) -> value`` points into a vector.

    ``counts`` holds the sample sizes of ratio points (calls, records), where known.

    Examples
    --------
    >>> a, b = (("span.name", "a"),), (("span.name", "b"),)
    >>> points = {(CALLS_METRIC, a): 9.0, (CALLS_METRIC, b): 1.0,
    ...           (ERROR_RATIO_METRIC, a): 0.0, (ERROR_RATIO_METRIC, b): 1.0}
    >>> vector_of(points).round(3).tolist()
    [2.398, 0.1, nan, nan, nan]
    >>> sizes = {(ERROR_RATIO_METRIC, a): 90.0, (ERROR_RATIO_METRIC, b): 10.0}
    >>> vector_of(points, sizes).round(3).tolist()  # 10 errors in 100 calls, plus 50
    [2.398, 0.067, nan, nan, nan]
    """
    counts = counts or {}
    calls: dict[Labels, float] = {}
    by_metric: dict[str, list[tuple[Labels, float]]] = {}
    for (metric, attributes), value in points.items():
        if metric == CALLS_METRIC:
            calls[attributes] = value
        by_metric.setdefault(metric, []).append((attributes, value))
    x = np.full(len(FEATURES), np.nan)
    if calls:
        x[0] = np.log1p(sum(calls.values()))
    x[1] = _shrunk(ERROR_RATIO_METRIC, by_metric.get(ERROR_RATIO_METRIC, []), counts)
    if np.isnan(x[1]):
        x[1] = _call_weighted(by_metric.get(ERROR_RATIO_METRIC, []), calls)
    x[2] = np.log1p(_call_weighted(by_metric.get(P95_METRIC, []), calls))
    if LOG_RATE_METRIC in by_metric:
        x[3] = np.log1p(sum(value for _, value in by_metric[LOG_RATE_METRIC]))
    if LOG_ERROR_METRIC in by_metric:
        last = by_metric[LOG_ERROR_METRIC][-1:]
        x[4] = _shrunk(LOG_ERROR_METRIC, last, counts)
        if np.isnan(x[4]):
            x[4] = last[0][1]
    return x


def _shrunk(
    metric: str, rows: list[tuple[Labels, float]], counts: dict[tuple[str, Labels], float],
) -> float:
    """All rows' errors over their calls plus ``PRIOR_CALLS``; NaN unless every count is known."""
    sizes = [counts.get((metric, attributes), float("nan")) for attributes, _ in rows]
    if not rows or not all(n > 0 for n in sizes):  # NaN compares False
        return float("nan")
    errors = sum(n * value for n, (_, value) in zip(sizes, rows, strict=True))
    return errors / (sum(sizes) + PRIOR_CALLS)


def _call_weighted(rows: list[tuple[Labels, float]], calls: dict[Labels, float]) -> float:
    weights = [calls.get(attributes, 0.0) for attributes, _ in rows]
    total = sum(weights)
    if not rows or total <= 0:
        return float("nan")
    return sum(w * value for w, (_, value) in zip(weights, rows, strict=True)) / total


class ServiceVectors:
    """Collects derived points into per-service windows and hands out finished vectors.

    A window's vector is finished once the service has a point ``slack`` windows later
    (traces and logs close their windows separately, so the last of them can come a little
    after the first); points for a finished window are ignored.

    Examples
    --------
    >>> sv = ServiceVectors(window_ns=10)  # a point at 30 is in window (20, 30]
    >>> svc = (("service.name", "api"),)
    >>> sv.add([SeriesKey(CALLS_METRIC, svc, ())], [10], [4.0], now=0.0)
    []
    >>> done = sv.add([SeriesKey(CALLS_METRIC, svc, ())], [30], [1.0], now=1.0)
    >>> [(v.end_unix_nano, round(float(v.x[0]), 3)) for v in done]
    [(10, 1.609)]
    >>> p95 = SeriesKey(P95_METRIC, svc, (("span.name", "a"),))
    >>> calls = SeriesKey(CALLS_METRIC, svc, (("span.name", "a"),))
    >>> done = sv.add([calls, p95, calls, calls], [40, 40, 50, 60], [2.0, 99.0, 2.0, 2.0], 2.0)
    >>> [(v.end_unix_nano, float(np.expm1(v.x[2]))) for v in done]  # none at 30 or 50
    [(30, nan), (40, 99.0), (50, 99.0)]
    """

    def __init__(self, window_ns: int, max_services: int = 500, slack: int = 1) -> None:
        self.window_ns = window_ns
        self.max_services = max_services
        self.slack = slack
        self.skipped_points = 0  # points of services beyond ``max_services``
        # service -> window index -> ((metric, attributes) -> value (the latest wins),
        # the same -> sample size where known)
        self._pending: dict[Labels, dict[int, tuple[_Points, _Points]]] = {}
        self._finished: dict[Labels, int] = {}  # service -> newest finished window index
        self._seen: dict[Labels, float] = {}  # service -> ingest time it last had a point
        # service -> the latest (window index, value) of each ``CARRIED`` feature
        self._carried: dict[Labels, dict[int, tuple[int, float]]] = {}
        self._carry_windows = max(1, math.ceil(MAX_SPAN_S * 1e9 / window_ns))

    def add(
        self, keys: Sequence[SeriesKey], ts: Sequence[int], values: Sequence[float], now: float,
        counts: Sequence[float] | None = None,
    ) -> list[ServiceVector]:
        """Take a request's derived points; return the vectors they finished, oldest first.

        ``now`` (ingest-time seconds) marks the services seen, for ``expire``. ``counts``:
        each point's sample size (NaN where unknown).
        """
        touched: dict[Labels, int] = {}
        sizes = [math.nan] * len(keys) if counts is None else counts
        # A window's points come in runs of one resource and time: each run finds its
        # service's window once. ``points`` is None for a run whose window is finished.
        resource: Labels | None = None
        service: Labels = ()
        run_ts = -1
        points: _Points | None = None
        known: _Points = {}
        for key, t, value, count in zip(keys, ts, values, sizes, strict=True):
            if key.metric not in _SOURCES:
                continue
            if key.resource is not resource or t != run_ts:
                if key.resource is not resource:
                    resource, service = key.resource, service_labels(key.resource)
                run_ts, points = t, None
                if service not in self._finished and not self._admit(service):
                    self.skipped_points += 1
                    run_ts = -1  # refused: each of its points counts as skipped
                    continue
                window = (t - 1) // self.window_ns
                if window > self._finished[service]:
                    windows = self._pending.setdefault(service, {})
                    points, known = windows.setdefault(window, ({}, {}))
                    touched[service] = max(window, touched.get(service, window))
            if points is None:
                continue
            points[(key.metric, key.attributes)] = value
            if count > 0:  # NaN: unknown
                known[(key.metric, key.attributes)] = count
        out = []
        for service, newest in touched.items():
            self._seen[service] = now
            windows = self._pending[service]
            for window in sorted(w for w in windows if w <= newest - self.slack):
                pending = windows.pop(window)
                # (A checkpoint from before counts holds the points alone.)
                x = vector_of(*pending) if isinstance(pending, tuple) else vector_of(pending)
                self._carry(service, window, x)
                self._finished[service] = window
                out.append(ServiceVector(service, (window + 1) * self.window_ns, x))
        out.sort(key=lambda v: v.end_unix_nano)
        return out

    def _carry(self, service: Labels, window: int, x: NDArray[np.float64]) -> None:
        """Fill ``x``'s missing ``CARRIED`` features from the service's recent windows."""
        latest = self._carried.setdefault(service, {})
        for j in CARRIED:
            if math.isfinite(x[j]):
                latest[j] = (window, float(x[j]))
            elif j in latest and window - latest[j][0] <= self._carry_windows:
                x[j] = latest[j][1]

    def _admit(self, service: Labels) -> bool:
        if len(self._finished) >= self.max_services:
            return False
        self._finished[service] = -(2**62)
        return True

    @property
    def services(self) -> list[Labels]:
        """Services being assembled (at most ``max_services``)."""
        return list(self._finished)

    def state_dict(self) -> dict[str, Any]:
        """Windows being assembled, the newest finished window and last sight per service."""
        return {"skipped_points": self.skipped_points, "pending": self._pending,
                "finished": self._finished, "seen": self._seen,
                "carried": {service: [[j, window, value] for j, (window, value) in latest.items()]
                            for service, latest in self._carried.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        self.skipped_points = int(state["skipped_points"])
        self._pending = {
            as_labels(service): {int(window): (dict(points), dict(known))
                                 for window, (points, known) in windows.items()}
            for service, windows in state["pending"].items()}
        self._finished = {as_labels(s): int(window) for s, window in state["finished"].items()}
        self._seen = {as_labels(s): float(seen) for s, seen in state["seen"].items()}
        self._carried = {  # (older checkpoints carried nothing)
            as_labels(s): {int(j): (int(window), float(value)) for j, window, value in latest}
            for s, latest in state.get("carried", {}).items()}

    def shift_clock(self, delta: float) -> None:
        """Move every ingest-time "last seen" by ``delta`` seconds (after a restore)."""
        self._seen = {service: seen + delta for service, seen in self._seen.items()}

    def expire(self, now: float, ttl_s: float) -> list[Labels]:
        """Forget services without a point for ``ttl_s``; return them."""
        stale = [s for s, seen in self._seen.items() if now - seen > ttl_s]
        for service in stale:
            self._pending.pop(service, None)
            self._finished.pop(service, None)
            self._carried.pop(service, None)
            del self._seen[service]
        return stale
