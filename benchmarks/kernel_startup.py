"""What the compiled kernels cost at start-up: compiling them, and loading them from the cache.

Usage: .venv/bin/python benchmarks/kernel_startup.py [--runs 2]

Each case is a fresh process that imports the engine and runs ``processors.kernel_warm_up``
over the default rules, as ``otel-anomaly run`` does before it listens:

- ``cold``: an empty ``NUMBA_CACHE_DIR``: every kernel is compiled (a new machine, or a
  container whose /tmp is new);
- ``cached``: the same folder again: kernels are loaded from the cache;
- ``seeded``: a new, empty ``NUMBA_CACHE_DIR`` with ``OTEL_ANOMALY_KERNEL_SEED`` naming the
  first (as the container image starts on an empty volume, ``exporter/kernel_cache.py``): the
  kernels are copied from the seed (counted in its import time), then loaded;
- ``uncompiled``: ``NUMBA_DISABLE_JIT=1``, the kernels run as plain Python (no numba cost at
  all; the baseline for the other two).

Also printed: the cache's size on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import table

PROBE = """
import json, time
started = time.perf_counter()
from otel_anomaly.exporter.config import load_config
from otel_anomaly.exporter.kernel_cache import seed_from_environment
from otel_anomaly.processors.compiled import cache_dir
from otel_anomaly.processors.kernel_warm_up import warm_up
seed_from_environment(cache_dir())
imported = time.perf_counter() - started
seconds = warm_up(load_config(None, environ={}).engine_settings())
print(json.dumps({"import": imported, "warm_up": seconds}))
"""


def probe(env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2, help="runs of each case")
    args = parser.parse_args()
    rows = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as empty:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            env.pop("NUMBA_DISABLE_JIT", None)
            env.pop("OTEL_ANOMALY_KERNEL_SEED", None)
            seeded = {**env, "NUMBA_CACHE_DIR": empty, "OTEL_ANOMALY_KERNEL_SEED": cache}
            for case, case_env in (("cold", env), ("cached", env), ("seeded", seeded)):
                got = probe(case_env)
                rows.append((f"{case} #{run + 1}", f"{got['import']:.2f}", f"{got['warm_up']:.2f}",
                             f"{got['import'] + got['warm_up']:.2f}"))
            size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
        got = probe({**os.environ, "NUMBA_DISABLE_JIT": "1"})
        rows.append((f"uncompiled #{run + 1}", f"{got['import']:.2f}", f"{got['warm_up']:.2f}",
                     f"{got['import'] + got['warm_up']:.2f}"))
    sys.stdout.write(table(("case", "import s", "warm-up s", "total s"), rows))
    sys.stdout.write(f"\ncache on disk: {size / 2**20:.1f} MiB\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
