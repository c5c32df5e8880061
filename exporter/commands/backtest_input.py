"""Backtest input: CSV files with ``timestamp`` and ``value`` columns (the NAB layout).

A file's header must name a ``timestamp`` and a ``value`` column (any case, any position;
other columns are ignored; ``TIME_COLUMNS`` and ``VALUE_COLUMNS`` list the other names
taken, such as Yahoo S5's ``timestamps``). Cells are separated by commas, or by
semicolons, tabs or bars where the header is (the first of these that splits it into both
names). Each following non-blank line is one point:

- ``timestamp`` is ISO 8601 (``2014-07-01T00:00:00Z``, ``2014-07-01 00:00:00`` as in NAB,
  with or without an offset; naive times are read as UTC), or Unix time as a number.
  Which one is decided by the file's first row. The unit of Unix times is decided by the
  largest magnitude in the file: below 1e11 seconds, below 1e14 milliseconds, below 1e17
  microseconds, else nanoseconds (so any time between 1973 and 2262 reads right). Unix
  times that all fall before 1973 are most likely row numbers (``1, 2, 3`` ...): they are
  read as seconds all the same, and the file gets a note saying so, since the daily and
  weekly profiles then see seconds where the data had hours or days.
- ``value`` is a number. An empty cell, ``nan``, ``na``, ``n/a``, ``null`` or ``none`` (any
  case) is a missing point: it is kept as a row, scored as not finite (empty output
  cells), and never learned.

Rows need not be sorted and timestamps may repeat. A file whose rows mostly repeat another
row's timestamp holds several series (the AIOps KPI layout: ``timestamp,value,label,KPI
ID``). When one other column tells them apart (within each of its values no timestamp
repeats, and it has from 2 to half as many values as rows, and at most 100,000), each of its
values is scored as its own series and the file gets a note naming the column;
``series_column`` names the column instead (any number of values). A label column never
qualifies: rows of one label share timestamps. Without such a column the file is scored as
one series, with a note saying so. A bad cell (a value that is not a number, a timestamp
that cannot be read, a row with too few columns) does not stop the backtest: its row is kept
like a missing point (at the time of the row before it) and the problem is recorded, naming
``file:line`` and the cell; with ``strict`` it is an error instead. A file without a
``timestamp``/``value`` header is always an error.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.exporter.errors import ExporterError

if TYPE_CHECKING:
    from _csv import Reader

__all__ = ["BacktestInputError", "InputSeries", "find_inputs", "read_inputs", "read_series"]

MISSING_VALUES = frozenset({"", "nan", "na", "n/a", "null", "none"})
"""Value cells (lower-cased) that mean "no value at this time"."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INT64_MAX = 2**63 - 1
# Upper bounds of |t| for Unix seconds, milliseconds and microseconds; above: nanoseconds.
_UNIT_LIMITS = ((1e11, 10**9), (1e14, 10**6), (1e17, 10**3))
# Unix seconds below this (1973-03-03) are more likely row numbers than times.
_ROW_NUMBERS_BELOW = 1e8
# A file where at least this share of rows repeat another row's time holds several series.
_SEVERAL_SERIES_SHARE = 0.5
# Rows of one series of such a file that may repeat its time (duplicated rows) and still
# let a column be taken as the series' name.
_DUPLICATE_SHARE = 0.01
# A column with more distinct values than this is not looked at as the series' name (the
# sidecar's default series cap): its cells are let go while the file is read, so a wide
# file's other measurements do not stay in memory as text. ``--series-column`` still
# takes any column.
_MAX_SERIES_FOUND = 100_000
TIME_COLUMNS = ("timestamp", "timestamps", "time", "datetime", "date", "ts")
"""Names of the timestamp column (any case), the first found in this order: NAB's, then
Yahoo S5's ``timestamps`` and other common ones (``ts``: exports of time-series databases
and pandas frames)."""
VALUE_COLUMNS = ("value", "values")
"""Names of the value column (any case), the first found in this order."""
DELIMITERS = (",", ";", "\t", "|")
"""Cell separators a header may use; a comma unless another splits it into the two names."""


