"""Scanned quiet rows of ``ewma_zscore`` rules (``ewma_scan``) score and learn as ``_step``.

The reference is the same engine with the scan off (``ewma_scannable`` says no: every round
through ``Scorer._step``). On rounds of up to 64 rows, outputs, events and the whole
learned state must be equal bit for bit; above that ``_step`` takes the log-modulus with
numpy's vectorised functions, which may differ in the last bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from helpers.engine_state import assert_same_state
from helpers.scan_counts import count_scanned_rows

from otel_anomaly.processors.alerting import scorer as scorer_module
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import AlertPolicy, DetectorRule, EngineSettings
from otel_anomaly.processors.testing import SECOND, span, traces_request
from otel_anomaly.processors.types import SeriesKey

T0 = 1_700_000_000 * SECOND
Run = tuple[dict[str, np.ndarray], list[tuple[Any, ...]], Engine]


@pytest.fixture
def counted_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows ``scan_ewma_rows`` took, per call."""
    return count_scanned_rows(monkeypatch, "scan_ewma_rows")


def _spans(r: int, operations: int, per_operation: int, rng: np.random.Generator) -> Any:
    """One second of spans: lognormal durations; operation 3 slows x20 in rounds 150 to 159,
    operation 5 has one very slow span in round 200, and the first 20 rounds are young."""
    spans = []
    for op in range(operations):
        durations = 40.0 * (1 + op % 4) * np.exp(0.3 * rng.standard_normal(per_operation))
        if op == 3 and 150 <= r < 160:  # noqa: PLR2004
            durations *= 20.0
        if op == 5 and r == 200:  # noqa: PLR2004
            durations[0] *= 50.0
        for i, ms in enumerate(durations.tolist()):
            spans.append(span(f"op{op}", T0 + r * SECOND + i * 1000, ms,
                              error=bool(rng.uniform() < 0.01),
                              trace_id=(r * 10_000 + op * 100 + i + 1).to_bytes(16, "big"),
                              span_id=(op * 100 + i + 1).to_bytes(8, "big")))
    return traces_request(spans, {"service.name": "shop"})


def _collect(results: list[Any]) -> tuple[dict[str, np.ndarray], list[tuple[Any, ...]]]:
    fields = ("score", "expected", "lower", "upper", "flag")
    outputs = {f: np.concatenate([getattr(r.scores, f) for r in results]) for f in fields}
    events = [(e.kind, e.slot, e.ts_unix_nano, e.direction, e.score, e.value, e.expected,
               e.lower, e.upper, e.explanation, e.anomaly_id, e.trace_id)
              for r in results for e in r.events]
    return outputs, events


def _replay_spans(operations: int, rounds: int = 260, per_operation: int = 10) -> Run:
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    rng = np.random.default_rng(operations)
    results = []
    for r in range(rounds):
        request = _spans(r, operations, per_operation, rng)
        results.append(engine.ingest("traces", request, request.SerializeToString()))
    return (*_collect(results), engine)


def _stepped(monkeypatch: pytest.MonkeyPatch, run: Callable[[], Run]) -> Run:
    """``run()`` with the ewma scan off: every round through ``_step``."""
    with monkeypatch.context() as patch:
        patch.setattr(scorer_module, "ewma_scannable", lambda *_: False)
        return run()


def _assert_same_run(scanned: Run, stepped: Run) -> None:
    (out_a, events_a, engine_a), (out_b, events_b, engine_b) = scanned, stepped
    for field, values in out_a.items():
        assert np.array_equal(values, out_b[field], equal_nan=True), field
    assert events_a == events_b
    assert_same_state(engine_a, engine_b)


def test_scanned_span_outliers_equal_the_stepped_ones(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int],
) -> None:
    # Twelve operations: rounds of 12 rows, each request's sample of 4 learned spans and
    # the slowest (scored, not learned), young series, a slow spell that opens, holds and
    # closes, and a lone slow span.
    scanned = _replay_spans(12)
    stepped = _stepped(monkeypatch, lambda: _replay_spans(12))
    _assert_same_run(scanned, stepped)
    opened = [e for e in scanned[1] if e[0] == "open" and e[11]]
    assert len(opened) >= 2, "the slow spell and the slow span must open span outliers"
    rows = 260 * 12 * 5
    assert sum(counted_scans) > 0.9 * rows, "quiet span rows must be scanned"


