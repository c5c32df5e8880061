"""SeasonalProfile and EwmaZScore kernels give the bits of their references.

``EwmaNumpy`` keeps the numpy bodies of the ported methods as they were before the port
(#9 item 1); both versions learn the same streams (rounds of one and of many rows, gaps of
cycles, spikes, absurd magnitudes, NaN and inf) and must agree exactly in every
prediction, score and state array. The kernels also run as plain Python (what
``NUMBA_DISABLE_JIT=1`` runs) with the same results. SeasonalProfile's numpy bodies kept
float32 columns, which its two-byte codes replaced (``seasonal_codes``): its compiled
kernels are compared with themselves as plain Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numba
import numpy as np
import pytest
from numpy.typing import NDArray

from otel_anomaly.processors.detectors import ewma_zscore, seasonal_codes, seasonal_kernels
from otel_anomaly.processors.detectors.base import Detector, Prediction
from otel_anomaly.processors.detectors.ewma_zscore import EwmaZScore
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile
from otel_anomaly.processors.types import SeriesBatch

SECOND = 10**9
_MAD = float(np.sqrt(np.pi / 2.0))
_F32_MAX = float(np.finfo(np.float32).max)
_MAX_POINTS = np.iinfo(np.int32).max - 1


class EwmaNumpy(EwmaZScore):
    """EwmaZScore's numpy bodies, before the port."""

    def _state(self, slots: NDArray[np.intp]) -> tuple[NDArray[Any], ...]:
        self._ensure(slots)
        mean = self._slots.mean[slots]
        sigma = np.maximum(self._slots.dev[slots] * _MAD, 1e-12 * (1.0 + np.abs(mean)))
        return self._slots.n[slots], mean, sigma

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        n, mean, sigma = self._state(batch.slots)
        ready = n >= self.warmup
        with np.errstate(over="ignore", invalid="ignore"):
            expected = np.where(n > 0, self._inverse(mean), np.nan)
            lower = np.where(ready, self._inverse(mean - band * sigma), np.nan)
            upper = np.where(ready, self._inverse(mean + band * sigma), np.nan)
        return Prediction(expected, lower, upper)

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        n, mean, sigma = self._state(batch.slots)
        with np.errstate(invalid="ignore"):
            z = np.abs(self._transform(batch.values) - mean) / sigma
        z = np.where(n >= self.warmup, z, 0.0)
        out: NDArray[np.float64] = np.where(np.isfinite(batch.values), z, np.nan)
        return out

    def _learn_unique(self, batch: SeriesBatch) -> None:
        slots = batch.slots
        self._ensure(slots)
        y = self._transform(batch.values)
        n = np.minimum(self._slots.n[slots], _MAX_POINTS) + 1
        weight = np.maximum(self.alpha, 1.0 / n)
        diff = y - self._slots.mean[slots]
        self._slots.mean[slots] += weight * diff
        dev = self._slots.dev[slots]
        cap = np.where(n > self.warmup, 3.0 * _MAD * dev, np.inf)
        step = weight * (np.minimum(np.abs(diff), cap) - dev)
        self._slots.dev[slots] = dev + np.where(n > 1, step, 0.0)
        self._slots.n[slots] = n


SEASONAL = [
    {"period_s": 60.0, "buckets": 12, "warmup_cycles": 1.0},
    {"period_s": 60.0, "buckets": 12, "warmup_cycles": 1.0, "phase_tolerance": 2},
    {"period_s": 20.0, "buckets": 4, "alpha": 1.0, "warmup_cycles": 0.0, "spread_mix": 0.0},
    {"period_s": 37.0, "buckets": 7, "alpha": 0.1, "warmup_cycles": 0.5, "phase_tolerance": 3},
]
EWMA = [{"warmup": 5}, {"alpha": 0.2, "warmup": 3, "log_transform": True}, {"alpha": 1.0}]


def _rounds(seed: int, n_slots: int = 12, steps: int = 400) -> Iterator[SeriesBatch]:
    """Rounds of one row and of many (slots repeated within some), irregular event time."""
    rng = np.random.default_rng(seed)
    ts = np.zeros(n_slots, np.int64)
    for step in range(steps):
        size = 1 if step % 3 else int(rng.integers(2, 3 * n_slots))
        slots = rng.integers(0, n_slots, size).astype(np.intp)
        gaps = rng.choice([1, 2, 5, 13, 700], size, p=[0.5, 0.2, 0.15, 0.1, 0.05])
        times = np.empty(size, np.int64)
        for i, slot in enumerate(slots):  # event time moves forward per slot
            ts[slot] += int(gaps[i]) * SECOND + int(rng.integers(0, SECOND))
            times[i] = ts[slot]
        phase = np.sin(2 * np.pi * (times % (60 * SECOND)) / (60 * SECOND))
        values = 10.0 * slots + 5.0 * phase + rng.standard_normal(size)
        odd = rng.random(size)
        values = np.where(odd < 0.03, values * 50.0, values)
        values = np.where((odd > 0.03) & (odd < 0.04), rng.choice([-1e300, 1e300, 1e38, -1e38,
                                                                    np.nan, np.inf], size), values)
        yield SeriesBatch(slots, times, values)


