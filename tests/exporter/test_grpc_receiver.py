"""OTLP/gRPC receiver semantics, with real grpc clients (the generated stubs)."""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable, Mapping

import grpc
import hypothesis
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from helpers import wait_for
from helpers.engines import EngineHolder, FailingEngine, GatedEngine, RecordingEngine
from helpers.sidecars import grpc_clients, loopback_config, running, sample_value, scrape
from hypothesis import strategies as st
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otel_anomaly.exporter.app import SidecarSettings
from otel_anomaly.exporter.config import Config
from otel_anomaly.exporter.outputs import SCORE_GAUGES
from otel_anomaly.exporter.receivers.grpc import retry_trailers
from otel_anomaly.exporter.receivers.signals import LogsRequest, MetricsRequest, TracesRequest
from otel_anomaly.processors.testing import (
    SECOND,
    gauge,
    logs_request,
    metrics_request,
    span,
    traces_request,
)

CPU = metrics_request([gauge("cpu", [(SECOND, 0.5), (2 * SECOND, 0.6)], unit="1")],
                      {"service.name": "checkout"})

OUTPUT_FAMILIES = {name for name, _, _ in SCORE_GAUGES}


def settings(holder: EngineHolder) -> SidecarSettings:
    return SidecarSettings(engine_factory=holder)


ConfigFactory = Callable[..., Config]


@pytest.fixture(params=[False, True], ids=["in_process", "separate_process"])
def grpc_config(request: pytest.FixtureRequest) -> ConfigFactory:
    """``loopback_config``, with the gRPC receiver in the sidecar's process or its own.

    Every test below holds for both: the receiver process forwards each call to the same
    intake (``exporter/receivers/receiver_process.py``).
    """

    def make(overrides: Mapping[str, object] | None = None) -> Config:
        return loopback_config({"receivers.grpc.separate_process": request.param,
                                **(overrides or {})})

    return make


