"""Faults under load, on a real ``otel-anomaly run`` process: kill -9, SIGTERM, events endpoint down.

A load thread sends OTLP/gRPC requests through the generated stubs, one new series per
request; each series' 23 points (with the fast rule) open and close one anomaly. So a
request's fate can be read back from the checkpoint (its series is there) and from the
events endpoint (its open and close arrived). Each test logs what the client sent, what was
acknowledged, and what was scored, checkpointed or delivered (``pytest -o log_cli=true
--log-cli-level=INFO`` shows it).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from helpers import wait_for
from helpers.processes import START_TIMEOUT_S, free_port
from helpers.sidecars import FAST_DETECTOR, answers, grpc_clients, sample_value, scrape
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from prometheus_client import CollectorRegistry

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink
from otel_anomaly.exporter.config import load_config
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request

logger = logging.getLogger(__name__)

SERIES = "load.depth"


def series_request(n: int) -> Any:  # an ExportMetricsServiceRequest
    """Series ``n``: 20 steady points (23 in all), a spike (opens an anomaly), two normal ones (close it)."""
    steady = [(i * SECOND, 10.0 + 0.1 * (i % 3)) for i in range(1, 21)]
    points = [*steady, (21 * SECOND, 100.0), (22 * SECOND, 10.1), (23 * SECOND, 10.0)]
    return metrics_request([gauge(SERIES, points, {"n": n})], {"service.name": "load"})


class Load:
    """Sends ``series_request(first), (first + 1), ...`` one at a time on a thread until stopped.

    Stops by itself after ``max_failures`` failed requests (a sidecar that is gone).
    """

    def __init__(self, port: int, first: int = 0, max_failures: int = 1) -> None:
        self._first = first
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = metrics_service_pb2_grpc.MetricsServiceStub(self._channel)
        self._max_failures = max_failures
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent = 0
        self.acked: list[int] = []
        self.failed: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="test-load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load thread did not stop"
        self._channel.close()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self) -> None:
        n = self._first
        while not self._stop.is_set() and sum(self.failed.values()) < self._max_failures:
            with self._lock:
                self.sent += 1
            try:
                self._stub.Export(series_request(n), timeout=10)
            except grpc.RpcError as error:
                code = error.code().name  # type: ignore[attr-defined]
                with self._lock:
                    self.failed[code] = self.failed.get(code, 0) + 1
            else:
                with self._lock:
                    self.acked.append(n)
            n += 1


@dataclass
class Sidecar:
    """An ``otel-anomaly run`` process with its config, ports and stderr file."""

    config: Path
    stderr: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, shutdown_timeout: float = 20.0) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_ANOMALY_")}
        with self.stderr.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "otel_anomaly.exporter.cli", "run",
                 "--config", str(self.config), "--shutdown-timeout", str(shutdown_timeout),
                 "--grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                 "--http-endpoint", f"127.0.0.1:{self.http_port}",
                 "--metrics-endpoint", f"127.0.0.1:{self.metrics_port}"],
                env=env, stdout=subprocess.DEVNULL, stderr=err)
        process = self.process
        wait_for(lambda: answers(self.metrics_port) or process.poll() is not None, START_TIMEOUT_S,
                 lambda: f"sidecar not ready (exit code {process.poll()})")
        assert process.poll() is None, self.stderr.read_text()
        return process

    def scraped(self, name: str, **labels: str) -> float:
        return sample_value(scrape(self.metrics_port), name, **labels)

    def sum_of(self, name: str) -> float:
        families = scrape(self.metrics_port)
        return sum(s.value for f in families.values() for s in f.samples if s.name == name)

    def terminate(self) -> float:
        """SIGTERM; the seconds until the process exited (it must exit 0)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        elapsed = time.monotonic() - started
        assert self.process.returncode == 0, self.stderr.read_text()[-3000:]
        return elapsed


@contextmanager
def sidecar_process(config: Path, stderr: Path, shutdown_timeout: float = 20.0
                    ) -> Iterator[Sidecar]:
    sidecar = Sidecar(config, stderr)
    try:
        sidecar.start(shutdown_timeout)
        yield sidecar
    finally:
        if sidecar.process is not None and sidecar.process.poll() is None:
            sidecar.process.kill()
            sidecar.process.wait(30)


def write_config(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"detectors": [FAST_DETECTOR], **sections}))
    return path