def _same(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)


def _check_stream(kernel_det: Detector, numpy_det: Detector, seed: int) -> None:
    for batch in _rounds(seed):
        band = np.random.default_rng(len(batch)).uniform(0.5, 6.0, len(batch))
        for b in (1.0, 4.0, band):
            pk, pn = kernel_det.predict(batch, b), numpy_det.predict(batch, b)
            for field in ("expected", "lower", "upper"):
                _same(getattr(pk, field), getattr(pn, field))
        _same(kernel_det.score(batch), numpy_det.score(batch))
        _same(kernel_det.scored(batch), numpy_det.scored(batch))
        kernel_det.learn(batch)
        numpy_det.learn(batch)
        _same(kernel_det.warming(batch.slots), numpy_det.warming(batch.slots))
    sk, sn = kernel_det.state_dict(), numpy_det.state_dict()
    assert sorted(sk) == sorted(sn)
    for key in sk:
        _same(sk[key], sn[key])


@pytest.mark.parametrize("params", EWMA)
@pytest.mark.parametrize("seed", [0, 1])
def test_ewma_kernels_match_numpy(params: dict[str, Any], seed: int) -> None:
    _check_stream(EwmaZScore(**params), EwmaNumpy(**params), seed)


def _as_python(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Replace the module's kernels by their Python functions (``NUMBA_DISABLE_JIT=1``)."""
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)  # float_warnings_ignored reads it
    for name, value in vars(module).copy().items():
        if isinstance(value, numba.core.registry.CPUDispatcher):
            monkeypatch.setattr(module, name, value.py_func)


@pytest.mark.parametrize("params", EWMA)
def test_kernels_as_plain_python_match_numpy(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> None:
    _as_python(monkeypatch, ewma_zscore)
    _check_stream(EwmaZScore(**params), EwmaNumpy(**params), 0)


def _outputs(det: Detector, seed: int) -> list[NDArray[Any]]:
    """Every prediction, score and final state array of ``det`` over a stream."""
    out: list[NDArray[Any]] = []
    for batch in _rounds(seed):
        band = np.random.default_rng(len(batch)).uniform(0.5, 6.0, len(batch))
        for b in (1.0, 4.0, band):
            prediction = det.predict(batch, b)
            out += [prediction.expected, prediction.lower, prediction.upper]
        out += [det.score(batch), det.scored(batch)]
        det.learn(batch)
        out.append(det.warming(batch.slots))
    return out + [det.state_dict()[key] for key in sorted(det.state_dict())]


@pytest.mark.parametrize("params", SEASONAL)
@pytest.mark.parametrize("seed", [0, 1])
def test_seasonal_kernels_as_plain_python_give_the_compiled_bits(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any], seed: int
) -> None:
    compiled = _outputs(SeasonalProfile(**params), seed)
    _as_python(monkeypatch, seasonal_kernels)
    _as_python(monkeypatch, seasonal_codes)
    assert not isinstance(seasonal_codes.store, numba.core.registry.CPUDispatcher)
    plain = _outputs(SeasonalProfile(**params), seed)
    assert len(plain) == len(compiled)
    for a, b in zip(compiled, plain, strict=True):
        _same(a, b)


@pytest.mark.parametrize(("period_s", "buckets"), [(86400, 288), (604800, 168), (86400, 7),
                                                  (3600, 13)])
def test_gather_buckets_are_numpys_float_floor_division(period_s: int, buckets: int) -> None:
    # Whole-nanosecond bucket widths (the defaults) take integer division; others (a day in
    # 7) the float division numpy did. Either way the bucket is numpy's, at every phase.
    det = SeasonalProfile(period_s=float(period_s), buckets=buckets)
    rng = np.random.default_rng(buckets)
    period_ns = period_s * SECOND
    ts = np.concatenate([rng.integers(0, 2**62, 2000),  # any time, up to year 2116
                         np.arange(-3, 4) + period_ns * (2**62 // period_ns),  # around a cycle's start
                         (np.arange(1, buckets) * (period_ns / buckets)).astype(np.int64)])
    slots = np.zeros(len(ts), np.intp)
    det.learn(SeriesBatch.of([0], [1.0], [0]))  # one slot's columns exist
    st = det._slots  # noqa: SLF001 -- the kernel's own arguments
    got = seasonal_kernels.gather(
        slots, ts, det._period_ns, det._bucket_ns, det.buckets, det.spread_mix,  # noqa: SLF001
        det._warm_ns, st.n, st.first, st.gdev, st.centre, st.unit, st.mean_code,  # noqa: SLF001
        st.dev_code, st.count, st.snap_b, st.snap_cycle, st.snap_mean, st.snap_dev)[0]
    expected = np.minimum((ts % period_ns) // det._bucket_ns, buckets - 1)  # noqa: SLF001
    assert np.array_equal(got, expected.astype(np.intp))
