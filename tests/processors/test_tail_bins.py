"""Tail histograms end at ~1.3e5: estimates below keep their precision, above answer the edge.

Their bins are 24-bit integers of units that halve as the increment grows. Checkpoints of
format 7 (88 bins, up to ~1.1e8) fold their longer histograms on restore, and those up to
format 9 (float32 bins) become integer bins.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_anomaly.processors.alerting import tail_quantile as tq_module
from otel_anomaly.processors.alerting.tail_quantile import TAIL_BINS, TAIL_TOP, TailQuantile
from otel_anomaly.processors.detectors import ensemble_kernels as ek
from otel_anomaly.processors.state.migrations import upgrade


def _learned(scores: np.ndarray, q: float = 0.99, window: int = 1000) -> TailQuantile:
    tq = TailQuantile(q=q, window=window)
    for score in scores:
        tq.update(np.array([0]), np.array([score]))
    return tq


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0, 20000.0])
def test_quantiles_below_the_top_edge_stay_within_a_few_percent(scale: float) -> None:
    scores = scale * np.abs(np.random.default_rng(0).standard_normal(4000))
    exact = float(np.quantile(scores[-1000:], 0.99))
    estimate = float(_learned(scores).quantile(np.array([0]))[0])
    assert abs(estimate / exact - 1) < 0.1, (estimate, exact)


def test_a_quantile_past_the_top_edge_answers_the_edge() -> None:
    estimate = float(_learned(np.full(200, 1e7)).quantile(np.array([0]))[0])
    assert estimate == pytest.approx(TAIL_TOP, rel=1e-6)
    assert 1e5 < TAIL_TOP < 2e5


def _float_state(tq: TailQuantile) -> dict[str, np.ndarray]:
    """``tq``'s state as formats 8 and 9 saved it: float32 bins and their total."""
    state = tq.state_dict()
    bins = state.pop("hist").astype(np.float64) * 256 + state.pop("low")
    return {**state, "hist": bins.astype(np.float32), "total": bins.sum(axis=1)}


def test_format_7_tail_histograms_fold_into_the_shorter_one() -> None:
    tq = _learned(np.concatenate([np.abs(np.random.default_rng(1).standard_normal(900)),
                                  np.full(100, 1e6)]))
    state = _float_state(tq)
    new = state["hist"]
    top = TAIL_BINS + 1
    old = np.zeros((len(new), 88), np.float32)
    old[:, :top] = new[:, :top]
    old[:, top] = 0.25 * new[:, top]  # the top mass spread over bins the old one had
    old[:, 80] = 0.75 * new[:, top]
    saved = {**state, "hist": old, "q": np.full(len(new), 3e7, np.float32)}
    member = upgrade({"detectors": [{f"s1.{k}": v for k, v in saved.items()}]}, 7, 8)
    folded = member["detectors"][0]
    np.testing.assert_allclose(folded["s1.hist"], new, rtol=1e-6)
    assert folded["s1.q"][0] == pytest.approx(TAIL_TOP, rel=1e-6)
    restored = TailQuantile(q=0.99, window=1000)
    current = upgrade(member, 8, 10)["detectors"][0]
    restored.load_state_dict({k.removeprefix("s1."): v for k, v in current.items()})
    np.testing.assert_allclose(restored._estimate(np.array([0])), tq._estimate(np.array([0])),
                               rtol=1e-6)


def test_format_9_float_bins_become_integer_bins_with_their_estimates() -> None:
    rng = np.random.default_rng(4)
    tq = TailQuantile(q=0.999, window=5000)
    for _ in range(6000):
        tq.update(np.array([0, 2]), np.abs(rng.standard_t(3, 2)))  # slot 1 never learns
    saved = _float_state(tq)
    member = upgrade({"m": [{f"s0.{k}": v for k, v in saved.items()}]}, 9, 10)["m"][0]
    assert "s0.total" not in member and member["s0.hist"].dtype == np.uint16
    restored = TailQuantile(q=0.999, window=5000)
    restored.load_state_dict({k.removeprefix("s0."): v for k, v in member.items()})
    slots = np.arange(3)
    # Bins rescaled to the nearest unit (the largest at 2**23): within 1e-5.
    np.testing.assert_allclose(restored._estimate(slots), tq._estimate(slots), rtol=1e-5)
    bins = member["s0.hist"].astype(np.int64) * 256 + member["s0.low"]
    assert bins.max() == 2**23 and member["s0.inc"][1] == tq_module._FIRST_INC
    # Learning on, the restored state follows the saved one.
    for tails in (tq, restored):
        for score in (2.0, 40.0, 1.0):
            tails.update(np.array([0, 1]), np.array([score, score]))
    np.testing.assert_allclose(restored._estimate(slots), tq._estimate(slots), rtol=1e-5)


def _decayed_quantile(scores: np.ndarray, q: float, window: int) -> float:
    """The estimate a float64 histogram would give (weights decaying by 1 - 1 / window)."""
    weights = (1.0 - 1.0 / window) ** np.arange(len(scores))[::-1]
    pos = np.log(np.maximum(scores, 1e-300) / 0.5) / np.log(1.25)
    b = np.clip(np.floor(pos).astype(np.int64) + 1, 0, TAIL_BINS + 1)
    hist = np.bincount(b, weights, TAIL_BINS + 2)
    cum = np.cumsum(hist)
    k = min(int((cum < q * cum[-1]).sum()), TAIL_BINS + 1)
    frac = np.clip((q * cum[-1] - (cum[k] - hist[k])) / hist[k], 0.0, 1.0)
    return float(0.5 * 1.25 ** np.clip(k - 1 + frac, 0.0, TAIL_BINS))


