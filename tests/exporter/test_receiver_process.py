"""The OTLP/gRPC receiver in a process of its own: started, stopped and lost with the sidecar.

What it answers is ``test_grpc_receiver.py``'s (every test there runs both ways) and
``test_tls_auth.py``'s bearer-token test; these are the process' own lifecycle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import socket
from pathlib import Path

import pytest
from helpers import wait_for
from helpers.processes import running_cli
from helpers.sidecars import (
    grpc_clients,
    http_get,
    http_post,
    loopback_config,
    running,
    sample_value,
    scrape,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from otel_anomaly.exporter.app import Sidecar
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.receivers import receiver_child, receiver_process
from otel_anomaly.exporter.receivers.frames import recv_frame, send_frame
from otel_anomaly.exporter.receivers.receiver_process import ReceiverProcess
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request

SEPARATE = {"receivers.grpc.separate_process": True}
BOTH = {**SEPARATE, "receivers.http.separate_process": True}
CPU = metrics_request([gauge("cpu", [(SECOND, 0.5)])], {"service.name": "checkout"})
LATER = metrics_request([gauge("cpu", [(2 * SECOND, 0.6)])], {"service.name": "checkout"})


def receiver_pid(sidecar: Sidecar, kind: str = "grpc") -> int:
    receiver = sidecar.grpc if kind == "grpc" else sidecar.http
    assert isinstance(receiver, ReceiverProcess)
    pid = receiver.pid
    assert pid is not None
    return pid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children_of(pid: int) -> dict[int, str]:
    """The child processes of ``pid``, with their names."""
    children = [int(child) for task in Path(f"/proc/{pid}/task").glob("*/children")
                for child in task.read_text().split()]
    return {child: Path(f"/proc/{child}/comm").read_text().strip() for child in children}


def test_the_receiver_processes_serve_and_stop_with_the_sidecar() -> None:
    with running(loopback_config(BOTH)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        pids = {kind: receiver_pid(sidecar, kind) for kind in ("grpc", "http")}
        assert len({os.getpid(), *pids.values()}) == 3 and all(map(alive, pids.values()))
        assert not clients.metrics.Export(CPU, timeout=10).HasField("partial_success")
        status, _, _ = http_post(sidecar.http_port, "/v1/metrics", LATER.SerializeToString(),
                                 {"Content-Type": "application/x-protobuf"})
        assert status == 200
        assert sidecar.ready
        assert sample_value(scrape(sidecar.metrics_port), "otel_anomaly_requests_total",
                            transport="http", signal="metrics", outcome="ok") == 1
    assert not any(map(alive, pids.values()))
    assert multiprocessing.active_children() == []


def test_a_taken_port_fails_start_up_naming_the_endpoint() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = loopback_config({**SEPARATE, "receivers.grpc.endpoint": f"127.0.0.1:{port}"})
        with pytest.raises(StartupError, match=r"receivers\.grpc\.endpoint"):
            Sidecar(config).start()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_receiver_process_that_dies_is_restarted_on_its_port(
    kind: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with running(loopback_config(BOTH)) as sidecar:
        port = sidecar.grpc_port if kind == "grpc" else sidecar.http_port
        first = receiver_pid(sidecar, kind)
        assert http_get(sidecar.metrics_port, "/readyz")[0] == 200
        os.kill(first, signal.SIGKILL)
        # Unready while it is down (a second before the restart), then ready again.
        wait_for(lambda: http_get(sidecar.metrics_port, "/readyz")[0] == 503, 5,
                 "/readyz still answers 200 with the gRPC receiver gone")
        served = "OTLP/gRPC" if kind == "grpc" else "OTLP/HTTP and remote-write"
        wait_for(lambda: f"{served} is not served; restarting it in 1s" in caplog.text, 5,
                 lambda: f"no error logged about the receiver process: {caplog.text!r}")
        wait_for(lambda: http_get(sidecar.metrics_port, "/readyz")[0] == 200, 30,
                 lambda: f"the receiver was not restarted: {caplog.text!r}")
        assert receiver_pid(sidecar, kind) != first
        assert port == (sidecar.grpc_port if kind == "grpc" else sidecar.http_port)
        with grpc_clients(sidecar.grpc_port) as clients:
            assert not clients.metrics.Export(CPU, timeout=10).HasField("partial_success")
        status, _, _ = http_post(sidecar.http_port, "/v1/metrics", CPU.SerializeToString(),
                                 {"Content-Type": "application/x-protobuf"})
        assert status == 200
    assert multiprocessing.active_children() == []


def test_a_hung_receiver_process_is_killed_and_restarted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(receiver_process, "PING_EVERY_S", 0.1)
    monkeypatch.setattr(receiver_process, "HUNG_AFTER_S", 1.0)
    caplog.set_level(logging.ERROR)
    with running(loopback_config(SEPARATE)) as sidecar:
        hung = receiver_pid(sidecar)
        os.kill(hung, signal.SIGSTOP)  # alive, but its loop answers nothing
        try:
            wait_for(lambda: receiver_pid(sidecar) != hung and sidecar.ready, 30,
                     lambda: f"the stopped receiver was not replaced: {caplog.text!r}")
        finally:
            if alive(hung):
                os.kill(hung, signal.SIGKILL)
        assert f"(pid {hung}) answered no ping for 1s: killed" in caplog.text
        with grpc_clients(sidecar.grpc_port) as clients:
            assert not clients.metrics.Export(CPU, timeout=10).HasField("partial_success")


def test_the_receiver_process_exits_when_the_sidecar_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("receivers:\n  grpc:\n    separate_process: true\n")
    with running_cli("--config", str(config)) as cli:
        children = children_of(cli.process.pid)  # the receiver, and multiprocessing's tracker
        assert sorted(children.values()).count("grpc-receiver") == 1, children
        with grpc_clients(cli.grpc_port) as clients:
            assert clients.metrics.Export(ExportMetricsServiceRequest(), timeout=10) is not None
        cli.process.kill()  # no shutdown: the receiver process finds its socket closed
        cli.process.wait(10)  # not ``communicate``: a receiver left over would hold its pipes
        wait_for(lambda: not any(alive(child) for child in children), 10,
                 lambda: f"{children} outlived the sidecar (the receiver would hold the port)")
        cli.process.returncode = 0  # killed on purpose: ``running_cli`` expects exit 0


def test_frames_of_any_size_cross_a_socket_pair_whole() -> None:
    ours, theirs = socket.socketpair()
    big = bytes(range(256)) * 8192  # 2 MiB: more than a socket's buffer, so recv is partial
    frames = [("export", 1, "grpc", "metrics", big, 7, True), ("stop", 2.5), ("started", 4317)]
    with ours, theirs, concurrent.futures.ThreadPoolExecutor(1) as pool:
        sent = pool.submit(lambda: [send_frame(ours, frame) for frame in frames])
        assert [recv_frame(theirs) for _ in frames] == frames
        sent.result(10)
        ours.close()
        with pytest.raises(EOFError):
            recv_frame(theirs)


def test_a_call_made_before_the_process_says_it_started_waits_behind_that_frame() -> None:
    # The receiver listens before it can announce itself; a client's call in between went
    # out first, the sidecar read it as a failed start and killed the healthy process (3 of
    # 5 restarts under steady traffic). Now "started" is always the first frame.
    async def scenario(theirs: socket.socket, ours: socket.socket) -> list[tuple[object, ...]]:
        reader, writer = await asyncio.open_connection(sock=ours)
        link = receiver_child._Link(reader, writer)
        call = asyncio.create_task(link.call("http", "metrics", b"\x0a", 1, False))
        link.post(("request", "http", "metrics", "malformed"))
        await asyncio.sleep(0)  # a turn of the loop: the call runs up to where it waits
        await link.announce(("started", 4318))
        frames = [await asyncio.to_thread(recv_frame, theirs) for _ in range(3)]
        call.cancel()
        writer.close()
        return frames

    theirs, ours = socket.socketpair()
    with theirs:
        frames = asyncio.run(scenario(theirs, ours))
    assert [frame[0] for frame in frames] == ["started", "request", "export"], frames
