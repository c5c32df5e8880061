"""The compiled bucket quantiles (explicit and exponential) equal their numpy references."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from otel_anomaly.processors.signals.histogram_quantiles import (
    explicit_bucket_quantiles,
    exponential_bucket_quantiles,
    interned_bounds,
    pooled_quantiles,
    same_bounds,
)


def _ranked(counts: NDArray[np.float64], ranks: NDArray[np.float64]
            ) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Per rank, its bucket (the first whose cumulative count reaches it) and where in it."""
    cumulative = np.cumsum(counts)
    idx = np.minimum(np.searchsorted(cumulative, ranks, side="left"), len(counts) - 1)
    before = np.where(idx > 0, cumulative[idx - 1], 0.0)
    return idx, np.clip((ranks - before) / np.maximum(counts[idx], 1e-300), 0.0, 1.0)


def _reference(bounds: NDArray[np.float64], counts: NDArray[np.float64],
               qs: NDArray[np.float64], low: float, high: float) -> NDArray[np.float64]:
    """``histogram_quantile`` over whole arrays (the implementation the kernel replaced)."""
    total = counts.sum()
    if total <= 0 or len(counts) != len(bounds) + 1:
        return np.full(len(qs), np.nan)
    first_low = 0.0 if len(bounds) and bounds[0] > 0 else -np.inf
    lows = np.concatenate(([first_low], bounds))
    highs = np.concatenate((bounds, [np.inf]))
    if np.isfinite(low):
        lows[0] = min(low, highs[0])
    if np.isfinite(high):
        highs[-1] = max(high, lows[-1])
    idx, frac = _ranked(counts, qs * total)
    lo, hi = lows[idx], highs[idx]
    with np.errstate(invalid="ignore"):
        out = lo + (hi - lo) * frac
    out = np.where(np.isinf(hi), lo, out)
    return np.asarray(np.where(np.isinf(lo), hi, out), np.float64)


_bound = st.floats(-1e6, 1e6, allow_nan=False)
_edge = st.one_of(st.just(np.nan), st.floats(-2e6, 2e6, allow_nan=False))


@settings(max_examples=400, deadline=None)
@given(
    bounds=st.lists(_bound, min_size=0, max_size=12, unique=True).map(sorted),
    counts=st.lists(st.integers(0, 1000), min_size=1, max_size=13),
    qs=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    low=_edge,
    high=_edge,
)
# Edges a random draw rarely meets: rank 0 before an empty bucket, a minimum above the
# first bound, no bounds at all (one bucket) with and without min and max.
@example(bounds=[5.0, 10.0], counts=[0, 3, 1], qs=[0.0, 0.5], low=np.nan, high=np.nan)
@example(bounds=[5.0, 10.0], counts=[2, 3, 1], qs=[0.1, 0.99], low=7.0, high=8.0)
@example(bounds=[], counts=[4], qs=[0.5], low=2.0, high=6.0)
@example(bounds=[], counts=[4], qs=[0.5], low=np.nan, high=6.0)
@example(bounds=[], counts=[4], qs=[0.5], low=2.0, high=np.nan)
@example(bounds=[-5.0, 10.0], counts=[1, 1, 1], qs=[0.1, 0.9], low=np.nan, high=np.nan)
def test_compiled_quantiles_equal_the_array_reference(  # type: ignore[no-untyped-def]
        bounds, counts, qs, low, high) -> None:
    # Counts of the bucket count the bounds ask for, and (a few) of another length.
    b = np.array(bounds, np.float64)
    c = np.array(counts[: len(bounds) + 1] if len(counts) > len(bounds) else counts, np.float64)
    q = np.array(qs, np.float64)
    have = explicit_bucket_quantiles(b, c, q, low, high)
    want = _reference(b, c, q, low, high)
    np.testing.assert_array_equal(have, want, err_msg=f"bounds {b} counts {c} qs {q}")


def test_an_empty_or_mismatched_histogram_has_no_quantile() -> None:
    qs = np.array([0.5, 0.99])
    empty = explicit_bucket_quantiles(np.array([1.0]), np.zeros(2), qs)
    mismatched = explicit_bucket_quantiles(np.array([1.0, 2.0]), np.ones(2), qs)
    assert np.isnan(empty).all() and np.isnan(mismatched).all()


