"""/metrics from pre-rendered text: same as the library's, gauge choice, no limit, no stall."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.promtool import promtool
from helpers.sidecars import grpc_clients, http_get, loopback_config, running, scrape
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from otel_anomaly.exporter.config import SCORE_GAUGE_NAMES, load_config
from otel_anomaly.exporter.errors import ConfigError
from otel_anomaly.exporter.outputs import SCORE_GAUGES, PrometheusOutput, ScoringRound
from otel_anomaly.exporter.outputs.prometheus import GAUGE_COLUMNS
from otel_anomaly.exporter.outputs.score_table import ScoreSnapshot, ScoreTable
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request
from otel_anomaly.processors.types import AnomalyEvent, Labels, ScoreBatch, SeriesKey

HOSTILE: Labels = (("metric", "m"), ("attr_q", 'say "hi"\\ \n'), ("attr_é", "ü"))


def rows(slots: list[int], values: list[float], flags: list[bool] | None = None) -> ScoreBatch:
    v = np.asarray(values, np.float64)
    return ScoreBatch(
        np.asarray(slots, np.intp), np.arange(len(slots), dtype=np.int64), v, v * 2, v - 1,
        v + 1, v / 3, np.asarray(flags or [False] * len(slots), np.bool_),
    )


def filled_output(**kwargs: object) -> PrometheusOutput:
    """Odd values (NaN, infinities, Go-exponent sizes), duplicates, a flag, an open anomaly."""
    output = PrometheusOutput(telemetry=Telemetry(CollectorRegistry()), **kwargs)  # type: ignore[arg-type]
    values = [0.1, float("nan"), float("inf"), -float("inf"), 1234567.0, 1e21, -2.5e-9, 7.0]
    labels = {slot: ((("metric", f"m{slot}"),) if slot != 0 else HOSTILE)
              for slot in range(len(values))}
    labels[7] = labels[6]  # two series, one label set: exported once
    flags = [False] * len(values)
    flags[4] = True
    output.publish(ScoringRound(scores=rows(list(range(len(values))), values, flags),
                                labels=labels))
    key = SeriesKey("m4", (), ())
    event = AnomalyEvent("open", 4, key, SECOND, "up", 3.0, 1234567.0, 1.0, 0.0, 2.0,
                         "ewma_zscore", "m4 up", anomaly_id="a-1")
    output.publish(ScoringRound(labels=labels, events=(event,)))
    return output


@pytest.mark.parametrize("max_series", [0, 3])
def test_rendered_text_is_byte_for_byte_what_generate_latest_writes(max_series: int) -> None:
    output = filled_output(max_series=max_series)
    assert output.render() == generate_latest(output.collector)
    assert output.render(openmetrics=True) + b"# EOF\n" == generate_openmetrics(output.collector)
    text = output.render().decode()
    assert text.count("# TYPE otel_anomaly_score gauge") == 1
    assert "otel_anomaly_open_info{" in text


def test_rendered_text_passes_promtool_and_both_parsers() -> None:
    output = filled_output(max_series=0)
    body = output.render()
    checked = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True,
                             timeout=60, check=False)
    assert b"error" not in checked.stderr + checked.stdout, checked
    names = {f.name for f in openmetrics_families(output.render(True).decode() + "# EOF\n")}
    assert {name for name, _, _ in SCORE_GAUGES} <= names


def test_a_slot_reused_by_another_series_is_rendered_with_its_new_labels() -> None:
    output = PrometheusOutput(0, Telemetry(CollectorRegistry()))
    output.publish(ScoringRound(scores=rows([0], [1.0]), labels={0: (("metric", "old"),)}))
    assert b'metric="old"' in output.render()
    output.publish(ScoringRound(scores=rows([0], [2.0]), labels={0: (("metric", "new"),)},
                                evicted=np.array([0])))
    body = output.render()
    assert b'metric="old"' not in body
    assert b'otel_anomaly_value{metric="new"} 2.0\n' in body


def test_only_the_chosen_gauges_are_rendered() -> None:
    output = filled_output(max_series=0, gauges=("score", "flag"))
    families = {f.name for f in openmetrics_families(output.render(True).decode() + "# EOF\n")}
    assert families == {"otel_anomaly_score", "otel_anomaly_flag", "otel_anomaly_open"}
    with pytest.raises(ValueError, match="unknown score gauges"):
        PrometheusOutput(0, Telemetry(CollectorRegistry()), ("band",))


def test_config_gauges_are_the_output_columns_and_are_validated(tmp_path: Path) -> None:
    assert SCORE_GAUGE_NAMES == GAUGE_COLUMNS
    config = load_config(None, {"exposition.gauges": ["score", "flag"]}, environ={})
    assert config.exposition.gauges == ("score", "flag")
    assert config.exposition.max_exported_series == 0
    path = tmp_path / "config.yaml"
    path.write_text("exposition:\n  gauges: []\n  max_exported_series: -1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {}, environ={})
    assert "exposition.max_exported_series: must be >= 0; got -1" in str(caught.value)
    assert ("exposition.gauges: must list at least one of score, value, expected, lower, "
            "upper, flag, warming") in str(caught.value)
    path.write_text("exposition:\n  gauges: [score, score, band]\n")
    with pytest.raises(ConfigError, match=r"exposition\.gauges\[2\]"):
        load_config(str(path), {}, environ={})
    path.write_text("exposition:\n  gauges: [score, flag, score]\n")
    with pytest.raises(ConfigError, match="exposition.gauges: lists score more than once"):
        load_config(str(path), {}, environ={})


def test_publishing_goes_on_while_a_scrape_renders() -> None:
    """A scrape parked after its snapshot (lock released) must not hold up ``publish``."""
    output = PrometheusOutput(0, Telemetry(CollectorRegistry()))
    labels = {0: (("metric", "m"),)}
    output.publish(ScoringRound(scores=rows([0], [1.0]), labels=labels))
    table = output.table
    snapshotted, resume = threading.Event(), threading.Event()
    take = table.snapshot

    def parked_snapshot(limit: int | None = None) -> ScoreSnapshot:
        snapshot = take(limit)
        snapshotted.set()
        assert resume.wait(10), "the test never let the scrape resume"
        return snapshot

    table.snapshot = parked_snapshot  # type: ignore[method-assign]
    bodies: list[bytes] = []
    scrape_thread = threading.Thread(target=lambda: bodies.append(output.render()),
                                     name="test-scrape")
    scrape_thread.start()
    try:
        assert snapshotted.wait(10), "the scrape never took its snapshot"
        publisher = threading.Thread(
            target=lambda: output.publish(ScoringRound(scores=rows([0, 1], [5.0, 6.0]),
                                                       labels={**labels, 1: (("metric", "n"),)})),
            name="test-publish")
        publisher.start()
        publisher.join(10)
        assert not publisher.is_alive(), "publish waited for a scrape that was formatting"
    finally:
        resume.set()
        scrape_thread.join(10)
    # The parked scrape rendered its own consistent snapshot; the next one sees the update.
    assert b'otel_anomaly_value{metric="m"} 1.0\n' in bodies[0]
    table.snapshot = take  # type: ignore[method-assign]
    assert b'otel_anomaly_value{metric="n"} 6.0\n' in output.render()


def test_snapshot_leaves_the_lock_free_while_it_orders_duplicates() -> None:
    table = ScoreTable()
    same = (("metric", "same"),)
    table.update(rows([0, 1, 2], [1.0, 2.0, 3.0], [False, True, False]),
                 {0: same, 1: same, 2: (("metric", "other"),)})
    snapshot = table.snapshot(1)
    assert snapshot.slots.tolist() == [1]
    assert (snapshot.total, snapshot.duplicates) == (3, 1)
    assert table.snapshot().slots.tolist() == [1, 2]


def test_sidecar_exports_every_series_by_default_and_only_the_configured_gauges() -> None:
    many = metrics_request([gauge(f"g{i}", [(SECOND, float(i))]) for i in range(30)])
    config = loopback_config({"exposition.gauges": ["score", "flag"]})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(many, timeout=5)
        families = scrape(sidecar.metrics_port)
        assert len(families["otel_anomaly_score"].samples) == 30
        assert len(families["otel_anomaly_flag"].samples) == 30
        assert "otel_anomaly_value" not in families
        assert "otel_anomaly_collect_duration_seconds" in families
        # A scraper asking for another name escaping gets the library's rendering.
        status, headers, body = http_get(sidecar.metrics_port, "/metrics", {
            "Accept": "application/openmetrics-text; version=1.0.0; escaping=dots"})
        assert status == 200 and "escaping=dots" in headers["Content-Type"], headers
        # (The library's parser cannot read its own dots escaping of counters back.)
        assert b"# TYPE otel__anomaly__score gauge\n" in body, body[:300]
        assert b"otel__anomaly__score{" in body and body.endswith(b"# EOF\n")


def test_series_beyond_one_chunk_render_as_the_library_writes_them() -> None:
    output = PrometheusOutput(0, Telemetry(CollectorRegistry()), ("value", "flag"))
    slots = list(range(20_000))
    output.publish(ScoringRound(scores=rows(slots, [s / 7 for s in slots]),
                                labels={s: (("metric", f"m{s}"),) for s in slots}))
    assert output.render() == generate_latest(output.collector)
    assert output.render().count(b"\notel_anomaly_value{") == 20_000