def checkpointed_series(config: Path, state: Path) -> set[int]:
    """The ``n`` of every series in the checkpoint at ``state``."""
    settings = load_config(str(config), {}, environ={}).engine_settings()
    with state.open("rb") as source:
        engine: Engine = checkpoint.load(source, settings)
    keys = [engine.series_key(slot) for slot in range(engine.stats().series_active)]
    return {int(dict(key.attributes)["n"]) for key in keys if key.metric == "load_depth"}


@pytest.mark.parametrize("separate_process", [False, True],
                         ids=["grpc_in_process", "grpc_separate_process"])
def test_kill_9_under_load_then_restart_resumes_from_the_last_checkpoint(
    tmp_path: Path, separate_process: bool,
) -> None:
    state = tmp_path / "state.ckpt"
    config = write_config(tmp_path, state={"path": str(state), "interval": "200ms"},
                          receivers={"grpc": {"separate_process": separate_process}})
    with sidecar_process(config, tmp_path / "first.log") as first, Load(first.grpc_port) as load:
        wait_for(lambda: load.acked_count() >= 20, 30, lambda: f"{load.acked_count()}/20 acked")
        # Every request acknowledged now is in any checkpoint written from now on (the
        # worker processes requests and writes checkpoints one after the other). A
        # checkpoint is counted once its commit thread has synced and renamed it, so the
        # next one counted may have been written before these acknowledgements (CI saw
        # one that held 1 of 23 series); the one after it was written after that commit.
        acked_before = load.acked_count()
        written = first.scraped("otel_anomaly_checkpoints_total", outcome="ok")
        wait_for(lambda: first.scraped("otel_anomaly_checkpoints_total", outcome="ok")
                 > written + 1, 10, "no checkpoint written after the first acknowledged requests")
        assert first.process is not None
        first.process.kill()  # SIGKILL, mid-load: no shutdown checkpoint
        first.process.wait(30)
    sent, acked = load.sent, set(load.acked)
    restored = checkpointed_series(config, state)
    with sidecar_process(config, tmp_path / "second.log") as second:
        assert second.scraped("otel_anomaly_series_restored") == len(restored)
        # A restored series carries on warm (one more point, not a second warm-up; the
        # series counts are published after the first request) and a new series is
        # accepted and scored.
        with grpc_clients(second.grpc_port) as clients:
            restored_one = metrics_request(
                [gauge(SERIES, [(24 * SECOND, 10.1)], {"n": min(restored)})],
                {"service.name": "load"})
            clients.metrics.Export(restored_one, timeout=10)
            assert second.scraped("otel_anomaly_series_active") == len(restored)
            assert second.scraped("otel_anomaly_series_warming") == 0
            clients.metrics.Export(series_request(10**6), timeout=10)
        assert answers(second.metrics_port)
        assert second.scraped("otel_anomaly_points_scored_total") == 1 + 23
        exit_s = second.terminate()
    # The checkpoint holds a prefix of the requests: everything acknowledged before the
    # checkpoint we saw, at most what was sent; the rest was lost with the process.
    assert restored == set(range(len(restored)))
    assert acked_before <= len(restored) <= sent
    lost = acked - restored
    logger.info("kill -9: sent %d, acknowledged %d, checkpointed and restored %d, "
                "acknowledged but not checkpointed (lost) %d, restart's SIGTERM exit %.2fs",
                sent, len(acked), len(restored), len(lost), exit_s)


@pytest.mark.parametrize("separate_process", [False, True],
                         ids=["grpc_in_process", "grpc_separate_process"])
