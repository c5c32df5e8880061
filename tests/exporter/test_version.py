"""``otel-anomaly --version``, ``otel_anomaly_build_info`` and the ``process_*`` metrics."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata

from helpers.processes import running_cli
from helpers.sidecars import sample_value, scrape

VERSION = metadata.version("otel-anomaly")


def test_version_flag_prints_the_installed_version_and_exits_0() -> None:
    done = subprocess.run([sys.executable, "-m", "otel_anomaly.exporter.cli", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"otel-anomaly {VERSION}\n", "")


def test_a_running_sidecar_exports_build_info_and_its_process_metrics() -> None:
    with running_cli() as cli:
        families = scrape(cli.metrics_port)
    build, = families["otel_anomaly_build_info"].samples
    assert build.labels == {"version": VERSION, "python_version": platform.python_version(),
                            "python_implementation": platform.python_implementation()}
    assert build.value == 1.0
    assert sample_value(families, "process_start_time_seconds") > 0
    assert sample_value(families, "process_resident_memory_bytes") > 10 * 2**20
    assert sample_value(families, "process_open_fds") > 3
    assert sample_value(families, "process_cpu_seconds_total") > 0
    python, = families["python_info"].samples
    assert python.labels["version"] == platform.python_version()
    replica, = families["otel_anomaly_replica_info"].samples
    assert replica.labels == {"hostname": socket.gethostname()}
