"""Deploy awareness: a new service.version re-learns a level shift instead of alerting."""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.alerting.deploys import _NEVER, DeployTracker, LevelOffsets
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.state.codec import decode, encode
from otel_anomaly.processors.state.migrations import _deploy_columns, upgrade
from otel_anomaly.processors.testing import (
    SECOND,
    gauge,
    incident_series,
    metrics_request,
    replay_incidents,
)
from otel_anomaly.processors.types import IngestResult, SeriesKey

STEP_S = 10
BEFORE = 400  # points at the old level: past every warm-up of the default rules
AFTER = 400


def level(i: int, rng: np.random.Generator) -> float:
    base = 100.0 if i < BEFORE else 130.0  # +30 % at the release, for good
    return base + float(rng.normal(0.0, 2.0))


def feed(engine: Engine, versions: tuple[str, str], spike_at: int | None = None) -> list[IngestResult]:
    rng = np.random.default_rng(3)
    results = []
    for i in range(BEFORE + AFTER):
        value = 400.0 if i == spike_at else level(i, rng)
        version = versions[0] if i < BEFORE else versions[1]
        request = metrics_request(
            [gauge("process.memory.usage", [((1_000 + i * STEP_S) * SECOND, value)])],
            {"service.name": "cart", "service.version": version},
        )
        results.append(engine.ingest("metrics", request))
    return results


def opened_at(results: list[IngestResult]) -> list[int]:
    return [i for i, r in enumerate(results) for e in r.events if e.kind == "open"]


def test_the_same_step_alerts_without_a_release_and_not_with_one() -> None:
    without = feed(Engine(EngineSettings(clock=lambda: 0.0)), ("1.0", "1.0"))
    assert any(BEFORE <= i < BEFORE + 10 for i in opened_at(without)), opened_at(without)
    released = feed(Engine(EngineSettings(clock=lambda: 0.0)), ("1.0", "1.1"))
    assert opened_at(released) == []
    last = released[-1].scores
    assert last.score[0] < 1.0
    assert abs(last.expected[0] - 130.0) < 5.0, last.expected


def test_a_release_that_slows_a_daily_latency_by_a_quarter_pages_nothing_afterwards() -> None:
    # ``benchmarks/incidents.py``'s deploy at 30-s points: a p99 with a daily cycle that is
    # 25 % slower from the release on. The grace period learns the change; learned as an
    # amount (ms) at one hour of the day, it overshot at quieter hours, and on the log scale
    # the latency rule works in that left a band 11 % wide below the expected value: 3 of
    # 10 series opened anomalies after the grace, one for 2.75 hours. Learned as a factor,
    # it holds at every hour.
    cases = [incident_series("deploy_step", days=21, step_s=30, at_day=17, seed=100 * i + 7)
             for i in range(10)]
    results = replay_incidents(Engine(EngineSettings(clock=lambda: 0.0)), cases)
    flagged = {i: int(r.flag[c.start:].sum()) for i, (c, r) in
               enumerate(zip(cases, results, strict=True)) if r.flag[c.start:].any()}
    assert not flagged, f"points flagged after the release, per series: {flagged}"
    for case, result in zip(cases, results, strict=True):  # the new level was learned
        # (as well as the mean of the grace period's 30 points allows: within 7 % here)
        ratio = float(np.median(case.values[-2880:] / result.expected[-2880:]))
        assert abs(ratio - 1.0) < 0.15, f"the last day ran at {ratio:.2f}x its expected value"


def test_the_version_is_not_part_of_the_series_identity() -> None:
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    results = feed(engine, ("1.0", "1.1"))
    assert engine.stats().series_active == 1
    assert {int(r.scores.slots[0]) for r in results} == {0}
    assert dict(engine.series_key(0).resource) == {"service.name": "cart"}


def test_an_incident_after_the_grace_period_still_alerts() -> None:
    grace_points = int(EngineSettings(clock=lambda: 0.0).deploy_grace_s / STEP_S)
    spike = BEFORE + grace_points + 50
    results = feed(Engine(EngineSettings(clock=lambda: 0.0)), ("1.0", "1.1"), spike_at=spike)
    assert opened_at(results) == [spike]


def test_zero_grace_disables_deploy_awareness() -> None:
    results = feed(Engine(EngineSettings(clock=lambda: 0.0, deploy_grace_s=0.0)), ("1.0", "1.1"))
    assert any(BEFORE <= i < BEFORE + 10 for i in opened_at(results)), opened_at(results)


