"""Seasonal profiles count each phase's points in one byte: exact while a count sets a weight.

The codes (``processors.detectors.seasonal_counts``) replaced uint16 counts; checkpoints
saved with those (format 8, whose tail histograms were float32 too) are upgraded on restore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_anomaly.processors.detectors.seasonal_counts import (
    EXACT,
    TOP,
    VALUES,
    advanced,
    count_of,
    encode_counts,
)
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.types import SeriesBatch, SeriesKey

SECOND = 10**9


def test_the_codes_stand_for_rising_counts_exact_below_the_geometric_steps() -> None:
    assert len(VALUES) == 256 and TOP == 255
    assert np.all(np.diff(VALUES) > 0)
    np.testing.assert_array_equal(VALUES[:EXACT], np.arange(EXACT))
    steps = VALUES[EXACT:] / VALUES[EXACT - 1 : -1]
    assert np.all((steps > 1.2) & (steps < 1.3)), steps
    assert [count_of(code) for code in (0, 1, 2, EXACT - 1)] == [0, 1, 2, EXACT - 1]


@given(st.integers(0, 2**20))
def test_a_count_encodes_to_the_largest_value_not_above_it(count: int) -> None:
    code = int(encode_counts(np.array([count]))[0])
    assert VALUES[code] <= count
    assert code == TOP or VALUES[code + 1] > count
    assert int(encode_counts(VALUES[code : code + 1])[0]) == code  # every code round-trips


@given(st.integers(0, EXACT - 2), st.integers(0, 2**62))
def test_codes_below_the_exact_range_count_every_point(code: int, ts: int) -> None:
    assert advanced(code, ts) == code + 1


def test_the_top_code_saturates() -> None:
    assert advanced(TOP, 123 * SECOND) == TOP


@pytest.mark.parametrize("step_s", [0.1, 1.0, 2.5, 10.0])
def test_past_the_exact_range_the_expected_count_follows_the_points(step_s: float) -> None:
    # A Morris counter driven by each point's timestamp: after n points it stands for
    # about n (within a step, a quarter), whatever the spacing.
    for n in (400, 1500, 6000):
        code = 0
        for i in range(n):
            code = advanced(code, int((1_700_000_000 + step_s * i) * SECOND))
        assert abs(count_of(code) / n - 1) < 0.25, (step_s, n, count_of(code))


def test_a_phase_seen_once_or_twice_reads_so() -> None:
    # count > 0 (seen) and count >= 2 (scored) read the codes as counts.
    det = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=0.0)
    for k in range(2):
        det.learn(SeriesBatch.of([0], [5.0], np.array([k * 60 * SECOND])))
        assert det._slots.count[0, 0] == k + 1
    assert det.scored(SeriesBatch.of([0], [5.0], np.array([120 * SECOND])))[0]


KEYS = [SeriesKey("load", (("service.name", "api"),), (("i", str(i)),)) for i in range(3)]


def _engine() -> Engine:
    """Three gauges a point a second for 7 minutes: daily phases learn past 240 points."""
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    rng = np.random.default_rng(0)
    for second in range(420):
        engine.ingest_series(KEYS, np.full(3, (1_700_000_000 + second) * SECOND),
                             10.0 + rng.standard_normal(3) + (second % 97 == 0) * 20.0)
    return engine


def _as_format_8(tree: Any) -> Any:
    """``tree`` as format 8 saved it: uint16 counts, float32 tail bins and their total."""
    if isinstance(tree, list):
        return [_as_format_8(value) for value in tree]
    if not isinstance(tree, dict):
        return tree
    out = {key: _as_format_8(value) for key, value in tree.items()}
    for key in [key for key in out if str(key).endswith("mean_code")]:
        name = key[: -len("mean_code")] + "count"
        out[name] = VALUES[out[name]].astype(np.uint16)
    for key in [key for key in out if str(key).endswith("low") and key[:-3] + "hist" in out]:
        prefix = key[: -len("low")]
        bins = out[prefix + "hist"].astype(np.float64) * 256 + out.pop(key)
        out[prefix + "hist"], out[prefix + "total"] = bins.astype(np.float32), bins.sum(1)
    return out


def _flat(tree: Any, path: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items()
                for k, v in _flat(value, f"{path}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree)
                for k, v in _flat(value, f"{path}/{i}").items()}
    return {path: tree}


def test_a_format_8_checkpoint_restores_its_counts_as_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = _engine()
    saved = _as_format_8(engine.state_dict())
    counts = [v for k, v in _flat(saved).items() if k.endswith("count") and v.ndim == 2]
    assert max(int(c.max(initial=0)) for c in counts) >= VALUES[EXACT], "none past the exact"
    path = tmp_path / "state.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "FORMAT", 8)
        patch.setattr(engine, "state_dict", lambda: saved)
        with path.open("wb") as out:
            checkpoint.dump(engine, out)
    with path.open("rb") as source:
        restored = checkpoint.load(source, EngineSettings(clock=lambda: 0.0))
    original = _engine()
    # Every array as it was, but the tail bins (rescaled to their nearest unit)...
    mine, theirs = _flat(restored.state_dict()), _flat(original.state_dict())
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        if key.rsplit("/", 1)[-1].rsplit(".", 1)[-1] not in ("hist", "low", "inc"):
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(mine[key], value, err_msg=key)
            else:
                assert repr(mine[key]) == repr(value), key
    # ...and the two score the next ten minutes alike.
    for second in range(420, 1020):
        ts = np.full(3, (1_700_000_000 + second) * SECOND)
        values = 10.0 + (second % 97 == 0) * 20.0 + np.array([0.0, 1.0, -1.0])
        a = restored.ingest_series(KEYS, ts, values).scores
        b = original.ingest_series(KEYS, ts, values).scores
        np.testing.assert_allclose(a.score, b.score, rtol=1e-5)
        np.testing.assert_array_equal(a.flag, b.flag)
