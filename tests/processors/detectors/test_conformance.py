"""Every detector and member type x every parameter set it declares passes every check.

Member-only types (``discord``) are held to the same contract as detector rule types.
"""

from __future__ import annotations

import doctest
import inspect
import pickle
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from otel_anomaly.processors.detectors import DETECTORS, Detector
from otel_anomaly.processors.detectors.ensemble_members import MEMBER_TYPES
from otel_anomaly.processors.testing import SECOND, spiky_series
from otel_anomaly.processors.types import SeriesBatch

TYPES = {**MEMBER_TYPES, **DETECTORS}
CASES = [
    (name, params) for name, cls in TYPES.items() for params in cls._test_params()
]
BAND = 4.0


def _fresh(name: str, params: dict[str, Any]) -> Detector:
    return TYPES[name](**params)


def _stream(n_series: int = 4, n: int = 80, seed: int = 0) -> SeriesBatch:
    """Rows of several series interleaved, with one series repeated within rounds.

    One row per second of event time (seasonal detectors declare short cycles to match).
    """
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, n_series, size=n * n_series).astype(np.intp)
    values = 50.0 + 5.0 * rng.standard_normal(len(slots))
    return SeriesBatch.of(slots, values, np.arange(len(slots), dtype=np.int64) * SECOND)


def _learn_loop(det: Detector, batch: SeriesBatch) -> None:
    for i in range(len(batch)):
        det.learn(batch.take(np.array([i])))


def _same_scores(a: Detector, b: Detector, probe: SeriesBatch) -> None:
    np.testing.assert_allclose(a.score(probe), b.score(probe), rtol=1e-9, equal_nan=True)
    pa, pb = a.predict(probe, BAND), b.predict(probe, BAND)
    for field in ("expected", "lower", "upper"):
        np.testing.assert_allclose(getattr(pa, field), getattr(pb, field), rtol=1e-9,
                                   equal_nan=True)


def check_docstring_and_doctest(name: str, params: dict[str, Any]) -> None:
    cls = TYPES[name]
    doc = inspect.getdoc(cls) or ""
    for section in ("Parameters", "Examples", "References"):
        assert section in doc, f"{name}: docstring lacks a {section} section"
    tests = doctest.DocTestFinder().find(cls, globs=vars(inspect.getmodule(cls)))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0, f"{name}: doctest failed or missing"


