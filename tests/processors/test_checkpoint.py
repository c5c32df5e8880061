"""Checkpoints: a restored engine continues exactly where the saved one was."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from otel_anomaly.processors import checkpoint
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import DEFAULT_RULES, EngineSettings
from otel_anomaly.processors.testing import SECOND, counter, gauge, metrics_request


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(i: int, value: float):  # noqa: ANN201 - a metrics request
    ts = (1_000 + 10 * i) * SECOND
    return metrics_request(
        [gauge("queue.depth", [(ts, value)], attributes={"queue": "a"}),
         counter("http.requests", [(ts, float(100 * i))], start=SECOND)],
        {"service.name": "shop", "service.version": "1.0"},
    )


def history(rng: np.random.Generator, n: int) -> list[float]:
    return [50.0 + float(rng.normal(0, 1)) for _ in range(n)]


def test_restored_engine_scores_the_rest_exactly_like_the_original() -> None:
    rng = np.random.default_rng(1)
    values = history(rng, 120) + [90.0, 51.0] + history(rng, 20)
    original = Engine(EngineSettings(clock=Clock()))
    for i, v in enumerate(values[:100]):
        original.ingest("metrics", request(i, v))
    restored = checkpoint.load(checkpoint.dump(original), EngineSettings(clock=Clock()))
    for i, v in enumerate(values[100:], start=100):
        a, b = original.ingest("metrics", request(i, v)), restored.ingest("metrics", request(i, v))
        np.testing.assert_array_equal(a.scores.score, b.scores.score)
        np.testing.assert_array_equal(a.scores.expected, b.scores.expected)
        assert [(e.kind, e.slot) for e in a.events] == [(e.kind, e.slot) for e in b.events]
    assert restored.stats().series_active == original.stats().series_active == 2
    assert restored.stats().series_warming == 0  # no second warm-up after a restart


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: b"hello" + data,
    lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    lambda data: b"",
])
def test_damaged_checkpoints_are_refused_with_a_reason(damage) -> None:  # noqa: ANN001
    engine = Engine(EngineSettings(clock=Clock()))
    engine.ingest("metrics", request(0, 1.0))
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint"):
        checkpoint.load(damage(checkpoint.dump(engine)), EngineSettings(clock=Clock()))


def test_other_detector_rules_are_refused_but_new_alert_policies_are_adopted() -> None:
    engine = Engine(EngineSettings(clock=Clock()))
    engine.ingest("metrics", request(0, 1.0))
    data = checkpoint.dump(engine)
    other = EngineSettings(clock=Clock(), rules=DEFAULT_RULES[1:])
    with pytest.raises(checkpoint.CheckpointError, match="other settings"):
        checkpoint.load(data, other)
    retuned_rules = tuple(replace(r, alert=replace(r.alert, band=9.0)) for r in DEFAULT_RULES)
    restored = checkpoint.load(data, EngineSettings(clock=Clock(), rules=retuned_rules))
    names = {rule.name for rule in DEFAULT_RULES}
    mine = [i for i, rule in enumerate(restored.scorer.rules) if rule.name in names]
    assert len(mine) == len(DEFAULT_RULES)
    assert {restored.scorer.rules[i].alert.band for i in mine} == {9.0}
    assert {restored.scorer.calibrators[i].policy.band for i in mine} == {9.0}


def test_idle_time_survives_the_restart_of_the_ingest_clock() -> None:
    engine = Engine(EngineSettings(clock=Clock(5_000.0), series_ttl_s=100.0))
    engine.ingest("metrics", request(0, 1.0))
    engine.settings.clock.now = 5_060.0  # type: ignore[attr-defined]
    data = checkpoint.dump(engine)
    clock = Clock(3.0)  # a new process: the clock starts elsewhere
    restored = checkpoint.load(data, EngineSettings(clock=clock, series_ttl_s=100.0))
    clock.now = 30.0  # 60 + 27 s idle: kept
    assert len(restored.evict_expired()) == 0
    clock.now = 50.0  # 60 + 47 s idle: past the TTL
    assert len(restored.evict_expired()) == 1  # the gauge (a counter scores from its 2nd point)