def test_pooled_windows_are_merged_before_the_quantiles() -> None:
    bounds = np.array([10.0, 20.0])
    windows = [
        {"bounds": bounds, "counts": np.array([4.0, 0.0, 0.0]), "low": 2.0, "high": 9.0},
        {"bounds": bounds, "counts": np.array([0.0, 0.0, 6.0]), "low": 30.0, "high": 50.0},
    ]
    qs = np.array([0.3, 0.5, 0.99])
    merged = explicit_bucket_quantiles(bounds, np.array([4.0, 0.0, 6.0]), qs, 2.0, 50.0)
    np.testing.assert_array_equal(pooled_quantiles(windows, False, qs), merged)
    alone = explicit_bucket_quantiles(bounds, np.array([4.0, 0.0, 0.0]), qs, 2.0, 9.0)
    np.testing.assert_array_equal(pooled_quantiles(windows[:1], False, qs), alone)


def _exponential_reference(scale: int, zero_count: float,
                           positive: tuple[int, NDArray[np.float64]],
                           negative: tuple[int, NDArray[np.float64]],
                           qs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log-linear interpolation over whole arrays (the implementation the kernel replaced)."""
    width = 2.0 ** -float(scale)
    n_off, n_counts = negative
    p_off, p_counts = positive
    neg_idx = np.arange(n_off, n_off + len(n_counts), dtype=np.float64)[::-1]
    pos_idx = np.arange(p_off, p_off + len(p_counts), dtype=np.float64)
    counts = np.concatenate((n_counts[::-1], [zero_count], p_counts))
    with np.errstate(over="ignore", under="ignore"):
        lows = np.concatenate((-np.exp2((neg_idx + 1.0) * width), [0.0],
                               np.exp2(pos_idx * width)))
        highs = np.concatenate((-np.exp2(neg_idx * width), [0.0],
                                np.exp2((pos_idx + 1.0) * width)))
    total = counts.sum()
    if total <= 0:
        return np.full(len(qs), np.nan)
    idx, frac = _ranked(counts, qs * total)
    lo, hi = lows[idx], highs[idx]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        geometric = lo * (hi / lo) ** frac
        geometric_neg = hi * (lo / hi) ** (1.0 - frac)
    return np.where(lo > 0, geometric, np.where(hi < 0, geometric_neg, 0.0))


_counts = st.lists(st.integers(0, 1000), min_size=0, max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    scale=st.integers(-10, 20),
    zero=st.integers(0, 50),
    positive=st.tuples(st.integers(-2**31, 2**31 - 1), _counts),
    negative=st.tuples(st.integers(-2**31, 2**31 - 1), _counts),
    qs=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
)
# An empty histogram; one at scale 0 with both sides and a zero bucket; edges past a float.
@example(scale=0, zero=0, positive=(0, []), negative=(0, []), qs=[0.5])
@example(scale=0, zero=3, positive=(1, [2, 5]), negative=(0, [4, 1]), qs=[0.0, 0.3, 0.5, 0.99])
@example(scale=-10, zero=0, positive=(2**31 - 2, [1, 1]), negative=(0, []), qs=[0.5])
def test_compiled_exponential_quantiles_equal_the_array_reference(  # type: ignore[no-untyped-def]
        scale, zero, positive, negative, qs) -> None:
    pos = (positive[0], np.array(positive[1], np.float64))
    neg = (negative[0], np.array(negative[1], np.float64))
    q = np.array(qs, np.float64)
    have = exponential_bucket_quantiles(scale, float(zero), pos, neg, q)
    want = _exponential_reference(scale, float(zero), pos, neg, q)
    # exp2 and pow may round their last bit differently compiled.
    np.testing.assert_allclose(have, want, rtol=1e-12, atol=0.0,
                               err_msg=f"scale {scale} zero {zero} {pos} {neg} qs {q}")


def test_points_with_the_same_bounds_share_one_array() -> None:
    first = interned_bounds([5.0, 10.0, 25.0])
    again = interned_bounds((5.0, 10.0, 25.0))
    other = interned_bounds([5.0, 10.0, 50.0])
    assert first is again, "equal bounds should come back as the same array"
    assert other is not first and not same_bounds(first, other)
    # Arrays that were not interned (restored from a checkpoint) compare by value.
    assert same_bounds(first, np.array([5.0, 10.0, 25.0]))
    np.testing.assert_array_equal(first, [5.0, 10.0, 25.0])


def test_long_layouts_are_not_kept_and_invalid_ones_are_refused() -> None:
    # A layout is kept while the map has room: a sender inventing layouts of 500,000 bounds
    # (4 MB a request) would otherwise fill it with gigabytes.
    long = np.arange(1.0, 300.0)
    first, again = interned_bounds(long), interned_bounds(long)
    assert first is not None and again is not None
    assert first is not again and same_bounds(first, again)
    assert interned_bounds([1.0, 3.0, 2.0]) is None
    assert interned_bounds([1.0, float("nan")]) is None
