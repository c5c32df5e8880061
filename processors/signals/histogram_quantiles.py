"""Quantiles estimated from histogram buckets (explicit and exponential)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def explicit_bucket_quantiles(
    bounds: NDArray[np.float64],
    counts: NDArray[np.float64],
    qs: NDArray[np.float64],
    low: float = np.nan,
    high: float = np.nan,
) -> NDArray[np.float64]:
    """Quantiles of an explicit-bounds histogram, interpolating linearly inside a bucket.

    Follows Prometheus' ``histogram_quantile``: the first bucket starts at 0 when its upper
    bound is positive, and a rank in the overflow bucket returns the highest finite bound.
    Known ``low``/``high`` (the histogram's min and max) replace those guesses.

    Examples
    --------
    >>> bounds = np.array([10.0, 20.0, 40.0])
    >>> counts = np.array([0.0, 50.0, 50.0, 0.0])
    >>> explicit_bucket_quantiles(bounds, counts, np.array([0.5, 0.75, 0.99]))
    array([20. , 30. , 39.6])
    """
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
    cumulative = np.cumsum(counts)
    ranks = qs * total
    idx = np.minimum(np.searchsorted(cumulative, ranks, side="left"), len(counts) - 1)
    before = np.where(idx > 0, cumulative[idx - 1], 0.0)
    in_bucket = np.maximum(counts[idx], 1e-300)
    frac = np.clip((ranks - before) / in_bucket, 0.0, 1.0)
    lo, hi = lows[idx], highs[idx]
    with np.errstate(invalid="ignore"):  # inf - inf in unbounded buckets, replaced below
        out = lo + (hi - lo) * frac
    # Unbounded edges: answer with the finite side, as histogram_quantile does.
    out = np.where(np.isinf(hi), lo, out)
    return np.asarray(np.where(np.isinf(lo), hi, out), np.float64)


def exponential_bucket_quantiles(
    scale: int,
    zero_count: float,
    positive: tuple[int, NDArray[np.float64]],
    negative: tuple[int, NDArray[np.float64]],
    qs: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Quantiles of an OTLP exponential histogram, interpolating log-linearly in a bucket.

    ``positive``/``negative`` are ``(offset, counts)``; bucket ``i`` covers
    ``(base**i, base**(i+1)]`` in magnitude with ``base = 2 ** 2 ** -scale``.

    Examples
    --------
    >>> # scale 0: buckets (1,2], (2,4], (4,8]; 10 points in each.
    >>> exponential_bucket_quantiles(0, 0.0, (0, np.array([10.0, 10, 10])), (0, np.zeros(0)),
    ...                              np.array([0.5]))
    array([2.82...])
    """
    width = 2.0 ** -float(scale)  # log2 of base: bucket i covers (2**(i*w), 2**((i+1)*w)]
    n_off, n_counts = negative
    p_off, p_counts = positive
    # Ascending value order: negative buckets from the largest magnitude down, zero, positive.
    neg_idx = np.arange(n_off, n_off + len(n_counts), dtype=np.float64)[::-1]
    pos_idx = np.arange(p_off, p_off + len(p_counts), dtype=np.float64)
    counts = np.concatenate((n_counts[::-1], [zero_count], p_counts))
    # Valid scales reach -10 (base 2**1024) and offsets reach 2**31: edges beyond a float
    # are infinite (and those below it 0), and such buckets answer no finite quantile.
    with np.errstate(over="ignore", under="ignore"):
        lows = np.concatenate((-np.exp2((neg_idx + 1.0) * width), [0.0],
                               np.exp2(pos_idx * width)))
        highs = np.concatenate((-np.exp2(neg_idx * width), [0.0],
                                np.exp2((pos_idx + 1.0) * width)))
    total = counts.sum()
    if total <= 0:
        return np.full(len(qs), np.nan)
    cumulative = np.cumsum(counts)
    ranks = qs * total
    idx = np.minimum(np.searchsorted(cumulative, ranks, side="left"), len(counts) - 1)
    before = np.where(idx > 0, cumulative[idx - 1], 0.0)
    frac = np.clip((ranks - before) / np.maximum(counts[idx], 1e-300), 0.0, 1.0)
    lo, hi = lows[idx], highs[idx]
    positive_side = lo > 0
    negative_side = hi < 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        geometric = lo * (hi / lo) ** frac
        geometric_neg = hi * (lo / hi) ** (1.0 - frac)
    return np.where(positive_side, geometric, np.where(negative_side, geometric_neg, 0.0))


def downscale(offset: int, counts: NDArray[np.float64], by: int) -> tuple[int, NDArray[np.float64]]:
    """Merge exponential buckets to a scale ``by`` steps coarser.

    Examples
    --------
    >>> downscale(3, np.array([1.0, 2.0, 3.0]), 1)
    (1, array([1., 5.]))
    """
    if by <= 0 or len(counts) == 0:
        return offset, counts
    idx = np.arange(offset, offset + len(counts)) >> by
    new_offset = int(idx[0])
    merged = np.bincount(idx - new_offset, weights=counts).astype(np.float64)
    return new_offset, merged


def subtract_buckets(
    cur: tuple[int, NDArray[np.float64]], prev: tuple[int, NDArray[np.float64]]
) -> tuple[int, NDArray[np.float64]]:
    """``cur - prev`` for two bucket runs at the same scale with possibly other offsets."""
    c_off, c = cur
    p_off, p = prev
    if len(p) == 0:
        return c_off, c
    if len(c) == 0:
        return p_off, -p
    start = min(c_off, p_off)
    end = max(c_off + len(c), p_off + len(p))
    out = np.zeros(end - start)
    out[c_off - start : c_off - start + len(c)] += c
    out[p_off - start : p_off - start + len(p)] -= p
    return start, out


def add_buckets(
    a: tuple[int, NDArray[np.float64]], b: tuple[int, NDArray[np.float64]]
) -> tuple[int, NDArray[np.float64]]:
    """``a + b`` for two bucket runs at the same scale with possibly other offsets.

    >>> add_buckets((2, np.array([1.0, 1.0])), (3, np.array([5.0, 5.0])))
    (2, array([1., 6., 5.]))
    """
    offset, negated = subtract_buckets(a, (b[0], -b[1]))
    return offset, negated


def merge_explicit(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Explicit-bucket interval histograms added up (those with the newest's bounds).

    >>> merged = merge_explicit([
    ...     {"bounds": np.array([1.0]), "counts": np.array([1.0, 0.0]), "low": 0.5, "high": 0.9},
    ...     {"bounds": np.array([1.0]), "counts": np.array([0.0, 2.0]), "low": 2.0, "high": 3.0}])
    >>> merged["counts"].tolist(), merged["low"], merged["high"]
    ([1.0, 2.0], 0.5, 3.0)
    """
    newest = deltas[-1]
    same = [d for d in deltas if np.array_equal(d["bounds"], newest["bounds"])]
    return {
        "bounds": newest["bounds"],
        "counts": np.sum([d["counts"] for d in same], axis=0),
        "low": float(np.min([d["low"] for d in same])),  # NaN when any is unknown
        "high": float(np.max([d["high"] for d in same])),
    }


def merge_exponential(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Exponential interval histograms added up, at the coarsest of their scales.

    >>> a = {"scale": 1, "zero": 1.0, "pos": (2, np.array([1.0, 1.0])), "neg": (0, np.array([]))}
    >>> b = {"scale": 0, "zero": 0.0, "pos": (1, np.array([3.0])), "neg": (0, np.array([]))}
    >>> merged = merge_exponential([a, b])
    >>> merged["scale"], merged["zero"], merged["pos"][0], merged["pos"][1].tolist()
    (0, 1.0, 1, [5.0])
    """
    scale = min(d["scale"] for d in deltas)
    out: dict[str, Any] = {"scale": scale, "zero": sum(d["zero"] for d in deltas)}
    for side in ("pos", "neg"):
        total: tuple[int, NDArray[np.float64]] = (0, np.zeros(0))
        for d in deltas:
            total = add_buckets(total, downscale(d[side][0], d[side][1], d["scale"] - scale))
        out[side] = total
    return out


def pooled_quantile(samples: list[dict[str, Any]], exponential: bool, q: float) -> float:
    """The ``q`` quantile of interval histograms added up (exponential ones or explicit)."""
    qs = np.array([q])
    if exponential:
        m = merge_exponential(samples)
        return float(exponential_bucket_quantiles(m["scale"], m["zero"], m["pos"], m["neg"],
                                                  qs)[0])
    m = merge_explicit(samples)
    return float(explicit_bucket_quantiles(m["bounds"], m["counts"], qs, m["low"],
                                           m["high"])[0])
