"""Scanned quiet rows (``row_scan``) score, raise events and learn exactly as ``Scorer._step``.

The reference is the same engine with scanning off (``SCAN_ROWS = 0``: every round through
``_step``). Outputs, events and the whole learned state must be equal bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers.scan_counts import count_scanned_rows

from otel_anomaly.processors.alerting import row_scan
from otel_anomaly.processors.alerting import scorer as scorer_module
from otel_anomaly.processors.alerting.calibration import Calibrator
from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import (
    DEFAULT_RULES,
    SEASONAL_ALERT,
    AlertPolicy,
    EngineSettings,
)
from otel_anomaly.processors.testing import (
    BASE_METRIC,
    base_of,
    bursty_counts,
    incident_cases,
    production_series,
)
from otel_anomaly.processors.types import SeriesKey

MINUTE = 60 * 10**9
START = 1_700_000_000 * 10**9

Series = tuple[SeriesKey, np.ndarray, np.ndarray]


def _incident_series() -> tuple[list[Series], dict[SeriesKey, tuple[int, int]]]:
    """Every incident kind and control, 6 days of 5-minute points, each its own service.

    Also the deploys: per ``deploy_step`` series, when version "1" and version "2" began.
    """
    series, deploys = [], {}
    for i, case in enumerate(incident_cases(1, days=6.0, step_s=300.0)):
        key = SeriesKey(BASE_METRIC[base_of(case)], (("service.name", f"svc{i}"),), ())
        series.append((key, case.ts_unix_nano, case.values))
        if case.kind == "deploy_step":
            deploys[key] = (int(case.ts_unix_nano[0]), int(case.ts_unix_nano[case.start]))
    return series, deploys


def _deployed(series: list[Series], deploys: dict[SeriesKey, tuple[int, int]]) -> Engine:
    """A new engine told of the releases of ``series`` (``deploys``), as a sender would."""
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    for key, _, _ in series:
        if key in deploys:
            first, second = deploys[key]
            engine.observe_version(key.resource, "1", first)
            engine.observe_version(key.resource, "2", second)
    return engine


def _awkward_series() -> Series:
    """Values a live sender gives: NaN, infinities, repeated stamps, a flat run, huge jumps."""
    rng = np.random.default_rng(5)
    n = 3000
    ts = START + np.arange(n, dtype=np.int64) * MINUTE
    values = 50.0 + rng.normal(0.0, 2.0, n)
    values[400:900] = 0.0  # a flat run of exact zeros, then traffic again
    values[[1000, 1500, 2100]] = [np.nan, np.inf, -np.inf]
    values[1200:1210] = 5000.0  # a spike that opens, then closes
    values[1800] = 1e300
    values[2500:] *= -1.0  # the sign flips and stays
    ts[2000:2005] = ts[2000]  # repeated timestamps
    return SeriesKey("queue_depth", (("service.name", "awkward"),), ()), ts, values


def _rows(series: list[Series], per_call: int) -> Iterator[tuple[list[SeriesKey], Any, Any]]:
    """The series interleaved (the k-th point of each in one round), ``per_call`` rounds a call."""
    longest = max(len(ts) for _, ts, _ in series)
    for start in range(0, longest, per_call):
        keys, ts, values = [], [], []
        for k in range(start, min(start + per_call, longest)):
            for key, t, v in series:
                if k < len(t):
                    keys.append(key)
                    ts.append(t[k])
                    values.append(v[k])
        yield keys, np.asarray(ts, np.int64), np.asarray(values)


def _replay(series: list[Series], per_call: int = 128, engine: Engine | None = None,
            seconds: float | None = None,
            ) -> tuple[dict[str, Any], list[tuple[Any, ...]], Engine]:
    """Scores, flags, events (every field) and the engine after feeding ``series``.

    ``seconds``: every point is a rate counted over that many seconds (its count).
    """
    engine = engine or Engine(EngineSettings(clock=lambda: 0.0))
    outputs: dict[str, list[Any]] = {f: [] for f in ("score", "expected", "lower", "upper",
                                                     "flag")}
    events: list[tuple[Any, ...]] = []
    for keys, ts, values in _rows(series, per_call):
        counts = None if seconds is None else np.full(len(values), seconds)
        result = engine.ingest_series(keys, ts, values, counts)
        for field, parts in outputs.items():
            parts.append(getattr(result.scores, field))
        events += [(e.kind, e.slot, e.ts_unix_nano, e.direction, e.score, e.value, e.expected,
                    e.lower, e.upper, e.explanation, e.anomaly_id) for e in result.events]
    return {f: np.concatenate(parts) for f, parts in outputs.items()}, events, engine


def _assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        assert same, f"{path} differs"
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path  # noqa: PLR0124 -- NaN equals NaN here


def _assert_same_run(scanned: tuple[Any, ...], stepped: tuple[Any, ...]) -> None:
    (out_a, events_a, engine_a), (out_b, events_b, engine_b) = scanned, stepped
    for field, values in out_a.items():
        assert np.array_equal(values, out_b[field], equal_nan=True), field
    assert events_a == events_b
    _assert_same_state(engine_a.state_dict(), engine_b.state_dict())


@pytest.fixture
def counted_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows ``scan_rows`` took, per call."""
    return count_scanned_rows(monkeypatch, "scan_rows")


