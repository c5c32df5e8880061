"""Per-window cost per service of each multivariate model (score, hold test, learn a vector).

Usage: .venv/bin/python benchmarks/multivariate_speed.py [--windows N] [--services N]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from otel_anomaly.processors.multivariate import FEATURES, MODELS
from otel_anomaly.processors.multivariate.features import FLOORS

_WINDOW_NS = 10 * 10**9
_LASTING_NS = 4 * 3600 * 10**9  # the default score rule's hold


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    usual = np.array([np.log1p(50.0), 0.01, np.log1p(120.0), np.log1p(20.0), 0.02])
    return usual + np.array([0.05, 0.005, 0.08, 0.05, 0.005]) * rng.standard_normal(
        (n, len(FEATURES)))


def _feed(models: list, data: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for k in range(len(data[0])):
        for model, xs in zip(models, data, strict=True):
            model.score_one(xs[k])
            if not model.holds(xs[k], k * _WINDOW_NS, _LASTING_NS):  # as the stage does
                model.learn_one(xs[k])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--services", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.services} services x {args.windows} windows, {len(FEATURES)} features")
    header = f"{'model':<15}{'us/window/service':>19}{'KiB/service':>13}"
    print(f"{header}{'CPU for 500 services, 10s windows':>36}")
    for name, cls in MODELS.items():
        data = [_vectors(args.windows, seed) for seed in range(args.services)]
        elapsed = _feed([cls(FLOORS, 0.02) for _ in range(args.services)], data)
        tracemalloc.start()  # a second pass: tracing slows the first one down
        models = [cls(FLOORS, 0.02) for _ in range(args.services)]
        _feed(models, data)
        memory = tracemalloc.get_traced_memory()[0] / args.services / 1024
        tracemalloc.stop()
        per = elapsed / args.windows / args.services * 1e6
        budget = per * 500 / 10 / 1e4  # share of one core: 500 services every 10 s
        print(f"{name:<15}{per:>19.1f}{memory:>13.1f}{budget:>35.2f}%")


if __name__ == "__main__":
    main()
