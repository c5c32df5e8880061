"""Low-count rates (a counter's events over its interval): false opens, bursts and drops.

Usage: .venv/bin/python benchmarks/low_counts.py [--step 60] [--series 10] [--no-exposure]
    [--burst-size 1]

Each series is Poisson counts of events per interval with a daily cycle (x1 +- 0.5), sent
as a rate (events / step) named ``app_events_total:rate`` through ``backtest`` with the
default engine. With ``--burst-size S`` the events arrive in bursts of S on average
(``processors.testing.bursty_counts``: a variance 2S - 1 times Poisson's), as retries or
a stack trace's log lines do. Each row carries its exposure (``counts`` = step seconds)
as the live path gives a counter's rate, a window of calls or log records;
``--no-exposure`` leaves it out (the rates as a gauge would be judged: the comparison that
shows what the count floor does).

Printed per mean count per interval (0.02 to 100 events):

- false opens per series-day over the first 2 days (a young series, still learning how
  its counts vary), then over the 12 days after them (controls, 14 days);
- bursts: on day 10, 10 intervals with 3 (or 10) more events on average; caught if flagged
  in them;
- a lasting rise: on day 10, the rate x5 for 30 minutes (at least 3 intervals); caught if
  flagged in it;
- drops: on day 4 of 5, the rate x0 or x0.25 for 30 minutes (180 points at 10 s, fewer at
  longer steps); caught if flagged in them.

Seeded: the same arguments print the same tables.
"""

from __future__ import annotations

import argparse

import numpy as np
from harness import table

from otel_anomaly.processors.backtest import BacktestResult, RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import bursty_counts
from otel_anomaly.processors.types import SeriesKey

DAY_S = 86400
MEANS = (0.02, 0.1, 0.5, 2.0, 10.0, 100.0)
T0_S = 1_700_000_000


def _series(mean: float, seed: int, step: float, days: float, change: slice | None,  # noqa: PLR0913
            add: float = 0.0, factor: float = 1.0, exposure: bool = True,
            size: float = 1.0) -> RecordedSeries:
    rng = np.random.default_rng(seed * 7 + int(mean * 100))
    n = int(days * DAY_S / step)
    t = np.arange(n) * step
    lam = mean * (1.0 + 0.5 * np.sin(2 * np.pi * t / DAY_S))
    if change is not None:
        lam[change] = lam[change] * factor + add
    events = bursty_counts(lam, size, rng)
    ts = ((t + T0_S) * 1e9).astype(np.int64)
    key = SeriesKey("app_events_total:rate", (("seed", str(seed)),), ())
    return RecordedSeries(key, ts, events / step, np.full(n, step) if exposure else None)


def _run(series: list[RecordedSeries]) -> list[BacktestResult]:
    return backtest(Engine(EngineSettings(clock=lambda: 0.0)), series)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=float, default=60.0, help="seconds per interval")
    parser.add_argument("--series", type=int, default=10, help="series per case")
    parser.add_argument("--no-exposure", action="store_true",
                        help="send the rates without their interval")
    parser.add_argument("--burst-size", type=float, default=1.0,
                        help="mean events per burst (1: Poisson events)")
    args = parser.parse_args()
    step, k, exposure, size = args.step, args.series, not args.no_exposure, args.burst_size
    per_day = int(DAY_S / step)
    burst = slice(10 * per_day + 17, 10 * per_day + 27)
    drop = slice(4 * per_day + 123, 4 * per_day + 123 + max(int(1800 / step), 2))
    rise = slice(10 * per_day + 17, 10 * per_day + 17 + max(int(1800 / step), 3))
    rows = []
    for mean in MEANS:
        controls = _run([_series(mean, s, step, 14, None, exposure=exposure, size=size)
                         for s in range(k)])
        opens = sum(int((np.diff(r.flag[2 * per_day - 1 :].astype(np.int8)) == 1).sum())
                    for r in controls)
        young = sum(int((np.diff(r.flag[: 2 * per_day].astype(np.int8), prepend=0) == 1).sum())
                    for r in controls)
        caught = []
        for add in (3.0, 10.0):
            out = _run([_series(mean, s, step, 14, burst, add=add, exposure=exposure, size=size)
                        for s in range(k)])
            caught.append(f"{sum(int(r.flag[burst].any()) for r in out)}/{k}")
        out = _run([_series(mean, s, step, 14, rise, factor=5.0, exposure=exposure, size=size)
                    for s in range(k)])
        caught.append(f"{sum(int(r.flag[rise].any()) for r in out)}/{k}")
        for factor in (0.0, 0.25):
            out = _run([_series(mean, s, step, 5, drop, factor=factor, exposure=exposure,
                                size=size) for s in range(k)])
            caught.append(f"{sum(int(r.flag[drop].any()) for r in out)}/{k}")
        rows.append([f"{mean:g}", young / (k * 2), opens / (k * 12), *caught])
    print(f"step {step:g} s, {k} series per case, exposure "
          f"{'given' if exposure else 'left out'}, events in bursts of {size:g} on average")
    print(table(["events per interval", "days 0-2: false opens/series-day",
                 "then: false opens/series-day", "burst +3", "burst +10",
                 "rise x5", "drop x0", "drop x0.25"], rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
