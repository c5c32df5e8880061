"""BinomialRatio's kernels give the numbers the numpy code they replaced gave.

The reference below keeps the numpy bodies of the binomial tail and of the ported methods
as they were before the port (#9 item 1). Both learn the same streams (rounds of one and
of many rows; rates from 1e-4 to 0.6, bursts, sample sizes from 0 to 5,000, unknown ones,
NaN, inf and out-of-range ratios) and must agree in every band, score and state array:
bit for bit when the reference takes its logarithm from the C library as the kernels do,
to 1e-12 with numpy's own (vectorised, 1 ulp apart from it on some arguments). The
kernels also run as plain Python (what ``NUMBA_DISABLE_JIT=1`` runs) with the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numba
import numpy as np
import pytest
from numpy.typing import NDArray

from otel_anomaly.processors.detectors import binomial_ratio_kernels, binomial_tail
from otel_anomaly.processors.detectors.base import Prediction
from otel_anomaly.processors.detectors.binomial_ratio import BinomialRatio
from otel_anomaly.processors.detectors.binomial_tail import band_edges, binomial_sigmas
from otel_anomaly.processors.types import SeriesBatch

F64 = NDArray[np.float64]
GRID = np.linspace(0.0, 1.0, 33)
LIBM_LOG: Callable[[F64], F64] = np.vectorize(math.log, otypes=[np.float64])
LOG: dict[str, Callable[[F64], F64]] = {"log": LIBM_LOG}  # the reference's logarithm
(_K, _N, _EXCESS, _EXCESS_SQ, _SPREAD, _SIZE, _SIZED, _SEEN, _RECENT_K,
 _RECENT_N) = range(10)


# The numpy binomial tail, before the port.
def _g(x: F64) -> F64:
    e = x - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        far = (1.0 - x * x + 2.0 * x * LOG["log"](np.maximum(x, 1e-300))) / (e * e)
    # Near 1 the formula cancels: its series instead.
    out: F64 = np.where(np.abs(e) < 1e-3, -e / 3.0 + e * e / 6.0, far)
    return out


def _cdf_sigmas(k: F64, n: F64, p: F64) -> F64:
    q = 1.0 - p
    s, t = k + 0.5, n - k - 0.5
    d = s + 1.0 / 6.0 - (n + 1.0 / 3.0) * p + 0.02 * (
        q / (k + 1.0) - p / (n - k) + (q - 0.5) / (n + 1.0))
    spread = (1.0 + q * _g(s / (n * p)) + p * _g(t / (n * q))) / ((n + 1.0 / 6.0) * p * q)
    out: F64 = d * np.sqrt(np.maximum(spread, 0.0))
    return out


def _sided(k: F64, n: F64, p: F64, up: NDArray[np.bool_], end: F64) -> F64:
    mean = n * p
    with np.errstate(invalid="ignore", divide="ignore"):
        z = _cdf_sigmas(np.clip(np.where(up, k - 1.0, k), 0.0, n - 1.0), n, p)
        z = np.where(up, z, -z)
        # Closer to the mean than one error (or n - 1): linear from 0 at the mean.
        near = np.where(up, (k - mean) / np.maximum(1.0 - mean, 1e-300),
                        (mean - k) / np.maximum(mean - (n - 1.0), 1e-300))
    out: F64 = np.where(np.where(up, k < 1.0, k > n - 1.0), end * near, z)
    return out


def _ends(n: F64, p: F64, up: NDArray[np.bool_]) -> F64:
    with np.errstate(invalid="ignore", divide="ignore"):
        z = _cdf_sigmas(np.where(up, 0.0, n - 1.0), n, p)
    out: F64 = np.maximum(np.where(up, z, -z), 0.0)
    return out


def np_sigmas(x: F64, n: F64, p: F64) -> F64:
    up = x >= p
    return _sided(x * n, n, p, up, _ends(n, p, up))


def np_edges(n: F64, p: F64, band: F64) -> tuple[F64, F64]:
    rows = len(p)
    # Distance ``y`` from ``p``: upward on the first ``rows`` rows, downward on the rest.
    up = np.r_[np.ones(rows, np.bool_), np.zeros(rows, np.bool_)]
    sign = np.where(up, 1.0, -1.0)
    nn, pp, want = np.r_[n, n], np.r_[p, p], np.r_[band, band]
    span = np.where(up, 1.0 - pp, pp)
    end = _ends(nn, pp, up)[:, None]

    def sigmas(y: F64) -> F64:
        k = np.clip(pp[:, None] + sign[:, None] * y, 0.0, 1.0) * nn[:, None]
        return _sided(k, nn[:, None], pp[:, None], up[:, None], end)

    lo, hi = np.zeros(2 * rows), span.copy()
    at_rows = np.arange(2 * rows)
    for _ in range(3):
        grid = lo[:, None] + (hi - lo)[:, None] * GRID[None, :]
        below = (sigmas(grid) < want[:, None]).sum(axis=1)  # monotone: a prefix
        at = np.clip(below, 1, 33 - 1)
        lo, hi = grid[at_rows, at - 1], grid[at_rows, at]
    z = sigmas(np.c_[lo, hi, span])
    with np.errstate(invalid="ignore", divide="ignore"):
        y = lo + (hi - lo) * np.clip((want - z[:, 0]) / (z[:, 1] - z[:, 0]), 0.0, 1.0)
    reach = np.maximum(z[:, 2], 0.1)
    y = np.where(reach < want, span * want / reach, np.where(np.isfinite(y), y, lo))
    edge = pp + sign * y
    return edge[rows:], edge[:rows]


class _Rows(NamedTuple):
    rate: F64
    rho: F64
    n: F64
    x: F64
    warm: NDArray[np.bool_]
    recent_k: F64
    recent_n: F64


class BinomialNumpy(BinomialRatio):
    """BinomialRatio's numpy bodies, before the port."""

    def _model(self, batch: SeriesBatch) -> _Rows:
        s = self._rows(batch.slots)
        rate = (s[:, _K] + self.prior_rate * self.prior_calls) / (s[:, _N] + self.prior_calls)
        rho = np.zeros(len(batch))
        if self.dispersion and self.max_dispersion > 0:
            # A prior worth one window of ``prior_calls`` calls with no excess variance.
            prior = self.prior_calls ** 2 * self.prior_rate * (1.0 - self.prior_rate)
            # Only the excess beyond two of its standard errors counts: with few calls a
            # window, a single unlucky one would otherwise read as a wandering rate (and
            # dull the pooled evidence of a slow burst).
            evident = s[:, _EXCESS] - 2.0 * np.sqrt(s[:, _EXCESS_SQ])
            rho = np.clip(evident / (s[:, _SPREAD] + prior), 0.0, self.max_dispersion)
        rho = rho + 1.0 / (s[:, _N] + self.prior_calls + 1.0)
        usual = np.where(s[:, _SIZED] > 0, s[:, _SIZE] / np.maximum(s[:, _SIZED], 1e-300),
                         self.default_count)
        n = batch.sample_sizes()
        n = np.maximum(np.where(np.isfinite(n) & (n > 0), n, usual), 1.0)
        x = np.clip(batch.values, 0.0, 1.0)
        warm = (s[:, _SEEN] >= self.warmup) & (s[:, _N] >= self.warmup_calls)
        return _Rows(rate, rho, n, x, warm, self.recent * s[:, _RECENT_K],
                     self.recent * s[:, _RECENT_N])

    @staticmethod
    def _effective(rows: _Rows, n: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = n / (1.0 + (n - 1.0) * rows.rho)
        return out

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        rows = self._model(batch)
        with np.errstate(invalid="ignore"):
            z = np_sigmas(rows.x, self._effective(rows, rows.n), rows.rate)
            if self.recent > 0:
                calls = rows.n + rows.recent_n
                pooled = np.clip((rows.x * rows.n + rows.recent_k) / calls, 0.0, 1.0)
                z_recent = np_sigmas(pooled, self._effective(rows, calls), rows.rate)
                z = np.fmax(z, z_recent - self.recent_margin)
        z = np.where(rows.warm, np.maximum(z, 0.0), 0.0)
        return np.where(np.isfinite(batch.values), z, np.nan)

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        rows = self._model(batch)
        rate = rows.rate
        width = np.broadcast_to(np.asarray(band, np.float64), rate.shape)
        if self.recent <= 0:
            lower, upper = np_edges(self._effective(rows, rows.n), rate, width)
        else:
            # The ratio this window needs for the pooled recent windows to reach the band;
            # where they already do on their own, the band closes at the base rate. (Both
            # edges in one call: its cost is mostly per call.)
            calls = rows.n + rows.recent_n
            n = len(rate)
            low_both, up_both = np_edges(
                np.r_[self._effective(rows, rows.n), self._effective(rows, calls)],
                np.r_[rate, rate], np.r_[width, width + self.recent_margin])
            lower, upper, low_pool, up_pool = (low_both[:n], up_both[:n], low_both[n:],
                                               up_both[n:])
            up_x = (up_pool * calls - rows.recent_k) / rows.n
            low_x = (low_pool * calls - rows.recent_k) / rows.n
            upper = np.fmin(upper, np.maximum(up_x, rate))
            lower = np.fmax(lower, np.minimum(low_x, rate))
        nan = np.full(len(batch), np.nan)
        return Prediction(rate, np.where(rows.warm, lower, nan),
                          np.where(rows.warm, upper, nan))

    def _learn_unique(self, batch: SeriesBatch) -> None:
        sized = np.isfinite(batch.sample_sizes()) & (batch.sample_sizes() > 0)
        rate, rho, n, x, _, recent_k, recent_n = self._model(batch)
        expected = n * rate
        # One row teaches at most ``learn_cap`` sigmas (and one error) above its expected
        # count: an error burst is the anomaly, not the new base rate.
        sd = np.sqrt(expected * (1.0 - rate) * (1.0 + (n - 1.0) * rho))
        k = np.minimum(x * n, expected + self.learn_cap * sd + 1.0)
        s = self._slots.state[batch.slots] * (1.0 - 1.0 / self.memory)
        kept_sq = self._slots.state[batch.slots, _EXCESS_SQ]
        s[:, _K] += k
        s[:, _N] += n
        excess = (k - expected) ** 2 - expected * (1.0 - rate)
        s[:, _EXCESS] += excess
        # The squared weights of a decayed sum: the variance of ``_EXCESS`` itself.
        s[:, _EXCESS_SQ] = kept_sq * (1.0 - 1.0 / self.memory) ** 2 + excess * excess
        s[:, _SPREAD] += n * (n - 1.0) * rate * (1.0 - rate)
        s[:, _SIZE] += np.where(sized, n, 0.0)
        s[:, _SIZED] += sized
        # Known sample sizes only: rows without one leave the usual size as it was.
        kept = self._slots.state[batch.slots]
        s[:, _SIZE] = np.where(sized, s[:, _SIZE], kept[:, _SIZE])
        s[:, _SIZED] = np.where(sized, s[:, _SIZED], kept[:, _SIZED])
        s[:, _SEEN] = kept[:, _SEEN] + 1.0
        # The recent evidence keeps the errors as they were (it is what detects a burst).
        s[:, _RECENT_K] = recent_k + x * n
        s[:, _RECENT_N] = recent_n + n
        self._slots.state[batch.slots] = s



PARAMS = [{"warmup": 5, "warmup_calls": 0.0}, {},
          {"memory": 50, "warmup": 3, "warmup_calls": 0.0, "dispersion": False,
           "default_count": 20.0, "recent": 0.0},
          {"memory": 200, "warmup": 10, "recent": 0.5, "recent_margin": 1.0,
           "max_dispersion": 0.0, "learn_cap": 2.0}]


def _rounds(seed: int, n_slots: int = 10, steps: int = 300) -> Iterator[SeriesBatch]:
    """Rounds of one row and of many (slots repeated within some), of error ratios."""
    rng = np.random.default_rng(seed)
    rate = np.array([1e-4, 0.001, 0.005, 0.02, 0.2, 0.6, 0.01, 0.05, 0.3, 0.0])[:n_slots]
    size = np.array([1, 3, 20, 200, 5000, 2, 50, 1, 1000, 10])[:n_slots]
    for step in range(steps):
        rows = 1 if step % 3 else int(rng.integers(2, 3 * n_slots))
        slots = rng.integers(0, n_slots, rows).astype(np.intp)
        calls = rng.poisson(size[slots]).astype(np.float64)
        burst = rng.random(rows) < 0.05
        p = np.where(burst, np.minimum(1.0, rate[slots] * 20.0 + 0.05), rate[slots])
        with np.errstate(all="ignore"):
            values = rng.binomial(calls.astype(np.int64), p) / calls
        odd = rng.random(rows)
        values = np.where(odd < 0.04, rng.choice([np.nan, np.inf, -0.2, 1.3, -0.0, 0.0], rows),
                          values)
        counts = np.where((odd > 0.04) & (odd < 0.1),
                          rng.choice([np.nan, 0.0, -1.0, np.inf, 1e9, 0.5], rows), calls)
        yield SeriesBatch(slots, np.full(rows, step, np.int64), values,
                          None if step % 17 == 5 else counts)


def _same(a: Any, b: Any, rtol: float) -> None:
    if rtol == 0:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)
    else:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0, equal_nan=True, strict=True)


