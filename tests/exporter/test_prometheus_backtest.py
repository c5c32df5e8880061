"""``otel-anomaly backtest --prometheus``: history from the real Prometheus, replayed as CSV is."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import free_port
from helpers.promtool import prometheus_with_history

from otel_anomaly.exporter import prometheus_history
from otel_anomaly.exporter.cli import main
from otel_anomaly.exporter.commands.backtest import COLUMNS

STEP = 60
POINTS = 2 * 1440  # two days of one-minute points
SPIKE = POINTS - 300


def history(start: int) -> tuple[str, np.ndarray]:
    """OpenMetrics text of queue_depth for two queues; "mail" has one spike."""
    rng = np.random.default_rng(3)
    minutes = np.arange(POINTS)
    lines = ["# TYPE queue_depth gauge"]
    values = {}
    for queue in ("jobs", "mail"):
        v = 40 + 10 * np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 1, POINTS)
        if queue == "mail":
            v[SPIKE] += 60
        values[queue] = v
        lines += [f'queue_depth{{job="worker",queue="{queue}"}} {x:.3f} {start + i * STEP}'
                  for i, x in enumerate(v)]
    return "\n".join([*lines, "# EOF", ""]), values["mail"]


def test_each_series_of_a_query_is_backtested_to_its_own_csv_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prometheus' 11,000-point limit, scaled down so the two days take three queries.
    monkeypatch.setattr(prometheus_history, "MAX_POINTS_PER_QUERY", 1000)
    start = (int(time.time()) // STEP - POINTS - 120) * STEP  # ends two hours ago
    text, mail = history(start)
    with prometheus_with_history(tmp_path, text) as port:
        code = main(["backtest", "--no-progress", "--prometheus", f"http://127.0.0.1:{port}",
                     "--query", 'queue_depth{job="worker"}', "--start", str(start),
                     "--end", str(start + (POINTS - 1) * STEP), "--step", str(STEP),
                     "--output", str(tmp_path / "out"), "--plot", str(tmp_path / "png")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["queue_depth__job=worker__queue=jobs.csv",
                     "queue_depth__job=worker__queue=mail.csv"], names
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        n.replace(".csv", ".png") for n in names]
    with (tmp_path / "out" / names[1]).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == POINTS  # a point per step, none lost or repeated between chunks
    np.testing.assert_allclose([float(r["value"]) for r in rows], mail, atol=1e-3)
    flagged = [i for i, r in enumerate(rows) if r["flag"] == "1"]
    assert SPIKE in flagged, f"spike at {SPIKE} not flagged; flagged {flagged[:20]}"
    assert "queue_depth__job=worker__queue=mail" in printed.out


def test_an_unreachable_query_api_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code = main(["backtest", "--no-progress", "--prometheus", f"http://127.0.0.1:{port}",
                 "--query", "up", "--start", "1700000000", "--end", "1700003600"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"http://127.0.0.1:{port}/api/v1/query_range: cannot reach the query API" in err
