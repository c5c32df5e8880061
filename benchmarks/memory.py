"""Memory per series of the default univariate stack, and the cost of its checkpoint.

Usage: .venv/bin/python benchmarks/memory.py [--series 10000 100000 1000000] [--rounds 3]
                                             [--batch 10000] [--dir DIR]

Each series count runs in a fresh subprocess (so one count's freed memory does not flatter
the next). The subprocess builds an ``Engine`` from the embedded default configuration
(``load_config(None, ..., environ={}).engine_settings()``: the ensemble rule, multivariate
stage on), compiles its kernels as the sidecar does before it listens (numba's compiler
and the kernels then count in the base, not per series), reads its RSS (``VmRSS`` in
``/proc/self/status``), then ingests every series
through ``Engine.ingest_series`` in batches of ``--batch`` distinct series, one point per
series per round, for ``--rounds`` rounds (one minute of event time apart; the detectors
allocate their per-slot state when a series first arrives, later rounds show whether
anything grows after that), and reads RSS again. Per series it prints
``(RSS after - RSS before) / series`` after the first and the last round, and the peak
(``VmHWM``) over the same baseline.

``series.max_series`` defaults to 100,000: the benchmark raises it to the series count
when that is larger (a setting the checkpoint fingerprints, so write and restore agree).

Then, at the same count, it times a checkpoint write through the sidecar's own
``StateStore`` (``exporter/checkpoint_file.py``: temporary file, fsync, rename; the data
is ``processors/state/checkpoint.py``'s ``.npz``): how long scoring pauses for it (the
state written into the file) and how long until it is on disk (the fsync and rename run on
the store's own thread), with the file size and the peak RSS
the write added (``VmHWM`` reset through ``/proc/self/clear_refs`` before it, where the
kernel allows, else the delta of the lifetime peak). The engine is then dropped and the
checkpoint restored into a new one, as a restarting sidecar does, with its time and the
peak it added. Nothing is asserted: this is a measurement, run by ``make bench``.

1,000,000 series need about 7 GB and a few minutes; a write then adds little (a few
hundred MiB: the arrays are streamed from the engine's memory) and a restore about 1.2x
the state (the new engine's, read straight into place). A count, or its checkpoint write or restore,
that does not fit in ``MemAvailable`` (or the checkpoint's folder's free disk) is
skipped, and the row says so.
"""

from __future__ import annotations

import os

# One core: set before numpy is imported (directly or through the engine).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

MINUTE_NS = 60 * 10**9
START_NS = 1_700_000_000 * 10**9
PER_SERIES_KIB = 16  # a little above what 100,000 series measured: the child's pre-check


