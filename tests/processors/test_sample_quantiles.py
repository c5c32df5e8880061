"""Compiled quantiles of many samples equal ``numpy.quantile``'s, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_anomaly.processors.signals.sample_quantiles import quantiles

_FINITE = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
_QS = st.sampled_from([0.5, 0.95, 0.99]) | st.floats(0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_FINITE, min_size=1, max_size=40),
                          st.lists(_QS, min_size=1, max_size=4)), min_size=1, max_size=5))
def test_every_sample_and_quantile_as_numpy(jobs: list[tuple[list[float], list[float]]]) -> None:
    samples = [np.asarray(values, np.float64) for values, _ in jobs]
    bounds = np.cumsum([0] + [len(s) for s in samples], dtype=np.int64)
    sample_of = np.asarray([s for s, (_, qs) in enumerate(jobs) for _ in qs], np.int64)
    qs = np.asarray([q for _, asked in jobs for q in asked], np.float64)
    out = np.empty(len(qs))
    quantiles(np.concatenate(samples), bounds, sample_of, qs, out)
    expected = [np.quantile(samples[s], q) for s, q in zip(sample_of, qs, strict=True)]
    assert out.tolist() == [float(x) for x in expected]


def test_span_durations_as_numpy() -> None:
    # Durations as the traces adapter computes them: nanoseconds over 1e6, many ties.
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 19, 20, 99, 100, 101, 1000):
        durations = np.round(rng.lognormal(16, 1, n)).astype(np.int64) / 1e6
        out = np.empty(3)
        quantiles(durations, np.array([0, n], np.int64), np.zeros(3, np.int64),
                  np.array([0.5, 0.95, 0.99]), out)
        assert out.tolist() == np.quantile(durations, [0.5, 0.95, 0.99]).tolist()
