"""Anomaly ids and event stamps: one id per anomaly, from its open to its close, in order."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from otel_anomaly.processors.alerting.silence import SilenceWatch
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import AlertPolicy, DetectorRule, EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.state.codec import decode, encode
from otel_anomaly.processors.state.migrations import upgrade
from otel_anomaly.processors.testing import SECOND, FakeClock
from otel_anomaly.processors.types import AnomalyEvent, SeriesKey, anomaly_id

KEY = SeriesKey("queue_depth", (("service.name", "worker"),), ())
POLICY = AlertPolicy(min_duration=1, close_after=1, cooldown=0, update_interval_s=0.0)


def _engine(policy: AlertPolicy = POLICY) -> Engine:
    rules = (DetectorRule(params={"warmup": 5}, alert=policy),)
    return Engine(EngineSettings(clock=FakeClock(), rules=rules))


def _feed(engine: Engine, points: list[tuple[int, float]]) -> list[AnomalyEvent]:
    events: list[AnomalyEvent] = []
    for ts, value in points:
        result = engine.ingest_series([KEY], np.array([ts * SECOND]), np.array([value]))
        events += result.events
    return events


BASELINE = [(i, 10.0 + 0.1 * (i % 3)) for i in range(1, 31)]


def test_open_update_and_close_share_one_id_and_the_next_anomaly_gets_another() -> None:
    engine = _engine()
    events = _feed(engine, [*BASELINE, (31, 100.0), (32, 120.0), (33, 10.1), (34, 10.0)])
    events += _feed(engine, [(t, 10.0 + 0.1 * (t % 3)) for t in range(35, 60)])
    events += _feed(engine, [(60, 150.0), (61, 10.1)])
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["open", "update", "close"], kinds
    first, second = events[:3], events[3:]
    assert {e.anomaly_id for e in first} == {anomaly_id(KEY, 31 * SECOND)}
    assert [e.kind for e in second] == ["open", "close"]
    assert {e.anomaly_id for e in second} == {anomaly_id(KEY, 60 * SECOND)}
    assert first[0].anomaly_id != second[0].anomaly_id


def test_a_close_is_never_stamped_before_its_open() -> None:
    # Span outliers are stamped with their spans' end times, which arrive out of order:
    # the point that closes the anomaly may end before the one that opened it.
    engine = _engine()
    events = _feed(engine, [*BASELINE, (40, 100.0), (36, 10.0)])
    opened, closed = events
    assert (opened.kind, closed.kind) == ("open", "close")
    assert opened.ts_unix_nano == 40 * SECOND
    assert closed.ts_unix_nano == 40 * SECOND  # clamped, not 36 s
    assert closed.anomaly_id == opened.anomaly_id


def _restored(engine: Engine) -> Engine:
    buffer = io.BytesIO()
    checkpoint.dump(engine, buffer)
    buffer.seek(0)
    return checkpoint.load(buffer, engine.settings)


def test_the_id_survives_a_checkpoint_and_the_restored_anomaly_is_announced_again() -> None:
    engine = _engine(AlertPolicy(min_duration=1, close_after=1, update_interval_s=3600.0))
    (opened,) = _feed(engine, [*BASELINE, (31, 100.0)])
    restored = _restored(engine)
    # The first point after the restore re-announces the open anomaly (an update, sooner
    # than update_interval), so outputs that restarted empty learn of it again.
    (update,) = _feed(restored, [(32, 16.0)])
    assert (update.kind, update.anomaly_id) == ("update", opened.anomaly_id)
    assert _feed(restored, [(33, 16.0)]) == []  # announced once
    (closed,) = _feed(restored, [(34, 10.0)])
    assert (closed.kind, closed.anomaly_id) == ("close", opened.anomaly_id)


def test_format_4_checkpoints_upgrade_with_a_stable_id_for_open_anomalies() -> None:
    engine = _engine()
    (opened,) = _feed(engine, [*BASELINE, (31, 100.0)])
    state: dict[str, Any] = decode(*encode(engine.state_dict()))
    del state["scorer"]["per_slot"]["opened_ns"], state["scorer"]["per_slot"]["stamped_ns"]
    state["silence"]["services"] = [s[:-1] for s in state["silence"]["services"]]
    old = Engine(engine.settings)
    old.load_state_dict(upgrade(state, 4, checkpoint.FORMAT))
    events = _feed(old, [(32, 10.0)])
    assert [e.kind for e in events] == ["close"]
    assert events[0].anomaly_id == anomaly_id(KEY, 31 * SECOND)  # the last event's time


def test_a_silence_keeps_its_id_from_open_to_close() -> None:
    watch = SilenceWatch(silence_after_s=60, max_services=10)
    service = (("service.name", "checkout"),)
    for now in (0.0, 10.0, 20.0, 30.0):
        watch.seen([service], now)
    (opened,) = watch.check(now=95.0, ts_unix_nano=95 * SECOND)
    watch.seen([service], now=100.0)
    restored = SilenceWatch(silence_after_s=60, max_services=10)
    restored.load_state_dict(watch.state_dict())
    (closed,) = restored.check(now=101.0, ts_unix_nano=90 * SECOND)  # a clock step back
    assert closed.anomaly_id == opened.anomaly_id != ""
    assert closed.ts_unix_nano == opened.ts_unix_nano == 95 * SECOND
