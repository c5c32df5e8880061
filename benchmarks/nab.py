"""NAB benchmark: backtest every file of ../shared/nab/data with one configuration, then score.

Usage: .venv/bin/python benchmarks/nab.py [--nab ../shared/nab] [--config FILE] [--out DIR]

Prints the NAB scores (standard, reward_low_FP_rate, reward_low_FN_rate; threshold optimised
on the set) of the continuous ``anomaly_score`` and of the ``flag`` column alone.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from otel_anomaly.exporter.backtest_input import read_inputs
from otel_anomaly.exporter.backtest_run import replay
from otel_anomaly.exporter.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nab", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default=str(ROOT / "out" / "nab"))
    args = parser.parse_args()
    nab, out = Path(args.nab), Path(args.out)
    # The backtest command's own reader and replay: every file is its own series, all
    # backtested together in one engine, as live traffic would be.
    inputs = read_inputs(nab / "data")
    started = time.perf_counter()
    results = replay(load_config(args.config), inputs,
                     progress=sys.stderr if sys.stderr.isatty() else None)
    elapsed = time.perf_counter() - started
    rows = sum(len(s) for s in inputs)
    for detector, column in (("otel_anomaly", "score"), ("otel_anomaly_flag", "flag")):
        for series, res in zip(inputs, results, strict=True):
            name = Path(series.name)
            target = out / detector / name.parent / f"{detector}_{name.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            stamps = series.stamps
            scores = np.nan_to_num(getattr(res, column).astype(float), nan=0.0)
            with target.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["timestamp", "anomaly_score"])
                w.writerows(zip(stamps, scores.tolist(), strict=True))
    sys.stdout.write(f"backtested {len(inputs)} files, {rows} rows in {elapsed:.2f}s "
                     f"({rows / elapsed:,.0f} points/s)\n")
    score = [sys.executable, str(nab / "score.py"), "--data", str(nab / "data"),
             "--labels", str(nab / "labels" / "combined_windows.json"), "--profile", "all"]
    subprocess.run([*score, "--results", str(out), "--detector", "otel_anomaly"], check=True)
    sys.stdout.write("flag column alone (fixed threshold 0.5):\n")
    sys.stdout.flush()
    subprocess.run([*score, "--results", str(out), "--detector", "otel_anomaly_flag",
                    "--threshold", "0.5"], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