def status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    msg = f"{field} not in /proc/self/status"
    raise RuntimeError(msg)


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux: ``5`` into ``clear_refs``); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def available_kib() -> int:
    """``MemAvailable`` of ``/proc/meminfo``, in KiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def fill(series: int, rounds: int, batch: int, out: dict[str, float]) -> tuple[Any, Any]:
    """A default engine with every series ingested ``rounds`` times; RSS figures into ``out``."""
    from otel_anomaly.exporter.config import load_config
    from otel_anomaly.processors.engine import Engine
    from otel_anomaly.processors.kernel_warm_up import warm_up
    from otel_anomaly.processors.types import SeriesKey

    default_cap = load_config(None, environ={}).series.max_series
    overrides: dict[str, object] = {"series.max_series": max(series, default_cap)}
    clock_now = [0.0]
    settings = load_config(None, overrides, environ={}).engine_settings(
        clock=lambda: clock_now[0])
    engine = Engine(settings)
    warm_up(settings)  # as the sidecar does: compiled kernels belong to the base, not per series
    gc.collect()
    out["rss_before_kib"] = status_kib("VmRSS")
    reset_peak()
    rng = np.random.default_rng(series)
    resource = (("service.name", "bench"),)
    started = time.process_time()
    for r in range(rounds):
        clock_now[0] = float(r)
        for start in range(0, series, batch):
            n = min(batch, series - start)
            keys = [SeriesKey("bench_value", resource, (("series", str(i)),))
                    for i in range(start, start + n)]
            values = 100.0 + rng.normal(0.0, 1.0, n)
            engine.ingest_series(keys, np.full(n, START_NS + r * MINUTE_NS, np.int64), values)
        gc.collect()
        if r == 0:
            out["rss_round1_kib"] = status_kib("VmRSS")
    out["ingest_cpu_s"] = time.process_time() - started
    out["rss_after_kib"] = status_kib("VmRSS")
    out["hwm_after_kib"] = status_kib("VmHWM")
    out["live_series"] = engine.stats().series_active
    return engine, settings


def measure(series: int, rounds: int, batch: int, folder: str) -> dict[str, float]:
    """One series count, in this process: RSS before and after, checkpoint write and restore."""
    from prometheus_client import CollectorRegistry

    from otel_anomaly.exporter.checkpoint_file import StateStore
    from otel_anomaly.exporter.telemetry import Telemetry

    out: dict[str, float] = {"series": series}
    engine, settings = fill(series, rounds, batch, out)
    state_kib = out["rss_after_kib"] - out["rss_before_kib"]
    # Measured at 1,000,000 series: a write adds under 0.05x the state at its peak, a restore
    # about 1.2x; with a margin, skip rather than push the machine into swap or the OOM killer.
    if available_kib() < 0.5 * state_kib or shutil.disk_usage(folder).free < 1.2 * state_kib * 1024:
        out["skipped"] = (f"checkpoint skipped: needs ~{0.5 * state_kib / 2**20:.1f} GiB "
                          f"more memory and {1.2 * state_kib / 2**20:.1f} GiB of disk, "
                          f"{available_kib() / 2**20:.1f} GiB available")
        return out
    store = StateStore(str(Path(folder) / f"state-{series}.npz"), Telemetry(CollectorRegistry()))
    rss = status_kib("VmRSS")
    exact = reset_peak()
    hwm0 = rss if exact else out["hwm_after_kib"]
    started = time.perf_counter()
    store.save(engine)
    out["pause_s"] = time.perf_counter() - started  # what scoring waits for
    store.shutdown(timeout=3600.0)  # the fsync and rename, on the store's commit thread
    out["write_s"] = time.perf_counter() - started
    out["write_peak_kib"] = max(0, status_kib("VmHWM") - hwm0)
    out["file_bytes"] = store.path.stat().st_size if store.path.exists() else 0.0
    del engine
    gc.collect()
    if available_kib() < 1.5 * state_kib:
        out["skipped"] = (f"restore skipped: needs ~{1.5 * state_kib / 2**20:.1f} GiB, "
                          f"{available_kib() / 2**20:.1f} GiB available")
    else:
        rss = status_kib("VmRSS")
        exact = reset_peak()
        started = time.perf_counter()
        restored = store.restore(settings)
        out["restore_s"] = time.perf_counter() - started
        out["restore_peak_kib"] = max(0, status_kib("VmHWM") - rss) if exact else float("nan")
        out["restored_series"] = restored.stats().series_active if restored is not None else -1
    store.path.unlink(missing_ok=True)
    return out


def row(r: dict[str, Any], series: int) -> str:
    """One table row from a child's figures."""
    mib = 1024.0
    text = (f"{series:9,d} {r['rss_before_kib'] / mib:9.0f} {r['rss_after_kib'] / mib:9.0f} "
            f"{1024 * (r['rss_after_kib'] - r['rss_before_kib']) / series:9,.0f} "
            f"{1024 * (r['rss_round1_kib'] - r['rss_before_kib']) / series:9,.0f} "
            f"{1024 * (r['hwm_after_kib'] - r['rss_before_kib']) / series:9,.0f} "
            f"{r['ingest_cpu_s']:10.1f} | ")
    if "write_s" in r:
        text += (f"{r['pause_s']:8.2f} {r['write_s']:8.2f} {r['file_bytes'] / 2**20:9.1f} "
                 f"{r['file_bytes'] / series:9,.0f} {r['write_peak_kib'] / mib:9.0f} | ")
    if "restore_s" in r:
        text += f"{r['restore_s']:9.2f} {r['restore_peak_kib'] / mib:9.0f}"
    if r.get("skipped"):
        text += f" {r['skipped']}"
    if r["live_series"] != series or r.get("restored_series", series) != series:
        text += f"  (live {r['live_series']:,.0f}, restored {r.get('restored_series', -1):,.0f})"
    return text


def child(series: int, rounds: int, batch: int, folder: str) -> int:
    from otel_anomaly.exporter.allocator import keep_large_blocks_mapped

    keep_large_blocks_mapped()  # as the CLI does before it builds the engine
    print(json.dumps(measure(series, rounds, batch, folder)), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3, help="points per series (>= 1)")
    parser.add_argument("--batch", type=int, default=10_000, help="series per ingest call")
    parser.add_argument("--dir", default=None, help="folder of the checkpoint (default: a temp)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.series[0], args.rounds, args.batch, args.dir)
    folder = args.dir or tempfile.mkdtemp(prefix="otel-anomaly-memory-")
    print(f"default univariate stack, {args.rounds} points per series, "
          f"batches of {args.batch:,} series; checkpoint in {folder}")
    print(f"{'series':>9s} {'RSS0 MiB':>9s} {'RSS MiB':>9s} {'B/series':>9s} "
          f"{'B/s r1':>9s} {'peak B/s':>9s} {'ingest cpu':>10s} | "
          f"{'pause s':>8s} {'write s':>8s} {'file MiB':>9s} {'B/series':>9s} {'+peak MiB':>9s} | "
          f"{'restore s':>9s} {'+peak MiB':>9s}")
    failed = 0
    for series in args.series:
        need_kib = PER_SERIES_KIB * series + 200 * 1024
        if available_kib() < need_kib:
            print(f"{series:9,d} skipped: needs ~{need_kib / 2**20:.1f} GiB, "
                  f"{available_kib() / 2**20:.1f} GiB available", flush=True)
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--series", str(series), "--rounds",
             str(args.rounds), "--batch", str(args.batch), "--dir", folder],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            failed += 1
            tail = proc.stderr.strip().splitlines()[-3:]
            print(f"{series:9,d} failed (exit {proc.returncode}): {' | '.join(tail)}",
                  flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(row(r, series), flush=True)
    if not args.dir:
        Path(folder).rmdir()
    print("B/series: (RSS after - RSS before) / series after the last round; B/s r1: after "
          "the first round; peak B/s: VmHWM over the same baseline; ingest cpu: CPU seconds of "
          "all rounds. pause s: scoring held up by the write (the state into the file); write s: "
          "until the file was on disk and renamed (fsync on the store's own thread). +peak: "
          "VmHWM the "
          "checkpoint write (restore) added over the RSS just before it.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