def _stepped(monkeypatch: pytest.MonkeyPatch, run: Any) -> Any:
    """``run()`` with scanning off: every round through ``_step``."""
    with monkeypatch.context() as patch:
        patch.setattr(scorer_module, "SCAN_ROWS", 0)
        return run()


@pytest.mark.parametrize(("together", "scanned_share"), [(1, 0.5), (3, 0.5), (16, 0.25)],
                         ids=["alone", "three", "sixteen"])
def test_scanned_incidents_equal_the_stepped_ones(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int], together: int,
    scanned_share: float,
) -> None:
    # Every incident kind and control: rules scanned (counts, gauges, ratios) and not
    # (latencies: log values), deploys (grace), opens, updates, closes and held bands.
    # Alone, a round is one row; together, a round is that many rows (all still scanned).
    # Sixteen together share one engine: once the release's level offset is learned,
    # nothing of that engine is scanned any more (``Scorer._segments``).
    cases, deploys = _incident_series()
    assert together <= scorer_module.SCAN_ROWS
    assert deploys, "a release must be among the incidents"
    groups = [cases[i:i + together] for i in range(0, len(cases), together)]
    for group in groups:
        scanned = _replay(group, engine=_deployed(group, deploys))
        stepped = _stepped(monkeypatch, lambda group=group: _replay(
            group, engine=_deployed(group, deploys)))
        _assert_same_run(scanned, stepped)
    rows = sum(len(ts) for _, ts, _ in cases)
    assert sum(counted_scans) > rows * scanned_share, "quiet rows must be scanned"


def test_scanned_awkward_values_equal_the_stepped_ones(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int],
) -> None:
    series = [_awkward_series()]
    scanned = _replay(series, per_call=97)
    stepped = _stepped(monkeypatch, lambda: _replay(series, per_call=97))
    _assert_same_run(scanned, stepped)
    assert scanned[1], "the spike must open an anomaly for the comparison to mean much"
    assert sum(counted_scans) > 1000  # its long anomalies (the sign flip, ...) are stepped


def test_scanned_bursty_counts_equal_the_stepped_ones(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int],
) -> None:
    # Rates of events with their interval: the count's dispersion, recent sums and runs of
    # empty windows are learned on both paths, through ordinary bursts, a lasting rise
    # that opens, a count that stops for half an hour (dense and sparse: the pooled test
    # and the run), and a counter of seconds (no count) beside them.
    rng = np.random.default_rng(8)
    n = 4000
    ts = START + np.arange(n, dtype=np.int64) * MINUTE
    rate = np.full(n, 2.0)
    rate[3000:3030] *= 6.0
    rate[3500:3530] = 0.0
    sparse = np.full(n, 0.3)
    sparse[3500:3600] = 0.0
    series = [(SeriesKey("app_events_total:rate", (("i", str(i)),), ()), ts,
               bursty_counts(rate, size, rng) / 60.0) for i, size in enumerate((1.0, 3.0))]
    series.append((SeriesKey("app_events_total:rate", (("i", "sparse"),), ()), ts,
                   bursty_counts(sparse, 1.0, rng) / 60.0))
    series.append((SeriesKey("cpu_seconds_total:rate", (), ()), ts,
                   np.abs(rng.normal(0.4, 0.05, n))))
    scanned = _replay(series, per_call=97, seconds=60.0)
    stepped = _stepped(monkeypatch, lambda: _replay(series, per_call=97, seconds=60.0))
    _assert_same_run(scanned, stepped)
    stops = {(event[1], event[0]) for event in scanned[1]
             if event[3] == "down" and START + 3500 * MINUTE <= event[2] < START + 3600 * MINUTE}
    assert len({slot for slot, _ in stops}) == 3, f"not every stop opened an anomaly: {stops}"
    assert scanned[1], "the rise must open an anomaly for the comparison to mean much"
    learned = [c.state_dict()["usual.count_events"] for c in scanned[2].scorer.calibrators]
    assert max(float(e.max(initial=0.0)) for e in learned) > 0, "no count was learned"
    assert sum(counted_scans) > n, "quiet rows must be scanned"


