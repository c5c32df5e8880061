"""The per-row loops of ``SeasonalProfile``: gather, predict, score and learn a round.

Each kernel repeats, row by row, the numpy expressions it replaced, in the same order and
in float64 (the two-byte state is decoded before any arithmetic, see ``seasonal_codes``).
``np.hypot`` is libm's ``hypot`` both compiled and as plain Python (``math.hypot`` is
CPython's own and may differ in the last bit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.detectors.seasonal_codes import decode_dev, decode_mean, store
from otel_anomaly.processors.detectors.seasonal_counts import advanced, count_of
from otel_anomaly.processors.kernel_math import fmax, fmin, maximum, minimum

MAD_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
TINY = 1e-9
HUBER_SIGMAS = 3.0
GLOBAL_ALPHA = 0.01
MAX_POINTS = int(np.iinfo(np.int32).max) - 1  # points per slot saturate (int32 storage)
F32_MAX = float(np.finfo(np.float32).max)
_EXACT_FLOAT_INT = 2**53  # integers up to this are exact in float64


@kernel
def _sigma(dev: float, gdev: float, mean: float, spread_mix: float) -> float:
    """The spread of a phase: its own and the all-phase one, added in quadrature."""
    global_sigma = spread_mix * gdev * MAD_TO_SIGMA
    return float(np.hypot(dev * MAD_TO_SIGMA, global_sigma)) + TINY * (1.0 + abs(mean))


@kernel
def gather(
    slots: NDArray[np.intp], ts: NDArray[np.int64], period_ns: int, bucket_ns: float,
    buckets: int, spread_mix: float, warm_ns: int, n_col: NDArray[np.int32],
    first_col: NDArray[np.int64], gdev_col: NDArray[np.float32],
    centre_col: NDArray[np.float32], unit_col: NDArray[np.float32],
    mean_col: NDArray[np.int16], dev_col: NDArray[np.uint16], count_col: NDArray[np.uint8],
    snap_b: NDArray[np.int16], snap_cycle: NDArray[np.int32], snap_mean: NDArray[np.float32],
    snap_dev: NDArray[np.float32],
) -> tuple[NDArray[Any], ...]:
    """Per row: phase bucket, its count and mean, the spread, and whether it is scored.

    Also the mean and spread the row is predicted with: the phase as it was before this
    cycle's points in it (learning uses the phase as it is).
    """
    rows = len(slots)
    bucket = np.empty(rows, np.intp)
    count = np.empty(rows)
    mean = np.empty(rows)
    sigma = np.empty(rows)
    ready = np.empty(rows, np.bool_)
    pred_mean = np.empty(rows)
    pred_sigma = np.empty(rows)
    for i in range(rows):
        s, t = slots[i], ts[i]
        b = bucket_of(t, period_ns, bucket_ns, buckets)
        bucket[i] = b
        count[i], mean[i], sigma[i], ready[i], pred_mean[i], pred_sigma[i] = phase_of(
            int(count_col[s, b]), int(mean_col[s, b]), int(dev_col[s, b]), float(centre_col[s]),
            float(unit_col[s]), float(gdev_col[s]), spread_mix,
            n_col[s] > 0 and t - first_col[s] >= warm_ns,
            int(snap_b[s]) == b and int(snap_cycle[s]) == int(t // period_ns),
            float(snap_mean[s]), float(snap_dev[s]))
    return bucket, count, mean, sigma, ready, pred_mean, pred_sigma


@row_kernel
def bucket_of(t: int, period_ns: int, bucket_ns: float, buckets: int) -> int:
    """The phase bucket of time ``t``: the float floor division numpy did (int64 % int // float).

    With a whole number of nanoseconds per bucket (the defaults) and phases below 2**53,
    both operands are exact, so integer division gives the same quotient, some 4x cheaper.
    """
    step = int(bucket_ns)
    exact = step > 0 and float(step) == bucket_ns and period_ns <= _EXACT_FLOAT_INT
    phase = t % period_ns
    return min(phase // step if exact else int(phase // bucket_ns), buckets - 1)


@row_kernel
def phase_of(  # noqa: PLR0913 -- a phase's codes, its slot's scalars, the snapshot
    count_code: int, mean_code: int, dev_code: int, centre: float, unit: float, gdev: float,
    spread_mix: float, warm: bool, snapped: bool, snap_mean: float, snap_dev: float,
) -> tuple[float, float, float, bool, float, float]:
    """One row of ``gather``: the phase's count, mean, spread, readiness, predicted pair.

    The predicted mean and spread are the cycle's snapshot of this phase if ``snapped``.
    """
    c = count_of(count_code)
    m = decode_mean(mean_code, centre, unit)
    sigma = _sigma(decode_dev(dev_code, unit), gdev, m, spread_mix)
    ready = warm and c >= 2
    if snapped:
        return c, m, sigma, ready, snap_mean, _sigma(snap_dev, gdev, snap_mean, spread_mix)
    return c, m, sigma, ready, m, sigma


@kernel
def gather_neighbours(
    slots: NDArray[np.intp], bucket: NDArray[np.intp], tolerance: int, buckets: int,
    spread_mix: float, gdev_col: NDArray[np.float32], centre_col: NDArray[np.float32],
    unit_col: NDArray[np.float32], mean_col: NDArray[np.int16], dev_col: NDArray[np.uint16],
    count_col: NDArray[np.uint8],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and spread of the phases within ``tolerance`` (inf spread if seen < 2 times)."""
    rows, width = len(slots), 2 * tolerance + 1
    means = np.empty((rows, width))
    sigmas = np.empty((rows, width))
    for i in range(rows):
        s = slots[i]
        gdev, centre, unit = float(gdev_col[s]), float(centre_col[s]), float(unit_col[s])
        for k in range(width):
            c = (bucket[i] + k - tolerance) % buckets
            means[i, k], sigmas[i, k] = neighbour(int(mean_col[s, c]), int(dev_col[s, c]),
                                                  int(count_col[s, c]), gdev, centre, unit,
                                                  spread_mix)
    return means, sigmas


@row_kernel
def neighbour(mean_code: int, dev_code: int, count_code: int, gdev: float, centre: float,
              unit: float, spread_mix: float) -> tuple[float, float]:
    """One phase of ``gather_neighbours`` from its codes: mean, spread (inf if seen < 2 times)."""
    m = decode_mean(mean_code, centre, unit)
    if count_code >= 2:  # codes below EXACT are counts
        return m, _sigma(decode_dev(dev_code, unit), gdev, m, spread_mix)
    return m, np.inf  # seen fewer than twice: no spread to compute (a young series' phases)


@kernel
def predict(
    count: NDArray[np.float64], mean: NDArray[np.float64], sigma: NDArray[np.float64],
    ready: NDArray[np.bool_], band: NDArray[np.float64], means: NDArray[np.float64],
    sigmas: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Expected value and band per row; ``band`` holds one value or one per row.

    ``means``/``sigmas`` are the neighbouring phases (no columns: no tolerance); their
    ``mean +- band * sigma`` widen the band, phases with an infinite spread aside.
    """
    rows = len(mean)
    expected = np.empty(rows)
    lower = np.empty(rows)
    upper = np.empty(rows)
    for i in range(rows):
        b = band[0] if len(band) == 1 else band[i]
        lo_k, hi_k = np.inf, -np.inf
        for k in range(means.shape[1]):
            lo_k, hi_k = widened(lo_k, hi_k, means[i, k], sigmas[i, k], b)
        expected[i], lower[i], upper[i] = band_row(count[i], mean[i], sigma[i], ready[i], b,
                                                   lo_k, hi_k, means.shape[1] > 0)
    return expected, lower, upper


@row_kernel
def widened(lo_k: float, hi_k: float, mean: float, sigma: float, band: float,
            ) -> tuple[float, float]:
    """The neighbours' band so far, widened by one neighbouring phase (not if its spread is inf).

    nanmin/nanmax with initial=+-inf (fmin/fmax reductions): phases with an infinite spread
    are left out, NaN edges skipped.
    """
    if np.isinf(sigma):
        return lo_k, hi_k
    w = band * sigma
    return fmin(lo_k, mean - w), fmax(hi_k, mean + w)


@row_kernel
def band_row(count: float, mean: float, sigma: float, ready: bool, band: float, lo_k: float,
             hi_k: float, neighbours: bool) -> tuple[float, float, float]:
    """One row's expected value and band, widened to its neighbours' ``lo_k``/``hi_k``."""
    expected = mean if count > 0 else np.nan
    lo, hi = mean - band * sigma, mean + band * sigma
    if neighbours:
        lo, hi = fmin(lo, lo_k), fmax(hi, hi_k)
    return expected, lo if ready else np.nan, hi if ready else np.nan


@kernel
def score(
    values: NDArray[np.float64], mean: NDArray[np.float64], sigma: NDArray[np.float64],
    ready: NDArray[np.bool_], means: NDArray[np.float64], sigmas: NDArray[np.float64],
) -> NDArray[np.float64]:
    """``|x - mean| / sigma``, the smallest over the neighbouring phases (if any)."""
    rows = len(values)
    out = np.empty(rows)
    for i in range(rows):
        x = values[i]
        z = abs(x - mean[i]) / sigma[i]
        if means.shape[1]:
            # np.min over the phases: a NaN wins.
            z_k = abs(x - means[i, 0]) / sigmas[i, 0]
            for k in range(1, means.shape[1]):
                z_k = minimum(z_k, abs(x - means[i, k]) / sigmas[i, k])
            z = fmin(z, z_k)
        out[i] = (z if ready[i] else 0.0) if np.isfinite(x) else np.nan
    return out


@kernel
def learn(
    slots: NDArray[np.intp], ts: NDArray[np.int64], values: NDArray[np.float64],
    bucket: NDArray[np.intp], count: NDArray[np.float64], mean: NDArray[np.float64],
    sigma: NDArray[np.float64], ready: NDArray[np.bool_], alpha: float, bucket_ns: float,
    period_ns: int, n_col: NDArray[np.int32], first_col: NDArray[np.int64],
    last_col: NDArray[np.int64],
    gdev_col: NDArray[np.float32], centre_col: NDArray[np.float32],
    unit_col: NDArray[np.float32], mean_col: NDArray[np.int16], dev_col: NDArray[np.uint16],
    count_col: NDArray[np.uint8], snap_b: NDArray[np.int16], snap_cycle: NDArray[np.int32],
    snap_mean: NDArray[np.float32], snap_dev: NDArray[np.float32],
) -> None:
    """Learn one round (distinct slots, finite values) from its gathered state, in place.

    ``ensemble_row._learn_profile`` is this loop's body for one row: change both.
    """
    for i in range(len(slots)):
        s, b, t = slots[i], bucket[i], ts[i]
        cycle = int(t // period_ns)
        if int(snap_b[s]) != b or int(snap_cycle[s]) != cycle:
            # The first point of this phase in this cycle: the phase as it is now predicts
            # the rest of this cycle's points in it (they must not predict one another).
            snap_b[s], snap_cycle[s] = b, cycle
            snap_mean[s] = minimum(maximum(mean[i], -F32_MAX), F32_MAX)
            snap_dev[s] = decode_dev(int(dev_col[s, b]), float(unit_col[s]))
        fresh = n_col[s] == 0
        if fresh:
            first_col[s] = t
        n, gdev_col[s], new_mean, new_dev = learned(
            values[i], count[i], mean[i], sigma[i], ready[i], alpha,
            0 if fresh else t - last_col[s], bucket_ns, n_col[s], float(gdev_col[s]),
            decode_dev(int(dev_col[s, b]), float(unit_col[s])))
        # Stored as two-byte codes (state size, see seasonal_codes).
        new_cycle = not fresh and t // period_ns != last_col[s] // period_ns
        store(s, b, new_mean, new_dev, t, new_cycle, centre_col, unit_col, mean_col, dev_col,
              count_col)
        # One-byte count codes (seasonal_counts): the weights above stay the count's.
        count_col[s, b] = advanced(int(count_col[s, b]), t)
        last_col[s] = t
        n_col[s] = n


@row_kernel
def learned(  # noqa: PLR0913 -- the value, its phase as gathered, the slot's state
    x: float, c: float, mean: float, sigma: float, ready: bool, alpha: float, dt: int,
    bucket_ns: float, n: int, gdev: float, dev: float,
) -> tuple[int, float, float, float]:
    """A slot's points and all-phase spread, and its phase's mean and spread, after ``x``.

    ``c``, ``mean``, ``sigma``, ``ready``: the phase as gathered; ``dt``: time since the
    slot's last point; ``dev``: the phase's spread as stored. Mean and spread come within
    float32's range, as the float32 columns before the codes kept them (values beyond it
    saturate instead of inf).
    """
    share = minimum(maximum(dt / bucket_ns, 0.0), 1.0)
    resid = x - mean
    cap = HUBER_SIGMAS * sigma if ready else np.inf
    capped = minimum(abs(resid), cap)
    # The all-phase spread learns every residual of a phase seen before.
    seen = c > 0
    points = min(n, MAX_POINTS) + 1
    g_weight = maximum(GLOBAL_ALPHA, 1.0 / points)
    new_gdev = gdev + g_weight * (capped - gdev) if seen else gdev
    # Plain averaging over the first cycles of a phase, then alpha per cycle.
    weight = maximum(alpha * share, 1.0 / (c + 1.0))
    new_mean = mean + weight * maximum(minimum(resid, cap), -cap) if seen else x
    if c >= 2:
        new_dev = dev + weight * (capped - dev)
    else:
        new_dev = capped if seen else 0.0
    return (points, minimum(new_gdev, F32_MAX), minimum(maximum(new_mean, -F32_MAX), F32_MAX),
            minimum(new_dev, F32_MAX))
