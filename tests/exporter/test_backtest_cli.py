"""``otel-anomaly backtest``: CSV in, one scored row per input row out, through the live path."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from otel_anomaly.exporter.cli import main
from otel_anomaly.exporter.commands import backtest as backtest_run
from otel_anomaly.exporter.commands import backtest_input
from otel_anomaly.exporter.commands.backtest import COLUMNS, series_key
from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine

T0 = datetime(2014, 7, 1, tzinfo=UTC)
FIELDS = ("anomaly_score", "expected", "lower", "upper")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_ANOMALY_"):
            monkeypatch.delenv(name)


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def series(n: int, *, seed: int = 0, spike_at: int | None = None) -> np.ndarray:
    """A NAB-like series: a daily cycle at 5-minute spacing plus noise, maybe one spike."""
    rng = np.random.default_rng(seed)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    if spike_at is not None:
        values[spike_at] += 80
    return values


def write(path: Path, rows: list[tuple[str, str]], header: str = "timestamp,value") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{t},{v}\n" for t, v in rows))
    return path


def regular(values: np.ndarray, step_s: float = 300) -> list[tuple[str, str]]:
    return [(stamp(i * step_s), repr(float(v))) for i, v in enumerate(values)]


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(r[name]) if r[name] else math.nan for r in rows])


def run(*args: str | Path) -> int:
    return main(["backtest", "--no-progress", *map(str, args)])


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def test_single_file_flags_the_spike_and_keeps_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "spike.csv", regular(series(320, spike_at=300)))
    assert run(src, "--output", tmp_path / "out.csv") == 0
    rows = read(tmp_path / "out.csv")
    assert len(rows) == 320
    assert [r["timestamp"] for r in rows] == [t for t, _ in regular(series(320))]
    flags = column(rows, "flag")
    assert flags[300:303].max() == 1, "the spike must be flagged"
    assert flags[:290].sum() == 0, "nothing before the spike is flagged"
    assert column(rows, "anomaly_score")[300] > 1
    out = capsys.readouterr().out
    assert out.startswith("spike.csv: 320 rows, ")
    assert "1 anomalies opened" in out


def test_output_equals_the_live_path_point_by_point(tmp_path: Path) -> None:
    """Unsorted rows, repeated timestamps, irregular steps and missing values: the CSV
    matches feeding the points to ``Engine.ingest_series`` one request at a time."""
    rng = np.random.default_rng(3)
    n = 160
    values = series(n, seed=3, spike_at=140)
    values[[20, 75]] = math.nan
    seconds = np.cumsum(rng.integers(1, 600, n)).astype(float)
    seconds[50:53] = seconds[49]  # repeated timestamps
    rows = [(stamp(s), "" if math.isnan(v) else repr(float(v)))
            for s, v in zip(seconds.tolist(), values.tolist(), strict=True)]
    shuffled = rng.permutation(n)
    src = write(tmp_path / "mixed.csv", [rows[i] for i in shuffled])
    assert run(src, "--output", tmp_path / "out.csv") == 0
    got = read(tmp_path / "out.csv")

    ts = (seconds[shuffled] * 1e9).astype(np.int64) + int(T0.timestamp()) * 10**9
    vals = values[shuffled]
    engine = Engine(load_config(None).engine_settings(clock=lambda: 0.0))
    key = series_key("value", "mixed.csv")
    want = {name: np.full(n, math.nan) for name in (*FIELDS, "flag")}
    want["flag"][:] = 0
    for i in np.argsort(ts, kind="stable").tolist():
        scored = engine.ingest_series([key], ts[i : i + 1], vals[i : i + 1]).scores
        for name, field in zip((*FIELDS, "flag"), ("score", "expected", "lower", "upper",
                                                   "flag"), strict=True):
            if len(scored):
                want[name][i] = getattr(scored, field)[0]
    for name in (*FIELDS, "flag"):
        assert same(column(got, name), want[name]), name
    assert [r["timestamp"] for r in got] == [rows[i][0] for i in shuffled]

    [direct] = backtest(Engine(load_config(None).engine_settings(clock=lambda: 0.0)),
                        [RecordedSeries(key, ts, vals)])
    assert same(column(got, "anomaly_score"), direct.score)
    assert same(column(got, "flag"), direct.flag.astype(float))


def test_unsorted_rows_score_as_sorted_and_keep_input_order(tmp_path: Path) -> None:
    rows = regular(series(150, seed=1, spike_at=130))
    order = np.random.default_rng(1).permutation(len(rows))
    assert run(write(tmp_path / "a" / "s.csv", rows), "--output", tmp_path / "sorted.csv") == 0
    assert run(write(tmp_path / "b" / "s.csv", [rows[i] for i in order]),
               "--output", tmp_path / "shuffled.csv") == 0
    sorted_rows, shuffled_rows = read(tmp_path / "sorted.csv"), read(tmp_path / "shuffled.csv")
    assert shuffled_rows == [sorted_rows[i] for i in order]


def test_gaps_of_days_and_irregular_spacing(tmp_path: Path) -> None:
    values = series(200, seed=2)
    seconds = np.arange(200) * 300.0
    seconds[100:] += 3 * 86_400  # three days without data
    seconds[150:] += 11 * 86_400 + 17
    rows = [(stamp(s), repr(float(v))) for s, v in zip(seconds.tolist(), values.tolist(),
                                                      strict=True)]
    assert run(write(tmp_path / "gaps.csv", rows), "--output", tmp_path / "out.csv") == 0
    got = read(tmp_path / "out.csv")
    assert len(got) == 200
    assert np.isfinite(column(got, "anomaly_score")).all()


def test_folder_is_backtested_together_with_the_results_of_each_file_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write(data / "one" / "x.csv", regular(series(120, seed=4, spike_at=110)))
    later = [(stamp(86_400 * 400 + i * 60), repr(float(v)))
             for i, v in enumerate(series(80, seed=5))]
    write(data / "two" / "deeper" / "y.csv", later)
    assert run(data, "--output", tmp_path / "out") == 0
    summary = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in summary] == [
        "one/x.csv", "two/deeper/y.csv", "total (2 files)"]
    assert summary[-1].startswith("total (2 files): 200 rows, ")
    for name in ("one/x.csv", "two/deeper/y.csv"):
        assert run(data / name, "--output", tmp_path / "alone.csv") == 0
        assert read(tmp_path / "out" / name) == read(tmp_path / "alone.csv")


def test_folder_without_output_prints_a_summary_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write(data / "a.csv", regular(series(3)))  # too short to leave warm-up: scores 0
    write(data / "b.csv", [(stamp(0), "1.5"), (stamp(60), "")])
    assert run(data) == 0
    assert capsys.readouterr().out == (
        "a.csv: 3 rows, 0 flagged, 0 anomalies opened, max score 0.00\n"
        "b.csv: 2 rows, 0 flagged, 0 anomalies opened, max score 0.00, 1 missing values\n"
        "total (2 files): 5 rows, 0 flagged, 0 anomalies opened, max score 0.00, "
        "1 missing values\n"
    )


def test_missing_values_are_kept_as_rows_with_empty_cells(tmp_path: Path) -> None:
    values = [repr(float(v)) for v in series(60)]
    values[10], values[11], values[12] = "", "nan", "NaN"
    rows = [(stamp(i * 300), v) for i, v in enumerate(values)]
    assert run(write(tmp_path / "m.csv", rows), "--output", tmp_path / "out.csv") == 0
    got = read(tmp_path / "out.csv")
    assert len(got) == 60
    for row in got[10:13]:
        assert {k: row[k] for k in COLUMNS[1:]} == {
            "value": "", "anomaly_score": "", "expected": "", "lower": "", "upper": "",
            "flag": "0"}
    assert got[13]["anomaly_score"] != ""


BAD_CELLS = [
    (["timestamp,value", "2014-07-01 00:00:00,1", "2014-07-01 00:05:00,abc"],
     "bad.csv:3: value 'abc' is not a number"),
    (["timestamp,value", "2014-07-01 00:00:00,1", "", "yesterday,2"],
     "bad.csv:4: timestamp 'yesterday' is not ISO 8601"),
    (["timestamp,value", "1404172800,1", "2014-07-01 00:05:00,2"],
     "bad.csv:3: timestamp '2014-07-01 00:05:00' is not a number"),
    (["value,timestamp", "1,2014-07-01 00:00:00", "1"],
     "bad.csv:3: expected at least 2 columns; got 1"),
]
BAD_FILES = [
    (["time,val", "2014-07-01 00:00:00,1"],
     "bad.csv: the header must have `timestamp` and `value` columns (or timestamps, time, "
     "datetime, date, ts; values); got ['time', 'val']"),
    ([], "bad.csv: empty file"),
]


def _fails_with(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str],
                message: str, *flags: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("".join(f"{line}\n" for line in lines))
    assert run(src, "--output", tmp_path / "out.csv", "--plot", tmp_path / "p.png", *flags) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("otel-anomaly: error: ")
    assert message in err
    assert str(src) in err
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(("lines", "message"), BAD_CELLS + BAD_FILES)
def test_strict_stops_at_a_bad_cell_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    _fails_with(tmp_path, capsys, lines, message, "--strict")


@pytest.mark.parametrize(("lines", "message"), BAD_FILES)
def test_a_file_without_the_columns_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    _fails_with(tmp_path, capsys, lines, message)


@pytest.mark.parametrize(("lines", "message"), BAD_CELLS)
def test_a_bad_cell_is_a_warning_and_its_row_is_kept_unscored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("".join(f"{line}\n" for line in lines))
    assert run(src, "--output", tmp_path / "out.csv") == 0
    out, err = capsys.readouterr()
    assert f"otel-anomaly: warning: {src}" in err
    assert message in err
    assert "1 bad cells (rows not scored)" in out
    got = read(tmp_path / "out.csv")
    assert len(got) == len([line for line in lines[1:] if line])
    bad = [row for row in got if row["anomaly_score"] == ""]
    assert len(bad) == 1
    assert {k: bad[0][k] for k in COLUMNS[1:]} == {
        "value": "", "anomaly_score": "", "expected": "", "lower": "", "upper": "", "flag": "0"}


def test_bad_cells_do_not_disturb_the_rows_around_them(tmp_path: Path) -> None:
    values = [repr(float(v)) for v in series(80)]
    clean = write(tmp_path / "clean.csv", [(stamp(i * 300), v) for i, v in enumerate(values)])
    dirty_rows = [(stamp(i * 300), v) for i, v in enumerate(values)]
    dirty_rows[30] = (stamp(30 * 300), "n/a?")
    dirty_rows[50] = ("not a time", values[50])
    dirty = write(tmp_path / "dirty.csv", dirty_rows)
    assert run(clean, "--output", tmp_path / "clean_out.csv") == 0
    assert run(dirty, "--output", tmp_path / "dirty_out.csv") == 0
    a, b = read(tmp_path / "clean_out.csv"), read(tmp_path / "dirty_out.csv")
    assert a[:30] == b[:30]
    assert b[30]["anomaly_score"] == "" and b[50]["anomaly_score"] == ""
    assert b[50]["timestamp"] == "not a time"
    assert all(row["anomaly_score"] != "" for i, row in enumerate(b) if i not in (30, 50))


def test_many_bad_cells_are_reported_once_each_up_to_a_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(stamp(i * 300), "x" if i % 2 else "1.0") for i in range(40)]
    src = write(tmp_path / "many.csv", rows)
    assert run(src) == 0
    err = capsys.readouterr().err
    assert err.count("is not a number") == 10
    assert f"{src}: 10 more bad cells (rows kept, not scored)" in err


def test_bad_cell_from_the_installed_command_has_no_traceback(tmp_path: Path) -> None:
    src = tmp_path / "data" / "sub" / "bad.csv"
    write(src, [(stamp(0), "1"), (stamp(60), "2"), (stamp(120), "1O")])
    command = [str(Path(sys.executable).with_name("otel-anomaly")), "backtest",
               str(tmp_path / "data"), "--strict"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        f"otel-anomaly: error: {src}:4: value '1O' is not a number "
        "(a missing point is an empty cell or nan)\n")


@pytest.mark.parametrize(("scale", "fmt"), [(1, "{}"), (1000, "{}"), (10**9, "{}"),
                                            (1, "{}.0")])
def test_unix_timestamps_read_by_magnitude(tmp_path: Path, scale: int, fmt: str) -> None:
    values = series(50)
    iso = write(tmp_path / "iso.csv", regular(values))
    start = int(T0.timestamp())
    unix = write(tmp_path / "unix.csv", [
        (fmt.format((start + i * 300) * scale), repr(float(v))) for i, v in enumerate(values)])
    assert run(iso, "--output", tmp_path / "iso_out.csv") == 0
    assert run(unix, "--output", tmp_path / "unix_out.csv") == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]  # noqa: E731
    assert strip(read(tmp_path / "unix_out.csv")) == strip(read(tmp_path / "iso_out.csv"))


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_semicolon_tab_and_bar_separated_files_read_like_commas(
    tmp_path: Path, delimiter: str
) -> None:
    rows = regular(series(60, spike_at=50))
    comma = write(tmp_path / "comma.csv", rows)
    other = tmp_path / "other.csv"
    other.write_text(f"timestamp{delimiter}value\n"
                     + "".join(f"{t}{delimiter}{v}\n" for t, v in rows))
    assert run(comma, "--output", tmp_path / "comma_out.csv") == 0
    assert run(other, "--output", tmp_path / "other_out.csv") == 0
    assert read(tmp_path / "other_out.csv") == read(tmp_path / "comma_out.csv")


def test_row_numbers_as_timestamps_are_scored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = series(60)
    numbered = write(tmp_path / "numbered.csv",
                     [(str(i + 1), repr(float(v))) for i, v in enumerate(values)])
    assert run(numbered, "--output", tmp_path / "out.csv") == 0
    err = capsys.readouterr().err
    assert f"otel-anomaly: warning: {numbered}: timestamps run from 1 to 60" in err
    assert "row numbers" in err
    assert len(read(tmp_path / "out.csv")) == 60
    start = int(T0.timestamp())
    unix = write(tmp_path / "unix.csv", [
        (str(start + i * 300), repr(float(v))) for i, v in enumerate(values)])
    assert run(unix, "--output", tmp_path / "unix_out.csv") == 0
    assert "row numbers" not in capsys.readouterr().err


def kpi_file(path: Path, kpis: dict[str, np.ndarray], spike: tuple[str, int]) -> Path:
    """AIOps-KPI layout: a label column first, then one row per series and time."""
    lines = []
    for i in range(max(len(v) for v in kpis.values())):
        for kpi, values in kpis.items():
            if i < len(values):
                label = int((kpi, i) == spike)
                when = int(T0.timestamp()) + i * 300
                lines.append(f"{when},{float(values[i])!r},{label},{kpi}\n")
    path.write_text("timestamp,value,label,KPI ID\n" + "".join(lines))
    return path


def scored(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == (*COLUMNS, "KPI ID")
        return list(reader)


def test_a_file_holding_several_series_scores_each_as_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two series of different lengths and levels in one file, told apart by `KPI ID`; the
    # 0/1 label column before it never tells them apart (both series are 0 at most times).
    a = series(400, seed=1, spike_at=350)
    b = series(300, seed=2) * 3
    src = kpi_file(tmp_path / "kpis.csv", {"a": a, "b": b}, ("a", 350))
    assert run(src, "--output", tmp_path / "out.csv", "--plot", tmp_path / "kpis.png") == 0
    captured = capsys.readouterr()
    assert (f"otel-anomaly: warning: {src}: rows are told apart by column 'KPI ID': "
            "2 series, each scored as its own") in captured.err
    rows = scored(tmp_path / "out.csv")
    assert len(rows) == 700
    # Each series scores exactly as its own file would; the summary adds up their opens.
    opened = 0
    for kpi, values in (("a", a), ("b", b)):
        alone = write(tmp_path / f"{kpi}.csv", [
            (str(int(T0.timestamp()) + i * 300), repr(float(v))) for i, v in enumerate(values)])
        assert run(alone, "--output", tmp_path / f"{kpi}_out.csv") == 0
        opened += int(re.search(r"(\d+) anomalies opened", capsys.readouterr().out)[1])
        own = read(tmp_path / f"{kpi}_out.csv")
        mine = [r for r in rows if r["KPI ID"] == kpi]
        for name in (*FIELDS, "flag"):
            assert [r[name] for r in mine] == [r[name] for r in own], (kpi, name)
    flagged = sum(r["flag"] == "1" for r in rows)
    assert opened >= 1
    assert f"kpis.csv: 700 rows, {flagged} flagged, {opened} anomalies opened" in captured.out
    # ... and one line per series under it, in order of first row.
    lines = captured.out.splitlines()
    assert lines[1].startswith("  kpis.csv [a]: 400 rows, "), lines
    assert lines[2].startswith("  kpis.csv [b]: 300 rows, 0 flagged, 0 anomalies opened"), lines
    assert column([r for r in rows if r["KPI ID"] == "a"], "anomaly_score")[350] > 1
    # One plot per series, named after it.
    for kpi in ("a", "b"):
        assert (tmp_path / f"kpis.{kpi}.png").read_bytes().startswith(b"\x89PNG")
    # --series-column names the column; one the file lacks is an error naming it.
    capsys.readouterr()
    assert run(src, "--series-column", "kpi id", "--output", tmp_path / "named.csv") == 0
    assert scored(tmp_path / "named.csv") == rows
    assert "told apart" not in capsys.readouterr().err  # asked for: no note
    assert run(src, "--series-column", "host", "--output", tmp_path / "no.csv") == 2
    assert "no column 'host' to tell series apart (--series-column)" in capsys.readouterr().err
    assert not (tmp_path / "no.csv").exists()
    # An empty name is no column, even where a header has an empty cell.
    blank = tmp_path / "blank.csv"
    blank.write_text("timestamp,value,\n1,2,x\n")
    assert run(blank, "--series-column", " ", "--output", tmp_path / "no.csv") == 2
    assert "no column ' ' to tell series apart" in capsys.readouterr().err
    # A query returns one series per label set already: the column is refused, not ignored.
    assert run("--prometheus", "http://127.0.0.1:9", "--query", "up",
               "--series-column", "KPI ID") == 2
    assert "--series-column applies to CSV input" in capsys.readouterr().err


def minutely(path: Path, header: str, values: np.ndarray,
             rows_of: Callable[[float], list[str]]) -> Path:
    """A CSV with the rows ``rows_of(value)`` at each minute (their cells after the time)."""
    path.write_text(header + "\n" + "".join(
        f"{int(T0.timestamp()) + i * 60},{row}\n" for i, v in enumerate(values.tolist())
        for row in rows_of(v)))
    return path


def test_a_file_of_several_series_without_a_column_naming_them_gets_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = series(60)
    src = minutely(tmp_path / "kpis.csv", "timestamp,value,host", values,
                   lambda v: [f"{v},web"] * 2)
    assert run(src, "--output", tmp_path / "out.csv") == 0
    err = capsys.readouterr().err
    assert (f"otel-anomaly: warning: {src}: 120 of 120 rows share their timestamp with "
            "another row (other columns: host), and no column tells the series apart") in err
    assert len(read(tmp_path / "out.csv")) == 120
    # A few repeated rows (msmon's files have some) are one series' duplicates: no note.
    single = write(tmp_path / "single.csv", [*regular(values), regular(values)[-1]])
    assert run(single, "--output", tmp_path / "single_out.csv") == 0
    assert "share their timestamp" not in capsys.readouterr().err
    # Rows whose timestamp cannot be read are kept at the time of the row before: they are
    # reported as bad cells, not taken for a second series.
    bad = write(tmp_path / "bad.csv", [
        (stamp(i * 300) if i % 3 == 0 else "not a time", repr(float(v)))
        for i, v in enumerate(values)])
    assert run(bad, "--output", tmp_path / "bad_out.csv") == 0
    err = capsys.readouterr().err
    assert "not a time" in err
    assert "share their timestamp" not in err


def test_a_column_of_too_many_values_is_not_taken_for_the_series_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its cells are let go while the file is read (a wide file's other measurements would
    # otherwise stay in memory as text); naming it still splits the file.
    monkeypatch.setattr(backtest_input, "_MAX_SERIES_FOUND", 3)
    src = minutely(tmp_path / "kpis.csv", "timestamp,value,kpi", series(40),
                   lambda v: [f"{v + k},k{k}" for k in range(4)])
    assert run(src, "--output", tmp_path / "out.csv") == 0
    err = capsys.readouterr().err
    assert ("and no column tells the series apart (a column of more than 3 values is not "
            "looked at)") in err
    assert run(src, "--output", tmp_path / "named.csv", "--series-column", "kpi") == 0
    with (tmp_path / "named.csv").open(newline="") as handle:
        assert {r["kpi"] for r in csv.DictReader(handle)} == {"k0", "k1", "k2", "k3"}
    monkeypatch.setattr(backtest_input, "_MAX_SERIES_FOUND", 4)
    assert run(src, "--output", tmp_path / "found.csv") == 0
    assert "rows are told apart by column 'kpi': 4 series" in capsys.readouterr().err


def test_common_names_of_the_timestamp_and_value_columns(tmp_path: Path) -> None:
    # Yahoo S5's A2-A4 layout names the column `timestamps`; other files say `time`.
    yahoo = tmp_path / "yahoo.csv"
    yahoo.write_text("timestamps,value,anomaly\n" + "".join(
        f"{1416722400 + i * 3600},{v!r},0\n" for i, v in enumerate([1.0, 2.0, 3.0])))
    assert run(yahoo, "--output", tmp_path / "yahoo_out.csv") == 0
    assert [r["value"] for r in read(tmp_path / "yahoo_out.csv")] == ["1.0", "2.0", "3.0"]
    # `ts` in milliseconds, as time-series databases and pandas export it.
    short = tmp_path / "ts.csv"
    short.write_text("ts,value\n" + "".join(
        f"{1416722400000 + i * 60_000},{v!r}\n" for i, v in enumerate([4.0, 5.0])))
    assert run(short, "--output", tmp_path / "ts_out.csv") == 0
    assert [(r["timestamp"], r["value"]) for r in read(tmp_path / "ts_out.csv")] == [
        ("1416722400000", "4.0"), ("1416722460000", "5.0")]
    # With semicolons, and `timestamp` preferred to `time` when a file has both.
    both = tmp_path / "both.csv"
    both.write_text("Time;Values;timestamp\nmorning;5;2014-07-01 00:00:00\n"
                    "noon;6;2014-07-01 00:05:00\n")
    assert run(both, "--output", tmp_path / "both_out.csv") == 0
    rows = read(tmp_path / "both_out.csv")
    assert [(r["timestamp"], r["value"]) for r in rows] == [
        ("2014-07-01 00:00:00", "5"), ("2014-07-01 00:05:00", "6")]


def test_iso_timestamps_with_offsets_and_case_insensitive_header(tmp_path: Path) -> None:
    src = tmp_path / "tz.csv"
    src.write_text("Value,extra,TIMESTAMP\n1,x,2014-07-01T02:00:00+02:00\n2,y,2014-07-01T00:01:00Z\n")
    assert run(src, "--output", tmp_path / "out.csv") == 0
    assert [r["timestamp"] for r in read(tmp_path / "out.csv")] == [
        "2014-07-01T02:00:00+02:00", "2014-07-01T00:01:00Z"]


def test_plot_is_a_png(tmp_path: Path) -> None:
    src = write(tmp_path / "spike.csv", regular(series(120, spike_at=110)))
    assert run(src, "--plot", tmp_path / "plots" / "spike.png") == 0
    png = (tmp_path / "plots" / "spike.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


@pytest.mark.parametrize("edge", [1e308, 1.7e308])
def test_values_near_the_float_limit_still_plot(tmp_path: Path, edge: float) -> None:
    values = [repr(v) for v in ([0.0, edge, -edge, 5.0] * 60)]
    src = write(tmp_path / "edge.csv", [(stamp(i * 300), v) for i, v in enumerate(values)])
    assert run(src, "--output", tmp_path / "out.csv", "--plot", tmp_path / "edge.png") == 0
    assert (tmp_path / "edge.png").read_bytes().startswith(b"\x89PNG")
    assert read(tmp_path / "out.csv")[1]["value"] == repr(edge)  # the CSV keeps the value


def test_folder_plot_is_one_png_per_file(tmp_path: Path) -> None:
    write(tmp_path / "data" / "a" / "x.csv", regular(series(30)))
    write(tmp_path / "data" / "y.csv", regular(series(20)))
    assert run(tmp_path / "data", "--plot", tmp_path / "plots") == 0
    for name in ("a/x.png", "y.png"):
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("args", "message"), [
    (["--plot", "{tmp}/out.png"], "--plot: for an INPUT folder this must be a directory"),
    (["--output", "{tmp}/out.csv"], "--output: for an INPUT folder this must be a directory"),
])
def test_folder_outputs_must_be_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write(tmp_path / "data" / "x.csv", regular(series(5)))
    assert run(tmp_path / "data", *(a.format(tmp=tmp_path) for a in args)) == 2
    assert message in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "x.csv", regular(series(5)))
    assert run(tmp_path / "nowhere") == 2
    assert "INPUT '" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty") == 2
    assert "has no *.csv files" in capsys.readouterr().err
    assert run(src, "--output", src) == 2
    assert "refusing to overwrite it" in capsys.readouterr().err
    assert run(tmp_path, "--output", tmp_path) == 2  # a folder onto itself
    assert f"{tmp_path / 'x.csv'}' is an input file; refusing" in capsys.readouterr().err
    assert run(src, "--plot", tmp_path / "x.svg") == 2
    assert "expected a .png file path" in capsys.readouterr().err
    assert run(src, "--output", tmp_path) == 2
    assert "must be a file path; got directory" in capsys.readouterr().err


def test_config_file_selects_the_detectors(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "detectors:\n"
        "  - name: fast\n"
        "    type: ewma_zscore\n"
        "    params: {alpha: 0.2, warmup: 5}\n"
    )
    values = series(60, spike_at=50)
    src = write(tmp_path / "x.csv", regular(values))
    assert run(src, "--config", config, "--output", tmp_path / "out.csv") == 0
    ts = np.array([int((T0 + timedelta(seconds=i * 300)).timestamp()) * 10**9
                   for i in range(60)], np.int64)
    engine = Engine(load_config(str(config)).engine_settings(clock=lambda: 0.0))
    [want] = backtest(engine, [RecordedSeries(series_key("value", "x.csv"), ts, values)])
    got = column(read(tmp_path / "out.csv"), "anomaly_score")
    assert same(got, want.score)
    assert run(src, "--output", tmp_path / "default.csv") == 0
    assert not same(got, column(read(tmp_path / "default.csv"), "anomaly_score"))


def test_invalid_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "x.csv", regular(series(5)))
    config = tmp_path / "bad.yaml"
    config.write_text("detectors:\n  - name: x\n    type: nope\n")
    assert run(src, "--config", config) == 2
    assert capsys.readouterr().err.startswith(f"invalid configuration in {config}")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "x.csv", regular(series(30)))
    monkeypatch.setattr(backtest_run, "PROGRESS_MIN_ROWS", 10)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["backtest", str(src), "--log-level", "warning"]) == 0
    assert "backtest: 100%" in terminal.getvalue()
    terminal.truncate(0)
    assert main(["backtest", str(src), "--no-progress", "--log-level", "warning"]) == 0
    assert terminal.getvalue() == ""
