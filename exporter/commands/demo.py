"""``otel-anomaly demo``: a sidecar, a simulated shop, four incidents and what got flagged.

The sidecar runs in-process on the configured endpoints; the shop reports through the
real OpenTelemetry SDK over OTLP/gRPC; anomaly events go to an in-process OTLP logs sink
(unless ``outputs.otlp_events.endpoint`` is set) and are shown as they arrive. Randomness
is seeded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from otel_anomaly.exporter.app import Sidecar
from otel_anomaly.exporter.commands.demo_traffic import Incident, ShopTraffic
from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord, any_value
from otel_anomaly.exporter.config import Config

# Trace and log features are computed over event-time windows; 1 s windows give the
# detectors (warm-up: 30 points) enough windows within the demo's one-minute warm-up.
_DEMO_WINDOW_S = 1.0
_DEMO_LATENESS_S = 3.0
_DETECTION_GRACE_S = 15.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How long the demo runs and how it reports."""

    duration_s: float = 180.0
    seed: int = 42
    tick_s: float = 0.05
    report_every_s: float = 10.0


def incidents_for(duration_s: float) -> tuple[Incident, ...]:
    """Four incidents after a warm-up of a third of the run (at most 60 s)."""
    warmup = min(60.0, duration_s / 3.0)
    rest = duration_s - warmup

    def at(start: float, end: float) -> tuple[float, float]:
        return warmup + start * rest, warmup + end * rest

    return (
        Incident("latency regression: payments POST /charge 5x slower", "payments",
                 *at(0.05, 0.30), operation="POST /charge", latency_factor=5.0,
                 signal_hint="duration"),
        Incident("error burst: checkout fails 40% of requests", "checkout", *at(0.35, 0.50),
                 error_ratio=0.4, signal_hint="error"),
        Incident("CPU spike: catalog at 95%", "catalog", *at(0.55, 0.70), cpu=0.95,
                 signal_hint="cpu"),
        Incident("throughput drop: catalog GET /products at 10%", "catalog", *at(0.75, 0.95),
                 operation="GET /products", rate_factor=0.1, signal_hint="rate"),
    )


def demo_config(config: Config, events_endpoint: str | None) -> Config:
    """The demo's config: short feature windows; events to the sink unless configured."""
    update: dict[str, object] = {
        "traces": config.traces.model_copy(
            update={"window": _DEMO_WINDOW_S, "lateness": _DEMO_LATENESS_S}
        ),
        "logs": config.logs.model_copy(update={"window": _DEMO_WINDOW_S}),
    }
    outputs = config.outputs
    if events_endpoint and not outputs.otlp_events.endpoint:
        events = outputs.otlp_events.model_copy(update={"endpoint": events_endpoint})
        update["outputs"] = outputs.model_copy(update={"otlp_events": events})
    return config.model_copy(update=update)


def _client_target(endpoint: str, port: int | None) -> str:
    host = endpoint.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: connect locally
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_demo(
    config: Config, options: DemoOptions, out: TextIO, stop: threading.Event | None = None
) -> list[SinkRecord]:
    """Run the demo, writing progress to ``out``; return the anomaly events received."""
    stop = stop or threading.Event()
    sink = OtlpSink()
    sink.start()
    try:
        sidecar = Sidecar(demo_config(config, sink.endpoint))
        sidecar.start()
        try:
            return _drive(sidecar, sink, options, out, stop)
        finally:
            sidecar.shutdown(10.0)
    finally:
        sink.shutdown()


def _drive(
    sidecar: Sidecar, sink: OtlpSink, options: DemoOptions, out: TextIO, stop: threading.Event
) -> list[SinkRecord]:
    incidents = incidents_for(options.duration_s)
    target = _client_target(sidecar.config.receivers.grpc.endpoint, sidecar.grpc_port)
    report = DemoReport(out, incidents, time.time_ns())
    report.banner(sidecar, options)
    traffic = ShopTraffic(target, incidents, options.seed)
    traffic.start()
    started = time.monotonic()
    next_report = options.report_every_s
    previous = -options.tick_s
    try:
        while not stop.is_set():
            t = time.monotonic() - started
            if t >= options.duration_s:
                break
            report.incidents_started(t)
            # The traffic of the time that really passed: on a busy machine a tick comes
            # late, and a fixed tick's worth would read as a throughput drop.
            traffic.tick(t, time.time_ns(), t - previous)
            previous = t
            if t >= next_report:
                report.progress(t, sidecar, sink.records())
                next_report += options.report_every_s
            stop.wait(max(0.0, options.tick_s - (time.monotonic() - started - t)))
    finally:
        traffic.shutdown()
    # Let the last windows close and the last events arrive.
    stop.wait(min(_DEMO_LATENESS_S + 2.0, options.duration_s / 4.0))
    events = sink.records()
    report.final(events)
    return events


