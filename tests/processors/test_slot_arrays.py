"""SlotArrays: per-slot arrays grow together, reset to their fill, and round-trip by name."""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays


def _arrays() -> SlotArrays:
    return SlotArrays(n=Column(np.int64), prior=Column(np.float64, (1.0, 2.0), (2,)))


def test_growth_keeps_rows_and_fills_new_ones() -> None:
    state = _arrays()
    state.grow(3)
    state.n[2] = 7
    state.grow(100)
    assert len(state) == state.n.shape[0] == state.prior.shape[0] == 128
    assert int(state.n[2]) == 7
    assert state.prior[99].tolist() == [1.0, 2.0]
    state.ensure(np.array([], np.intp))  # nothing to make room for
    assert len(state) == 128


def test_reset_refills_only_the_given_slots() -> None:
    state = _arrays()
    state.ensure(np.array([4]))
    state.n[:] = 5
    state.prior[:] = 0.0
    state.reset(np.array([1, 3]))
    assert state.n[:5].tolist() == [5, 0, 5, 0, 5]
    assert state.prior[3].tolist() == [1.0, 2.0] and state.prior[2].tolist() == [0.0, 0.0]


def test_state_round_trips_as_copies() -> None:
    state = _arrays()
    state.ensure(np.array([2]))
    state.n[2] = 9
    saved = state.state_dict()
    state.n[2] = 0
    other = _arrays()
    other.load_state_dict(saved)
    saved["n"][2] = -1  # the loaded arrays are copies, not views of the saved ones
    assert int(other.n[2]) == 9 and len(other) == len(state)


@pytest.mark.parametrize(("state", "problem"), [
    ({"n": np.zeros(3, np.int64)}, "missing"),
    ({"n": np.zeros(3, np.int64), "prior": np.zeros((4, 2))}, "different lengths"),
    ({"n": np.zeros(3, np.int64), "prior": np.zeros((3, 5))}, "shape"),
])
def test_mismatched_state_is_refused(state: dict[str, np.ndarray], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _arrays().load_state_dict(state)


def test_names_must_not_shadow_the_container() -> None:
    with pytest.raises(ValueError, match="must not start with"):
        SlotArrays(_rows=Column(np.int64))
    with pytest.raises(AttributeError, match="no array 'missing'"):
        _ = _arrays().missing


def test_wider_saved_arrays_load_into_compact_columns_saturated() -> None:
    # Checkpoints written before the compact layout hold float64 profiles and counts and
    # int64 counters: they load, cast, and values out of a column's range saturate.
    state = SlotArrays(count=Column(np.uint16), since=Column(np.int32),
                       mean=Column(np.float32, 0.0), spread=Column(np.float32, 0.0, (2,)))
    state.load_state_dict({
        "count": np.array([3.0, 1e6, np.nan]),
        "since": np.array([5, 1 << 40, -(1 << 40)], np.int64),
        "mean": np.array([0.1, 1e300, -np.inf]),
        "spread": np.array([[1.0, 2.0], [np.nan, 3.0], [0.0, 1e-300]]),
    })
    assert state.count.dtype == np.uint16 and state.count.tolist() == [3, 65535, 0]
    assert state.since.tolist() == [5, 2**31 - 1, -(2**31)]
    assert state.mean.dtype == np.float32
    assert state.mean[0] == np.float32(0.1) and state.mean[1] == np.finfo(np.float32).max
    assert state.mean[2] == -np.inf
    assert np.isnan(state.spread[1, 0]) and state.spread[2, 1] == 0.0
