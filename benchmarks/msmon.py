"""Microsoft cloud-monitoring set: event recall, false opens and AUC-PR of the live path.

Usage: .venv/bin/python benchmarks/msmon.py [--data ../shared/msmon/data] [--config FILE]

Every CSV under the folder (header ``TimeStamp,Value,Label``) is its own series; all are
backtested together through the ``backtest`` command's own reader and replay (the reader
takes these files as they are: it matches ``timestamp``/``value`` in any case and ignores
``Label``). The product is measured at its ``flag`` operating point, next to two baselines
computed here on the same points: an EWMA z-score (alpha 0.05, 30 points of warm-up, flag
above 3) and a rolling median/MAD z-score (the 100 points before, flag above 3.5).

Rules (positions count rows of one series in time order; a point is one row, so 7 points
are 7 minutes or 7 hours depending on the series):

- Rows whose value is missing are dropped first, for every method (nothing is scored there).
  Duplicated rows in the files (repeated timestamps) are kept, as the product keeps them.
- Warm-up: the first day of each series (rows before its first timestamp + 24 h) counts for
  nothing: events starting there, opens there and its points are left out of every figure.
- An event is a run of consecutive ``Label`` = 1 rows, from s to e. An *open* is a rising
  edge of the flag (flag up at p, down at p - 1). The event is *caught* if an open lies in
  [s, s + 7], or an anomaly opened in [s - 7, s) is still open at s (early, but not stale).
- An open is *true* if it lies in [s, e + 7] of some event or is such an early open, else
  it is *false*. False opens are per series-day after warm-up (span from the first
  timestamp + 24 h to the last one).
- Precision = true opens / opens; recall = caught events / events; F1 = 2PR / (P + R).
- AUC-PR is the average precision of the score against ``Label`` over the rows after
  warm-up of all series pooled (ties share a threshold; NaN scores rank as 0).
- AP/series is the same average precision computed per series (those with a label after
  warm-up) and then averaged: how well the score ranks each series' own points, whatever
  its scale. Pooling also asks that one score means the same on every series, which the
  baselines' raw z-scores do not; this is the figure to read against a per-series
  baseline (issue 7 quotes 0.404 for a rolling median/MAD z-score, this set's 0.408).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from baselines import ewma_zscore, rolling_mad_zscore
from harness import replay_folder, table
from numpy.typing import NDArray

from otel_anomaly.exporter.commands.backtest_input import InputSeries
from otel_anomaly.processors.alerting.silence import duration_text
from otel_anomaly.processors.backtest import BacktestResult

ROOT = Path(__file__).resolve().parents[1]
DAY_NS = 86_400 * 10**9
LATE = 7  # points after an event's start (or before it, for an early open) that still count


@dataclass(frozen=True, slots=True)
class Series:
    """One file's rows with a value, in time order, and what each method made of them."""

    name: str
    ts: NDArray[np.int64]
    labels: NDArray[np.bool_]
    scores: dict[str, NDArray[np.float64]]
    flags: dict[str, NDArray[np.bool_]]

    @property
    def folder(self) -> str:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else "."

    @property
    def warm(self) -> NDArray[np.bool_]:
        """Rows after the first day."""
        return self.ts >= self.ts[0] + DAY_NS


def read_labels(series: InputSeries) -> NDArray[np.bool_]:
    """The ``Label`` cell of every row the product's reader kept (it skips blank lines)."""
    with series.path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [cell.strip().lower() for cell in next(reader)]
        column = header.index("label")
        labels = [row[column].strip() == "1" for row in reader
                  if row and not (len(row) == 1 and not row[0].strip())]
    if len(labels) != len(series):
        msg = f"{series.path}: {len(labels)} labels for {len(series)} rows read by the product"
        raise ValueError(msg)
    return np.asarray(labels, np.bool_)


BASELINES: dict[str, tuple[Callable[[NDArray[np.float64]], NDArray[np.float64]], float]] = {
    "EWMA z (a=0.05, >3)": (ewma_zscore, 3.0),
    "median/MAD z (100, >3.5)": (rolling_mad_zscore, 3.5),
}
PRODUCT = "otel-anomaly (flag)"


def prepare(series: InputSeries, result: BacktestResult) -> Series:
    order = np.argsort(series.ts_unix_nano, kind="stable")
    keep = order[np.isfinite(series.values[order])]
    values = series.values[keep]
    scores = {PRODUCT: np.nan_to_num(result.score[keep], nan=0.0)}
    flags = {PRODUCT: result.flag[keep]}
    for method, (zscore, limit) in BASELINES.items():
        scores[method] = zscore(values)
        flags[method] = scores[method] > limit
    return Series(series.name, series.ts_unix_nano[keep], read_labels(series)[keep],
                  scores, flags)