def check_params_stored(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    sig = inspect.signature(type(det).__init__)
    for pname, p in sig.parameters.items():
        if pname == "self":
            continue
        assert p.kind is p.KEYWORD_ONLY, f"{name}: parameter {pname} must be keyword-only"
        assert hasattr(det, pname), f"{name}: parameter {pname} is not stored as an attribute"
        assert isinstance(p.default, int | float | str | bool | tuple | type(None)), (
            f"{name}: default of {pname} is mutable: {p.default!r}"
        )
    for pname, value in params.items():
        assert getattr(det, pname) == value


def check_score_before_learn(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    probe = SeriesBatch.of([0, 5], [1.0, 2.0])
    np.testing.assert_array_equal(det.score(probe), [0.0, 0.0])
    pred = det.predict(probe, BAND)
    assert np.isnan(pred.lower).all() and np.isnan(pred.upper).all()


def check_score_is_pure(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    det.learn(_stream())
    before = det.state_dict()
    probe = _stream(seed=1)
    first = det.score(probe)
    det.predict(probe, BAND)
    second = det.score(probe)
    np.testing.assert_array_equal(first, second)
    for key, arr in det.state_dict().items():
        np.testing.assert_array_equal(arr, before[key], err_msg=f"{name}: score changed {key}")


def check_no_aliasing(name: str, params: dict[str, Any]) -> None:
    det, ref = _fresh(name, params), _fresh(name, params)
    batch = _stream()
    det.learn(batch)
    ref.learn(_stream())
    batch.values[:] = 1e9  # mutating the caller's array must not reach the detector
    _same_scores(det, ref, _stream(seed=2))


def check_batch_equals_loop(name: str, params: dict[str, Any]) -> None:
    batch, loop = _fresh(name, params), _fresh(name, params)
    data = _stream()
    batch.learn(data)
    _learn_loop(loop, data)
    _same_scores(batch, loop, _stream(seed=3))


def check_row_order_across_slots(name: str, params: dict[str, Any]) -> None:
    data = _stream()
    # Reorder rows while keeping each slot's own order: sort by slot, stable.
    order = np.argsort(data.slots, kind="stable")
    a, b = _fresh(name, params), _fresh(name, params)
    a.learn(data)
    b.learn(data.take(order))
    _same_scores(a, b, _stream(seed=4))


def check_slots_independent(name: str, params: dict[str, Any]) -> None:
    data = _stream()
    a, b = _fresh(name, params), _fresh(name, params)
    a.learn(data)
    b.learn(data.take(np.flatnonzero(data.slots == 0)))
    probe = SeriesBatch.of([0, 0], [50.0, 90.0])
    _same_scores(a, b, probe)


def check_reset_restores_fresh(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    det.learn(_stream())
    det.reset(np.array([1], np.intp))
    fresh = _fresh(name, params)
    probe = SeriesBatch.of([1, 1], [50.0, 80.0])
    _same_scores(det, fresh, probe)


def check_state_roundtrip(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    det.learn(_stream())
    copy = _fresh(name, params)
    copy.load_state_dict(det.state_dict())
    probe = _stream(seed=5)
    _same_scores(det, copy, probe)
    _same_scores(det, pickle.loads(pickle.dumps(det)), probe)


def check_seed_determinism(name: str, params: dict[str, Any]) -> None:
    a, b = _fresh(name, params), _fresh(name, params)
    a.learn(_stream())
    b.learn(_stream())
    _same_scores(a, b, _stream(seed=6))


def check_nan_does_not_poison(name: str, params: dict[str, Any]) -> None:
    det, ref = _fresh(name, params), _fresh(name, params)
    data = _stream()
    det.learn(data)
    ref.learn(data)
    det.learn(SeriesBatch.of([0, 1, 2], [np.nan, np.inf, -np.inf]))
    _same_scores(det, ref, _stream(seed=7))
    assert np.isnan(det.score(SeriesBatch.of([0], [np.nan])))[0]


def check_memory_flat_in_points(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    det.learn(_stream(n=50))
    tracemalloc.start()
    det.learn(_stream(n=50, seed=8))
    small, _ = tracemalloc.get_traced_memory()
    det.learn(_stream(n=2000, seed=9))
    large, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert large - small < 64 * 1024, f"{name}: state grew {large - small} bytes with points"


def check_prequential_auc(name: str, params: dict[str, Any]) -> None:
    det = _fresh(name, params)
    series = spiky_series(n=800, spikes=20, seed=11)
    # A detector of a bounded quantity (ratios in [0, 1]) declares the factor that brings
    # the spiky series (about 100) into its range; the other checks compare detectors
    # with each other and hold on any values.
    values = series.values * getattr(TYPES[name], "_conformance_scale", 1.0)
    scores = np.empty(len(values))
    for i, value in enumerate(values):
        row = SeriesBatch.of([0], [value], [i * SECOND])
        scores[i] = det.score(row)[0]
        det.learn(row)
    pos, neg = scores[series.labels == 1], scores[series.labels == 0]
    auc = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc >= 0.5, f"{name}: prequential ROC AUC {auc:.3f} < 0.5"


CHECKS: list[Callable[[str, dict[str, Any]], None]] = [
    check_docstring_and_doctest, check_params_stored, check_score_before_learn,
    check_score_is_pure, check_no_aliasing, check_batch_equals_loop,
    check_row_order_across_slots, check_slots_independent, check_reset_restores_fresh,
    check_state_roundtrip, check_seed_determinism, check_nan_does_not_poison,
    check_memory_flat_in_points, check_prequential_auc,
]


@pytest.mark.parametrize(
    ("name", "params", "check"),
    [
        pytest.param(name, params, check, id=f"{name}{i}:{check.__name__.removeprefix('check_')}")
        for name, cls in TYPES.items()
        for i, params in enumerate(cls._test_params())
        for check in CHECKS
    ],
)
def test_conformance(name: str, params: dict[str, Any], check: Callable[..., None]) -> None:
    skips = getattr(TYPES[name], "_conformance_skips", {})
    if check.__name__ in skips:
        pytest.skip(skips[check.__name__])
    check(name, params)
