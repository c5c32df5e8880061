"""`otel-anomaly run` as a real subprocess on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from helpers.sidecars import answers
from helpers.wait import wait_for

START_TIMEOUT_S = 60.0
"""How long a sidecar subprocess may take to become ready. It compiles its scoring kernels
first: about a second from numba's cache, about 11 s where the cache is cold."""


def free_port() -> int:
    """A loopback port free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_run(*extra: str, grpc: int, http: int, metrics: int) -> subprocess.Popen[str]:
    """Start ``otel-anomaly run`` on the given ports, without any OTEL_ANOMALY_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_ANOMALY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "otel_anomaly.exporter.cli", "run",
         "--grpc-endpoint", f"127.0.0.1:{grpc}", "--http-endpoint", f"127.0.0.1:{http}",
         "--metrics-endpoint", f"127.0.0.1:{metrics}", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@dataclass(frozen=True)
class RunningCli:
    """A ready ``otel-anomaly run`` process and its ports."""

    process: subprocess.Popen[str]
    grpc_port: int
    http_port: int
    metrics_port: int


START_ATTEMPTS = 3
"""A port free when ``free_port`` picked it may be taken before the sidecar binds it (any
process's outgoing connection gets an ephemeral port from the same range): the sidecar then
exits naming the port, and is started again on new ports."""


def started_cli(*extra: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """A ready ``otel-anomaly run`` and its ports (new ports when one was taken meanwhile)."""
    err = ""
    for _ in range(START_ATTEMPTS):
        ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
        process = start_run(*extra, **ports)

        def ready(process: subprocess.Popen[str] = process,
                  metrics: int = ports["metrics"]) -> bool:
            return answers(metrics) or process.poll() is not None
        try:
            wait_for(ready, START_TIMEOUT_S,
                     lambda process=process: f"sidecar not ready (exit code {process.poll()})")
        except BaseException:
            process.kill()
            process.communicate()
            raise
        if process.poll() is None:
            return process, ports
        err = process.communicate()[1]
        if "Address already in use" not in err:
            raise AssertionError(err)
    msg = f"a port was taken before the sidecar bound it, {START_ATTEMPTS} times: {err}"
    raise AssertionError(msg)


@contextmanager
def running_cli(*extra: str) -> Iterator[RunningCli]:
    """``otel-anomaly run`` until ready (``/readyz`` 200); SIGTERM and exit 0 on leaving."""
    process, ports = started_cli(*extra)
    try:
        yield RunningCli(process, ports["grpc"], ports["http"], ports["metrics"])
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
