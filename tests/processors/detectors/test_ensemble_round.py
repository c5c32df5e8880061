"""The default ensemble's one-call round (``ensemble_round``) against the general path."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.detectors.ensemble_members import DEFAULT_MEMBERS
from otel_anomaly.processors.types import SeriesBatch

STEP_NS = 300 * 10**9


def _stream(seed: int, points: int, series: int) -> list[SeriesBatch]:
    """Rounds of distinct slots: daily cycles, noise, spikes, a level shift and gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(points)
    base = 50 + 20 * np.sin(2 * np.pi * t / 288)[:, None] + rng.normal(0, 2, (points, series))
    base[rng.random((points, series)) < 0.01] += 60  # spikes
    base[points // 2:, 0] += 25  # a lasting shift on slot 0
    rounds = []
    for i in range(points):
        keep = rng.random(series) < 0.9  # some series skip a point
        slots = np.flatnonzero(keep).astype(np.intp)
        if i >= points // 3:  # a series far past the others' rows: the arrays grow mid-run
            slots = np.r_[slots, 5000].astype(np.intp)
        if not len(slots):
            continue
        ts = np.full(len(slots), 1_700_000_000 * 10**9 + i * STEP_NS, np.int64)
        rounds.append(SeriesBatch(slots, ts, base[i, slots % series]))
    return rounds


# The general rule's ensemble, and the latency rules' (logs, persistence as an alarm).
SETTINGS = [{}, {"log_transform": True, "log_offset": 1.0, "persistence_alarm": True}]


def _run(fused: bool, rounds: list[SeriesBatch], **settings: object) -> list[np.ndarray]:
    det = Ensemble(**settings)  # type: ignore[arg-type]
    if not fused:
        det._fused = None  # noqa: SLF001 -- the general path
    out = []
    for batch in rounds:
        p = det.predict(batch, 3.5)
        out.append(np.stack([p.expected, p.lower, p.upper, p.baseline, det.score(batch)]))
        det.learn_round(batch)
    return out


def test_the_default_members_take_the_one_call_round() -> None:
    assert Ensemble(members=DEFAULT_MEMBERS)._fused is not None  # noqa: SLF001
    assert Ensemble(members=DEFAULT_MEMBERS[:2])._fused is None  # noqa: SLF001
    assert Ensemble(refractory_level=0.0)._fused is None  # noqa: SLF001


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize(("seed", "series"), [(0, 1), (1, 7)])
def test_one_call_round_equals_the_general_path(seed: int, series: int,
                                                settings: dict[str, object]) -> None:
    # Twenty days of 5-minute points: the weekly profile warms up for two weeks (its NaN
    # band is compared then), every member is ready after.
    rounds = _stream(seed, 2 * 288 * 10, series)
    fused, general = _run(True, rounds, **settings), _run(False, rounds, **settings)
    for i, (a, b) in enumerate(zip(fused, general, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"round {i}")


def test_a_restore_into_the_same_ensemble_is_read_by_the_one_call_round() -> None:
    # load_state_dict replaces every array the kernels were handed before it.
    rounds = _stream(2, 288 * 3, 3)
    det = Ensemble()
    for batch in rounds[:288]:
        det.predict(batch, 3.5)
        det.learn_round(batch)
    saved = det.state_dict()
    for batch in rounds[288:576]:
        det.predict(batch, 3.5)
        det.learn_round(batch)
    det.load_state_dict(saved)
    fresh = Ensemble()
    fresh.load_state_dict(saved)
    for batch in rounds[576:]:
        a, b = det.predict(batch, 3.5), fresh.predict(batch, 3.5)
        np.testing.assert_array_equal(np.stack([a.expected, a.lower, a.upper]),
                                      np.stack([b.expected, b.lower, b.upper]))
        det.learn_round(batch)
        fresh.learn_round(batch)


@pytest.mark.parametrize("grow", ["reset", "warming"])
def test_growing_through_other_calls_lets_go_of_the_old_arrays(grow: str) -> None:
    # New series reset their rows (and the scorer asks who is warming) before the next
    # round: the arrays the kept arguments were built on must be freed when they grow, or
    # every holder's old copy stays alive at once.
    det = Ensemble()
    for batch in _stream(3, 3, 4):
        det.predict(batch, 3.5)
        det.learn_round(batch)
    holder = det._fused_holders[1]  # noqa: SLF001 -- the daily profile's state
    old = weakref.ref(holder.mean_code)
    getattr(det, grow)(np.array([20_000], np.intp))
    assert len(holder) > 20_000
    assert old() is None, f"the old arrays outlived {grow}"
