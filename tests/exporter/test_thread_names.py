"""A running sidecar's threads carry their own names for the kernel (``top -H``, ``ps -L``)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from helpers.sidecars import http_get, loopback_config, running
from helpers.wait import wait_for

from otel_anomaly.exporter.thread_names import kernel_name, name_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="thread names are read from Linux's /proc")


def kernel_names() -> dict[str, str]:
    """This process' threads: kernel name by Python name (threads Python knows of)."""
    names = {}
    for thread in threading.enumerate():
        comm = Path(f"/proc/self/task/{thread.native_id}/comm")
        if thread.native_id is not None and comm.exists():
            names[thread.name] = comm.read_text().strip()
    return names


def test_the_sidecars_threads_are_named_for_the_kernel() -> None:
    with running(loopback_config()) as sidecar:
        assert http_get(sidecar.metrics_port, "/metrics")[0] == 200  # starts a scrape thread
        wait_for(lambda: "scrape_0" in kernel_names().values(), 5.0,
                 lambda: f"a scrape thread named scrape_0 (threads: {kernel_names()})")
        names = kernel_names()
        assert names["otel-anomaly-pipeline"] == "pipeline", names
        assert names["otel-anomaly-io"] == "io", names


def test_a_long_name_is_cut_to_what_linux_keeps() -> None:
    seen: list[str] = []

    def run() -> None:
        assert name_this_thread()
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run, name="otel-anomaly-output-otlp_events")
    thread.start()
    thread.join()
    assert seen == ["output-otlp_eve\n"]
    assert kernel_name("pipeline") == b"pipeline"  # a name without the prefix stays as it is
    assert kernel_name("otel-anomaly-") == b"otel-anomaly-"  # never an empty name