def test_every_signal_reaches_the_engine(grpc_config: ConfigFactory) -> None:
    holder = EngineHolder(RecordingEngine)
    with running(grpc_config(), settings(holder)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        response = clients.metrics.Export(CPU, timeout=5)
        assert not response.HasField("partial_success")
        clients.metrics.Export(MetricsRequest(), timeout=5)
        spans = traces_request([span("GET /", SECOND, 5.0)])
        clients.traces.Export(spans, timeout=5)
        clients.logs.Export(logs_request([(SECOND, 9), (SECOND, 17)]), timeout=5)
        assert holder.engine is not None
        assert [signal for signal, _ in holder.engine.requests] == ["metrics", "traces", "logs"]
        # Metrics and traces requests' bytes travel with them, for the engine's scans.
        assert holder.engine.data == [CPU.SerializeToString(), spans.SerializeToString(), None]
        families = scrape(sidecar.metrics_port)
        assert sample_value(families, "otel_anomaly_points_received_total", signal="logs") == 2
        assert sample_value(families, "otel_anomaly_requests_total", transport="grpc",
                            signal="metrics", outcome="empty") == 1


def test_empty_request_is_answered_without_the_engine(grpc_config: ConfigFactory) -> None:
    holder = EngineHolder(RecordingEngine)
    with running(grpc_config(), settings(holder)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        empty_resource = MetricsRequest()
        empty_resource.resource_metrics.add().scope_metrics.add()  # a scope without metrics
        for request in (MetricsRequest(), empty_resource):
            response = clients.metrics.Export(request, timeout=5)
            assert not response.HasField("partial_success")
        assert clients.traces.Export(TracesRequest(), timeout=5) is not None
        assert clients.logs.Export(LogsRequest(), timeout=5) is not None
        assert holder.engine is not None and holder.engine.requests == []


def test_gzip_request_is_accepted(grpc_config: ConfigFactory) -> None:
    holder = EngineHolder(RecordingEngine)
    with running(grpc_config(), settings(holder)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(CPU, timeout=5, compression=grpc.Compression.Gzip)
        assert holder.engine is not None
        assert holder.engine.requests == [("metrics", CPU)]


def test_rejected_points_come_back_as_partial_success(grpc_config: ConfigFactory) -> None:
    request = metrics_request([gauge("cpu", [(SECOND, 0.5), (2 * SECOND, math.nan),
                                             (0, 0.7)])])
    with running(grpc_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        response = clients.metrics.Export(request, timeout=5)
        assert response.partial_success.rejected_data_points == 2
        assert response.partial_success.error_message == \
            "rejected: 1 missing_timestamp, 1 non_finite"
        families = scrape(sidecar.metrics_port)
        assert sample_value(families, "otel_anomaly_points_rejected_total", signal="metrics",
                            reason="non_finite") == 1


@pytest.mark.parametrize(("max_future", "rejected"), [("10m", 1), ("0s", 0)])
def test_points_stamped_too_far_ahead_of_the_wall_clock_are_rejected(
    max_future: str, rejected: int, grpc_config: ConfigFactory,
) -> None:
    now_s = 1_700_000_000
    request = metrics_request([gauge("cpu", [(now_s * SECOND, 0.5),
                                             ((now_s + 86_400) * SECOND, 0.6)])])
    config = grpc_config({"series.max_future": max_future})
    with running(config, SidecarSettings(wall_clock=lambda: float(now_s))) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        response = clients.metrics.Export(request, timeout=5)
        assert response.partial_success.rejected_data_points == rejected
        if rejected:
            assert response.partial_success.error_message == "rejected: 1 future_timestamp"


def test_undecodable_bytes_are_invalid_argument_and_the_server_survives(
    grpc_config: ConfigFactory,
) -> None:
    with running(grpc_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(CPU, timeout=5)
        before = scrape(sidecar.metrics_port)["otel_anomaly_value"].samples
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", bytes(range(256))):
            with pytest.raises(grpc.RpcError) as caught:
                clients.raw_metrics(garbage)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "cannot decode ExportMetricsServiceRequest" in caught.value.details()
        assert scrape(sidecar.metrics_port)["otel_anomaly_value"].samples == before
        clients.metrics.Export(CPU, timeout=5)
        assert sample_value(scrape(sidecar.metrics_port), "otel_anomaly_requests_total",
                            transport="grpc", signal="metrics", outcome="malformed") == 3


def _retry_delay(metadata: dict[str, bytes]) -> tuple[int, float]:
    status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    direct = error_details_pb2.RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"])
    assert direct == info
    return status.code, info.retry_delay.ToTimedelta().total_seconds()


def test_full_queue_is_unavailable_with_retry_info_in_both_forms(
    grpc_config: ConfigFactory,
) -> None:
    holder = EngineHolder(GatedEngine)
    config = grpc_config({"pipeline.queue_size": 1, "pipeline.retry_after": "2s"})
    with running(config, settings(holder)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        engine = holder.engine
        assert isinstance(engine, GatedEngine)
        pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="test-client")
        try:
            first = pool.submit(clients.metrics.Export, CPU, timeout=10)
            wait_for(engine.entered.is_set, 5, "the worker never took the first request")
            queued = pool.submit(clients.metrics.Export, CPU, timeout=10)
            wait_for(lambda: sidecar.pipeline.queued == 1, 5, "second request not queued")
            with pytest.raises(grpc.RpcError) as caught:
                clients.metrics.Export(CPU, timeout=5)
            error = caught.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "intake queue is full" in error.details()
            code, delay = _retry_delay(dict(error.trailing_metadata()))
            assert (code, delay) == (code_pb2.UNAVAILABLE, 2.0)
            engine.gate.set()
            assert first.result(10) is not None and queued.result(10) is not None
        finally:
            engine.gate.set()
            pool.shutdown()
        families = scrape(sidecar.metrics_port)
        assert sample_value(families, "otel_anomaly_points_dropped_total", signal="metrics",
                            reason="queue_full") == 2


def test_engine_failure_is_internal_with_the_message_and_the_next_call_works(
    grpc_config: ConfigFactory,
) -> None:
    holder = EngineHolder(FailingEngine)
    with running(grpc_config(), settings(holder)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        with pytest.raises(grpc.RpcError) as caught:
            clients.metrics.Export(CPU, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == (
            "processing the metrics request failed: ValueError: boom: detector state is "
            "inconsistent"
        )
        engine = holder.engine
        assert isinstance(engine, FailingEngine)
        engine.failure = None
        clients.metrics.Export(CPU, timeout=5)


def test_request_over_the_size_limit_is_resource_exhausted(grpc_config: ConfigFactory) -> None:
    config = grpc_config({"receivers.grpc.max_recv_msg_size_mib": 1})
    big = metrics_request([gauge("cpu", [(SECOND, 1.0)], {"blob": "x" * (2 << 20)})])
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        with pytest.raises(grpc.RpcError) as caught:
            clients.metrics.Export(big, timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        clients.metrics.Export(CPU, timeout=5)


def test_retry_info_duration_is_exact() -> None:
    trailers = dict(retry_trailers("slow down", 1.5))
    code, delay = _retry_delay(trailers)
    assert code == code_pb2.UNAVAILABLE and delay == 1.5


def test_random_bytes_never_crash_the_receiver(grpc_config: ConfigFactory) -> None:
    with running(grpc_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:

        @hypothesis.settings(max_examples=60, deadline=None,
                             suppress_health_check=[hypothesis.HealthCheck.too_slow])
        @hypothesis.given(st.binary(max_size=512))
        def send(data: bytes) -> None:
            try:
                clients.raw_metrics(data)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()

        send()
        assert sidecar.ready
        clients.metrics.Export(CPU, timeout=5)


def test_bad_points_and_unknown_metric_types_leave_earlier_series_intact(
    grpc_config: ConfigFactory,
) -> None:
    steady = metrics_request([gauge("cpu", [(i * SECOND, 0.5 + i % 2 * 0.01)
                                            for i in range(1, 40)])])
    bad = metrics_request([gauge("cpu", [(50 * SECOND, math.inf), (51 * SECOND, -math.inf),
                                         (52 * SECOND, math.nan)])])
    unknown = metrics_pb2.Metric(name="mystery")  # no data field: a type this build lacks
    bad.resource_metrics[0].scope_metrics[0].metrics.append(unknown)
    with running(grpc_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(steady, timeout=5)
        before = {k: v for k, v in scrape(sidecar.metrics_port).items()
                  if k.startswith("otel_anomaly_") and k in OUTPUT_FAMILIES}
        response = clients.metrics.Export(bad, timeout=5)
        assert response.partial_success.rejected_data_points == 4
        assert response.partial_success.error_message == \
            "rejected: 3 non_finite, 1 unsupported_type"
        empty = clients.metrics.Export(MetricsRequest(), timeout=5)
        assert not empty.HasField("partial_success")
        after = scrape(sidecar.metrics_port)
        for name, family in before.items():
            assert after[name].samples == family.samples, name