def test_scanned_weekly_counters_equal_the_stepped_ones(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int],
) -> None:
    # Request counters past their first week: the weekly profile's last cycle is a second
    # opinion of a count's usual events (``count_references``) on both paths, through
    # quiet days and a drop that opens. Past two weeks the level follows the weekly
    # profile's steps (``level_follow``) on both paths too.
    series: list[Series] = []
    for seed in range(2):
        ts, values = production_series("requests", days=17, step_s=600.0, seed=seed)
        if seed:
            values = values.copy()
            values[1300:1310] *= 0.2
        series.append((SeriesKey("http_server_requests_total:rate", (("i", str(seed)),), ()),
                       ts, values))
    scanned = _replay(series, per_call=97, seconds=600.0)
    stepped = _stepped(monkeypatch, lambda: _replay(series, per_call=97, seconds=600.0))
    _assert_same_run(scanned, stepped)
    assert scanned[1], "the drop must open an anomaly for the comparison to mean much"
    assert sum(counted_scans) > 2000, "quiet rows must be scanned"
    followed = [d.state_dict()["follow_ref"] for d in scanned[2].scorer.detectors
                if "follow_ref" in d.state_dict()]
    assert any(np.isfinite(ref[:, 1]).any() for ref in followed), "no profile was ready"


def test_a_restored_engine_scans_as_it_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # Restored mid-anomaly: the open anomaly is announced at its first point (``_step``),
    # then the rows scan again.
    key, ts, values = _awkward_series()
    half = 1205  # inside the spike: an anomaly is open
    first = [(key, ts[:half], values[:half])]
    rest = [(key, ts[half:], values[half:])]

    def run() -> tuple[Any, ...]:
        _, _, engine = _replay(first)
        assert engine.scorer.hysteresis.is_open(np.array([0]))[0], "the spike must be open"
        restored = Engine(EngineSettings(clock=lambda: 0.0))
        restored.load_state_dict(engine.state_dict())
        return _replay(rest, engine=restored)

    scanned = run()
    _assert_same_run(scanned, _stepped(monkeypatch, run))
    assert scanned[1][0][0] == "update", "a restored open anomaly is announced first"


def test_a_new_series_among_many_scans_as_it_steps(
    monkeypatch: pytest.MonkeyPatch, counted_scans: list[int],
) -> None:
    # A hundred series report together (rounds of 100 rows: not scanned), then a new one
    # alone: its slot lies past the rows its state arrays were first made with.
    rng = np.random.default_rng(11)
    ts = START + np.arange(400, dtype=np.int64) * MINUTE
    crowd = [(SeriesKey("queue_depth", (("service.name", f"crowd{i}"),), ()), ts,
              10.0 + rng.normal(0.0, 1.0, len(ts))) for i in range(100)]
    _, later, values = _awkward_series()

    def run() -> tuple[Any, ...]:
        _, _, engine = _replay(crowd)
        key = SeriesKey("queue_depth", (("service.name", "newcomer"),), ())
        return _replay([(key, later[:1300], values[:1300])], engine=engine)

    scanned = run()
    assert sum(counted_scans) > 600, "the newcomer's quiet rows are scanned"
    _assert_same_run(scanned, _stepped(monkeypatch, run))


def test_only_quiet_rows_are_scanned(counted_scans: list[int]) -> None:
    # A quiet series is scanned whole after its first row (a new series' first point goes
    # through ``_step``: no band yet, a NaN score); a spike is not.
    key, ts, values = _awkward_series()
    quiet = [(key, ts[:350], values[:350])]
    _replay(quiet, per_call=350)
    assert sum(counted_scans) >= 340
    counted_scans.clear()
    spike = [(key, ts[:1210], values[:1210])]
    _replay(spike, per_call=1210)
    assert sum(counted_scans) < 1200, "the spike's rows go through _step"


def test_which_rules_are_scannable() -> None:
    rules = {rule.name: rule for rule in DEFAULT_RULES}
    default = rules["default"]
    ensemble = Ensemble(**dict(default.params))
    assert row_scan.scannable(ensemble, Calibrator(default.alert), default.alert)
    assert row_scan.scannable(Ensemble(**dict(rules["ratios"].params)),
                              Calibrator(rules["ratios"].alert), rules["ratios"].alert)
    latency = rules["latencies_ms"]  # log values: held rows and pending points are gated
    assert not row_scan.scannable(Ensemble(**dict(latency.params)), Calibrator(latency.alert),
                                  latency.alert)
    for policy in (
        AlertPolicy(**{**_fields(SEASONAL_ALERT), "learn_gating": "clip"}),
        AlertPolicy(**{**_fields(SEASONAL_ALERT), "relearn_after": 10}),
        AlertPolicy(**{**_fields(SEASONAL_ALERT), "min_duration": 0}),
        AlertPolicy(**{**_fields(SEASONAL_ALERT), "evidence_point_s": 0.0,
                       "false_alarm_budget": 0.1}),
    ):
        assert not row_scan.scannable(ensemble, Calibrator(policy), policy), policy
    other = Ensemble(members=(("ewma_zscore", (("warmup", 10),)),))  # not the fused members
    assert not row_scan.scannable(other, Calibrator(SEASONAL_ALERT), SEASONAL_ALERT)


def _fields(policy: AlertPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}
