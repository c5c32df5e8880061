"""Replay recorded series through the live scoring path, in event-time order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.types import SeriesKey


@dataclass(frozen=True, slots=True)
class RecordedSeries:
    """One series to replay: its identity and its points (timestamps need not be unique)."""

    key: SeriesKey
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Per input row, what the live path produced (NaN where the value was not finite)."""

    score: NDArray[np.float64]
    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    flag: NDArray[np.bool_]


def backtest(
    engine: Engine,
    series: Sequence[RecordedSeries],
    *,
    chunk_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> list[BacktestResult]:
    """Feed every point of every series through ``engine.ingest_series``, oldest first.

    Points of all series are merged by timestamp (ties keep each series' own order), then
    sent in chunks; because a batch scores exactly like its rows one at a time, the chunk
    size changes speed, never results. ``progress`` is called with rows done so far.

    Examples
    --------
    >>> from otel_anomaly.processors.settings import EngineSettings
    >>> engine = Engine(EngineSettings(clock=lambda: 0.0))
    >>> values = np.r_[np.tile([10.0, 11.0, 9.0], 20), 40.0]
    >>> ts = np.arange(len(values), dtype=np.int64) * 60 * 10**9
    >>> [out] = backtest(engine, [RecordedSeries(SeriesKey("x", (), ()), ts, values)])
    >>> bool(out.score[-1] > 1), float(out.score[:30].max())
    (True, 0.0)
    """
    sizes = [len(s.values) for s in series]
    owner = np.repeat(np.arange(len(series)), sizes)
    ts = np.concatenate([s.ts_unix_nano for s in series]) if series else np.empty(0, np.int64)
    values = np.concatenate([s.values for s in series]) if series else np.empty(0)
    order = np.argsort(ts, kind="stable")
    n = len(order)
    fields = {name: np.full(n, np.nan) for name in ("score", "expected", "lower", "upper")}
    flag = np.zeros(n, np.bool_)
    keys = [s.key for s in series]
    for start in range(0, n, chunk_rows):
        rows = order[start : start + chunk_rows]
        chunk_keys = [keys[i] for i in owner[rows].tolist()]
        result = engine.ingest_series(chunk_keys, ts[rows], values[rows])
        # ingest_series drops non-finite rows; map the rest back to their input rows.
        scored = rows[np.isfinite(values[rows])]
        out = result.scores
        if len(out) != len(scored):
            msg = (f"backtest: {len(scored) - len(out)} rows were not scored "
                   f"({result.skipped}); raise max_series above {len(series)}")
            raise ValueError(msg)
        for name, arr in fields.items():
            arr[scored] = getattr(out, name)
        flag[scored] = out.flag
        if progress is not None:
            progress(len(rows))
    bounds = np.cumsum([0, *sizes])
    return [
        BacktestResult(score=fields["score"][a:b], expected=fields["expected"][a:b],
                       lower=fields["lower"][a:b], upper=fields["upper"][a:b], flag=flag[a:b])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
