"""Quantiles estimated from histogram buckets (explicit and exponential)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel


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
    out = np.empty(len(qs))
    _explicit_quantiles_into(np.asarray(bounds, np.float64), np.asarray(counts, np.float64),
                             np.asarray(qs, np.float64), float(low), float(high), out)
    return out


@row_kernel
def _outer_edges(bounds: NDArray[np.float64], low: float,
                 high: float) -> tuple[float, float, float]:
    """The first bucket's lower and upper edge and the last bucket's upper edge.

    The first bucket starts at 0 when its upper bound is positive (else it is unbounded),
    the overflow bucket is unbounded; a known minimum and maximum close them.
    """
    n = len(bounds) + 1
    first_low = 0.0 if n > 1 and bounds[0] > 0 else -np.inf
    first_high = bounds[0] if n > 1 else np.inf
    if np.isfinite(low):
        first_low = min(low, first_high)
    last_low = bounds[n - 2] if n > 1 else first_low
    last_high = max(high, last_low) if np.isfinite(high) else np.inf
    return first_low, (first_high if n > 1 else last_high), last_high


@kernel
def _explicit_quantiles_into(bounds: NDArray[np.float64], counts: NDArray[np.float64],
                             qs: NDArray[np.float64], low: float, high: float,
                             out: NDArray[np.float64]) -> None:
    # Compiled: a latency histogram point asks for three quantiles, and as numpy calls on
    # arrays of a dozen buckets they cost most of the point's ingest (about 100 µs).
    n = len(counts)
    total = 0.0
    for c in counts:
        total += c
    if total <= 0 or n != len(bounds) + 1:
        out[:] = np.nan
        return
    first_low, first_high, last_high = _outer_edges(bounds=bounds, low=low, high=high)
    for j in range(len(qs)):
        rank = qs[j] * total
        # The first bucket whose cumulative count reaches the rank (the last if none does).
        idx = n - 1
        before = 0.0
        for i in range(n - 1):
            if before + counts[i] >= rank:
                idx = i
                break
            before += counts[i]
        frac = min(max((rank - before) / max(counts[idx], 1e-300), 0.0), 1.0)
        lo = first_low if idx == 0 else bounds[idx - 1]
        hi = first_high if idx == 0 else (last_high if idx == n - 1 else bounds[idx])
        # Unbounded edges: answer with the finite side, as histogram_quantile does.
        if np.isinf(lo):
            out[j] = hi
        elif np.isinf(hi):
            out[j] = lo
        else:
            out[j] = lo + (hi - lo) * frac


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
    n_off, n_counts = negative
    p_off, p_counts = positive
    out = np.empty(len(qs))
    _exponential_quantiles_into(2.0 ** -float(scale), float(zero_count), float(p_off),
                                np.asarray(p_counts, np.float64), float(n_off),
                                np.asarray(n_counts, np.float64), np.asarray(qs, np.float64),
                                out)
    return out


@row_kernel
def _exponential_bucket(k: int, width: float, zero_count: float, p_off: float,
                        p_counts: NDArray[np.float64], n_off: float,
                        n_counts: NDArray[np.float64]) -> tuple[float, float, float]:
    """Bucket ``k`` in ascending value order: its count, lower and upper edge.

    The negative buckets from the largest magnitude down, the zero bucket, the positive
    ones; bucket ``i`` of a side covers magnitudes ``(2**(i*width), 2**((i+1)*width)]``.
    Valid scales reach -10 (base 2**1024) and offsets 2**31: edges beyond a float are
    infinite (and those below it 0), and such buckets answer no finite quantile.
    """
    negatives = len(n_counts)
    count = _exponential_count(k=k, zero_count=zero_count, p_counts=p_counts,
                               n_counts=n_counts)
    if k < negatives:
        i = n_off + (negatives - 1 - k)
        return count, -np.exp2((i + 1.0) * width), -np.exp2(i * width)
    if k == negatives:
        return count, 0.0, 0.0
    i = p_off + (k - negatives - 1)
    return count, np.exp2(i * width), np.exp2((i + 1.0) * width)


@row_kernel
def _exponential_count(k: int, zero_count: float, p_counts: NDArray[np.float64],
                       n_counts: NDArray[np.float64]) -> float:
    """Bucket ``k``'s count in ascending value order (``_exponential_bucket``'s order)."""
    negatives = len(n_counts)
    if k < negatives:
        return float(n_counts[negatives - 1 - k])
    if k == negatives:
        return zero_count
    return float(p_counts[k - negatives - 1])


@kernel
def _exponential_quantiles_into(width: float, zero_count: float, p_off: float,
                                p_counts: NDArray[np.float64], n_off: float,
                                n_counts: NDArray[np.float64], qs: NDArray[np.float64],
                                out: NDArray[np.float64]) -> None:
    # Compiled for the same reason as ``_explicit_quantiles_into``.
    buckets = len(n_counts) + 1 + len(p_counts)
    total = zero_count
    for c in n_counts:
        total += c
    for c in p_counts:
        total += c
    if not total > 0:
        out[:] = np.nan
        return
    for j in range(len(qs)):
        rank = qs[j] * total
        # The first bucket whose cumulative count reaches the rank (the last if none does).
        k = buckets - 1
        before = 0.0
        for b in range(buckets - 1):
            count = _exponential_count(k=b, zero_count=zero_count, p_counts=p_counts,
                                       n_counts=n_counts)  # no edges: only the last is used
            if before + count >= rank:
                k = b
                break
            before += count
        count, lo, hi = _exponential_bucket(k=k, width=width, zero_count=zero_count,
                                            p_off=p_off, p_counts=p_counts, n_off=n_off,
                                            n_counts=n_counts)
        frac = min(max((rank - before) / max(count, 1e-300), 0.0), 1.0)
        # Log-linear inside the bucket, towards the larger magnitude.
        if lo > 0:
            out[j] = lo * (hi / lo) ** frac
        elif hi < 0:
            out[j] = hi * (lo / hi) ** (1.0 - frac)
        else:
            out[j] = 0.0


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


MAX_BUCKET_SPAN = 2048
"""Most buckets a side of an exponential histogram is worked on with, between its lowest and
highest bucket: its points' runs are laid out densely when they are subtracted or added up,
so runs far apart (offsets up to 2**31) would take gigabytes. Ten times what the SDKs keep
by default (``max_size`` 160), so their histograms are never coarsened."""


def span_steps(runs: list[tuple[int, NDArray[np.float64]]]) -> int:
    """Scale steps down at which bucket runs of one scale span ``MAX_BUCKET_SPAN`` at most.

    ``runs``: (offset, counts) pairs, one a point.

    >>> span_steps([(0, np.ones(3)), (5000, np.ones(2))])
    2
    """
    low, high = 0, -1  # nothing yet (a loop: per point, cheaper than min and max of lists)
    for offset, counts in runs:
        n = len(counts)
        if n and high < low:
            low, high = offset, offset + n - 1
        elif n:
            low, high = min(low, offset), max(high, offset + n - 1)
    steps = 0
    while (high >> steps) - (low >> steps) >= MAX_BUCKET_SPAN:
        steps += 1
    return steps


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


_INTERNED_BOUNDS: dict[tuple[float, ...], NDArray[np.float64]] = {}
_MOST_INTERNED = 4096  # distinct bucket layouts kept (a sender inventing them starts it over)
_LONGEST_INTERNED = 256  # bounds of a layout kept: the map holds 40 MB at most


def interned_bounds(bounds: Any) -> NDArray[np.float64] | None:
    """One array (never written to) per distinct list of explicit bounds; None if not valid.

    Histograms mostly share a few layouts (an SDK's default), so their points share the
    array, and two points' bounds are then compared by identity (``same_bounds``). Bounds
    must be strictly increasing (the OTLP data model's buckets; an infinite first or last
    bound is let through: a quantile in its bucket is not finite, and is not reported);
    others are checked at each point and never kept.
    """
    key = tuple(bounds)
    found = _INTERNED_BOUNDS.get(key)
    if found is None:
        array = np.array(key, np.float64)
        if np.isnan(array).any() or not (array[1:] > array[:-1]).all():
            return None
        if len(array) > _LONGEST_INTERNED:  # compared by value (``same_bounds``), not kept
            return array
        if len(_INTERNED_BOUNDS) >= _MOST_INTERNED:
            _INTERNED_BOUNDS.clear()
        found = _INTERNED_BOUNDS[key] = array
    return found


def same_bounds(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    """Whether two histograms' explicit bounds are equal (by identity where interned)."""
    return a is b or np.array_equal(a, b)


def merge_explicit(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Explicit-bucket interval histograms added up (those with the newest's bounds).

    >>> merged = merge_explicit([
    ...     {"bounds": np.array([1.0]), "counts": np.array([1.0, 0.0]), "low": 0.5, "high": 0.9},
    ...     {"bounds": np.array([1.0]), "counts": np.array([0.0, 2.0]), "low": 2.0, "high": 3.0}])
    >>> merged["counts"].tolist(), merged["low"], merged["high"]
    ([1.0, 2.0], 0.5, 3.0)
    """
    newest = deltas[-1]
    same = [d for d in deltas if same_bounds(d["bounds"], newest["bounds"])]
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
    runs = {side: [downscale(d[side][0], d[side][1], d["scale"] - scale) for d in deltas]
            for side in ("pos", "neg")}
    steps = max(span_steps(side_runs) for side_runs in runs.values())
    out: dict[str, Any] = {"scale": scale - steps, "zero": sum(d["zero"] for d in deltas)}
    for side, side_runs in runs.items():
        total: tuple[int, NDArray[np.float64]] = (0, np.zeros(0))
        for offset, counts in side_runs:
            total = add_buckets(total, downscale(offset, counts, steps))
        out[side] = total
    return out


def pooled_quantiles(samples: list[dict[str, Any]], exponential: bool,
                     qs: NDArray[np.float64]) -> NDArray[np.float64]:
    """The ``qs`` quantiles of interval histograms added up (exponential ones or explicit).

    Windows of the other kind are left out: a histogram of one name and attributes that
    changes its aggregation (an SDK's view set to exponential buckets) shares its pools.
    """
    # One window (a busy one) needs no merge.
    kind = "scale" if exponential else "bounds"  # the newest window is of the current kind
    if len(samples) > 1 and any(kind not in sample for sample in samples):
        samples = [sample for sample in samples if kind in sample]
    if exponential:
        m = samples[0] if len(samples) == 1 else merge_exponential(samples)
        return exponential_bucket_quantiles(m["scale"], m["zero"], m["pos"], m["neg"], qs)
    m = samples[0] if len(samples) == 1 else merge_explicit(samples)
    return explicit_bucket_quantiles(m["bounds"], m["counts"], qs, m["low"], m["high"])