def _check_stream(kernel_det: BinomialRatio, numpy_det: BinomialRatio, seed: int,
                  rtol: float = 0.0) -> None:
    for batch in _rounds(seed):
        band = np.random.default_rng(len(batch)).uniform(0.5, 6.0, len(batch))
        for b in (3.5, band):
            with np.errstate(all="ignore"):
                pn: Prediction = numpy_det.predict(batch, b)
                sn = numpy_det.score(batch)
            pk = kernel_det.predict(batch, b)
            for field in ("expected", "lower", "upper"):
                _same(getattr(pk, field), getattr(pn, field), rtol)
        _same(kernel_det.score(batch), sn, rtol)
        kernel_det.learn(batch)
        numpy_det.learn(batch)
        _same(kernel_det.warming(batch.slots), numpy_det.warming(batch.slots), 0.0)
        # The state is learned with one logarithm-free model of the row: always the same bits.
        _same(kernel_det.state_dict()["state"], numpy_det.state_dict()["state"], 0.0)


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_kernels_match_numpy_with_the_same_logarithm(params: dict[str, Any], seed: int) -> None:
    _check_stream(BinomialRatio(**params), BinomialNumpy(**params), seed)


@pytest.mark.parametrize("params", PARAMS[:2])
def test_kernels_match_numpy_with_its_vectorised_logarithm(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any],
) -> None:
    monkeypatch.setitem(LOG, "log", np.log)
    _check_stream(BinomialRatio(**params), BinomialNumpy(**params), 2, rtol=1e-12)


