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

from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import SeriesKey

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    stamps, values = [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            stamps.append(row["timestamp"])
            values.append(float(row["value"]))
    ts = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    return stamps, ts, np.asarray(values)


def engine_settings(config: str | None) -> EngineSettings:
    if config is None:
        return EngineSettings(clock=lambda: 0.0)
    from otel_anomaly.exporter.config import engine_settings_from, load_config  # type: ignore[attr-defined]

    return engine_settings_from(load_config(config, {}), clock=lambda: 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nab", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default=str(ROOT / "out" / "nab"))
    args = parser.parse_args()
    nab, out = Path(args.nab), Path(args.out)
    files = sorted((nab / "data").glob("*/*.csv"))
    loaded = {f: load(f) for f in files}
    # Every file is its own series; all are backtested together, as live traffic would be.
    series = [
        RecordedSeries(SeriesKey("value", (("file", str(i)),), ()), ts, values)
        for i, (_, ts, values) in enumerate(loaded.values())
    ]
    engine = Engine(engine_settings(args.config))
    started = time.perf_counter()
    results = backtest(engine, series)
    elapsed = time.perf_counter() - started
    rows = sum(len(s.values) for s in series)
    for detector, column in (("otel_anomaly", "score"), ("otel_anomaly_flag", "flag")):
        for f, res in zip(files, results, strict=True):
            target = out / detector / f.parent.name / f"{detector}_{f.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            stamps = loaded[f][0]
            scores = np.nan_to_num(getattr(res, column).astype(float), nan=0.0)
            with target.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["timestamp", "anomaly_score"])
                w.writerows(zip(stamps, scores.tolist(), strict=True))
    sys.stdout.write(f"backtested {len(files)} files, {rows} rows in {elapsed:.2f}s "
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
