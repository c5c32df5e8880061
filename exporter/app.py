"""Sidecar: builds the components from the config and runs their lifecycle. No logic."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from google.protobuf.internal import api_implementation
from prometheus_client import CollectorRegistry

from otel_anomaly.exporter.checkpoint_file import StateStore
from otel_anomaly.exporter.config import Config
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.feedback_api import FeedbackApi
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.metrics_server import MetricsServer
from otel_anomaly.exporter.outputs import (
    OtlpEventsOutput,
    OtlpScoresOutput,
    Output,
    OutputFanout,
    PrometheusOutput,
)
from otel_anomaly.exporter.pipeline import Pipeline
from otel_anomaly.exporter.prometheus_history import HistoryError
from otel_anomaly.exporter.receivers.grpc import GrpcReceiver
from otel_anomaly.exporter.receivers.http import HttpReceiver
from otel_anomaly.exporter.receivers.intake import Intake
from otel_anomaly.exporter.receivers.receiver_process import ReceiverProcess
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.exporter.warm_start import WarmStartSource, prime
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.kernel_warm_up import warm_up
from otel_anomaly.processors.settings import EngineSettings

logger = logging.getLogger(__name__)

_State = Literal["new", "starting", "running", "stopping", "stopped"]


class Component(Protocol):
    """What every long-lived part of the sidecar implements."""

    def start(self) -> None:
        """Start serving; return quickly."""

    def shutdown(self, timeout: float) -> None:
        """Stop; idempotent, safe before ``start``, bounded by ``timeout``."""


class Receiver(Component, Protocol):
    """A receiver component: in this process, or in one of its own (``ReceiverProcess``)."""

    @property
    def port(self) -> int | None:
        """The bound port once started."""

    @property
    def listening(self) -> bool:
        """True while it serves."""


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """What code injects (as opposed to ``Config``, which users write).

    Parameters
    ----------
    clock
        Ingest-time clock in seconds (series TTL, eviction schedule).
    wall_clock
        Seconds since the epoch: OTLP items stamped too far ahead of it are rejected
        (``series.max_future``).
    registry
        Registry for scores and self-metrics; a new one when ``None`` (never the global).
    engine_factory
        Builds the engine from its settings (tests inject doubles here).
    extra_outputs
        Outputs besides the configured ones (e.g. a webhook); each gets every round.
    """

    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    registry: CollectorRegistry | None = None
    engine_factory: Callable[[EngineSettings], Engine] = Engine
    extra_outputs: tuple[Output, ...] = ()


def _evict_interval(ttl_s: float) -> float:
    """Check for idle series ten times per TTL, between every second and every minute."""
    return min(60.0, max(1.0, ttl_s / 10.0))


class Sidecar:
    """The whole sidecar: receivers -> pipeline -> outputs (Prometheus, OTLP events, ...).

    Parameters
    ----------
    config
        The validated configuration.
    settings
        Injected dependencies.
    """

    def __init__(self, config: Config, settings: SidecarSettings | None = None) -> None:
        settings = settings or SidecarSettings()
        self.config = config
        self.registry = settings.registry or CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        engine_settings = config.engine_settings(settings.clock, settings.wall_clock)
        _compile_kernels(engine_settings)
        self.state = StateStore(config.state.path, self.telemetry) if config.state.path else None
        restored = self.state.restore(engine_settings) if self.state else None
        engine = restored or settings.engine_factory(engine_settings)
        if config.warm_start.prometheus:
            _warm_start(engine, config, settings.wall_clock)
        self.io = IoLoop()
        self.prometheus = PrometheusOutput(config.exposition.max_exported_series, self.telemetry,
                                           config.exposition.gauges)
        self.outputs = OutputFanout(
            [*self._configured_outputs(), *settings.extra_outputs], self.telemetry,
            config.outputs.queue_size,
        )
        self.pipeline = Pipeline(
            engine, self.telemetry, self.outputs.publish,
            queue_size=config.pipeline.queue_size,
            clock=settings.clock,
            evict_interval_s=_evict_interval(config.series.ttl),
            checkpoint=self.state.save if self.state else None,
            checkpoint_interval_s=config.state.interval,
            wall_clock=settings.wall_clock,
            with_resources=self.outputs.needs_resources,
        )
        intake = Intake(self.pipeline, self.telemetry, config.pipeline.retry_after)
        grpc, http = config.receivers.grpc, config.receivers.http
        auth = config.receivers.auth
        self.grpc: Receiver | None = None
        self.http: Receiver | None = None
        if grpc.enabled:
            self.grpc = (ReceiverProcess(grpc, intake, self.io, auth) if grpc.separate_process
                         else GrpcReceiver(grpc, intake, self.io, auth))
        if http.enabled:
            self.http = (ReceiverProcess(http, intake, self.io, auth) if http.separate_process
                         else HttpReceiver(http, intake, self.io, auth))
        exposition = config.exposition
        review = FeedbackApi(self.pipeline, self.registry)
        self.metrics = MetricsServer(
            exposition.endpoint, self.registry, self.io, lambda: self.ready,
            exposition.tls, exposition.auth, review.routes(), config.receivers.auth,
            scores=self.prometheus.collector,
        )
        self._components = self._start_order()
        self._started: list[Component] = []
        self._state: _State = "new"
        self._lock = threading.Lock()

    def _configured_outputs(self) -> list[Output]:
        outputs: list[Output] = [self.prometheus]
        config = self.config.outputs
        if config.otlp_events.endpoint:
            outputs.append(OtlpEventsOutput(config.otlp_events, self.telemetry))
        if config.otlp_scores.endpoint:
            # 0 exports every series: never more than the index holds.
            max_exported = (self.config.exposition.max_exported_series
                            or self.config.series.max_series)
            outputs.append(OtlpScoresOutput(config.otlp_scores, max_exported,
                                           telemetry=self.telemetry))
        return outputs

    def _start_order(self) -> list[tuple[str, Component]]:
        # Shutdown runs this backwards: receivers stop first, the pipeline then drains
        # what they queued (and writes its last checkpoint, which the checkpoint file then
        # commits), the outputs publish and flush what it produced, the loop goes last.
        components: list[tuple[str, Component]] = [
            ("I/O loop", self.io),
            ("outputs", self.outputs),
            *([("checkpoint file", self.state)] if self.state else []),
            ("pipeline", self.pipeline),
            ("metrics endpoint", self.metrics),
        ]
        if self.grpc is not None:
            components.append(("OTLP/gRPC receiver", self.grpc))
        if self.http is not None:
            components.append(("OTLP/HTTP receiver", self.http))
        return components

    @property
    def grpc_port(self) -> int | None:
        """Bound OTLP/gRPC port (``None`` if disabled or not started)."""
        return self.grpc.port if self.grpc else None

    @property
    def http_port(self) -> int | None:
        """Bound OTLP/HTTP port (``None`` if disabled or not started)."""
        return self.http.port if self.http else None

    @property
    def metrics_port(self) -> int | None:
        """Bound Prometheus endpoint port (``None`` before start)."""
        return self.metrics.port

    @property
    def ready(self) -> bool:
        """True once every receiver listens and the pipeline runs, until shutdown begins."""
        receivers = [r for r in (self.grpc, self.http) if r is not None]
        return (
            self._state == "running"
            and self.pipeline.running
            and all(receiver.listening for receiver in receivers)
        )

    def start(self) -> None:
        """Start every component; on failure stop those already started and raise.

        Raises
        ------
        StartupError
            Naming the component (and endpoint) that failed.
        """
        with self._lock:
            if self._state != "new":
                msg = f"Sidecar.start() called in state {self._state!r}; create a new Sidecar"
                raise StartupError(msg)
            self._state = "starting"
        _check_protobuf_backend()
        for name, component in self._components:
            try:
                component.start()
            except Exception as exc:
                self._stop_started(timeout=5.0)
                self._state = "stopped"
                if isinstance(exc, StartupError):
                    raise
                msg = f"{name} failed to start: {type(exc).__name__}: {exc}"
                raise StartupError(msg) from exc
            self._started.append(component)
        self._state = "running"
        logger.info(
            "otel-anomaly started: OTLP/gRPC %s, OTLP/HTTP %s, metrics %s, outputs %s",
            _where(self.config.receivers.grpc.endpoint, self.grpc_port),
            _where(self.config.receivers.http.endpoint, self.http_port),
            _where(self.config.exposition.endpoint, self.metrics_port),
            ", ".join(output.name for output in self.outputs.outputs),
        )

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop everything in reverse start order within ``timeout``; idempotent."""
        with self._lock:
            if self._state in ("stopping", "stopped"):
                return
            was_running = self._state == "running"
            self._state = "stopping"
        self._stop_started(timeout)
        self._state = "stopped"
        events = self.config.outputs.otlp_events.endpoint
        if events and (held := self.telemetry.settle_events("shutdown_timeout")):
            logger.warning("%d anomaly events were not delivered to %s: still queued or in an "
                           "export when the shutdown timeout ran out", held, events)
        if was_running:
            logger.info("otel-anomaly stopped")

    def _stop_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._started:
            component = self._started.pop()
            try:
                component.shutdown(max(0.0, deadline - time.monotonic()))
            except Exception:
                # Keep stopping the rest: a failed stop must not leak ports or threads.
                logger.exception("shutdown of %s failed", type(component).__name__)