def test_sigterm_under_load_scores_flushes_and_checkpoints_everything_acknowledged(
    tmp_path: Path, sink: OtlpSink, separate_process: bool,
) -> None:
    state = tmp_path / "state.ckpt"
    config = write_config(tmp_path, state={"path": str(state)},
                          outputs={"otlp_events": {"endpoint": sink.endpoint}},
                          receivers={"grpc": {"separate_process": separate_process}})
    # Two clients at once, so requests wait in the intake queue when the signal comes.
    with sidecar_process(config, tmp_path / "sidecar.log") as sidecar, \
            Load(sidecar.grpc_port) as load, Load(sidecar.grpc_port, first=10**5) as other:
        wait_for(lambda: load.acked_count() + other.acked_count() >= 60, 30,
                 lambda: f"{load.acked_count() + other.acked_count()}/60 acked")
        exit_s = sidecar.terminate()
        wait_for(lambda: load.done and other.done, 30,
                 "the load still succeeds after the sidecar exited")
    sent, acked = load.sent + other.sent, {*load.acked, *other.acked}
    refused = {code: load.failed.get(code, 0) + other.failed.get(code, 0)
               for code in {*load.failed, *other.failed}}
    scored = checkpointed_series(config, state)
    opened = {int(str(r.attributes["n"])) for r in sink.records()
              if r.event_name == "anomaly.open"}
    closed = {int(str(r.attributes["n"])) for r in sink.records()
              if r.event_name == "anomaly.close"}
    # Everything acknowledged was scored, checkpointed and its events delivered; a request
    # in flight at the signal may have been processed without its answer arriving.
    assert acked <= scored, sorted(acked - scored)
    assert len(scored) <= sent
    assert opened == closed == scored
    assert sent == len(acked) + sum(refused.values()), refused
    logger.info("SIGTERM: sent %d, acknowledged %d, refused %s, scored and checkpointed %d, "
                "events delivered %d open + %d close, exit 0 after %.2fs",
                sent, len(acked), refused, len(scored), len(opened), len(closed), exit_s)


def test_events_endpoint_down_ingestion_unaffected_and_every_event_counted(
    tmp_path: Path,
) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = write_config(tmp_path, outputs={
        "otlp_events": {"endpoint": down, "queue_size": 4, "timeout": "3s"}})
    with sidecar_process(config, tmp_path / "sidecar.log") as sidecar, \
            Load(sidecar.grpc_port) as load:
        wait_for(lambda: load.acked_count() >= 40, 30, lambda: f"{load.acked_count()}/40 acked")
        load.stop()

        def accounted() -> tuple[float, float, float]:
            produced = sidecar.sum_of("otel_anomaly_events_total")
            sent = sidecar.scraped("otel_anomaly_events_sent_total")
            dropped = sidecar.sum_of("otel_anomaly_events_dropped_total")
            return produced, sent, dropped

        def settled() -> bool:
            produced, sent, dropped = accounted()
            return produced == 2 * load.sent and produced == sent + dropped

        wait_for(settled, 30, lambda: f"(produced, sent, dropped) = {accounted()}")
        produced, sent, dropped = accounted()
        families = scrape(sidecar.metrics_port)
        queue_full = sample_value(families, "otel_anomaly_events_dropped_total", reason="queue_full")
        failed = sample_value(families, "otel_anomaly_events_dropped_total", reason="export_failed")
        exit_s = sidecar.terminate()
    assert load.failed == {}, "ingestion failed while the events endpoint was down"
    assert produced == 2 * load.sent
    assert sent == 0
    assert queue_full > 0
    assert failed > 0
    log = (tmp_path / "sidecar.log").read_text()
    logger.info("events endpoint down: sent %d requests, acknowledged %d; events produced %d, "
                "delivered %d, dropped %d (queue_full %d, export_failed %d), %d SDK retry "
                "lines; exit 0 after %.2fs", load.sent, len(load.acked), produced, sent,
                dropped, queue_full, failed, log.count("retrying in"), exit_s)


class FlakySink(OtlpSink):
    """An OTLP sink that answers UNAVAILABLE to its first ``failures`` log exports."""

    def __init__(self, failures: int) -> None:
        super().__init__("127.0.0.1:0")
        self.failures = failures
        self.calls: list[float] = []

    def _export_logs(self, request: logs_service_pb2.ExportLogsServiceRequest,
                     context: Any) -> logs_service_pb2.ExportLogsServiceResponse:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        return super()._export_logs(request, context)


@pytest.fixture
def flaky_sink() -> Iterator[FlakySink]:
    flaky = FlakySink(failures=2)
    flaky.start()
    yield flaky
    flaky.shutdown()


