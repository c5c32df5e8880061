"""What the labelled-data benchmarks share: one replay of a folder, and plain-text tables.

``replay_folder`` runs the ``backtest`` command's own reader and replay: every CSV file under
the folder is its own series, all backtested together in one engine, as live traffic would
be. Imported by ``nab.py`` and ``msmon.py`` (run as scripts, so this folder is on the path).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from otel_anomaly.exporter.commands.backtest import replay
from otel_anomaly.exporter.commands.backtest_input import InputSeries, read_inputs
from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.backtest import BacktestResult


@dataclass(frozen=True, slots=True)
class Replayed:
    """Inputs and results in the same order, and the wall time of the replay alone."""

    inputs: list[InputSeries]
    results: list[BacktestResult]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(len(s) for s in self.inputs)

    def speed_line(self) -> str:
        per_s = self.rows / self.seconds if self.seconds > 0 else float("inf")
        return (f"backtested {len(self.inputs)} files, {self.rows} rows in "
                f"{self.seconds:.2f}s ({per_s:,.0f} points/s)")


def replay_folder(folder: Path, config: str | None) -> Replayed:
    """Read every CSV under ``folder`` and replay them together with ``config`` (a YAML path)."""
    inputs = read_inputs(folder)
    settings = load_config(config)
    started = time.perf_counter()
    results = replay(settings, inputs, progress=sys.stderr if sys.stderr.isatty() else None)
    return Replayed(inputs, results, time.perf_counter() - started)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"  # noqa: PLR0124 - NaN test
    return str(value)
