"""Checkpoints: a restored engine continues exactly where the saved one was.

Every signal is fed (metrics gauges, counters and histograms, traces, logs, deploys, the
multivariate stage), the checkpoint goes through a real file, and a damaged, foreign,
future or malicious file is refused without running anything.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.engine_state import assert_same_state

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.multivariate import MultivariateSettings
from otel_anomaly.processors.settings import DEFAULT_RULES, EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    counter,
    gauge,
    histogram,
    logs_request,
    metrics_request,
    span,
    traces_request,
)
from otel_anomaly.processors.types import IngestResult

RESOURCE = {"service.name": "shop", "service.version": "1.0"}
STEP_S = 10


def _settings(clock: FakeClock | None = None, **changes: Any) -> EngineSettings:
    settings = EngineSettings(clock=clock or FakeClock(), traces_window_s=20.0,
                              logs_window_s=20.0, lateness_s=0.0,
                              multivariate=MultivariateSettings(warmup=3))
    return replace(settings, **changes)


def _ingest_all(engine: Engine, i: int, rng: np.random.Generator) -> list[IngestResult]:
    """One step of every signal: gauges, a counter, a histogram, spans and log records."""
    ts = (1_000 + STEP_S * i) * SECOND
    spike = 40.0 if i in (70, 95) else 0.0
    version = "2.0" if i >= 85 else "1.0"  # a deploy mid-way: a grace period to restore
    resource = {**RESOURCE, "service.version": version}
    samples = list(rng.gamma(4.0, 25.0, 20) + 10 * spike)
    metrics = metrics_request([
        gauge("queue.depth", [(ts, 50.0 + float(rng.normal(0, 1)) + spike)],
              attributes={"queue": "a"}),
        gauge("queue.depth", [(ts, 20.0 + float(rng.normal(0, 1)))], attributes={"queue": "b"}),
        counter("http.requests", [(ts, float(100 * i + rng.integers(0, 5)))], start=SECOND),
        histogram("http.server.duration", [(ts, samples)], [50.0, 100.0, 250.0, 500.0],
                  start=SECOND, cumulative=False),
    ], resource)
    spans = [span("GET /cart", ts + k * SECOND // 10, float(rng.gamma(4.0, 20.0)) + spike,
                  error=bool(rng.random() < 0.05)) for k in range(8)]
    records = [(ts + k * SECOND // 10, 17 if rng.random() < 0.05 else 9) for k in range(6)]
    return [engine.ingest("metrics", metrics),
            engine.ingest("traces", traces_request(spans, resource)),
            engine.ingest("logs", logs_request(records, resource))]


def _fed(steps: range, engine: Engine, seed: int = 1) -> list[IngestResult]:
    rng = np.random.default_rng(seed)
    results: list[IngestResult] = []
    for i in range(steps.stop):
        step = _ingest_all(engine, i, rng)
        if i in steps:
            results += step
    return results


def _saved(engine: Engine, path: Path) -> Path:
    with path.open("wb") as out:
        checkpoint.dump(engine, out)
    return path


def _loaded(path: Path, settings: EngineSettings) -> Engine:
    with path.open("rb") as source:
        return checkpoint.load(source, settings)


def test_restored_engine_scores_every_signal_exactly_like_the_original(tmp_path: Path) -> None:
    original = Engine(_settings())
    rng = np.random.default_rng(1)
    for i in range(80):
        _ingest_all(original, i, rng)
    path = _saved(original, tmp_path / "state.ckpt")
    restored = _loaded(path, _settings())
    assert_same_state(original, restored)
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    metrics_seen = set()
    for i in range(80, 120):
        for a, b in zip(_ingest_all(original, i, rng_a), _ingest_all(restored, i, rng_b),
                        strict=True):
            np.testing.assert_array_equal(a.scores.score, b.scores.score)
            np.testing.assert_array_equal(a.scores.expected, b.scores.expected)
            np.testing.assert_array_equal(a.scores.upper, b.scores.upper)
            np.testing.assert_array_equal(a.scores.flag, b.scores.flag)
            assert [(e.kind, e.key, e.explanation) for e in a.events] == [
                (e.kind, e.key, e.explanation) for e in b.events]
            assert (a.accepted, a.rejected) == (b.accepted, b.rejected)
            metrics_seen |= {restored.series_key(s).metric for s in b.scores.slots.tolist()}
    # Every kind of state took part: histogram features, RED and log windows, multivariate.
    assert {"http_server_duration_milliseconds:p99", "http_requests_total:rate",
            "traces_span_metrics_calls_total:rate", "logs_records_total:rate",
            "service_multivariate:score"} <= metrics_seen, metrics_seen
    assert restored.stats() == original.stats()
    assert restored.deploys.deploys_total == 1
    assert restored.series_labels(0) == original.series_labels(0)  # labels recomputed
    assert_same_state(original, restored)


def _checkpoint_bytes(tmp_path: Path) -> bytes:
    engine = Engine(_settings())
    _fed(range(20), engine)
    return _saved(engine, tmp_path / "good.ckpt").read_bytes()


def _flipped(data: bytes) -> bytes:
    """A bit flipped in the middle of the largest array (a detector's state)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    at = info.header_offset + len(info.FileHeader()) + info.file_size // 2
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def _rewritten(data: bytes, **header: Any) -> bytes:
    """The same checkpoint with header fields changed (as another release would write)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    doc = json.loads(members["header"].tobytes()) | header
    members["header"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **members)
    return out.getvalue()


def _npy_header_broken(data: bytes) -> bytes:
    """One byte of a member's .npy header changed: numpy's parser raises SyntaxError."""
    at = data.index(b"'descr': '<") + len(b"'descr': '")
    return data[:at] + b"," + data[at + 1:]


def _unknown_compression(data: bytes) -> bytes:
    """A central-directory entry names compression method 1: NotImplementedError."""
    at = data.index(b"PK\x01\x02") + 10
    return data[:at] + b"\x01\x00" + data[at + 2:]


@pytest.mark.parametrize(("damage", "reason"), [
    # Each of the next four escaped as its own exception type and failed the start-up,
    # leaving the file in place for the next start to fail on.
    (_npy_header_broken, "truncated or corrupt"),
    (_unknown_compression, "truncated or corrupt"),
    (lambda data: _rewritten(data, clock=10**400), "no finite ingest clock"),
    (lambda data: _rewritten(data, clock=float("nan")), "no finite ingest clock"),
    (lambda data: data[: len(data) // 2], "truncated or corrupt"),
    (lambda data: data[:-1], "truncated or corrupt"),
    (_flipped, "truncated or corrupt"),
    (lambda data: b"hello" + data, "not an otel-anomaly checkpoint"),
    (lambda data: b"", "not an otel-anomaly checkpoint"),
    (lambda data: _rewritten(data, version=checkpoint.FORMAT + 1), "newer"),
    (lambda data: _rewritten(data, version=3), "foreign"),
    (lambda data: _rewritten(data, magic="something else"), "bad header"),
])
def test_damaged_foreign_or_future_checkpoints_are_refused_with_a_reason(
    tmp_path: Path, damage: Any, reason: str,
) -> None:
    path = tmp_path / "state.ckpt"
    path.write_bytes(damage(_checkpoint_bytes(tmp_path)))
    with pytest.raises(checkpoint.CheckpointError, match=reason):
        _loaded(path, _settings())


class _Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _pickle_checkpoints(marker: Path) -> list[bytes]:
    payload = pickle.dumps({"format": 3, "state": _Payload(marker)})
    as_member = io.BytesIO()  # an npz whose state member is a pickled object array
    np.savez(as_member, header=np.array([_Payload(marker)], dtype=object),
             state=np.array([_Payload(marker)], dtype=object))
    return [payload, b"otel-anomaly-checkpoint\n" + b"\0" * 32 + payload, as_member.getvalue()]


@pytest.mark.parametrize("variant", [0, 1, 2], ids=["pickle", "old-format", "npz-object"])
def test_a_pickle_that_would_run_code_is_refused_and_never_run(
    tmp_path: Path, variant: int,
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "state.ckpt"
    path.write_bytes(_pickle_checkpoints(marker)[variant])
    with pytest.raises(checkpoint.CheckpointError):
        _loaded(path, _settings())
    assert not marker.exists()


def test_other_detector_rules_are_refused_but_new_alert_policies_are_adopted(
    tmp_path: Path,
) -> None:
    engine = Engine(_settings())
    _fed(range(3), engine)
    path = _saved(engine, tmp_path / "state.ckpt")
    with pytest.raises(checkpoint.CheckpointError, match="other settings"):
        _loaded(path, _settings(rules=DEFAULT_RULES[1:]))
    retuned_rules = tuple(replace(r, alert=replace(r.alert, band=9.0)) for r in DEFAULT_RULES)
    restored = _loaded(path, _settings(rules=retuned_rules))
    names = {rule.name for rule in DEFAULT_RULES}
    mine = [i for i, rule in enumerate(restored.scorer.rules) if rule.name in names]
    assert len(mine) == len(DEFAULT_RULES)
    assert {restored.scorer.rules[i].alert.band for i in mine} == {9.0}
    assert {restored.scorer.calibrators[i].policy.band for i in mine} == {9.0}


def test_retunable_settings_are_read_afresh(tmp_path: Path) -> None:
    engine = Engine(_settings(deploy_grace_s=600.0, silence_after_s=60.0))
    _fed(range(3), engine)
    path = _saved(engine, tmp_path / "state.ckpt")
    restored = _loaded(path, _settings(deploy_grace_s=30.0, silence_after_s=0.0))
    assert restored.deploys.grace_ns == 30 * SECOND
    assert restored.silence.silence_after_s == 0.0


def test_idle_time_survives_the_restart_of_the_ingest_clock(tmp_path: Path) -> None:
    engine = Engine(EngineSettings(clock=FakeClock(5_000.0), series_ttl_s=100.0))
    engine.ingest("metrics", metrics_request([gauge("queue.depth", [(SECOND, 1.0)])]))
    engine.settings.clock.now = 5_060.0  # type: ignore[attr-defined]
    path = _saved(engine, tmp_path / "state.ckpt")
    clock = FakeClock(3.0)  # a new process: the clock starts elsewhere
    restored = _loaded(path, EngineSettings(clock=clock, series_ttl_s=100.0))
    clock.now = 30.0  # 60 + 27 s idle: kept
    assert len(restored.evict_expired()) == 0
    clock.now = 50.0  # 60 + 47 s idle: past the TTL
    assert len(restored.evict_expired()) == 1


def test_river_models_are_left_out_and_restart_cold(tmp_path: Path) -> None:
    settings = _settings(multivariate=MultivariateSettings(warmup=3, model="dbstream"))
    engine = Engine(settings)
    _fed(range(12), engine)
    assert engine.multivariate is not None and engine.multivariate.models
    restored = _loaded(_saved(engine, tmp_path / "state.ckpt"), settings)
    assert restored.multivariate is not None
    assert not restored.multivariate.models_savable
    assert restored.multivariate.models == {}
    assert restored.stats().series_active == engine.stats().series_active


@pytest.mark.parametrize(("part", "change", "reason"), [
    ("rule_of", -1, "routes slot 0 to rule -1"),  # crashed the process in a kernel
    ("rule_of", 99, "routes slot 0 to rule 99"),
    ("local", 10**6, "row 1000000, outside the rules' state"),
])
def test_a_state_whose_parts_disagree_on_routing_is_refused(
    part: str, change: int, reason: str,
) -> None:
    engine = Engine(_settings())
    _fed(range(5), engine)
    state = engine.state_dict()
    state["scorer"]["per_slot"][part] = np.array(state["scorer"]["per_slot"][part])
    state["scorer"]["per_slot"][part][0] = change
    with pytest.raises(ValueError, match=reason):
        Engine(_settings()).load_state_dict(state)


def test_a_state_allocating_for_fewer_rules_is_refused() -> None:
    engine = Engine(_settings())
    _fed(range(5), engine)
    state = engine.state_dict()
    state["scorer"]["next_local"] = state["scorer"]["next_local"][:-1]
    with pytest.raises(ValueError, match="scorer state allocates for"):
        Engine(_settings()).load_state_dict(state)