@pytest.mark.parametrize(("q", "window"), [(0.999, 5000), (0.99, 100), (0.9, 3)])
def test_integer_bins_give_the_float_histogram_estimates(q: float, window: int) -> None:
    # Thousands of halvings (a short window's increment grows fast) keep the estimate
    # within 1e-4 of float64 bins.
    scores = np.abs(np.random.default_rng(5).standard_t(3, 20000))
    tq = _learned(scores, q=q, window=window)
    exact = _decayed_quantile(scores, q, window)
    assert float(tq._estimate(np.array([0]))[0]) == pytest.approx(exact, rel=1e-4)


def test_a_point_counts_even_when_the_increment_is_below_a_unit() -> None:
    tq = _learned(np.ones(10), window=10**9)
    state = tq.state_dict()
    state["inc"][0] = 0.2  # what a window of millions of points comes to
    tq.load_state_dict(state)
    before = tq.state_dict()["low"][0].astype(np.int64)
    tq.update(np.array([0]), np.array([1.0]))
    assert (tq.state_dict()["low"][0].astype(np.int64) - before).sum() == 1


def test_a_full_bin_halves_every_bin_instead_of_wrapping() -> None:
    tq = _learned(np.array([1.0, 100.0, 100.0, 3.0]), window=10**9)
    state = tq.state_dict()
    bins = state["hist"][0].astype(np.int64) * 256 + state["low"][0]
    before = bins.copy()
    full = int(np.argmax(bins))
    state["hist"][0, full], state["low"][0, full] = 0xFFFF, 0xFF  # 2**24 - 1
    tq.load_state_dict(state)
    tq.update(np.array([0]), np.array([100.0]))
    after = tq.state_dict()
    bins = after["hist"][0].astype(np.int64) * 256 + after["low"][0]
    assert bins[full] == 2**23 + round(tq_module._FIRST_INC / 2)
    others = np.arange(len(bins)) != full
    np.testing.assert_array_equal(bins[others], np.rint(before[others] / 2))


@given(st.lists(st.integers(0, 2**24 - 1), min_size=TAIL_BINS + 2, max_size=TAIL_BINS + 2))
def test_24_bit_bins_round_trip_and_halve_to_even(values: list[int]) -> None:
    hist = np.zeros((1, TAIL_BINS + 2), np.uint16)
    low = np.zeros((1, TAIL_BINS + 2), np.uint8)
    for k, value in enumerate(values):
        tq_module._set_bin(hist, low, 0, k, value)
    assert [tq_module._bin(hist, low, 0, k) for k in range(len(values))] == values
    tq_module._halve(hist, low, 0)
    halved = [tq_module._bin(hist, low, 0, k) for k in range(len(values))]
    assert halved == np.rint(np.array(values) / 2).tolist()


def test_a_tail_remembers_a_week_of_event_time_and_its_window_after_a_silence() -> None:
    week_ns = 7 * 86400 * 10**9
    # 15-s points: a week of them (40,320), not the 5,000 that are 21 hours there.
    assert ek.tail_memory(5000.0, 15e9) == pytest.approx(week_ns / 15e9)
    # 5-minute and hourly points: a week of them too (2,016 and 168), not the 5,000 that
    # are 17 and 208 days there.
    assert ek.tail_memory(5000.0, 300e9) == pytest.approx(2016.0)
    assert ek.tail_memory(5000.0, 3600e9) == pytest.approx(168.0)
    # The first point of a slot, and one after a silence (over two hours): the window in
    # points (a silence is not a week's decay on its own).
    assert ek.tail_memory(5000.0, 0.0) == 5000.0
    assert ek.tail_memory(5000.0, ek.SILENCE_NS) == pytest.approx(84.0)
    assert ek.tail_memory(5000.0, ek.SILENCE_NS + 1e9) == 5000.0
    assert ek.tail_memory(5000.0, 86400e9) == 5000.0
    # The growth of the newest point's weight decays the older ones by the same factor
    # over a day, at 15-s points as at 5-minute ones.
    at_15s = tq_module.growth_of(ek.tail_memory(5000.0, 15e9))
    at_5min = tq_module.growth_of(ek.tail_memory(5000.0, 300e9))
    day_at_15s, day_at_5min = at_15s ** (86400 // 15), at_5min ** (86400 // 300)
    assert day_at_15s == pytest.approx(day_at_5min, rel=1e-3)


def test_the_usual_sizes_remember_a_day_of_event_time_or_their_window_whichever_is_more() -> None:
    day_ns = 86400 * 10**9
    assert ek.time_window(1200.0, 15e9, day_ns) == pytest.approx(day_ns / 15e9)
    assert ek.time_window(1200.0, 300e9, day_ns) == 1200.0
    assert ek.time_window(1200.0, 0.0, day_ns) == 1200.0
    assert ek.memories(1200.0, 5000.0, 300e9) == (1200.0, pytest.approx(2016.0))
