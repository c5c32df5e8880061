"""The demo: incidents after the warm-up, and a short real run end to end."""

from __future__ import annotations

import io

from helpers.sidecars import loopback_config

from otel_anomaly.exporter.commands.demo import DemoOptions, demo_config, incidents_for, run_demo


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
