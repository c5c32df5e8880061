"""The ``discord`` member: it sees shape, keeps its state through a checkpoint, and its
compiled kernels score as their plain Python reference."""

from __future__ import annotations

import io
from pathlib import Path
from types import MappingProxyType

import numpy as np
from helpers.compiled_reference import plain_reference
from helpers.discord_reference import FIELDS, STEP_NS, kernels_compiled, replay, shape_change
from helpers.engine_state import assert_same_state

from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.detectors.ensemble_members import DEFAULT_MEMBERS, MemberSpec
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import SEASONAL_ALERT, DetectorRule, EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import FakeClock
from otel_anomaly.processors.types import SeriesBatch, SeriesKey

WITH_SHAPE: tuple[MemberSpec, ...] = (*DEFAULT_MEMBERS, ("discord", ()))


def _prequential(det: Ensemble, values: np.ndarray) -> np.ndarray:
    scores = np.empty(len(values))
    for i, value in enumerate(values):
        row = SeriesBatch.of([0], [value], [i * STEP_NS])
        scores[i] = det.score(row)[0]
        det.learn(row)
    return scores


def test_a_waveform_change_within_the_usual_range_outranks_noise_only_with_the_member() -> None:
    # Three days of a noisy sine (period 37 points, so no daily phase holds one value),
    # then four hours of the same range at three times the frequency.
    before = 3 * 288
    values = shape_change(before, 48)
    for members, sees_it in ((DEFAULT_MEMBERS, False), (WITH_SHAPE, True)):
        scores = _prequential(Ensemble(members=members), values)
        noise, change = scores[before - 288:before].max(), scores[before:].max()
        if sees_it:
            assert change > max(2.0 * noise, SEASONAL_ALERT.band), (noise, change)
        else:  # level and profiles: the change scores like a day of noise
            assert change < 1.25 * noise, (noise, change)


def test_the_ensemble_keys_its_round_on_the_values_with_the_member() -> None:
    values = shape_change(400, 10)
    det = Ensemble(members=(("ewma_zscore", ()), ("discord", ())))
    _prequential(det, values[:400])
    fresh = Ensemble(members=det.members)
    fresh.load_state_dict(det.state_dict())
    # Same slot and time, another value: the discord band follows the value, and a cached
    # round of the first value must not answer for the second.
    det.predict(SeriesBatch.of([0], [values[400]], [400 * STEP_NS]), 3.5)
    probe = SeriesBatch.of([0], [values[400] + 7.0], [400 * STEP_NS])
    np.testing.assert_array_equal(det.score(probe), fresh.score(probe))
    np.testing.assert_array_equal(det.predict(probe, 3.5).upper, fresh.predict(probe, 3.5).upper)


def _engine(members: tuple[MemberSpec, ...] = WITH_SHAPE) -> Engine:
    params = MappingProxyType({"members": members})
    rule = DetectorRule(name="default", detector="ensemble", params=params, alert=SEASONAL_ALERT)
    return Engine(EngineSettings(clock=FakeClock(), rules=(rule,)))


def _feed(engine: Engine, steps: range) -> np.ndarray:
    keys = [SeriesKey("load", (("service.name", "api"),), (("i", str(i)),)) for i in range(3)]
    values = np.stack([shape_change(340, 60, seed=i) for i in range(3)])
    return np.concatenate([
        engine.ingest_series(keys, np.full(3, 1_700_000_000 * 10**9 + i * STEP_NS),
                             values[:, i]).scores.score for i in steps])


def test_a_checkpoint_keeps_the_members_buffers() -> None:
    original, without = _engine(), _engine(DEFAULT_MEMBERS)
    _feed(original, range(320))  # past the member's warm-up (302 points)
    _feed(without, range(320))
    out = io.BytesIO()
    checkpoint.dump(original, out)
    restored = checkpoint.load(io.BytesIO(out.getvalue()), original.settings)
    assert_same_state(original, restored)
    after = _feed(original, range(320, 400))
    np.testing.assert_array_equal(_feed(restored, range(320, 400)), after)
    # The member decides some of those scores (the shape changes at point 340).
    assert not np.array_equal(_feed(without, range(320, 400)), after)


def test_compiled_kernels_score_a_shape_change_as_their_plain_python_reference(
    tmp_path: Path,
) -> None:
    compiled = replay()
    assert kernels_compiled(), "the suite must run the compiled kernels"
    reference = plain_reference("helpers.discord_reference", tmp_path / "reference.npz")
    assert np.nanmax(compiled["member_score"]) > 3.0, "the member must score the change"
    for field in FIELDS:
        np.testing.assert_allclose(compiled[field], reference[field], rtol=1e-9, atol=0,
                                   equal_nan=True, err_msg=field)
