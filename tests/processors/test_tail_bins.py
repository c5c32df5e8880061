"""Tail histograms end at ~1.3e5: estimates below keep their precision, above answer the edge.

Checkpoints of format 7 (88 bins, up to ~1.1e8) fold their longer histograms on restore.
"""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.alerting.tail_quantile import TAIL_BINS, TAIL_TOP, TailQuantile
from otel_anomaly.processors.state.migrations import upgrade


def _learned(scores: np.ndarray, q: float = 0.99, window: int = 1000) -> TailQuantile:
    tq = TailQuantile(q=q, window=window)
    for score in scores:
        tq.update(np.array([0]), np.array([score]))
    return tq


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0, 20000.0])
def test_quantiles_below_the_top_edge_stay_within_a_few_percent(scale: float) -> None:
    scores = scale * np.abs(np.random.default_rng(0).standard_normal(4000))
    exact = float(np.quantile(scores[-1000:], 0.99))
    estimate = float(_learned(scores).quantile(np.array([0]))[0])
    assert abs(estimate / exact - 1) < 0.1, (estimate, exact)


def test_a_quantile_past_the_top_edge_answers_the_edge() -> None:
    estimate = float(_learned(np.full(200, 1e7)).quantile(np.array([0]))[0])
    assert estimate == pytest.approx(TAIL_TOP, rel=1e-6)
    assert 1e5 < TAIL_TOP < 2e5


def test_format_7_tail_histograms_fold_into_the_shorter_one() -> None:
    tq = _learned(np.concatenate([np.abs(np.random.default_rng(1).standard_normal(900)),
                                  np.full(100, 1e6)]))
    state = tq.state_dict()
    new = state["hist"]
    top = TAIL_BINS + 1
    old = np.zeros((len(new), 88), np.float32)
    old[:, :top] = new[:, :top]
    old[:, top] = 0.25 * new[:, top]  # the top mass spread over bins the old one had
    old[:, 80] = 0.75 * new[:, top]
    saved = {**state, "hist": old, "q": np.full(len(new), 3e7, np.float32)}
    member = upgrade({"detectors": [{f"s1.{k}": v for k, v in saved.items()}]}, 7, 8)
    folded = member["detectors"][0]
    np.testing.assert_allclose(folded["s1.hist"], new, rtol=1e-6)
    assert folded["s1.q"][0] == pytest.approx(TAIL_TOP, rel=1e-6)
    restored = TailQuantile(q=0.99, window=1000)
    restored.load_state_dict({k.removeprefix("s1."): v for k, v in folded.items()})
    np.testing.assert_allclose(restored._estimate(np.array([0])), tq._estimate(np.array([0])),
                               rtol=1e-6)