def test_scanned_span_outliers_of_many_operations_agree_to_the_last_bits(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int],
) -> None:
    # A hundred operations: rounds of 100 rows, which ``_step`` takes through numpy's log.
    scanned = _replay_spans(100, rounds=120, per_operation=6)
    stepped = _stepped(monkeypatch, lambda: _replay_spans(100, rounds=120, per_operation=6))
    for field, values in scanned[0].items():
        # Near 0 (a score at the expected duration, an edge where the band crosses 0 ms)
        # the last bits of the two logarithms are all the difference: about 1e-13 apart.
        np.testing.assert_allclose(values, stepped[0][field], rtol=1e-12, atol=1e-11,
                                   equal_nan=True, err_msg=field)
    assert [e[:4] for e in scanned[1]] == [e[:4] for e in stepped[1]]
    assert sum(counted_scans) > 0.9 * 120 * 100 * 5


def _rule_settings(**alert: Any) -> EngineSettings:
    policy = replace(AlertPolicy(direction="both", band=4.0), **alert)
    rules = (DetectorRule(name="ewma", detector="ewma_zscore", alert=policy),)
    return EngineSettings(clock=lambda: 0.0, rules=rules)


def _awkward(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A gauge with a level shift, spikes, a flat run of zeros, NaN and infinities."""
    rng = np.random.default_rng(seed)
    values = 50.0 + rng.normal(0.0, 2.0, n)
    values[300:500] = 0.0
    values[[700, 900, 1100]] = [np.nan, np.inf, -np.inf]
    values[800:806] = 500.0
    values[1300:] += 30.0
    values[1700] = 1e300
    ts = T0 + np.arange(n, dtype=np.int64) * 60 * SECOND
    ts[1000:1004] = ts[1000]
    return ts, values


def _replay_series(settings: EngineSettings, series: int = 6, n: int = 2000,
                   per_call: int = 37) -> Run:
    engine = Engine(settings)
    keys = [SeriesKey("queue_depth", (("service.name", f"svc{i}"),), ()) for i in range(series)]
    data = [_awkward(n, seed) for seed in range(series)]
    results = []
    for start in range(0, n, per_call):
        stop = min(start + per_call, n)
        batch_keys = [key for _ in range(start, stop) for key in keys]
        ts = np.array([d[0][k] for k in range(start, stop) for d in data])
        values = np.array([d[1][k] for k in range(start, stop) for d in data])
        results.append(engine.ingest_series(batch_keys, ts, values))
    return (*_collect(results), engine)


@pytest.mark.parametrize("alert", [{}, {"hold_s": 0.0}, {"learn_gating": "off"},
                                   {"learn_gating": "skip", "relearn_after": 50},
                                   {"evidence_point_s": 300.0, "direction": "up"}],
                         ids=["default", "no-hold", "no-gating", "skip-relearn", "evidence"])
def test_scanned_ewma_rules_equal_the_stepped_ones(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int], alert: dict[str, Any],
) -> None:
    # An ewma_zscore rule on values as they are, batches of many rounds per call: opens,
    # held bands, closes, NaN and infinities, repeated stamps, a flat run.
    settings = _rule_settings(**alert)
    scanned = _replay_series(settings)
    stepped = _stepped(monkeypatch, lambda: _replay_series(settings))
    _assert_same_run(scanned, stepped)
    assert scanned[1], "anomalies must open for the comparison to mean much"
    assert sum(counted_scans) > 0.5 * 6 * 2000


def test_rows_with_exposures_are_not_scanned(counted_scans: list[int]) -> None:
    # Rates that carry their interval (counts) are judged as counts: ``_step`` takes them.
    engine = Engine(_rule_settings())
    key = SeriesKey("requests:rate", (("service.name", "svc"),), ())
    ts = T0 + np.arange(300, dtype=np.int64) * 60 * SECOND
    engine.ingest_series([key] * 300, ts, np.full(300, 2.0), np.full(300, 60.0))
    assert counted_scans == []
    engine.ingest_series([key] * 300, ts + 300 * 60 * SECOND, np.full(300, 2.0))
    assert sum(counted_scans) > 250