def test_a_failing_events_endpoint_is_retried_with_backoff_until_it_takes_them(
    tmp_path: Path, flaky_sink: FlakySink,
) -> None:
    config = write_config(tmp_path, outputs={"otlp_events": {"endpoint": flaky_sink.endpoint}})
    with sidecar_process(config, tmp_path / "sidecar.log") as sidecar:
        with grpc_clients(sidecar.grpc_port) as clients:
            for n in range(5):
                clients.metrics.Export(series_request(n), timeout=10)
        wait_for(lambda: len(flaky_sink.records()) == 10, 30,
                 lambda: f"{len(flaky_sink.records())}/10 events delivered "
                         f"after {len(flaky_sink.calls)} export calls")
        assert sidecar.scraped("otel_anomaly_events_sent_total") == 10
        assert sidecar.sum_of("otel_anomaly_events_dropped_total") == 0
        exit_s = sidecar.terminate()
    calls = flaky_sink.calls
    assert len(calls) >= 3
    log = (tmp_path / "sidecar.log").read_text()
    assert "retrying in" in log  # the SDK's warning (its logger lets one such line through)
    gaps = [f"{b - a:.2f}s" for a, b in zip(calls, calls[1:], strict=False)]
    logger.info("flaky events endpoint: %d export calls, gaps %s, 10/10 events delivered, "
                "exit 0 after %.2fs", len(calls), gaps, exit_s)


class HangingSink(OtlpSink):
    """An OTLP sink whose log exports hang until ``release`` (a slow endpoint)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:0")
        self.calls = 0
        self._gate = threading.Event()

    def _export_logs(self, request: logs_service_pb2.ExportLogsServiceRequest,
                     context: Any) -> logs_service_pb2.ExportLogsServiceResponse:
        self.calls += 1
        self._gate.wait(60)
        return super()._export_logs(request, context)

    def release(self) -> None:
        self._gate.set()


@pytest.fixture
def hanging_sink() -> Iterator[HangingSink]:
    hanging = HangingSink()
    hanging.start()
    yield hanging
    hanging.release()
    hanging.shutdown()


def test_a_hanging_events_endpoint_holds_up_neither_ingestion_nor_shutdown(
    tmp_path: Path, hanging_sink: HangingSink,
) -> None:
    config = write_config(tmp_path, outputs={"otlp_events": {
        "endpoint": hanging_sink.endpoint, "queue_size": 16, "timeout": "30s"}})
    with sidecar_process(config, tmp_path / "sidecar.log", shutdown_timeout=2) as sidecar, \
            Load(sidecar.grpc_port) as load:
        wait_for(lambda: load.acked_count() >= 40, 30, lambda: f"{load.acked_count()}/40 acked")
        load.stop()
        wait_for(lambda: sidecar.sum_of("otel_anomaly_events_total") == 2 * load.sent, 10,
                 "events of every acknowledged request")
        families = scrape(sidecar.metrics_port)
        produced = sample_value(families, "otel_anomaly_events_total", kind="open") + \
            sample_value(families, "otel_anomaly_events_total", kind="close")
        queue_full = sample_value(families, "otel_anomaly_events_dropped_total",
                                  reason="queue_full")
        held = produced - queue_full  # queued in the SDK or in the one export that hangs
        exit_s = sidecar.terminate()
    assert load.failed == {}, "ingestion failed while the events endpoint hung"
    assert hanging_sink.calls == 1
    assert 0 < held <= 2 * 16
    log = (tmp_path / "sidecar.log").read_text()
    # What the process still held when it had to go is said, with its number, not lost silently.
    assert f"{int(held)} anomaly events were not delivered to {hanging_sink.endpoint}" in log
    logger.info("events endpoint hanging: sent %d requests, acknowledged %d; events produced "
                "%d, dropped queue_full %d, held (queued or in flight) %d; exit 0 after %.2fs "
                "(shutdown timeout 2s); log: %s", load.sent, len(load.acked), produced,
                queue_full, held, exit_s,
                [line for line in log.splitlines() if "event" in line or "output" in line])


def test_settled_events_are_counted_once_as_sent_or_dropped() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    telemetry.events("open", 5)
    telemetry.events_sent(2)
    telemetry.events_dropped("queue_full", 1)
    assert telemetry.settle_events("shutdown_timeout") == 2
    telemetry.events_sent(2)  # the export that outlived the shutdown ended after all
    values = {(s.name, s.labels.get("reason")): s.value
              for metric in registry.collect() for s in metric.samples}
    assert values[("otel_anomaly_events_sent_total", None)] == 2
    assert values[("otel_anomaly_events_dropped_total", "queue_full")] == 1
    assert values[("otel_anomaly_events_dropped_total", "shutdown_timeout")] == 2