def test_replay_gives_the_same_scores() -> None:
    first = feed(Engine(EngineSettings(clock=lambda: 0.0)), ("1.0", "1.1"))
    second = feed(Engine(EngineSettings(clock=lambda: 0.0)), ("1.0", "1.1"))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.scores.score, b.scores.score)
        np.testing.assert_array_equal(a.scores.expected, b.scores.expected)


CART, SHOP = (("service.name", "cart"),), (("service.name", "shop"),)


def test_a_deploy_puts_only_its_service_series_in_grace_and_forgotten_slots_leave() -> None:
    tracker = DeployTracker(grace_s=60)
    tracker.track(np.array([0, 1, 2]), [CART, SHOP, CART])
    tracker.observe(CART, "1", 0)
    tracker.forget(np.array([2]))
    tracker.observe(CART, "2", 100 * SECOND)
    at = np.full(4, 130 * SECOND)
    assert tracker.in_grace(np.array([0, 1, 2]), at[:3]).tolist() == [True, False, False]
    tracker.track(np.array([2, 3]), [SHOP, CART])  # a reused slot, and a series born after
    assert tracker.in_grace(np.array([0, 1, 2, 3]), at).tolist() == [True, False, False, True]


def test_format_10_deploy_state_upgrades_to_columns() -> None:
    # A format-10 checkpoint kept a (slot, service) pair per series and the deploy times
    # per slot; the upgrade must give the same grace periods.
    old = {"deploys_total": 1, "versions": [(CART, ["1", "2"]), (SHOP, ["1"])],
           "deployed_at": [(CART, 100 * SECOND)],
           "service_of": [(0, CART), (1, SHOP), (3, CART)],
           "slot_deploy": {"at": np.array([100 * SECOND, _NEVER, _NEVER, 100 * SECOND])}}
    state = _deploy_columns({"deploys": old})["deploys"]
    assert state["services"] == [CART, SHOP]
    assert state["slots"]["service"].tolist() == [0, 1, -1, 0]
    tracker = DeployTracker(grace_s=60)
    tracker.load_state_dict(state)
    at = np.full(4, 130 * SECOND)
    assert tracker.in_grace(np.arange(4), at).tolist() == [True, False, False, True]
    tracker.observe(SHOP, "2", 200 * SECOND)  # the service numbers survived the upgrade
    assert tracker.in_grace(np.arange(4), np.full(4, 230 * SECOND)).tolist() == [
        False, True, False, False]
    restored = DeployTracker(grace_s=60)
    restored.load_state_dict(tracker.state_dict())
    assert restored.in_grace(np.arange(4), np.full(4, 230 * SECOND)).tolist() == [
        False, True, False, False]


def test_a_latency_offset_of_an_older_checkpoint_becomes_the_factor_that_shows_the_same() -> None:
    # Format 13 saved every offset as an amount. A log model's amount shows the same
    # expected value at its first point after the restore, then scales with the level.
    key = SeriesKey("http_server_duration_milliseconds:p99", (("service.name", "cart"),), ())
    rng = np.random.default_rng(8)
    values = 100.0 * np.exp(0.1 * rng.standard_normal(560))
    ts = (np.arange(len(values), dtype=np.int64) * 30 + 1_700_000_000) * SECOND
    plain = Engine(EngineSettings(clock=lambda: 0.0))
    for i in range(500):
        plain.ingest_series([key], ts[i : i + 1], values[i : i + 1])
    state = decode(*encode(plain.state_dict()))
    assert not state["scorer"]["offsets"]["active"]
    state["scorer"]["offsets"] = {"active": True, "offset": np.array([30.0])}  # format 13
    old = Engine(plain.settings)
    old.load_state_dict(upgrade(state, 13, checkpoint.FORMAT))

    def expected(engine: Engine, value: float, i: int) -> float:
        return float(engine.ingest_series([key], ts[i : i + 1], np.array([value])).scores.expected[0])

    # Fed so that both detectors see the same values: +30 ms at the first point, then x r.
    first = expected(plain, values[500], 500)
    assert expected(old, values[500] + 30.0, 500) == first + 30.0
    r = (first + 30.0) / first
    for i in range(501, 560):
        assert np.isclose(expected(old, values[i] * r, i), expected(plain, values[i], i) * r,
                          rtol=1e-5), i


