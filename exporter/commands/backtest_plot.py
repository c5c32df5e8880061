"""One PNG per backtested series: value and band on top, anomaly score below.

Imported only when ``--plot`` is given: matplotlib takes a while to load. Uses the Agg
canvas directly (no ``pyplot``, so no global figure state and no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from otel_anomaly.exporter.commands.backtest_input import BacktestInputError, InputSeries
from otel_anomaly.processors.backtest import BacktestResult

if TYPE_CHECKING:
    from otel_anomaly.exporter.commands.backtest import SeriesSummary

__all__ = ["plot_series"]

_GAP_FACTOR = 10
"""A step longer than this many typical steps is drawn as a gap, not a line across it."""
_SCORE_CAP = 5.0
"""The score axis stops a little above this; higher scores are drawn at the top edge."""
_MIN_SPAN = 0.003
"""Flagged stretches are shaded at least this fraction of the time axis wide (visible)."""
_MAX_SPANS = 2000
"""Beyond this many flagged stretches, shade exactly (one polygon) instead of widening."""


def plot_series(
    path: Path, series: InputSeries, result: BacktestResult, summary: SeriesSummary
) -> None:
    """Draw ``series``, its backtest ``result`` and ``summary`` counts into PNG ``path``."""
    order = np.argsort(series.ts_unix_nano, kind="stable")
    ts = series.ts_unix_nano[order]
    # Values beyond +-1e150 are drawn at that edge: matplotlib's transforms cannot place
    # points near the float limit (the CSV output keeps them as they are).
    cols = {
        "value": _drawable(series.values[order]), "expected": _drawable(result.expected[order]),
        "lower": _drawable(result.lower[order]), "upper": _drawable(result.upper[order]),
        "score": result.score[order], "flag": result.flag[order].astype(np.float64),
    }
    x, cols = _with_gaps(ts, cols)
    figure = Figure(figsize=(14, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    _draw_values(top, x, cols)
    _draw_score(bottom, x, cols)
    for ax in (top, bottom):
        _shade(ax, x, cols["flag"] == 1)
    figure.suptitle(
        f"{series.name}: {summary.rows} points, {summary.flagged} flagged, "
        f"{summary.opened} anomalies opened, max score {summary.max_score_text}", fontsize=12,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    except OSError as exc:
        msg = f"{path}: cannot write: {exc.strerror or exc}"
        raise BacktestInputError(msg) from exc


def _drawable(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(values, -_DRAW_LIMIT, _DRAW_LIMIT)


def _with_gaps(
    ts: NDArray[np.int64], cols: dict[str, NDArray[np.float64]]
) -> tuple[NDArray[np.datetime64], dict[str, NDArray[np.float64]]]:
    """Insert a NaN row inside long gaps so lines break there instead of bridging days."""
    steps = np.diff(ts)
    positive = steps[steps > 0]
    if not len(positive):
        return ts.astype("datetime64[ns]"), cols
    gaps = np.flatnonzero(steps > _GAP_FACTOR * np.median(positive)) + 1
    x = np.insert(ts, gaps, ts[gaps - 1] + 1).astype("datetime64[ns]")
    return x, {name: np.insert(col, gaps, np.nan) for name, col in cols.items()}


_DRAW_LIMIT = 1e150


def _draw_values(ax: Axes, x: NDArray[np.datetime64], cols: dict[str, NDArray[np.float64]]) -> None:
    flag = cols["flag"] == 1
    ax.fill_between(x, cols["lower"], cols["upper"], color="tab:blue", alpha=0.18, lw=0,
                    label="expected band (lower..upper)")
    ax.plot(x, cols["expected"], color="tab:blue", lw=0.8, label="expected")
    ax.plot(x, cols["value"], color="0.15", lw=0.7, label="value")
    ax.scatter(x[flag], cols["value"][flag], color="red", s=9, zorder=3,
               label="flagged (anomaly open)")
    ax.set_ylabel("value")
    ax.legend(loc="upper left", fontsize=8, ncols=4, framealpha=0.85)
    ax.grid(alpha=0.3)
    # Keep the band from dictating the range: a wide warm-up band would flatten the series.
    finite = cols["value"][np.isfinite(cols["value"])]
    if len(finite):
        low, high = float(finite.min()), float(finite.max())
        pad = 0.08 * (high - low) or 1.0
        ax.set_ylim(low - pad, high + 2.5 * pad)


def _draw_score(ax: Axes, x: NDArray[np.datetime64], cols: dict[str, NDArray[np.float64]]) -> None:
    score = cols["score"]
    ax.plot(x, np.minimum(score, _SCORE_CAP * 1.1), color="tab:purple", lw=0.7,
            label="anomaly_score")
    ax.axhline(1.0, color="red", ls="--", lw=1, label="threshold (1 = band edge)")
    finite = score[np.isfinite(score)]
    top = float(finite.max()) if len(finite) else 1.0
    ax.set_ylim(0, min(max(2.0, top * 1.1), _SCORE_CAP * 1.15))
    capped = f"\n(capped at {_SCORE_CAP * 1.1:g})" if top > _SCORE_CAP * 1.1 else ""
    ax.set_ylabel(f"anomaly_score{capped}")
    ax.legend(loc="upper left", fontsize=8, ncols=2, framealpha=0.85)
    ax.grid(alpha=0.3)


def _shade(ax: Axes, x: NDArray[np.datetime64], flag: NDArray[np.bool_]) -> None:
    """Shade flagged stretches over the whole height of ``ax``, each at least visible."""
    edges = np.diff(np.r_[0, flag.astype(np.int8), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    if not len(starts):
        return
    if len(starts) > _MAX_SPANS:
        ax.fill_between(x, 0, 1, where=flag, transform=ax.get_xaxis_transform(), color="red",
                        alpha=0.12, lw=0, step="post")
        return
    t = x.astype(np.int64)
    least = (t[-1] - t[0]) * _MIN_SPAN
    for a, b in zip(t[starts].tolist(), t[stops].tolist(), strict=True):
        pad = int(max(0.0, least - (b - a)) / 2)
        span = np.array([a - pad, b + pad], np.int64).astype("datetime64[ns]")
        ax.fill_between(span, 0, 1, transform=ax.get_xaxis_transform(), color="red",
                        alpha=0.15, lw=0)
