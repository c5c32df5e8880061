"""The demo: incidents after the warm-up, and a short real run end to end."""

from __future__ import annotations

import io

from helpers.sidecars import loopback_config
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_anomaly.exporter.commands.demo import (
    DemoOptions,
    DemoReport,
    demo_config,
    incidents_for,
    run_demo,
)
from otel_anomaly.exporter.commands.otlp_sink import SinkRecord


def test_incidents_follow_a_one_minute_warm_up_and_do_not_overlap() -> None:
    incidents = incidents_for(180.0)
    assert [i.service for i in incidents] == ["payments", "checkout", "catalog", "catalog"]
    assert incidents[0].start_s >= 60.0
    assert incidents[-1].end_s <= 180.0
    for earlier, later in zip(incidents, incidents[1:], strict=False):
        assert earlier.end_s <= later.start_s


def test_demo_config_points_events_at_the_sink_and_shortens_windows() -> None:
    config = demo_config(loopback_config(), "127.0.0.1:5555")
    assert config.outputs.otlp_events.endpoint == "127.0.0.1:5555"
    assert config.traces.window == config.logs.window == 1.0
    configured = loopback_config({"outputs.otlp_events.endpoint": "collector:4319"})
    assert demo_config(configured, "127.0.0.1:5555").outputs.otlp_events.endpoint == "collector:4319"


def _event(name: str, at_s: int, metric: str, body: str = "") -> SinkRecord:
    record = LogRecord(event_name=name, time_unix_nano=at_s * 10**9, attributes=[
        KeyValue(key="anomaly.metric", value=AnyValue(string_value=metric)),
        KeyValue(key="anomaly.score", value=AnyValue(double_value=2.0))],
        body=AnyValue(string_value=body) if body else None)
    return SinkRecord({"service.name": "shop"}, "otel-anomaly", record)


def test_every_open_and_close_is_printed_and_updates_are_counted() -> None:
    # Seven opens and closes and two updates arrive between two reports (the demo printed
    # only the last five events, so a close could vanish from its output).
    events = [_event("anomaly.open", t, f"m{t}") for t in range(1, 5)]
    events += [_event("anomaly.update", 5, "m1"), _event("anomaly.update", 6, "m2")]
    events += [_event("anomaly.close", t, f"m{t - 6}") for t in range(7, 10)]
    out = io.StringIO()
    report = DemoReport(out, incidents_for(180.0), t0_ns=0)
    report.new_events(events[:1])
    report.new_events(events)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == (
        ["anomaly.open"] * 4 + ["anomaly.close"] * 3 + ["(2"]), lines
    assert lines[-4:] == [
        "         anomaly.close  at     7s shop m1 score 2.0",
        "         anomaly.close  at     8s shop m2 score 2.0",
        "         anomaly.close  at     9s shop m3 score 2.0",
        "         (2 anomaly.update events)"], lines


def test_each_open_and_close_is_followed_by_its_explanation_without_the_series() -> None:
    # The line already names the service and metric; the explanation says why.
    out = io.StringIO()
    report = DemoReport(out, incidents_for(180.0), t0_ns=0)
    report.new_events([
        _event("anomaly.open", 3, "cpu", 'cpu{service.name="shop"}: value 95%, above the '
               "expected 40% (band 30 to 50%)"),
        _event("anomaly.close", 9, "cpu", 'cpu{service.name="shop"}: back to normal'),
        _event("anomaly.close", 10, "queue", "queue: the new level is now the baseline")])
    assert out.getvalue().splitlines() == [
        "         anomaly.open   at     3s shop cpu score 2.0",
        "                          value 95%, above the expected 40% (band 30 to 50%)",
        "         anomaly.close  at     9s shop cpu score 2.0",
        "                          back to normal",
        "         anomaly.close  at    10s shop queue score 2.0",
        "                          the new level is now the baseline"]


def test_a_short_demo_runs_end_to_end() -> None:
    out = io.StringIO()
    run_demo(loopback_config(), DemoOptions(duration_s=6.0, report_every_s=2.0), out)
    text = out.getvalue()
    assert text.startswith("otel-anomaly demo: OTLP/gRPC on port ")
    assert "incident begins: latency regression" in text
    assert "] series " in text
    assert "\nflagged (" in text
    assert text.count("\n  ") >= 4 + 4  # planned incidents and their outcome
    assert "\nincidents:\n" in text