class DemoReport:
    """Writes the demo's live lines and final summary (a stream is passed in)."""

    def __init__(self, out: TextIO, incidents: Sequence[Incident], t0_ns: int) -> None:
        self._out = out
        self._incidents = incidents
        self._t0_ns = t0_ns
        self._announced: set[str] = set()
        self._shown_events = 0

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def banner(self, sidecar: Sidecar, options: DemoOptions) -> None:
        """Where things listen and what will happen."""
        self._write(
            f"otel-anomaly demo: OTLP/gRPC on port {sidecar.grpc_port}, Prometheus on "
            f"http://127.0.0.1:{sidecar.metrics_port}/metrics, events to "
            f"{sidecar.config.outputs.otlp_events.endpoint}; {options.duration_s:g}s, "
            f"seed {options.seed}"
        )
        for incident in self._incidents:
            self._write(f"  planned at {incident.start_s:5.0f}s-{incident.end_s:.0f}s: "
                        f"{incident.title}")

    def incidents_started(self, t: float) -> None:
        """Announce each incident once, when it begins."""
        for incident in self._incidents:
            if incident.start_s <= t and incident.title not in self._announced:
                self._announced.add(incident.title)
                self._write(f"[{t:5.0f}s] incident begins: {incident.title}")

    def progress(self, t: float, sidecar: Sidecar, events: list[SinkRecord]) -> None:
        """Series count, flagged series and the events since the last report."""
        snapshot = sidecar.prometheus.table.snapshot()
        flagged = [labels for labels, flag in zip(snapshot.labels, snapshot.flag.tolist(),
                                                  strict=True) if flag]
        names = ", ".join(f"{f.get('job', '?')} {f.get('metric', '?')}" for f in flagged[:3])
        more = f" (+{len(flagged) - 3})" if len(flagged) > 3 else ""
        self._write(f"[{t:5.0f}s] series {snapshot.total}, flagged {len(flagged)}"
                    f"{': ' + names + more if flagged else ''}")
        self.new_events(events)

    def new_events(self, events: list[SinkRecord]) -> None:
        """Every open and close received since the last call, and how many updates.

        Updates are only counted: an anomaly that stays open sends one a minute, and listing
        them would push the opens and closes off the screen.
        """
        fresh = events[self._shown_events:]
        self._shown_events = len(events)
        for record in fresh:
            if record.event_name != "anomaly.update":
                self._write(f"         {self._event_line(record)}")
        updates = sum(record.event_name == "anomaly.update" for record in fresh)
        if updates:
            self._write(f"         ({updates} anomaly.update event{'s' * (updates > 1)})")

    def _event_line(self, record: SinkRecord) -> str:
        """The event, then its explanation on a line of its own (why it opened or closed)."""
        attrs = record.attributes
        at = (record.record.time_unix_nano - self._t0_ns) / 1e9
        metric = str(attrs.get("anomaly.metric", "?"))
        why = _without_series(str(any_value(record.record.body) or ""), metric)
        return (f"{record.event_name:14} at {at:5.0f}s {record.resource.get('service.name', '?')} "
                f"{metric} score {_num(attrs.get('anomaly.score'))}"
                + (f" trace {record.record.trace_id.hex()}" if record.record.trace_id else "")
                + (f"\n{'':26}{why}" if why else ""))

    def final(self, events: list[SinkRecord]) -> None:
        """What was flagged, and which incidents were detected."""
        opened = [r for r in events if r.event_name == "anomaly.open"]
        self._write(f"\nflagged ({len(opened)} anomaly.open events, {len(events)} events):")
        self._write(f"  {'first':>6}  {'opens':>5}  {'max score':>9}  {'service':10} metric")
        for (service, metric), group in sorted(_by_series(opened).items(),
                                               key=lambda item: item[1][0]):
            first, count, top = group
            self._write(f"  {first - self._t0_ns / 1e9:5.0f}s  {count:5d}  {top:9.1f}  "
                        f"{service:10} {metric}")
        self._write("\nincidents:")
        for incident in self._incidents:
            self._write(f"  {incident.title}: {self._detection(incident, opened)}")

    def _detection(self, incident: Incident, opened: list[SinkRecord]) -> str:
        for record in opened:
            attrs = record.attributes
            at = (record.record.time_unix_nano - self._t0_ns) / 1e9
            if (record.resource.get("service.name") == incident.service
                    and incident.signal_hint in str(attrs.get("anomaly.metric", ""))
                    and incident.start_s <= at <= incident.end_s + _DETECTION_GRACE_S):
                return f"detected {at - incident.start_s:.0f}s after it began " \
                       f"({attrs.get('anomaly.metric')})"
        return "not detected"


def _by_series(records: list[SinkRecord]) -> dict[tuple[str, str], tuple[float, int, float]]:
    groups: dict[tuple[str, str], tuple[float, int, float]] = {}
    for record in records:
        attrs = record.attributes
        key = (str(record.resource.get("service.name", "?")), str(attrs.get("anomaly.metric", "?")))
        at = record.record.time_unix_nano / 1e9
        value = attrs.get("anomaly.score")
        score = value if isinstance(value, float) else 0.0
        first, count, top = groups.get(key, (at, 0, 0.0))
        groups[key] = (min(first, at), count + 1, max(top, score))
    return groups


def _without_series(explanation: str, metric: str) -> str:
    """``explanation`` without its leading ``metric{labels}: `` (the line names the series).

    >>> _without_series('cpu{host="a"}: back to normal, value 3', "cpu")
    'back to normal, value 3'
    >>> _without_series("cpu: value 9, above the expected 3", "cpu")
    'value 9, above the expected 3'
    """
    if explanation.startswith(metric + "{"):
        end = explanation.find("}: ", len(metric))
        return explanation[end + 3:] if end >= 0 else explanation
    return explanation.removeprefix(metric + ": ")


def _num(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