@dataclass(slots=True)
class Counts:
    """Event-level counts, additive over series."""

    events: int = 0
    caught: int = 0
    opens: int = 0
    false_opens: int = 0
    days: float = 0.0

    def add(self, other: Counts) -> None:
        for name in ("events", "caught", "opens", "false_opens", "days"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def runs(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Start and stop (exclusive) of every run of True."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def event_counts(s: Series, method: str) -> Counts:
    warm = s.warm
    starts, stops = runs(s.labels)
    opened, closed = runs(s.flags[method])
    true_open = np.zeros(len(opened), np.bool_)
    counts = Counts(days=max((int(s.ts[-1]) - int(s.ts[0]) - DAY_NS) / DAY_NS, 0.0))
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        on_time = (opened >= start) & (opened <= start + LATE)
        early = (opened >= start - LATE) & (opened < start) & (closed > start)
        true_open |= early | ((opened >= start) & (opened <= stop - 1 + LATE))
        if warm[start]:
            counts.events += 1
            counts.caught += bool((on_time | early).any())
    counted = warm[opened] if len(opened) else np.zeros(0, np.bool_)
    counts.opens = int(counted.sum())
    counts.false_opens = int((counted & ~true_open).sum())
    return counts


def average_precision(scores: NDArray[np.float64], labels: NDArray[np.bool_]) -> float:
    """Area under the precision-recall step curve (sklearn's ``average_precision_score``)."""
    if not labels.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def figures(label: str, series: Sequence[Series], method: str) -> list[object]:
    total = Counts()
    for s in series:
        total.add(event_counts(s, method))
    scores = np.concatenate([s.scores[method][s.warm] for s in series])
    labels = np.concatenate([s.labels[s.warm] for s in series])
    recall = total.caught / total.events if total.events else float("nan")
    precision = 1 - total.false_opens / total.opens if total.opens else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    per_day = total.false_opens / total.days if total.days else float("nan")
    per_series = [average_precision(s.scores[method][s.warm], s.labels[s.warm])
                  for s in series if s.labels[s.warm].any()]
    ap_per_series = float(np.mean(per_series)) if per_series else float("nan")
    return [label, f"{total.caught}/{total.events}", recall, total.opens, per_day,
            precision, f1, average_precision(scores, labels), ap_per_series]


HEADER = ["", "caught/events", "recall", "opens", "false/series-day", "precision", "F1",
          "AUC-PR", "AP/series"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "msmon" / "data"))
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    replayed = replay_folder(Path(args.data), args.config)
    series = [prepare(s, r) for s, r in zip(replayed.inputs, replayed.results, strict=True)]
    sys.stdout.write(f"{replayed.speed_line()}\n")
    days = sum(event_counts(s, PRODUCT).days for s in series)
    quiet = sum(not s.labels.any() for s in series)
    sys.stdout.write(f"{len(series)} series ({quiet} without any label), {days:.1f} "
                     f"series-days after a 1-day warm-up each\n\n")
    methods = [PRODUCT, *BASELINES]
    sys.stdout.write(table(["method", *HEADER[1:]],
                           [figures(m, series, m) for m in methods]))
    folders = sorted({s.folder for s in series})
    rows = [figures(f"{folder} ({sum(s.folder == folder for s in series)})",
                    [s for s in series if s.folder == folder], PRODUCT) for folder in folders]
    sys.stdout.write(f"\n{PRODUCT} per folder (series)\n")
    sys.stdout.write(table(["folder (series)", *HEADER[1:]], rows))
    # The same methods by the series' spacing: a detector's memories are partly counted in
    # points, which are minutes on one series and hours on another.
    spacing = {s.name: median_spacing_s(s.ts) for s in series}
    by_label: dict[str, list[Series]] = {}
    for s in sorted(series, key=lambda s: spacing[s.name]):
        by_label.setdefault(duration_text(spacing[s.name]), []).append(s)
    rows = [figures(f"{method} [{label}, {len(group)}]", group, method)
            for label, group in by_label.items() for method in methods]
    sys.stdout.write("\nby spacing [spacing, series]\n")
    sys.stdout.write(table(["method [spacing, series]", *HEADER[1:]], rows))
    return 0


def median_spacing_s(ts: NDArray[np.int64]) -> float:
    """A series' median gap between points, in seconds (0 for a single point)."""
    return float(np.median(np.diff(ts))) / 1e9 if len(ts) > 1 else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
