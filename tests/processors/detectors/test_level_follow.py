"""The ensemble's level carried along its weekly profile's step (``level_follow``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.detectors.ensemble_members import DEFAULT_MEMBERS
from otel_anomaly.processors.detectors.level_follow import (
    ONCE_SEEN_STEP,
    follow_row,
    followed_row,
)
from otel_anomaly.processors.settings import SEASONAL_ALERT
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.state.migrations import upgrade
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import SeriesBatch

DAY_S = 86400


def test_a_step_moves_the_level_and_widens_its_band_by_the_step_or_both_phases_spreads() -> None:
    # Level 20 +- 1; the weekly profile was at 20 +- 1.5 and now expects 14 +- 2: the level
    # moves to 14 and its band takes in both phases' spreads (smaller than the step).
    e, up, lo, step, keep, spread, extra = follow_row(20.0, 21.0, 19.0, 14.0, 16.0, 20.0, 1.5,
                                                      0.0)
    assert (e, step, keep, spread, extra) == (14.0, -6.0, 14.0, 2.0, 6.25)
    assert up == pytest.approx(14.0 + math.sqrt(7.25))
    assert lo == pytest.approx(14.0 - math.sqrt(7.25))
    # A step smaller than those spreads widens the band by the step only.
    assert follow_row(20.0, 21.0, 19.0, 19.5, 23.5, 20.0, 1.5, 0.0)[6] == 0.25
    # From a phase badly known (spread 28.3: learned from an anomaly's clipped lessons) to
    # a well known one (4.8), a step of 28.9 is mostly that phase's error: the level moves,
    # but its band takes in both spreads, so the value it left is about one spread away
    # (with the new phase's spread alone, more than five).
    e, up, lo, *_ = follow_row(79.3, 81.0, 77.6, 77.1, 81.9, 48.2, 28.3, 0.0)
    assert e == pytest.approx(108.2)
    assert (e - 79.3) / (e - lo) < 1.5
    # Learning moves the mean by the step and fades the extra variance by a point's weight.
    assert followed_row(20.0, -6.0, 4.0, 0.5) == (14.0, 1.0)


def test_no_step_until_the_profile_has_seen_both_phases() -> None:
    nan = math.nan
    # Not seen now: nothing moves and nothing is kept.
    e, up, lo, step, keep, spread, extra = follow_row(20.0, 21.0, 19.0, nan, nan, 20.0, 1.5,
                                                      0.5)
    assert (e, up, lo, step, extra) == (20.0, up, lo, 0.0, 0.5)
    assert math.isnan(keep) and math.isnan(spread)
    assert up == pytest.approx(20.0 + math.sqrt(1.5))  # earlier extra variance still counts
    # Seen now, not at the last point: the value and spread are kept for the next step.
    assert follow_row(20.0, 21.0, 19.0, 14.0, 16.0, nan, nan, 0.0)[3:] == (0.0, 14.0, 2.0, 0.0)
    # A level still warming up moves, its band stays unknown.
    e, up, lo, *_ = follow_row(20.0, nan, nan, 14.0, 16.0, 20.0, 1.5, 0.0)
    assert e == 14.0 and math.isnan(up) and math.isnan(lo)


def test_a_phase_seen_once_is_followed_only_beyond_the_level_spread_and_all_borrowed() -> None:
    nan = math.nan
    # Seen once now (no spread yet): a step of 6 against the level's spread of 1 is
    # followed, and all of it is borrowed as variance.
    e, up, lo, step, keep, spread, extra = follow_row(20.0, 21.0, 19.0, 14.0, nan, 20.0, 1.5,
                                                      0.0)
    assert (e, step, keep, extra) == (14.0, -6.0, 14.0, 36.0) and math.isnan(spread)
    assert up == pytest.approx(14.0 + math.sqrt(37.0))
    # So is a step from a phase seen once (ready now, no spread then).
    assert follow_row(20.0, 21.0, 19.0, 14.0, 16.0, 20.0, nan, 0.0)[6] == 36.0
    # A step the level's band holds (2 spreads, within ONCE_SEEN_STEP) may be one week's
    # noise or the day's shape: not followed, the value kept.
    assert follow_row(20.0, 21.0, 19.0, 18.0, nan, 20.0, nan, 0.0)[3:5] == (0.0, 18.0)
    assert ONCE_SEEN_STEP == SEASONAL_ALERT.band  # the band the level would alarm at
    # Nor is any step while the level has no spread of its own.
    assert follow_row(20.0, nan, nan, 14.0, nan, 20.0, nan, 0.0)[0] == 20.0


def test_only_a_level_first_and_a_weekly_profile_last_are_followed() -> None:
    assert Ensemble()._follows  # noqa: SLF001 -- the default members
    assert not Ensemble(level_follows_season=False)._follows  # noqa: SLF001
    assert not Ensemble(members=DEFAULT_MEMBERS[:2])._follows  # noqa: SLF001 -- daily last
    logged = (("ewma_zscore", (("log_transform", True),)), *DEFAULT_MEMBERS[1:])
    assert not Ensemble(members=logged)._follows  # noqa: SLF001 -- the level's own units


def _weekly_series(days: int) -> list[SeriesBatch]:
    rng = np.random.default_rng(4)
    ts = np.arange(days * DAY_S // 3600) * 3600
    values = np.where((ts // DAY_S) % 7 < 5, 20.0, 15.0) + rng.normal(0.0, 1.0, len(ts))
    return [SeriesBatch.of([0], [x], [t * SECOND])
            for t, x in zip(ts.tolist(), values.tolist(), strict=True)]


def test_a_format_20_checkpoint_starts_following_at_its_next_point() -> None:
    det = Ensemble()
    points = _weekly_series(16)
    for batch in points[:-2]:
        det.learn(batch)
    old = {k: v for k, v in det.state_dict().items() if not k.startswith("follow_")}
    state = upgrade({"scorer": {"detectors": [old]}}, 20, checkpoint.FORMAT)
    saved = state["scorer"]["detectors"][0]
    assert np.isnan(saved["follow_ref"]).all() and not saved["follow_var"].any()
    restored = Ensemble()
    restored.load_state_dict(saved)
    assert np.isfinite(det.state_dict()["follow_ref"][0]).all(), "the profile was not ready"
    for batch in points[-2:]:
        restored.learn(batch)
        det.learn(batch)
    # After one point the restored level follows again: the profile's value is the same.
    assert (restored.state_dict()["follow_ref"][0] == det.state_dict()["follow_ref"][0]).all()
    p = restored.predict(SeriesBatch.of([0], [20.0], [(16 * DAY_S) * SECOND]), 3.5)
    assert np.isfinite([p.lower[0], p.expected[0], p.upper[0]]).all()