class BacktestInputError(ExporterError):
    """An input (or output) path cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class InputSeries:
    """One input file, parsed: one entry per data row, in file order.

    ``name`` is the path relative to the INPUT folder (the file name for a single file);
    ``stamps`` and ``texts`` are the timestamp and value cells as given (``texts`` is empty
    where the value is missing or bad). ``problems`` names every bad cell (``file:line:
    ...``); those rows are kept, not scored. ``notes`` are warnings about the file as a
    whole (timestamps that look like row numbers). ``metric``: the metric name the series
    is scored as when its source names one (a Prometheus series' ``__name__``); empty for
    CSV files, which are scored as the backtest's ``--metric``.
    """

    name: str
    path: Path
    stamps: list[str]
    texts: list[str]
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]
    problems: tuple[str, ...] = ()
    metric: str = ""
    notes: tuple[str, ...] = ()
    series_column: str = ""
    series_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.stamps)

    def parts(self) -> list[tuple[str, NDArray[np.intp]]]:
        """Each series of the file and its rows (in file order), in order of first row.

        A file of one series is one part named ``""``.

        >>> s = InputSeries("k.csv", Path("k.csv"), ["1", "1", "2"], ["5", "7", "6"],
        ...                 np.array([1, 1, 2]), np.array([5.0, 7.0, 6.0]),
        ...                 series_column="id", series_ids=("b", "a", "b"))
        >>> [(name, rows.tolist()) for name, rows in s.parts()]
        [('b', [0, 2]), ('a', [1])]
        """
        if not self.series_ids:
            return [("", np.arange(len(self), dtype=np.intp))]
        names, first, inverse = np.unique(np.asarray(self.series_ids, dtype=object),
                                          return_index=True, return_inverse=True)
        # Rows grouped by series (file order within each), in one sort: not a pass per series.
        grouped = np.argsort(inverse, kind="stable").astype(np.intp)
        rows = np.split(grouped, np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1])
        return [(str(names[i]), rows[i]) for i in np.argsort(first, kind="stable").tolist()]

    def part(self, name: str, rows: NDArray[np.intp]) -> InputSeries:
        """The rows ``rows`` as a file of one series, named ``name`` (for plots)."""
        pick = rows.tolist()
        return InputSeries(name, self.path, [self.stamps[i] for i in pick],
                           [self.texts[i] for i in pick], self.ts_unix_nano[rows],
                           self.values[rows], metric=self.metric)


def find_inputs(path: Path) -> list[tuple[Path, str]]:
    """The CSV files to backtest and their names: ``path`` itself, or every ``*.csv`` under it.

    Raises
    ------
    BacktestInputError
        If ``path`` does not exist, or is a folder without CSV files.
    """
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        msg = f"INPUT {str(path)!r} does not exist (expected a CSV file or a folder of them)"
        raise BacktestInputError(msg)
    files = sorted(
        p for p in path.rglob("*") if p.suffix.lower() == ".csv" and p.is_file()
    )
    if not files:
        msg = f"INPUT folder {str(path)!r} has no *.csv files"
        raise BacktestInputError(msg)
    return [(p, p.relative_to(path).as_posix()) for p in files]


def read_inputs(
    path: Path, *, strict: bool = False, series_column: str | None = None,
) -> list[InputSeries]:
    """Read ``path`` (a CSV file or a folder of them, recursively), every file a series.

    A file holding several series is split by the column that tells them apart (see the
    module's text), or by ``series_column`` when it is given.
    """
    return [read_series(file, name, strict=strict, series_column=series_column)
            for file, name in find_inputs(path)]


def read_series(
    path: Path, name: str | None = None, *, strict: bool = False,
    series_column: str | None = None,
) -> InputSeries:
    """Read one CSV file; bad cells are recorded in ``problems`` (raised when ``strict``).

    Raises
    ------
    BacktestInputError
        Naming the file if it cannot be read, has no ``timestamp``/``value`` header or no
        ``series_column`` (when given), and with ``strict``, naming ``file:line`` and the
        cell of the first bad cell.
    """
    source = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            delimiter = _delimiter(handle.readline())
            handle.seek(0)
            return _parse(csv.reader(handle, delimiter=delimiter), source, name or path.name,
                          path, strict, series_column)
    except OSError as exc:
        msg = f"{source}: cannot read: {exc.strerror or exc}"
        raise BacktestInputError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise BacktestInputError(msg) from exc
    except csv.Error as exc:
        msg = f"{source}: malformed CSV: {exc}"
        raise BacktestInputError(msg) from exc


def _delimiter(header: str) -> str:
    """The separator of ``DELIMITERS`` that splits ``header`` into both names (else a comma)."""
    for delimiter in DELIMITERS:
        names = [cell.strip().strip('"').lower() for cell in header.split(delimiter)]
        if _named(names, TIME_COLUMNS) is not None and _named(names, VALUE_COLUMNS) is not None:
            return delimiter
    return ","


def _named(names: list[str], accepted: tuple[str, ...]) -> int | None:
    """The position of the first of ``accepted`` (in its order) among ``names``, if any."""
    return next((names.index(name) for name in accepted if name in names), None)


def _columns(header: list[str], source: str) -> tuple[int, int]:
    names = [cell.strip().lower() for cell in header]
    t_col, v_col = _named(names, TIME_COLUMNS), _named(names, VALUE_COLUMNS)
    if t_col is None or v_col is None:
        msg = (f"{source}: the header must have `timestamp` and `value` columns (or "
               f"{', '.join(TIME_COLUMNS[1:])}; {', '.join(VALUE_COLUMNS[1:])}); "
               f"got {header!r}")
        raise BacktestInputError(msg)
    return t_col, v_col


def _id_column(header: list[str], series_column: str, source: str) -> int:
    wanted = series_column.strip().lower()
    found = _named([cell.strip().lower() for cell in header], (wanted,)) if wanted else None
    if found is None:
        msg = (f"{source}: no column {series_column!r} to tell series apart "
               f"(--series-column); the header is {header!r}")
        raise BacktestInputError(msg)
    return found


def _parse(
    reader: Reader, source: str, name: str, path: Path, strict: bool,
    series_column: str | None = None,
) -> InputSeries:
    header = next(reader, None)
    if header is None:
        msg = f"{source}: empty file (expected a header with `timestamp` and `value`)"
        raise BacktestInputError(msg)
    t_col, v_col = _columns(header, source)
    given = None if series_column is None else _id_column(header, series_column, source)
    if given in (t_col, v_col):
        msg = f"{source}: --series-column {series_column!r} is the timestamp or value column"
        raise BacktestInputError(msg)
    others = [i for i, cell in enumerate(header)
              if i not in (t_col, v_col) and cell.strip()] if given is None else [given]
    cells: dict[int, list[str]] = {i: [] for i in others}  # other columns, per row
    # One string per distinct cell of a column: a series' name repeats on every row.
    distinct: dict[int, dict[str, str]] = {i: {} for i in others}
    width = max(t_col, v_col) + 1
    stamps: list[str] = []
    texts: list[str] = []
    raw: list[int | float | None] = []  # None: the row's timestamp could not be read
    values: list[float] = []
    problems: list[str] = []
    numeric: bool | None = None
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        where = f"{source}:{reader.line_num}"
        if cells:
            _keep_cells(row, cells, distinct, given)
        try:
            if len(row) < width:
                msg = f"{where}: expected at least {width} columns; got {len(row)}: {row!r}"
                raise BacktestInputError(msg)
            stamp, text = row[t_col].strip(), row[v_col].strip()
            if numeric is None:
                numeric = _unix_time(stamp) is not None
            when = _stamp(stamp, numeric, where)
            value = _value(text, where)
        except BacktestInputError as exc:
            if strict:
                raise
            problems.append(f"{exc}; the row is kept, not scored")
            stamps.append(row[t_col] if len(row) > t_col else "")
            texts.append("")
            raw.append(None)
            values.append(math.nan)
            continue
        stamps.append(row[t_col])
        texts.append("" if math.isnan(value) else text)
        raw.append(when)
        values.append(value)
    series = InputSeries(name, path, stamps, texts, _to_unix_nano(raw, numeric is True, source),
                         np.asarray(values, np.float64), tuple(problems),
                         notes=_row_number_note(raw, numeric is True, source))
    return _split(series, raw, header, (t_col, v_col), cells, distinct, given)


def _keep_cells(
    row: list[str], cells: dict[int, list[str]], distinct: dict[int, dict[str, str]],
    given: int | None,
) -> None:
    """Append the row's cell of each column still looked at; drop columns of too many values."""
    wide = False
    for i, column in cells.items():
        cell = row[i].strip() if len(row) > i else ""
        seen = distinct[i]
        column.append(seen.setdefault(cell, cell))
        wide = wide or (len(seen) > _MAX_SERIES_FOUND and i != given)
    if wide:  # rare: once per dropped column and file
        for i in [i for i in cells if len(distinct[i]) > _MAX_SERIES_FOUND and i != given]:
            del cells[i], distinct[i]


def _split(
    series: InputSeries, raw: list[int | float | None], header: list[str],
    used: tuple[int, int], cells: dict[int, list[str]], distinct: dict[int, dict[str, str]],
    given: int | None,
) -> InputSeries:
    """``series``, its rows told apart by column ``given`` or by the one found.

    A column is looked for when most rows share their timestamp; the note says which was
    found, or that none was. ``distinct``: each column's distinct cells.
    """
    source = str(series.path)
    # Rows whose timestamp was readable (the others sit at the time of the row before).
    good = np.fromiter((x is not None for x in raw), np.bool_, len(raw))
    times = series.ts_unix_nano[good]
    repeated, known = _repeated(times), len(times)
    several = known >= 2 and repeated >= _SEVERAL_SERIES_SHARE * known
    column = given if given is not None else (
        _identifying_column(times, good, cells, distinct) if several else None)
    if column is None:
        if not several:
            return series
        return replace(series, notes=series.notes + _several_series_note(
            repeated, known, header, used, source))
    ids = tuple(cells[column])
    notes = series.notes
    if given is None:  # found, not asked for: say so
        notes += (f"{source}: rows are told apart by column {header[column].strip()!r}: "
                  f"{len(distinct[column])} series, each scored as its own",)
    return replace(series, notes=notes, series_column=header[column].strip(), series_ids=ids)


def _repeated(times: NDArray[np.int64]) -> int:
    """How many of ``times`` (the readable ones) another one equals.

    A row whose timestamp could not be read is kept at the time of the row before it, which
    is not a repeat (its problem is reported already), so it is not among ``times``.
    """
    ordered = np.sort(times)
    same = ordered[1:] == ordered[:-1]
    repeats = np.zeros(len(ordered), np.bool_)
    repeats[1:] |= same
    repeats[:-1] |= same
    return int(np.count_nonzero(repeats))


def _identifying_column(
    times: NDArray[np.int64], good: NDArray[np.bool_], cells: dict[int, list[str]],
    distinct: dict[int, dict[str, str]],
) -> int | None:
    """The first column within each of whose values readable timestamps (almost) never repeat.

    It must have at least 2 values and at most half as many as rows (a row number or a
    second measurement is not a series name). Up to ``_DUPLICATE_SHARE`` of the rows may
    repeat a time within their series (recordings have a few duplicated rows). A label
    column never qualifies: its rows share timestamps (every series is normal at most times).
    ``times``: the readable rows' times; ``good``: which rows they are.
    """
    for column, ids in cells.items():
        if not 2 <= len(distinct[column]) <= len(good) / 2:
            continue
        code_of = {cell: code for code, cell in enumerate(distinct[column])}
        codes = np.fromiter((code_of[cell] for cell in ids), np.int64, len(ids))[good]
        # Rows sorted by (time, value): a repeat is a row equal to the one before it.
        order = np.lexsort((codes, times))
        t, c = times[order], codes[order]
        repeats = np.count_nonzero((t[1:] == t[:-1]) & (c[1:] == c[:-1]))
        if repeats <= _DUPLICATE_SHARE * len(times):
            return column
    return None


def _several_series_note(
    repeated: int, known: int, header: list[str], used: tuple[int, int], source: str,
) -> tuple[str, ...]:
    """The note for a file whose rows mostly repeat a time, with no column telling them apart."""
    others = [cell.strip() for i, cell in enumerate(header) if i not in used and cell.strip()]
    which = f" (other columns: {', '.join(others)})" if others else ""
    return (f"{source}: {repeated} of {known} rows share their timestamp with another "
            f"row{which}, and no column tells the series apart (a column of more than "
            f"{_MAX_SERIES_FOUND:,} values is not looked at): if the file holds several "
            "series, give each its own file or name the column with --series-column; here "
            "they are scored as one series, in time order",)


def _row_number_note(
    raw: list[int | float | None], numeric: bool, source: str,
) -> tuple[str, ...]:
    """A note when every Unix time falls before 1973: likely row numbers, not times."""
    known = [x for x in raw if x is not None]
    if not numeric or not known or max(abs(x) for x in known) >= _ROW_NUMBERS_BELOW:
        return ()
    first, last = min(known), max(known)
    return (f"{source}: timestamps run from {first:g} to {last:g}: read as Unix seconds, "
            f"{last - first:g} s of data in {1970 + int(last // 31_557_600)}; if they are row "
            "numbers, give real times (ISO 8601 or Unix time): the daily and weekly profiles "
            "need days of event time, so these rows are scored without them",)


def _value(text: str, where: str) -> float:
    if text.lower() in MISSING_VALUES:
        return math.nan
    try:
        return float(text)
    except ValueError:
        msg = (f"{where}: value {text!r} is not a number "
               f"(a missing point is an empty cell or nan)")
        raise BacktestInputError(msg) from None


def _unix_time(stamp: str) -> int | float | None:
    try:
        return int(stamp)
    except ValueError:
        pass
    try:
        number = float(stamp)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _stamp(stamp: str, numeric: bool, where: str) -> int | float:
    """Unix time as found (unit decided later), or ISO 8601 as integer nanoseconds."""
    if numeric:
        number = _unix_time(stamp)
        if number is None:
            msg = (f"{where}: timestamp {stamp!r} is not a number (the file's first "
                   f"timestamp is Unix time, so every one must be)")
            raise BacktestInputError(msg)
        return number
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        msg = (f"{where}: timestamp {stamp!r} is not ISO 8601 "
               f"(e.g. 2014-07-01 00:00:00 or 2014-07-01T00:00:00Z) or Unix time")
        raise BacktestInputError(msg) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    nanos = (parsed - _EPOCH) // _MICROSECOND * 1000
    if not -_INT64_MAX <= nanos <= _INT64_MAX:
        msg = f"{where}: timestamp {stamp!r} is outside 1677-09-22..2262-04-11"
        raise BacktestInputError(msg)
    return nanos


def _to_unix_nano(
    raw: list[int | float | None], numeric: bool, source: str
) -> NDArray[np.int64]:
    """Nanoseconds per row; a row whose timestamp was bad takes the time of the row before."""
    known = [x for x in raw if x is not None]
    if not known:
        return np.zeros(len(raw), np.int64)
    scale = 1
    if numeric:
        largest = max(abs(x) for x in known)
        scale = next((s for limit, s in _UNIT_LIMITS if largest < limit), 1)
    try:
        # Whole numbers scale exactly (Python ints); fractions round to the nanosecond.
        nanos = np.fromiter((x * scale if isinstance(x, int) else round(x * scale)
                             for x in known), np.int64, len(known))
    except OverflowError:
        nanos = None
    if nanos is None or (len(nanos) and nanos.min() == np.iinfo(np.int64).min):
        msg = f"{source}: Unix timestamps beyond the year 2262"
        raise BacktestInputError(msg)
    # A bad row takes the time of the good row before it (the first good row's if none is).
    good = np.fromiter((x is not None for x in raw), np.bool_, len(raw))
    order = np.cumsum(good) - 1  # each row's latest good row, among the good ones
    out: NDArray[np.int64] = nanos[np.maximum(order, 0)]
    return out
