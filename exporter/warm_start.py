"""Warm start: prime the detectors with history from a Prometheus query API at start-up.

A daily profile needs two days of data and a weekly one two weeks; a new sidecar (or one
whose checkpoint was lost) would watch blind until then. ``warm_start`` reads
``query_range`` of its selectors over ``lookback`` and feeds the samples through the same
path as Prometheus remote-write (``processors.signals.remote_write``): same identity, same
counter rates, event-time order per series. Live data of those series then continues
where history ended, without a second warm-up.

A series restored from a checkpoint is not primed twice: its stream already holds a newer
point, so history before it is refused as out of order and only the gap since the
checkpoint is learned. Anomalies in the history teach the detectors like any point; no
event is sent for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from otel_anomaly.exporter.prometheus_history import HistorySeries, query_range
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.signals.remote_write_proto import WriteRequest

logger = logging.getLogger(__name__)

_SERIES_PER_REQUEST = 200  # bounded request size while priming


@dataclass(frozen=True, slots=True)
class WarmStartSource:
    """Where history comes from: a query API, its selectors, how far back and how fine."""

    url: str
    selectors: Sequence[str]
    lookback_s: float
    step_s: float = 60.0


@dataclass(frozen=True, slots=True)
class WarmStartSummary:
    """What priming did: series and samples read, learned, and refused as already known."""

    series: int
    samples: int
    learned: int
    already_known: int
    seconds: float


def prime(engine: Engine, source: WarmStartSource, clock: Callable[[], float] = time.time
          ) -> WarmStartSummary:
    """Feed ``source``'s history through ``engine`` (on the thread that owns it).

    Raises
    ------
    HistoryError
        If the query API cannot be read.
    """
    started = time.perf_counter()
    end = history_end(clock(), source.step_s)
    series = samples = learned = known = 0
    for selector in source.selectors:
        history = query_range(source.url, selector, end - source.lookback_s, end,
                              source.step_s)
        logger.info("warm start: %s returned %d series over the last %gs",
                    selector, len(history), source.lookback_s)
        for first in range(0, len(history), _SERIES_PER_REQUEST):
            batch = history[first : first + _SERIES_PER_REQUEST]
            result = engine.ingest("prometheus", write_request(batch))
            series += len(batch)
            samples += sum(len(s.values) for s in batch)
            learned += result.accepted
            known += result.rejected.get("out_of_order", 0)
            logger.info("warm start: %s: %d/%d series primed", selector,
                        min(first + _SERIES_PER_REQUEST, len(history)), len(history))
    summary = WarmStartSummary(series, samples, learned, known, time.perf_counter() - started)
    logger.info("warm start: %d series, %d samples read, %d learned, %d already known "
                "(restored from the checkpoint) in %.1fs", summary.series, summary.samples,
                summary.learned, summary.already_known, summary.seconds)
    return summary


def history_end(now_s: float, step_s: float) -> float:
    """Where history ends: on the step grid, at least one step before ``now_s``.

    ``query_range`` stamps each point with its evaluation time, not its scrape time, so a
    history ending at start-up would hold a point stamped "now", and every live sample
    scraped just before start-up but remote-written after it would be refused as out of
    order. One step earlier, only samples delivered more than a step late are.

    >>> history_end(1_000_030.0, 60.0)
    999960.0
    """
    return (now_s - step_s) // step_s * step_s


def write_request(history: Sequence[HistorySeries]) -> WriteRequest:
    """History as one remote-write request (the live path's identity and counter rules)."""
    request = WriteRequest()
    for item in history:
        series = request.timeseries.add()
        for name, value in item.labels:
            series.labels.add(name=name, value=value)
        for ts, value in zip((item.ts_unix_nano // 1_000_000).tolist(), item.values.tolist(),
                             strict=True):
            series.samples.add(timestamp=ts, value=value)
    return request