def _where(endpoint: str, port: int | None) -> str:
    if port is None:
        return "disabled"
    host = endpoint.rpartition(":")[0]
    return f"{host}:{port}"


def _check_protobuf_backend() -> None:
    backend = api_implementation.Type()
    if backend != "upb":
        logger.warning(
            "protobuf runs on its %r backend, not 'upb': decoding will be ~40x slower "
            "(install a protobuf wheel for this platform)",
            backend,
        )


def _compile_kernels(settings: EngineSettings) -> None:
    """Compile the scoring kernels before anything listens: at the first export they would stall it.

    Best effort: should the synthetic warm-up fail, live data compiles them.
    """
    try:
        logger.info("scoring kernels ready in %.1fs", warm_up(settings))
    except Exception:  # noqa: BLE001 - a warm-up failure must not stop the sidecar
        logger.exception("compiling the scoring kernels at start-up failed; they compile at "
                         "the first export instead")


def _warm_start(engine: Engine, config: Config, wall_clock: Callable[[], float]) -> None:
    """Prime ``engine`` from ``warm_start``'s history (an unreachable API costs only that)."""
    warm = config.warm_start
    source = WarmStartSource(warm.prometheus, warm.selectors, warm.lookback, warm.step)
    try:
        prime(engine, source, clock=wall_clock)
    except HistoryError as exc:
        logger.warning("warm start: %s; starting without history", exc)