def test_an_offset_remembers_five_minutes_of_points_at_least() -> None:
    # From the tenth gap on each weighed a tenth: 2.5 minutes at 15-s points, where a p99's
    # last 10 points set a release's offset 25 % too high and the series opened after the
    # grace period (`benchmarks/incidents.py --step 15 --intervals`, deploy_step: 1 of 10,
    # now 0). A row now weighs at least its share of 5 minutes at its usual spacing if that
    # is less than a tenth; 30-s points and slower keep the tenth.
    def last_step(spacing: float | None) -> float:
        offsets, slots = LevelOffsets(), np.array([0])
        for _ in range(40):
            offsets.absorb(slots, np.array([100.0]), np.array([100.0]), relative=False,
                           spacing_s=None if spacing is None else np.array([spacing]))
        offsets.absorb(slots, np.array([110.0]), np.array([100.0]), relative=False,
                       spacing_s=None if spacing is None else np.array([spacing]))
        return float(offsets.state_dict()["amount"][0])

    assert last_step(15.0) == pytest.approx(10.0 * 15.0 / 300.0)
    assert last_step(30.0) == pytest.approx(1.0)
    assert last_step(120.0) == pytest.approx(1.0)
    assert last_step(0.0) == pytest.approx(1.0)  # spacing not known yet
    assert last_step(None) == pytest.approx(1.0)


def test_an_offset_is_the_mean_of_the_gaps_since_its_deploy() -> None:
    # The last few points of a grace period alone (a fixed share each) left a p99 release
    # learned 6 to 17 % off its new level, and some such series paged for hours afterwards.
    # (The mean itself; the detector is given its evident part, ``evident_offset``.)
    offsets, slots = LevelOffsets(), np.array([0])

    def amount() -> float:
        return float(offsets.state_dict()["amount"][0]) if offsets.active else 0.0

    def absorb(gap: float) -> None:  # a gap from the expected value
        shift = offsets.correction(slots)
        given = 0.0 if shift is None else float(shift.amount[0])
        offsets.absorb(slots, np.array([100.0 + gap - given]), np.array([100.0]),
                       relative=False)

    for gap in (4.0, 8.0, 6.0, 2.0):
        absorb(gap)
    assert amount() == pytest.approx(5.0)
    # From the tenth gap on, each weighs a tenth (a rolling update is still followed).
    for _ in range(16):
        absorb(15.0)
    assert 12.0 < amount() < 15.0
    before = amount()
    absorb(15.0)
    assert amount() - before == pytest.approx(0.1 * (15.0 - before))
    # A new deploy starts the mean afresh: its first gap is taken whole.
    offsets.restart(slots)
    absorb(3.0)
    assert amount() == pytest.approx(3.0)
    assert float(offsets.correction(slots).amount[0]) == pytest.approx(3.0)


def test_an_offset_gives_a_count_only_its_evident_part() -> None:
    offsets, slots = LevelOffsets(), np.array([0, 1, 2])
    counted = np.array([False, True, True])
    rng = np.random.default_rng(5)
    # Slot 0: a release that moved a gauge by +5 (noise 1 a point): taken whole. Slot 1: an
    # error counter of 0.1 events a minute whose 15 minutes of grace held 3 events where
    # 1.5 were expected (about one deploy in five). Slot 2: a count of 10 events a minute
    # that a release doubled.
    events = np.full(15, -0.1)
    events[[2, 7, 12]] = 0.9
    gaps = np.stack([5.0 + rng.normal(0.0, 1.0, 15), events,
                     rng.poisson(20.0, 15) - 10.0])
    for column in gaps.T:
        shift = offsets.correction(slots)
        given = np.zeros(3) if shift is None else shift.amount
        offsets.absorb(slots, 100.0 + column - given, np.full(3, 100.0), relative=False,
                       counted=counted)
    given = offsets.correction(slots).amount
    means = offsets.state_dict()["amount"][:3]
    assert given[0] == means[0], (given, means)
    assert means[1] > 0.05, means
    assert given[1] == 0.0, (given, means)  # within the noise of a few events: not taken
    assert 0.7 * means[2] < given[2] < means[2], (given, means)  # less 2 errors (2.4)


def test_an_absurd_count_in_a_grace_period_saturates_its_spread_without_warnings() -> None:
    # A sender's bug: 1e200 events in a minute of the grace period. The squares' float32
    # mean saturates (no overflow warning: the suite turns them into errors) and the
    # other slot's offset is unaffected.
    offsets, slots = LevelOffsets(), np.array([0, 1])
    for gap in (2.0, 1e200, 3.0):
        shift = offsets.correction(slots)
        given = np.zeros(2) if shift is None else shift.amount
        offsets.absorb(slots, np.array([gap, 2.0]) - given, np.zeros(2), relative=False,
                       counted=np.array([True, True]))
    given = offsets.correction(slots).amount
    assert np.isfinite(given).all(), given
    assert given[1] == pytest.approx(2.0)
    assert offsets.state_dict()["square"][0] > 1e38  # saturated, then averaged down
