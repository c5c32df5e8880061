"""The ``backtest`` command's work: read CSV inputs, replay them through the live path, write.

Every input file is one series (or several, told apart by a column), all replayed together
in one engine built from the same configuration as ``run``; outputs are written only after
every input has been read and every output path checked, so a bad cell or path fails before
the long part.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from otel_anomaly.exporter.commands.backtest_input import (
    BacktestInputError,
    InputSeries,
    read_inputs,
)
from otel_anomaly.exporter.config import Config
from otel_anomaly.exporter.prometheus_history import HistoryError, file_name, query_range
from otel_anomaly.processors.backtest import BacktestResult, RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.types import SeriesKey

__all__ = [
    "COLUMNS",
    "PROGRESS_MIN_ROWS",
    "BacktestJob",
    "SeriesSummary",
    "replay",
    "run_backtest",
    "series_key",
    "write_csv",
]

_log = logging.getLogger(__name__)

COLUMNS = ("timestamp", "value", "anomaly_score", "expected", "lower", "upper", "flag")
"""Output columns; ``anomaly_score`` means what the exported ``otel_anomaly_score`` means."""
PROGRESS_MIN_ROWS = 5_000
"""Inputs shorter than this finish too fast to need a progress bar."""
PROBLEMS_SHOWN = 10
"""Bad cells reported one by one per file; the rest are counted."""


@dataclass(frozen=True, slots=True)
class PrometheusSource:
    """Series to backtest from a Prometheus-compatible query API: one per returned label set.

    ``start``/``end`` are Unix seconds, ``step`` seconds between points.
    """

    url: str
    query: str
    start: float
    end: float
    step: float = 60.0


@dataclass(frozen=True, slots=True)
class BacktestJob:
    """What to backtest and where results go.

    ``input`` is a CSV file or a folder of them; with ``prometheus`` instead, the series
    come from its query (and are treated as a folder: one output per series).
    ``output`` and ``plot`` are files for a single input file and folders (mirroring the
    input's relative paths) for an input folder. ``progress`` is where a progress bar is
    drawn (``None``: no bar). ``metric`` is the metric name every series is scored as: it
    selects the detector rule, exactly as a live metric's name would. ``strict``: a bad
    cell is an error instead of an unscored row. ``series_column``: the column telling the
    series of a file apart (``None``: found when a file's rows mostly share timestamps).
    """

    input: Path | None
    output: Path | None = None
    plot: Path | None = None
    metric: str = "value"
    progress: TextIO | None = None
    strict: bool = False
    prometheus: PrometheusSource | None = None
    series_column: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """Counts for one backtested series (or the total of a folder)."""

    name: str
    rows: int
    missing: int
    flagged: int
    opened: int
    max_score: float
    bad: int = 0

    @classmethod
    def of(cls, series: InputSeries, result: BacktestResult) -> SeriesSummary:
        """Summarise ``result``; anomalies opened are counted in time order, per series."""
        opened = 0
        for _, rows in series.parts():
            order = rows[np.argsort(series.ts_unix_nano[rows], kind="stable")]
            flag = result.flag[order][np.isfinite(series.values[order])]
            opened += int(np.count_nonzero(flag[1:] & ~flag[:-1])) + int(flag[:1].sum())
        scores = result.score[np.isfinite(result.score)]
        return cls(
            name=series.name, rows=len(series),
            missing=int((~np.isfinite(series.values)).sum()) - len(series.problems),
            flagged=int(result.flag.sum()), opened=opened,
            max_score=float(scores.max()) if len(scores) else math.nan,
            bad=len(series.problems),
        )

    @property
    def max_score_text(self) -> str:
        """``max_score`` for people: 2 decimals, 3 significant digits when huge, or n/a."""
        if math.isnan(self.max_score):
            return "n/a"
        return f"{self.max_score:.2f}" if self.max_score < 1e5 else f"{self.max_score:.3g}"

    def line(self) -> str:
        """One human-readable line."""
        score = self.max_score_text
        missing = f", {self.missing} missing values" if self.missing else ""
        bad = f", {self.bad} bad cells (rows not scored)" if self.bad else ""
        return (f"{self.name}: {self.rows} rows, {self.flagged} flagged, "
                f"{self.opened} anomalies opened, max score {score}{missing}{bad}")


def series_key(metric: str, name: str, part: str = "") -> SeriesKey:
    """Identity of an input file's series: the file only labels it, it never routes it.

    ``part``: the series' name in a file of several (its cell in the file's series column).
    """
    labels = (("file", name),) if not part else (("file", name), ("series", part))
    return SeriesKey(metric, (), labels)


def _replay_clock() -> float:
    # A replay has no ingest time: the clock only drives TTL eviction, which never runs.
    return 0.0


def replay(
    config: Config,
    inputs: Sequence[InputSeries],
    metric: str = "value",
    progress: TextIO | None = None,
) -> list[BacktestResult]:
    """Backtest every input together in one engine built from ``config``.

    ``max_series`` is raised to the number of inputs if needed: it bounds a live sidecar's
    memory, and a replay must score every file it was given.
    """
    parts = [(i, s, part, rows) for i, s in enumerate(inputs) for part, rows in s.parts()]
    settings = config.engine_settings(clock=_replay_clock)
    engine = Engine(replace(settings, max_series=max(settings.max_series, len(parts))))
    series = [RecordedSeries(series_key(s.metric or metric, s.name, part),
                             s.ts_unix_nano[rows], s.values[rows]) for _, s, part, rows in parts]
    total = sum(len(s) for s in inputs)
    hidden = progress is None or total < PROGRESS_MIN_ROWS
    with tqdm(total=total, file=progress, disable=hidden, unit="pt", unit_scale=True,
              desc="backtest", mininterval=0.5, dynamic_ncols=True) as bar:
        results = backtest(engine, series, progress=bar.update)
    # Back to one result per file, in its row order.
    merged = [_empty_result(len(s)) for s in inputs]
    for (i, _, _, rows), result in zip(parts, results, strict=True):
        for name in ("score", "expected", "lower", "upper", "flag"):
            getattr(merged[i], name)[rows] = getattr(result, name)
    return merged


def _empty_result(n: int) -> BacktestResult:
    return BacktestResult(score=np.full(n, np.nan), expected=np.full(n, np.nan),
                          lower=np.full(n, np.nan), upper=np.full(n, np.nan),
                          flag=np.zeros(n, np.bool_))


def run_backtest(
    config: Config, job: BacktestJob, out: TextIO, err: TextIO | None = None
) -> list[SeriesSummary]:
    """Read, replay, write CSVs and plots, and print one summary line per series to ``out``.

    Bad cells are reported to ``err`` as warnings (``file:line``), at most
    ``PROBLEMS_SHOWN`` per file, before the replay.

    Raises
    ------
    BacktestInputError
        For an unusable input or output path, or with ``job.strict`` a bad input cell
        (nothing is written).
    """
    folder = job.prometheus is not None or (job.input is not None and job.input.is_dir())
    _check_target("--output", job.output, folder, ".csv")
    _check_target("--plot", job.plot, folder, ".png")
    inputs = _read(job)
    if err is not None:
        _warn_problems(err, inputs)
    csvs = [_target(job.output, s.name, folder, ".csv") for s in inputs] if job.output else []
    _check_not_an_input(csvs, inputs)
    started = time.perf_counter()
    results = replay(config, inputs, job.metric, job.progress)
    elapsed = time.perf_counter() - started
    rows = sum(len(s) for s in inputs)
    _log.info("backtested %d rows of %d series in %.2fs (%.0f points/s)", rows,
              sum(len(set(s.series_ids)) or 1 for s in inputs), elapsed,
              rows / elapsed if elapsed > 0 else math.inf)
    for path, s, r in zip(csvs, inputs, results, strict=False):
        write_csv(path, s, r)
    summaries = [SeriesSummary.of(s, r) for s, r in zip(inputs, results, strict=True)]
    # A file of several series: each series on its own (plot, summary line).
    pieces = [_pieces(s, r) for s, r in zip(inputs, results, strict=True)]
    if job.plot is not None:
        from otel_anomaly.exporter.commands.backtest_plot import plot_series  # noqa: PLC0415 - slow

        for s, r, summary, parts in zip(inputs, results, summaries, pieces, strict=True):
            target = _target(job.plot, s.name, folder, ".png")
            if not parts:
                plot_series(target, s, r, summary)
            for part, one, result, one_summary in parts:
                plot_series(target.with_name(f"{target.stem}.{_safe(part)}.png"), one, result,
                            one_summary)
    for summary, parts in zip(summaries, pieces, strict=True):
        out.write(f"{summary.line()}\n")
        out.writelines(f"  {one_summary.line()}\n" for *_, one_summary in parts)
    if folder:
        out.write(f"{_total(summaries).line()}\n")
    return summaries


def _pieces(
    series: InputSeries, result: BacktestResult,
) -> list[tuple[str, InputSeries, BacktestResult, SeriesSummary]]:
    """Each series of a file of several, as a file of its own (none for a file of one)."""
    if not series.series_ids:
        return []
    out = []
    for part, rows in series.parts():
        one, mine = series.part(f"{series.name} [{part}]", rows), _rows_of(result, rows)
        out.append((part, one, mine, SeriesSummary.of(one, mine)))
    return out


def _rows_of(result: BacktestResult, rows: np.ndarray) -> BacktestResult:
    return BacktestResult(score=result.score[rows], expected=result.expected[rows],
                          lower=result.lower[rows], upper=result.upper[rows],
                          flag=result.flag[rows])


def _safe(name: str) -> str:
    """A series' name as part of a file name: letters, digits, ``-`` and ``_`` kept."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "_"


def _read(job: BacktestJob) -> list[InputSeries]:
    if job.prometheus is not None:
        if job.series_column is not None:
            msg = ("--series-column applies to CSV input; a --prometheus query already "
                   "returns one series per label set")
            raise BacktestInputError(msg)
        return prometheus_inputs(job.prometheus)
    if job.input is None:
        msg = "nothing to backtest: give an INPUT file or folder, or --prometheus and --query"
        raise BacktestInputError(msg)
    return read_inputs(job.input, strict=job.strict, series_column=job.series_column)


def prometheus_inputs(source: PrometheusSource) -> list[InputSeries]:
    """The series ``source``'s query returns, as inputs named after their labels.

    Raises
    ------
    BacktestInputError
        If the query API cannot be read or the query returns no series.
    """
    try:
        history = query_range(source.url, source.query, source.start, source.end, source.step)
    except HistoryError as exc:
        raise BacktestInputError(str(exc)) from None
    if not history:
        msg = (f"query {source.query!r} returned no series between {source.start:g} and "
               f"{source.end:g}")
        raise BacktestInputError(msg)
    inputs, names = [], set()
    for series in history:
        name = file_name(series)
        while name in names:  # labels that differ only in unsafe characters
            name += "_"
        names.add(name)
        stamps = [str(t / 1e9) if t % 10**9 else str(t // 10**9)
                  for t in series.ts_unix_nano.tolist()]
        texts = ["" if v != v else repr(v) for v in series.values.tolist()]  # noqa: PLR0124
        inputs.append(InputSeries(
            name=name, path=Path(name), stamps=stamps, texts=texts,
            ts_unix_nano=series.ts_unix_nano, values=series.values,
            metric=dict(series.labels).get("__name__", "")))
    return inputs


def _warn_problems(err: TextIO, inputs: Sequence[InputSeries]) -> None:
    for series in inputs:
        for note in series.notes:
            err.write(f"otel-anomaly: warning: {note}\n")
        for problem in series.problems[:PROBLEMS_SHOWN]:
            err.write(f"otel-anomaly: warning: {problem}\n")
        more = len(series.problems) - PROBLEMS_SHOWN
        if more > 0:
            err.write(f"otel-anomaly: warning: {series.path}: {more} more bad cells "
                      f"(rows kept, not scored)\n")


def _total(summaries: Sequence[SeriesSummary]) -> SeriesSummary:
    scores = [s.max_score for s in summaries if not math.isnan(s.max_score)]
    return SeriesSummary(
        name=f"total ({len(summaries)} files)", rows=sum(s.rows for s in summaries),
        missing=sum(s.missing for s in summaries), flagged=sum(s.flagged for s in summaries),
        opened=sum(s.opened for s in summaries), max_score=max(scores, default=math.nan),
        bad=sum(s.bad for s in summaries),
    )


def _check_target(flag: str, path: Path | None, folder: bool, suffix: str) -> None:
    if path is None:
        return
    if folder and (path.is_file() or (not path.exists() and path.suffix.lower() == suffix)):
        msg = (f"{flag}: for an INPUT folder this must be a directory (one file per input); "
               f"got {str(path)!r}")
        raise BacktestInputError(msg)
    if not folder and path.is_dir():
        msg = f"{flag}: for an INPUT file this must be a file path; got directory {str(path)!r}"
        raise BacktestInputError(msg)
    if not folder and suffix == ".png" and path.suffix.lower() != suffix:
        msg = f"{flag}: expected a .png file path; got {str(path)!r}"
        raise BacktestInputError(msg)


def _check_not_an_input(targets: Sequence[Path], inputs: Sequence[InputSeries]) -> None:
    sources = {s.path.resolve() for s in inputs}
    for target in targets:
        if target.resolve() in sources:
            msg = f"--output: {str(target)!r} is an input file; refusing to overwrite it"
            raise BacktestInputError(msg)


def _target(base: Path, name: str, folder: bool, suffix: str) -> Path:
    """Where one input's output goes: ``base`` itself, or its relative path under ``base``."""
    return base / Path(name).with_suffix(suffix) if folder else base


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create {str(path.parent)!r}: {exc.strerror or exc}"
        raise BacktestInputError(msg) from exc


def _cells(values: np.ndarray) -> list[str]:
    # repr is the shortest text that reads back as the same float; NaN cells stay empty.
    return ["" if v != v else repr(v) for v in values.tolist()]  # noqa: PLR0124 - NaN test


_WRITE_ROWS = 65_536


def _output_rows(
    series: InputSeries, result: BacktestResult, rows: slice,
) -> Iterator[tuple[str, ...]]:
    """The output rows of input rows ``rows``: the ``COLUMNS``, then the series column."""
    cells = [
        series.stamps[rows], series.texts[rows], _cells(result.score[rows]),
        _cells(result.expected[rows]), _cells(result.lower[rows]), _cells(result.upper[rows]),
        ["1" if f else "0" for f in result.flag[rows].tolist()],
    ]
    if series.series_ids:
        cells.append(list(series.series_ids[rows]))
    return zip(*cells, strict=True)


def write_csv(path: Path, series: InputSeries, result: BacktestResult) -> None:
    """Write one row per input row, in input order: the ``COLUMNS``, timestamps as given.

    A file of several series gets its ``series_column`` last, as given.
    """
    header = list(COLUMNS)
    if series.series_ids:
        header.append(series.series_column)
    _make_parent(path)
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            # In slices: the text of every cell of a file of millions of rows at once
            # would take gigabytes.
            for start in range(0, len(series), _WRITE_ROWS):
                writer.writerows(_output_rows(series, result, slice(start, start + _WRITE_ROWS)))
    except OSError as exc:
        msg = f"{path}: cannot write: {exc.strerror or exc}"
        raise BacktestInputError(msg) from exc
