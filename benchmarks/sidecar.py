"""`otel-anomaly run` in a subprocess for the benchmarks: free ports, readiness, CPU, stop.

The sidecar is this checkout's CLI (``.venv/bin/otel-anomaly``) on loopback ports chosen at
run time; its stderr is kept in a temporary file and printed only if it exits with an error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live child processes (Linux /proc).

    With ``receivers.grpc.separate_process`` the sidecar's gRPC receiver is a child.
    """
    return sum(_cpu_seconds(Path(f"/proc/{p}/stat")) for p in _process_tree(pid))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time of the threads of a process and its children, by kernel name.

    The sidecar names its threads (``exporter/thread_names.py``: ``pipeline``, ``io``, ...);
    gRPC's own threads keep theirs. A child process' threads are named after it
    (``grpc-receiver/io``).
    """
    seconds: dict[str, float] = {}
    for process in _process_tree(pid):
        prefix = "" if process == pid else f"{_comm(Path(f'/proc/{process}'))}/"
        for task in Path(f"/proc/{process}/task").iterdir():
            try:
                name = prefix + _comm(task)
                cpu = _cpu_seconds(task / "stat")
            except (OSError, IndexError):  # the thread ended meanwhile
                continue
            seconds[name] = seconds.get(name, 0.0) + cpu
    return seconds


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (``/proc/<pid>/task/<tid>/children``)."""
    tree, i = [pid], 0
    while i < len(tree):
        for task in Path(f"/proc/{tree[i]}/task").glob("*/children"):
            try:
                tree += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
        i += 1
    return tree


def _comm(path: Path) -> str:
    return (path / "comm").read_text().strip()


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of the whole machine so far: busy and idle (idle and iowait), /proc/stat."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    busy = sum(ticks[:8]) - idle  # user .. steal; guest time is already in user
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, idle / tick


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sidecar:
    """A running sidecar and the ports it listens on."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    metrics_port: int
    http_port: int

    def wait_ready(self, timeout: float = 30) -> bool:
        """Whether ``/metrics`` answers within ``timeout`` seconds (False if it exited)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        while self.proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)  # poll interval of the readiness check
        return False


@contextmanager
def running_sidecar(*args: str, stop_timeout: float = 60) -> Iterator[Sidecar]:
    """``otel-anomaly run`` with ``args`` on free ports; stopped with SIGTERM on exit."""
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    cli = [str(ROOT / ".venv" / "bin" / "otel-anomaly"), "run", *args,
           "--grpc-endpoint", f"127.0.0.1:{grpc_port}",
           "--http-endpoint", f"127.0.0.1:{http_port}",
           "--metrics-endpoint", f"127.0.0.1:{metrics_port}"]
    # The benchmark's own settings, not whatever the shell exports.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_ANOMALY_")}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            yield Sidecar(proc, grpc_port, metrics_port, http_port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=stop_timeout)
            if proc.returncode:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-2000:])
