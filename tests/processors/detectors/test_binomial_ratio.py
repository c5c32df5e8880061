"""BinomialRatio with sample sizes: the checks the generic suite cannot make without counts."""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.detectors import BinomialRatio
from otel_anomaly.processors.types import SeriesBatch

SECOND = 1_000_000_000


def _traffic(n_series: int, windows: int, rate: float, seed: int,
             dispersion: float = 0.0, calls: float = 8.0) -> SeriesBatch:
    """Interleaved windows of Poisson(``calls``) calls (at least 1) with binomial errors.

    ``dispersion``: each window's rate is drawn from a beta with this intra-class
    correlation around ``rate`` (a rate that wanders).
    """
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, n_series, windows * n_series).astype(np.intp)
    sizes = np.maximum(rng.poisson(calls, len(slots)), 1).astype(np.float64)
    p = np.full(len(slots), rate)
    if dispersion > 0:
        s = 1.0 / dispersion - 1.0
        p = rng.beta(rate * s, (1.0 - rate) * s, len(slots))
    errors = rng.binomial(sizes.astype(np.int64), p)
    ts = np.arange(len(slots), dtype=np.int64) * SECOND
    return SeriesBatch(slots, ts, errors / sizes, sizes)


def test_batch_equals_loop_with_counts_and_unknown_counts() -> None:
    data = _traffic(4, 300, 0.05, seed=0)
    counts = data.counts.copy()  # type: ignore[union-attr]
    counts[::7] = np.nan  # some rows come without their calls
    data = SeriesBatch(data.slots, data.ts_unix_nano, data.values, counts)
    batch, loop = BinomialRatio(warmup=5), BinomialRatio(warmup=5)
    batch.learn(data)
    for i in range(len(data)):
        loop.learn(data.take(np.array([i])))
    probe = _traffic(4, 5, 0.2, seed=1)
    np.testing.assert_allclose(batch.score(probe), loop.score(probe), rtol=1e-9)
    np.testing.assert_allclose(batch.state_dict()["state"], loop.state_dict()["state"],
                               rtol=1e-9)


@pytest.mark.parametrize("band", [2.0, 3.5, 6.0])
def test_score_equals_band_at_the_predicted_edge(band: float) -> None:
    det = BinomialRatio(warmup=5, warmup_calls=0.0)
    det.learn(_traffic(1, 500, 0.02, seed=2))
    calls = np.array([3.0, 10.0, 40.0, 200.0, 5000.0])
    probe = SeriesBatch.of([0] * 5, [0.0] * 5, counts=calls)
    pred = det.predict(probe, band)
    reachable = pred.upper <= 1.0
    assert reachable[2:].all()  # 40 calls and more can reach `band` sigmas
    at_edge = SeriesBatch.of([0] * 5, pred.upper, counts=calls)
    np.testing.assert_allclose(det.score(at_edge)[reachable], band, rtol=1e-5)
    # Where 100 % errors is still inside the band, it scores below `band`, in proportion.
    at_one = det.score(SeriesBatch.of([0] * 5, [1.0] * 5, counts=calls))[~reachable]
    assert (at_one < band).all()


def test_unknown_calls_are_taken_as_the_series_usual_calls() -> None:
    det = BinomialRatio(warmup=5, warmup_calls=0.0)
    det.learn(SeriesBatch.of([0] * 50, [0.01] * 50, counts=[100.0] * 50))
    known = det.score(SeriesBatch.of([0], [0.08], counts=[100.0]))
    unknown = det.score(SeriesBatch.of([0], [0.08]))
    np.testing.assert_allclose(unknown, known)
    fresh = BinomialRatio(default_count=100.0, warmup=5, warmup_calls=0.0)
    fresh.learn(SeriesBatch.of([0] * 50, [0.01] * 50))
    np.testing.assert_allclose(fresh.score(SeriesBatch.of([0], [0.08])), known, rtol=1e-6)


def test_binomial_traffic_scores_past_the_band_as_rarely_as_a_normal_tail() -> None:
    det = BinomialRatio(warmup=30)
    data = _traffic(20, 3000, 0.005, seed=3)
    scores = np.empty(len(data))
    for rows in np.array_split(np.arange(len(data)), 300):
        part = data.take(rows)
        scores[rows] = det.score(part)  # the rows of a chunk have no repeated slot... mostly
        det.learn(part)
    # 3.5 sigmas: 2.3e-4 for a normal tail; the discrete, conservative tail is rarer still.
    assert (scores >= 3.5).mean() < 2.3e-4 * 2


def test_a_wandering_rate_is_learned_as_dispersion_instead_of_paged() -> None:
    # 100 calls a window, the rate drawn per window around 2 % (intra-class correlation
    # 0.02): the ratio varies three times as much as independent calls would make it.
    data = _traffic(10, 3000, 0.02, seed=4, dispersion=0.02, calls=100.0)
    rates = {}
    for dispersion in (False, True):
        det = BinomialRatio(dispersion=dispersion)
        scores = np.empty(len(data))
        for rows in np.array_split(np.arange(len(data)), 300):
            scores[rows] = det.score(data.take(rows))
            det.learn(data.take(rows))
        rates[dispersion] = (scores[len(data) // 3:] >= 3.5).mean()
    # Learned dispersion cuts the windows past 3.5 sigmas tenfold. (It stays above a
    # normal tail's 2.3e-4: the binomial of the same variance has a lighter tail than the
    # beta-binomial; opening takes two such windows in a row.)
    assert rates[False] > 5 * rates[True]
    assert rates[True] < 3e-3
