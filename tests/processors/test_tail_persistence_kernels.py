"""Kernels of TailQuantile, DeviationScale and Persistence against their former numpy bodies.

The numpy versions below are the method bodies the kernels replaced, kept as the reference
(the tail histogram's since in 24-bit integer bins that halve, see ``tail_quantile``):
random rounds (several slots, NaN, infinities, zeros, huge values, a short window so that
the histogram rescales) must leave the same state and give the same outputs. The tail
estimate goes through ``exp``, whose last bit numba (libm) and numpy (its own SIMD code)
may round differently; the float32 estimate then differs by at most a float32 step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting import tail_quantile as tq_module
from otel_anomaly.processors.alerting.tail_quantile import (
    SPREAD_FLOOR,
    TAIL_GROWTH,
    DeviationScale,
    TailQuantile,
)
from otel_anomaly.processors.detectors.persistence import _CAP, _HUBER, Persistence
from otel_anomaly.processors.series.slot_arrays import saturated

_BINS = tq_module._BINS
_LOW = tq_module._LOW
_LOG_RATIO = tq_module._LOG_RATIO


class NumpyTailQuantile(TailQuantile):
    def update(self, slots: NDArray[np.intp], scores: NDArray[np.float64]) -> None:
        ok = np.isfinite(scores)
        slots, scores = slots[ok], scores[ok]
        self._ensure(slots)
        if not len(slots):
            return
        with np.errstate(divide="ignore"):
            pos = np.log(np.maximum(scores, 1e-300) / _LOW) / _LOG_RATIO
        b = np.minimum(np.maximum(np.floor(pos).astype(np.int64) + 1, 0), _BINS + 1)
        inc = self._state.inc[slots]
        bins = self._bins(slots)
        rows = np.arange(len(slots))
        while True:  # halve (half to even) the slots whose bin would overflow
            full = bins[rows, b] + np.maximum(inc, 1.0) + 0.5 >= tq_module._CODE_MAX + 1
            if not full.any():
                break
            bins[full] = np.rint(bins[full] / 2.0)
            inc = np.where(full, inc / 2.0, inc)
        old = bins[rows, b]
        bins[rows, b] = np.maximum(np.floor(old + inc + 0.5), old + 1)
        codes = bins.astype(np.int64)
        self._state.hist[slots], self._state.low[slots] = codes >> 8, codes & 255
        n = self._state.n[slots] + 1
        n = np.where(n >= tq_module._WRAP_AT, n - (tq_module._WRAP_AT >> 1), n)
        self._state.n[slots] = n
        self._state.inc[slots] = inc * self._growth
        above = scores >= self._state.q[slots]
        stale = slots[above | (n <= tq_module._EXACT_FOR) | (n % tq_module._REFRESH_EVERY == 0)]
        if len(stale):
            self._state.q[stale] = self._estimate(stale)

    def quantile(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        self._ensure(slots)
        return self._state.q[slots].astype(np.float64)

    def _bins(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        return (self._state.hist[slots].astype(np.float64) * 256
                + self._state.low[slots].astype(np.float64))

    def _estimate(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        hist = self._bins(slots)
        cum = np.cumsum(hist, axis=1)
        total = hist.sum(axis=1)
        rank = self.q * total
        b = np.minimum((cum < rank[:, None]).sum(axis=1), _BINS + 1)
        rows = np.arange(len(slots))
        before = cum[rows, b] - hist[rows, b]
        mass = hist[rows, b]
        frac = np.where(mass > 0, (rank - before) / np.maximum(mass, 1e-300), 0.0)
        frac = np.minimum(np.maximum(frac, 0.0), 1.0)
        edge = np.minimum(np.maximum(b - 1 + frac, 0.0), float(_BINS))
        value = _LOW * np.exp(edge * _LOG_RATIO)
        return np.where(total > 0, value, 0.0)


class NumpyDeviationScale(DeviationScale):
    def __init__(self, *, q: float = 0.999, window: int = 2000) -> None:
        super().__init__(q=q, window=window)
        self.tails = NumpyTailQuantile(q=q, window=window)

    def multiplier(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        return np.maximum(self.tails.quantile(slots), self._gauss) / self._gauss

    def floor(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        self._typical.ensure(slots)
        mad_to_sigma = float(np.sqrt(np.pi / 2.0))
        return (SPREAD_FLOOR * mad_to_sigma) * self._typical.typical[slots].astype(np.float64)

    def update(
        self, slots: NDArray[np.intp], z: NDArray[np.float64], resid: NDArray[np.float64]
    ) -> None:
        cap = TAIL_GROWTH * np.maximum(self.tails.quantile(slots), self._gauss)
        self.tails.update(slots, np.minimum(z, cap))
        self._typical.ensure(slots)
        n = self.tails.count(slots)
        weight = np.maximum(1.0 / self.tails.window, 1.0 / np.maximum(n, 1))
        typical = self._typical.typical[slots].astype(np.float64)
        self._typical.typical[slots] = saturated(typical + weight * (resid - typical))


class NumpyPersistence(Persistence):
    def factor(
        self, slots: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        self._ensure(slots)
        d = self._slots.d[slots].astype(np.float64)
        v = self._slots.v[slots].astype(np.float64)
        limit = self.level * np.sqrt(np.where(v > 0, v, self._prior))
        size = np.abs(d)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(size > limit, np.maximum(limit / size, self.shrink), 1.0)
        return np.where(d > 0, f, 1.0), np.where(d < 0, f, 1.0)

    def update(
        self, slots: NDArray[np.intp], z: NDArray[np.float64], ready: NDArray[np.bool_]
    ) -> None:
        self._ensure(slots)
        d = self._slots.d[slots].astype(np.float64)
        old_v = self._slots.v[slots].astype(np.float64)
        v = np.where(old_v > 0, old_v, self._prior)
        new_d = d + self.alpha * (np.clip(z, -_CAP, _CAP) - d)
        new_v = v + (np.minimum(new_d * new_d, _HUBER**2 * v) - v) / self.window
        self._slots.d[slots] = np.where(ready, new_d, d)
        self._slots.v[slots] = np.where(ready, new_v, old_v)


def _rounds(rng: np.random.Generator, count: int, slots: int, width: int = 0) -> Any:
    """Rounds of distinct slots with scores drawn from a heavy, messy distribution."""
    for _ in range(count):
        size = int(rng.integers(1, slots + 1))
        chosen = rng.choice(slots, size, replace=False).astype(np.intp)
        shape = (size, width) if width else (size,)
        values = np.abs(rng.standard_normal(shape)) * np.exp(rng.normal(0.0, 2.0, shape))
        special = rng.random(shape)
        values = np.where(special < 0.01, np.nan, values)
        values = np.where((special > 0.01) & (special < 0.015), np.inf, values)
        values = np.where((special > 0.015) & (special < 0.02), 0.0, values)
        values = np.where((special > 0.02) & (special < 0.022), 1e300, values)
        values = np.where((special > 0.022) & (special < 0.024), -np.inf, values)
        yield chosen, values


def _assert_tails(fast: TailQuantile, slow: TailQuantile) -> None:
    a, b = fast.state_dict(), slow.state_dict()
    for name in ("hist", "low", "inc", "n"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # The estimate may round its last float64 bit differently (exp): one float32 step.
    np.testing.assert_allclose(a["q"], b["q"], rtol=2e-7, atol=0)


def check_tail_quantile(rounds: int = 400) -> None:
    rng = np.random.default_rng(7)
    fast, slow = TailQuantile(q=0.99, window=3), NumpyTailQuantile(q=0.99, window=3)
    for slots, scores in _rounds(rng, rounds, 70):
        fast.update(slots, scores)
        with np.errstate(all="ignore"):  # the numpy code warned on inf - inf
            slow.update(slots, scores)
        np.testing.assert_allclose(fast.quantile(slots), slow.quantile(slots), rtol=2e-7)
        np.testing.assert_allclose(fast._estimate(slots), slow._estimate(slots), rtol=1e-15)
    _assert_tails(fast, slow)
    assert len(fast.state_dict()["n"]) == len(slow.state_dict()["n"])  # the same growth


def check_deviation_scale(rounds: int = 400) -> None:
    rng = np.random.default_rng(8)
    fast, slow = DeviationScale(q=0.99, window=50), NumpyDeviationScale(q=0.99, window=50)
    for slots, z in _rounds(rng, rounds, 70):
        with np.errstate(over="ignore"):  # resid beyond float32, even float64
            resid = z * rng.choice([1.0, 1e36, -1.0], len(z), p=[0.9, 0.05, 0.05])
        fast.update(slots, z, resid)
        with np.errstate(all="ignore"):
            slow.update(slots, z, resid)
        np.testing.assert_allclose(fast.multiplier(slots), slow.multiplier(slots), rtol=2e-7)
        np.testing.assert_array_equal(fast.floor(slots), slow.floor(slots))
    _assert_tails(fast.tails, slow.tails)
    np.testing.assert_array_equal(fast.state_dict()["typical"], slow.state_dict()["typical"])


def check_persistence(rounds: int = 400) -> None:
    rng = np.random.default_rng(9)
    args: dict[str, Any] = {"columns": 3, "alpha": 0.2, "level": 3.0, "shrink": 0.5,
                            "window": 20}
    fast, slow = Persistence(**args), NumpyPersistence(**args)
    for slots, z in _rounds(rng, rounds, 40, width=3):
        signed = z * rng.choice([1.0, -1.0], z.shape)
        ready = rng.random(z.shape) < 0.8
        fast.update(slots, signed, ready)
        with np.errstate(all="ignore"):
            slow.update(slots, signed, ready)
        for mine, theirs in zip(fast.factor(slots), slow.factor(slots), strict=True):
            np.testing.assert_array_equal(mine, theirs)
    for name, array in fast.state_dict().items():
        np.testing.assert_array_equal(array, slow.state_dict()[name], err_msg=name)


def test_tail_quantile_kernels_match_numpy() -> None:
    check_tail_quantile()


def test_tail_counts_wrap_as_numpy_did() -> None:
    # The count wraps back by 2**29 at 2**30; a corrupt count at the int32 maximum wraps
    # to its minimum, as the int32 numpy sum did.
    fast, slow = TailQuantile(q=0.9, window=10), NumpyTailQuantile(q=0.9, window=10)
    slots = np.arange(4, dtype=np.intp)
    for tails in (fast, slow):
        tails.update(slots, np.ones(4))
        state = tails.state_dict()
        state["n"][:4] = [2**30 - 1, 2**31 - 1, -5, 63]
        tails.load_state_dict(state)
        tails.update(slots, np.array([2.0, 0.1, 5.0, 1e-9]))
    _assert_tails(fast, slow)
    assert fast.count(slots).tolist() == [2**29, -(2**31), -4, 64]


def test_deviation_scale_kernels_match_numpy() -> None:
    check_deviation_scale()


def test_persistence_kernels_match_numpy() -> None:
    check_persistence()


def test_kernels_as_plain_python_match_numpy() -> None:
    # The reference run of every kernel: the same loops, interpreted.
    code = ("import test_tail_persistence_kernels as t; t.check_tail_quantile(60); "
            "t.check_deviation_scale(60); t.check_persistence(60)")
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
