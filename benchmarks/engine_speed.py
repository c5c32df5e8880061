"""Scoring throughput of the engine path on one core (backtest and live ingest).

Usage: .venv/bin/python benchmarks/engine_speed.py [--scale 1.0] [--case single,folder,ingest]
                                                   [--save DIR]

Three cases, each on a fresh engine with the default rules (seeded data: a daily cycle plus
noise at 1-minute spacing, a few spikes):

- ``single``: one series of 20,000 points through ``backtest`` (one round per point);
- ``folder``: 1,000 series x 1,440 points backtested together (the vectorised live path);
- ``ingest``: ``Engine.ingest_series`` with 1,000 distinct series per call, one point each
  (what one live request looks like), 300 calls.

Prints points per CPU second of this process per case (CPU, not wall time: the figure
does not depend on what else the machine runs, only on the one core used), after loading
the kernels (``kernel_warm_up``): a first run after a source change compiles them, which
used to land in the first case's time (a single case of 720 points/s).
``--save DIR`` writes every case's outputs to ``DIR/<case>.npz`` so two versions of the
engine can be compared bit for bit (``--compare DIR_A DIR_B``).
"""

from __future__ import annotations

import os

# One core: set before numpy is imported (directly or through the engine).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from otel_anomaly.processors.backtest import RecordedSeries, backtest  # noqa: E402
from otel_anomaly.processors.engine import Engine  # noqa: E402
from otel_anomaly.processors.kernel_warm_up import warm_up  # noqa: E402
from otel_anomaly.processors.settings import EngineSettings  # noqa: E402
from otel_anomaly.processors.types import SeriesKey  # noqa: E402

MINUTE = 60 * 10**9
START = 1_700_000_000 * 10**9
FIELDS = ("score", "expected", "lower", "upper", "flag")


def synthetic(n_series: int, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (shared) and values (one row per series): daily cycle, noise, spikes."""
    rng = np.random.default_rng(seed)
    ts = START + np.arange(n_points, dtype=np.int64) * MINUTE
    phase = 2 * np.pi * (ts // MINUTE % 1440) / 1440
    level = rng.uniform(10, 1000, (n_series, 1))
    values = level * (1 + 0.3 * np.sin(phase + rng.uniform(0, 2 * np.pi, (n_series, 1))))
    values = values + rng.normal(0, 1, (n_series, n_points)) * 0.05 * level
    spikes = rng.random((n_series, n_points)) < 0.001
    values = np.where(spikes, values + 10 * 0.05 * level, values)
    return ts, values


def engine() -> Engine:
    return Engine(EngineSettings(clock=lambda: 0.0))


def key(i: int) -> SeriesKey:
    return SeriesKey("bench_value", (("service.name", "bench"),), (("series", str(i)),))


def run_backtest(n_series: int, n_points: int) -> tuple[int, float, dict[str, np.ndarray]]:
    ts, values = synthetic(n_series, n_points, seed=n_series)
    series = [RecordedSeries(key(i), ts, values[i]) for i in range(n_series)]
    eng = engine()
    started = time.process_time()
    results = backtest(eng, series)
    elapsed = time.process_time() - started
    out = {name: np.concatenate([getattr(r, name) for r in results]) for name in FIELDS}
    return n_series * n_points, elapsed, out


def run_ingest(n_series: int, calls: int) -> tuple[int, float, dict[str, np.ndarray]]:
    ts, values = synthetic(n_series, calls, seed=7)
    keys = [key(i) for i in range(n_series)]
    eng = engine()
    outs: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}
    events = []
    started = time.process_time()
    for c in range(calls):
        result = eng.ingest_series(keys, np.full(n_series, ts[c], np.int64), values[:, c])
        for name in FIELDS:
            outs[name].append(getattr(result.scores, name))
        events += [(e.kind, e.slot, e.ts_unix_nano, e.score) for e in result.events]
    elapsed = time.process_time() - started
    out = {name: np.concatenate(parts) for name, parts in outs.items()}
    out["events"] = np.array([(k == "open", k == "close", s, t, sc) for k, s, t, sc in events],
                             np.float64).reshape(-1, 5)
    return n_series * calls, elapsed, out


def cases(scale: float) -> dict[str, Callable[[], tuple[int, float, dict[str, np.ndarray]]]]:
    return {
        "single": lambda: run_backtest(1, int(20_000 * scale)),
        "folder": lambda: run_backtest(1000, int(1440 * scale)),
        "ingest": lambda: run_ingest(1000, int(300 * scale)),
    }


def compare(a: Path, b: Path) -> int:
    bad = 0
    for fa in sorted(a.glob("*.npz")):
        with np.load(fa) as xa, np.load(b / fa.name) as xb:
            for name in xa.files:
                same = xa[name].shape == xb[name].shape and np.array_equal(
                    xa[name], xb[name], equal_nan=True)
                bad += not same
                print(f"{fa.stem:8s} {name:9s} {'identical' if same else 'DIFFERENT'}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply points per case")
    parser.add_argument("--case", default="single,folder,ingest")
    parser.add_argument("--save", default=None, help="write outputs to DIR/<case>.npz")
    parser.add_argument("--compare", nargs=2, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    table = cases(args.scale)
    # Kernels are loaded (or compiled, after a source change) first, as the sidecar does
    # before it listens: the cases time scoring, not numba's compiler.
    loaded = warm_up(EngineSettings(clock=lambda: 0.0))
    print(f"kernels loaded in {loaded:.2f} s (not in the cases' CPU time)")
    print(f"{'case':8s} {'points':>10s} {'cpu s':>8s} {'points/s':>10s}")
    for name in args.case.split(","):
        points, elapsed, out = table[name]()
        print(f"{name:8s} {points:10,d} {elapsed:8.2f} {points / elapsed:10,.0f}", flush=True)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.save) / f"{name}.npz", **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
