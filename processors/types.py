"""Value types shared by every stage: series identity, batches of points, scores, events."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

Labels = tuple[tuple[str, str], ...]
"""Attributes as a tuple of ``(name, value)`` pairs sorted by name: hashable, order-free."""


class SeriesKey(NamedTuple):
    """Identity of one scored series.

    ``metric`` is the Prometheus-normalised name of the scored feature (for derived
    features the source name, a colon and the feature, e.g.
    ``http_server_duration_milliseconds:p99``). A tuple, so it hashes and compares fast on
    the hot path.
    """

    metric: str
    resource: Labels
    attributes: Labels


def empty_f64(n: int = 0) -> NDArray[np.float64]:
    """Return a float64 array of ``n`` NaNs."""
    return np.full(n, np.nan, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SeriesBatch:
    """Points of many series: ``slots[i]`` had ``values[i]`` at ``ts_unix_nano[i]``.

    All arrays have equal length. Rows of one slot are in arrival order. ``counts[i]`` is
    the sample size behind the row, NaN where unknown: for a ratio, its trials (the calls
    or log records of its window); for a rate, the seconds it was counted over (a
    counter's interval, a window of spans or log records). ``None`` means unknown for
    every row.
    """

    slots: NDArray[np.intp]
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]
    counts: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        n = len(self.slots)
        counts = n if self.counts is None else len(self.counts)
        if len(self.ts_unix_nano) != n or len(self.values) != n or counts != n:
            msg = (
                "SeriesBatch arrays must have equal length; got "
                f"slots={n}, ts_unix_nano={len(self.ts_unix_nano)}, values={len(self.values)}"
                f", counts={counts}"
            )
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.slots)

    def take(self, rows: NDArray[np.intp]) -> SeriesBatch:
        """Return the sub-batch of the given row indices."""
        return SeriesBatch(self.slots[rows], self.ts_unix_nano[rows], self.values[rows],
                           None if self.counts is None else self.counts[rows])

    def with_values(self, values: NDArray[np.float64]) -> SeriesBatch:
        """The same rows (slots, times, counts) with other values."""
        return SeriesBatch(self.slots, self.ts_unix_nano, values, self.counts)

    def sample_sizes(self) -> NDArray[np.float64]:
        """``counts`` as an array, NaN where unknown."""
        return empty_f64(len(self)) if self.counts is None else self.counts

    @classmethod
    def of(
        cls,
        slots: list[int] | NDArray[np.intp],
        values: list[float] | NDArray[np.float64],
        ts_unix_nano: list[int] | NDArray[np.int64] | None = None,
        counts: list[float] | NDArray[np.float64] | None = None,
    ) -> SeriesBatch:
        """Build a batch from lists; timestamps default to 0, 1, 2... seconds."""
        slot_arr = np.asarray(slots, dtype=np.intp)
        if ts_unix_nano is None:
            ts = np.arange(len(slot_arr), dtype=np.int64) * 1_000_000_000
        else:
            ts = np.asarray(ts_unix_nano, dtype=np.int64)
        count_arr = None if counts is None else np.asarray(counts, dtype=np.float64)
        return cls(slot_arr, ts, np.asarray(values, dtype=np.float64), count_arr)


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """What scoring produced for each row of a ``SeriesBatch``.

    ``score`` is band-normalised: 0 at the expected value, 1 at the band edge, above 1
    outside it (the meaning of vmanomaly's ``anomaly_score``). NaN where the input was not
    finite. ``flag`` is True while the series is in an open anomaly (after hysteresis).
    """

    slots: NDArray[np.intp]
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]
    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]
    flag: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.slots)

    @classmethod
    def empty(cls) -> ScoreBatch:
        """Return a batch with no rows."""
        f = empty_f64()
        return cls(
            np.empty(0, np.intp), np.empty(0, np.int64), f, f, f, f, f, np.empty(0, np.bool_)
        )

    @classmethod
    def concat(cls, batches: list[ScoreBatch]) -> ScoreBatch:
        """Concatenate batches row-wise."""
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            *(
                np.concatenate([getattr(b, name) for b in batches])
                for name in (
                    "slots", "ts_unix_nano", "values", "expected", "lower", "upper", "score",
                    "flag",
                )
            )
        )


EventKind = Literal["open", "update", "close"]
Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """An anomaly opened, went on, or closed on one series.

    ``ts_unix_nano`` is the event time of the point that caused it, never earlier than
    the anomaly's previous event (points may arrive out of event-time order, e.g. span
    outliers stamped by their end times). ``trace_id`` and ``span_id`` are set (16 and 8
    bytes) for span-duration outliers. ``anomaly_id`` is shared by the open, the updates
    and the close of one anomaly (see ``anomaly_id``).
    """

    kind: EventKind
    slot: int
    key: SeriesKey
    ts_unix_nano: int
    direction: Direction
    score: float
    value: float
    expected: float
    lower: float
    upper: float
    detector: str
    explanation: str
    trace_id: bytes = b""
    span_id: bytes = b""
    anomaly_id: str = ""


def anomaly_id(key: SeriesKey, opened_unix_nano: int) -> str:
    """The id of the anomaly that opened on ``key`` at ``opened_unix_nano``: 16 hex digits.

    Deterministic: the same series opening at the same event time gets the same id, in
    every output, after a restart, and on a second replica scoring the same data.

    >>> key = SeriesKey("cpu", (("service.name", "checkout"),), ())
    >>> anomaly_id(key, 10**18) == anomaly_id(key, 10**18) != anomaly_id(key, 10**18 + 1)
    True
    >>> len(anomaly_id(key, 0))
    16
    """
    text = json.dumps([key.metric, key.resource, key.attributes, opened_unix_nano])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class IngestResult:
    """Outcome of one ingested request, for the receiver's reply and the outputs.

    ``accepted + sum(rejected.values())`` equals the number of points, spans or log records
    in the request. ``rejected`` maps a reason (``non_finite``, ``unsupported_type``,
    ``out_of_order``, ``series_limit``...) to a count. ``skipped`` counts accepted items that
    produced no score, by reason (``counter_reset``, ``first_point``, ``late``...), for
    self-metrics only.
    """

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    scores: ScoreBatch = field(default_factory=ScoreBatch.empty)
    events: list[AnomalyEvent] = field(default_factory=list)
    evicted: NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` items rejected for ``reason``."""
        if count:
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` accepted items that produced no score, for ``reason``."""
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    @property
    def rejected_total(self) -> int:
        """Total rejected items, all reasons."""
        return sum(self.rejected.values())

    def error_message(self) -> str:
        """One line naming every reason and its count, for OTLP ``partial_success``."""
        if not self.rejected:
            return ""
        parts = [f"{count} {reason}" for reason, count in sorted(self.rejected.items())]
        return "rejected: " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class SlottedRows:
    """Points of a request that already have their slots (the compiled metrics and spans paths).

    ``slots``, ``ts_unix_nano`` and ``values`` are parallel; ``order`` places each row in
    the request. The rows of the ``Observations`` they come with (points the Python walk
    handled) are placed by unit: rows from ``unit_starts[u]`` up to the next unit's start
    (or ``extracted``) have place ``unit_orders[u]``; rows appended after extraction (the
    multivariate stage's) come last. ``exemplars`` maps a row of these to the
    ``(trace_id, span_id)`` it came from (span outliers). ``counts``: each row's sample
    size as ``SeriesBatch.counts`` has it (a rate's seconds), None when no row has one.
    """

    slots: NDArray[np.intp]
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]
    order: NDArray[np.int64]
    unit_starts: list[int]
    unit_orders: list[int]
    extracted: int
    exemplars: Mapping[int, tuple[bytes, bytes]] = field(default_factory=dict)
    counts: NDArray[np.float64] | None = None

    def walked_order(self, n_rows: int) -> NDArray[np.int64]:
        """The place in the request of each of the ``n_rows`` walked rows."""
        bounds = np.array([*self.unit_starts, self.extracted, n_rows], np.int64)
        places = np.array([*self.unit_orders, np.iinfo(np.int64).max], np.int64)
        return np.repeat(places, np.diff(bounds))


class Observations:
    """Points gathered from one request, before they get slots: parallel lists.

    ``exemplars`` maps a row to the ``(trace_id, span_id)`` it came from (span outliers).
    ``versions`` lists ``(service labels, service.version, earliest point time)`` per
    resource that carried a version (deploy awareness). ``counts`` maps a row to its
    sample size (the calls or records behind a ratio): sparse, as most points have none.
    ``unlearned``: rows to be scored that must teach their detector nothing (a service's
    multivariate score while its model holds an incident). ``slotted``: points the
    compiled metrics path scored without keys, if it ran.
    """

    __slots__ = ("counts", "exemplars", "keys", "slotted", "ts", "unlearned", "values",
                 "versions")

    def __init__(self) -> None:
        self.keys: list[SeriesKey] = []
        self.ts: list[int] = []
        self.values: list[float] = []
        self.counts: dict[int, float] = {}
        self.exemplars: dict[int, tuple[bytes, bytes]] = {}
        self.versions: list[tuple[Labels, str, int]] = []
        self.unlearned: set[int] = set()
        self.slotted: SlottedRows | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: SeriesKey, ts_unix_nano: int, value: float, count: float | None = None,
            exemplar: tuple[bytes, bytes] | None = None) -> None:
        """Append one point.

        ``count``: its sample size (see ``SeriesBatch``); ``exemplar``: the trace and span
        id of a measurement behind it.
        """
        if count is not None:
            self.counts[len(self.keys)] = count
        if exemplar is not None:
            self.exemplars[len(self.keys)] = exemplar
        self.keys.append(key)
        self.ts.append(ts_unix_nano)
        self.values.append(value)

    def extend(self, keys: list[SeriesKey], ts_unix_nano: list[int], values: list[float],
               exemplars: list[tuple[bytes, bytes]] | None = None) -> None:
        """Append many points (``exemplars``: each one's trace and span id, if any)."""
        if exemplars is not None:
            first = len(self.keys)
            self.exemplars.update(zip(range(first, first + len(exemplars)), exemplars,
                                      strict=True))
        self.keys.extend(keys)
        self.ts.extend(ts_unix_nano)
        self.values.extend(values)

    def learned_array(self) -> NDArray[np.bool_] | None:
        """Per row, whether it may teach its detector; None when every row may."""
        if not self.unlearned:
            return None
        out = np.ones(len(self.keys), np.bool_)
        out[list(self.unlearned)] = False
        return out

    def count_array(self) -> NDArray[np.float64] | None:
        """Sample sizes per row, NaN where unknown; None when no row has one."""
        if not self.counts:
            return None
        out = empty_f64(len(self.keys))
        out[list(self.counts)] = list(self.counts.values())
        return out
