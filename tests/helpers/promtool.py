"""Prometheus' own tools (Debian's prometheus package): promtool and the server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.processes import START_ATTEMPTS, free_port
from helpers.sidecars import answers
from helpers.wait import wait_for


def promtool() -> str:
    """Path of promtool; fails in CI (which must install it), skips elsewhere."""
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run must install Debian's prometheus")
        pytest.skip("promtool not installed (Debian package prometheus); CI installs it")
    return tool


def prometheus() -> str:
    """Path of the Prometheus server binary (same package as promtool)."""
    promtool()
    tool = shutil.which("prometheus")
    if tool is None:
        pytest.fail("promtool is installed but the prometheus server binary is not")
    return tool


@contextmanager
def prometheus_running(tmp_path: Path, config: Mapping[str, Any]) -> Iterator[int]:
    """The Prometheus server on a free loopback port with ``config``, until the block ends.

    Its TSDB is ``tmp_path/data`` (kept 30 days); the port is yielded once it is ready.
    """
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(dict(config)))
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        process = subprocess.Popen(
            [prometheus(), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", "--storage.tsdb.retention.time=30d",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda process=process, port=port: process.poll() is not None
                     or answers(port, "/-/ready"), 30, "Prometheus ready")
        except BaseException:
            process.terminate()
            process.wait(10)
            raise
        if process.poll() is None:
            break
        err = process.stderr.read() if process.stderr else ""
        # The picked port was taken before Prometheus bound it: new port (processes.py).
        assert "address already in use" in err and attempt < START_ATTEMPTS, err
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def prometheus_with_history(tmp_path: Path, text: str) -> Iterator[int]:
    """Prometheus whose TSDB holds ``text`` (OpenMetrics with timestamps, recent ones).

    The blocks are built with ``promtool tsdb create-blocks-from openmetrics``.
    """
    (tmp_path / "history.om").write_text(text)
    subprocess.run([promtool(), "tsdb", "create-blocks-from", "openmetrics",
                    str(tmp_path / "history.om"), str(tmp_path / "data")],
                   check=True, capture_output=True)
    with prometheus_running(tmp_path, {"global": {"scrape_interval": "1m"}}) as port:
        yield port