def test_tail_special_values() -> None:
    """Every combination of edge values of ``x``, ``n``, ``p`` and the band."""
    xs = [0.0, -0.0, 1e-300, 0.005, 0.25, 1.0, np.nan]
    ns = [1.0, 1.5, 4.0, 1e6, 1e300, np.nan, np.inf, 0.5]
    ps = [1e-9, 0.005, 0.5, 1.0 - 1e-9, 1.0, np.nan]
    bands = [0.0, 0.5, 3.5, 40.0, np.nan, np.inf]
    x, n, p, band = (a.ravel() for a in np.meshgrid(xs, ns, ps, bands, indexing="ij"))
    with np.errstate(all="ignore"):
        _same(binomial_sigmas(x, n, p), np_sigmas(x, n, p), 0.0)
        for got, want in zip(band_edges(n, p, band), np_edges(n, p, band), strict=True):
            _same(got, want, 0.0)


def test_bisected_edges_match_the_counted_grid() -> None:
    """The kernels bisect each grid the numpy reference counts: the same edges, bit for bit.

    Random rows over every kind of ``n`` (1 to 4, where the approximation is least regular,
    and up to 1e6), rates from 1e-7 to near 1, and bands from just above 0.
    """
    rng = np.random.default_rng(11)
    rows = 60_000
    n = np.where(rng.uniform(size=rows) < 0.3, rng.uniform(1.0, 4.0, rows),
                 np.exp(rng.uniform(0.0, np.log(1e6), rows)))
    p = np.minimum(np.exp(rng.uniform(np.log(1e-7), 0.0, rows)), 1.0 - 1e-9)
    band = np.where(rng.uniform(size=rows) < 0.3, rng.uniform(1e-6, 0.3, rows),
                    rng.uniform(0.3, 12.0, rows))
    with np.errstate(all="ignore"):
        for got, want in zip(band_edges(n, p, band), np_edges(n, p, band), strict=True):
            _same(got, want, 0.0)


def _as_python(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Replace the module's kernels by their Python functions (``NUMBA_DISABLE_JIT=1``)."""
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)  # float_warnings_ignored reads it
    for name, value in vars(module).copy().items():
        if isinstance(value, numba.core.registry.CPUDispatcher):
            monkeypatch.setattr(module, name, value.py_func)


@pytest.mark.parametrize("params", PARAMS[:3:2])
def test_kernels_as_plain_python_match_numpy(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any],
) -> None:
    _as_python(monkeypatch, binomial_tail)
    _as_python(monkeypatch, binomial_ratio_kernels)
    assert not isinstance(binomial_ratio_kernels.score_rows, numba.core.registry.CPUDispatcher)
    _check_stream(BinomialRatio(**params), BinomialNumpy(**params), 3)
