"""Per-service multivariate scores: models attribute, the engine alerts and explains, caps."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import numpy as np
import pytest

from otel_anomaly.exporter.config import load_config
from otel_anomaly.exporter.errors import ConfigError
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.multivariate import (
    FEATURE_NAMES,
    FEATURES,
    MODELS,
    MULTIVARIATE_METRIC,
    MULTIVARIATE_RULE,
    MultivariateSettings,
)
from otel_anomaly.processors.multivariate import models as models_module
from otel_anomaly.processors.multivariate.features import FLOORS
from otel_anomaly.processors.multivariate.models import PcaModel
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import SECOND, FakeClock, span, traces_request
from otel_anomaly.processors.types import AnomalyEvent

# A service's usual windows: ~50 calls/s, 1% errors, p95 ~120 ms, 20 logs/s, 2% error logs.
_USUAL = np.array([np.log1p(50.0), 0.01, np.log1p(120.0), np.log1p(20.0), 0.02])
_NOISE = np.array([0.05, 0.005, 0.08, 0.05, 0.005])


def _normal_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    load = rng.standard_normal(n)  # call rate and latency move together, as under load
    x = _USUAL + _NOISE * rng.standard_normal((n, len(FEATURES)))
    x[:, 0] += 0.05 * load
    x[:, 2] += 0.05 * load
    return x


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("feature", ["error_ratio", "p95_latency", "log_rate"])
def test_a_jump_in_one_feature_scores_high_and_names_that_feature(name: str, feature: str) -> None:
    model = MODELS[name](FLOORS, 0.02)
    for x in _normal_vectors(600):
        model.learn_one(x)
    normal = [model.score_one(x)[0] for x in _normal_vectors(200, seed=1)]
    j = FEATURE_NAMES.index(feature)
    jumped = _USUAL.copy()
    jumped[j] += 10 * max(_NOISE[j], FLOORS[j])
    score, shares = model.score_one(jumped)
    assert int(np.argmax(shares)) == j, (name, feature, shares)
    assert shares.sum() == pytest.approx(1.0)
    # River's SGD one-class SVM separates weakly (see its docstring): above the usual.
    bar = np.median(normal) if name == "one_class_svm" else np.max(normal)
    assert score > bar, (name, feature, score, bar)


def test_score_one_is_pure_and_missing_features_contribute_nothing() -> None:
    model = MODELS["pca"](FLOORS, 0.02)
    for x in _normal_vectors(100):
        model.learn_one(x)
    x = _USUAL.copy()
    x[1] = 0.5
    x[3:] = np.nan  # a window without logs
    first = model.score_one(x)
    again = model.score_one(x)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    assert first[1][3:].tolist() == [0.0, 0.0]
    assert int(np.argmax(first[1])) == 1


def _window_request(service: str, k: int, rng: np.random.Generator, *, error_p: float,
                    latency_ms: float, calls: int = 40, spread: float = 0.2):
    spans = []
    for i in range(calls):
        start = k * 10 * SECOND + int(i * 10 * SECOND / calls)
        name = "GET /cart" if i % 2 else "POST /pay"
        duration = latency_ms * float(np.exp(spread * rng.standard_normal()))
        spans.append(span(name, start, duration, error=bool(rng.random() < error_p)))
    return traces_request(spans, {"service.name": service})


def _run(engine: Engine, services: list[str], windows: int, incident: range = range(0),
         seed: int = 0, *, errors: bool = True) -> tuple[list[float], list[AnomalyEvent]]:
    """Feed ``windows`` windows of traces per service; return mv scores and mv events.

    In ``incident`` windows latency is x4 and, with ``errors``, 40 % of calls fail.
    """
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    events: list[AnomalyEvent] = []
    for k in range(windows):
        bad = k in incident
        for service in services:
            request = _window_request(service, k, rng, error_p=0.4 if bad and errors else 0.01,
                                      latency_ms=400.0 if bad else 100.0)
            result = engine.ingest("traces", request)
            for row, slot in enumerate(result.scores.slots.tolist()):
                if engine.series_key(slot).metric == MULTIVARIATE_METRIC:
                    scores.append(float(result.scores.values[row]))
            events += [e for e in result.events if e.key.metric == MULTIVARIATE_METRIC]
    return scores, events


def _engine(**multivariate: object) -> Engine:
    settings = MultivariateSettings(**{"warmup": 10, **multivariate})  # type: ignore[arg-type]
    return Engine(EngineSettings(clock=FakeClock(), span_outliers=False, multivariate=settings))


def test_errors_and_latency_jumping_together_open_an_event_that_names_the_top_feature() -> None:
    engine = _engine()
    scores, events = _run(engine, ["checkout"], windows=70, incident=range(60, 64))
    opened = [e for e in events if e.kind == "open"]
    assert opened, f"no multivariate event; last scores {scores[-12:]}"
    assert not [e for e in opened if e.ts_unix_nano < 60 * 10 * SECOND], "false alarm"
    event = opened[0]
    assert dict(event.key.attributes) == {"model": "pca"}
    assert event.direction == "up"
    # Both jumped features are named, the top one first with its share and values.
    top = re.match(r"service checkout: unusual mix of features, (.+?) contributes \d+% \(",
                   event.explanation)
    assert top and top.group(1) in ("error ratio", "p95 latency (ms)"), event.explanation
    assert "error ratio" in event.explanation and "p95 latency" in event.explanation


def test_services_beyond_the_cap_are_skipped() -> None:
    engine = _engine(max_services=1, warmup=2)
    _run(engine, ["first", "second"], windows=8)
    mv_services = {
        dict(engine.series_key(int(slot)).resource)["service.name"]
        for slot in engine.index.live_slots()
        if engine.series_key(int(slot)).metric == MULTIVARIATE_METRIC
    }
    stats = engine.stats()
    assert mv_services == {"first"}
    assert stats.multivariate_services == 1
    assert stats.multivariate_skipped_total > 0


def test_disabled_means_no_multivariate_series() -> None:
    engine = _engine(model="disabled")
    scores, _ = _run(engine, ["checkout"], windows=15)
    assert scores == []
    assert engine.multivariate is None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_replay_gives_identical_scores(name: str) -> None:
    first, _ = _run(_engine(model=name, warmup=3), ["a", "b"], windows=20, incident=range(15, 17))
    again, _ = _run(_engine(model=name, warmup=3), ["a", "b"], windows=20, incident=range(15, 17))
    assert len(first) >= 2 * 14  # each service's first window is incomplete: not scored
    assert first == again


def test_services_idle_past_the_ttl_are_forgotten() -> None:
    clock = FakeClock()
    engine = Engine(EngineSettings(clock=clock, span_outliers=False, series_ttl_s=60.0,
                                   multivariate=MultivariateSettings(warmup=2)))
    _run(engine, ["checkout"], windows=5)
    assert engine.stats().multivariate_services == 1
    clock.advance(120.0)
    engine.evict_expired()
    assert engine.stats().multivariate_services == 0


def test_config_maps_onto_the_engine_settings_and_rejects_unknown_keys() -> None:
    config = load_config(None, {"multivariate": {"model": "dbstream", "max_services": 7}},
                         environ={})
    settings = config.engine_settings().multivariate
    assert settings == MultivariateSettings(model="dbstream", max_services=7)
    assert load_config(None, {}, environ={}).engine_settings().multivariate == (
        MultivariateSettings())
    with pytest.raises(ConfigError, match="multivariate"):
        load_config(None, {"multivariate": {"model": "kmeans"}}, environ={})
    with pytest.raises(ConfigError, match="multivariate"):
        load_config(None, {"multivariate": {"max_service": 7}}, environ={})


def test_a_configured_rule_naming_the_score_replaces_the_built_in_one() -> None:
    config = load_config(None, {"detectors": [
        {"name": "mine", "match": ["service_multivariate:*"], "type": "ewma_zscore"},
        {"name": "default"},
    ]}, environ={})
    engine = Engine(config.engine_settings(FakeClock()))
    assert [rule.name for rule in engine.scorer.rules] == ["mine", "default"]
    assert [rule.name for rule in Engine(EngineSettings(clock=FakeClock())).scorer.rules][0] == (
        "multivariate")


def test_a_lasting_incident_stays_unusual_until_the_score_rule_accepts_it() -> None:
    # p95 latency x4 from window 60 on, a regression that holds. The default rule's
    # lasting_s is 4 h, far beyond these 100 windows of 10 s.
    scores, events = _run(_engine(), ["checkout"], 160, range(60, 160), seed=3, errors=False)
    opens = [e for e in events if e.kind == "open"]
    assert opens and opens[0].ts_unix_nano >= 60 * 10 * SECOND, [e.kind for e in events]
    assert not [e for e in events if e.kind == "close"], (
        f"closed while the regression went on; raw scores {[round(s, 1) for s in scores[-40:]]}")
    # One score a window; the last window is still open: the last 99 are windows 60-158.
    onset = max(scores[-99:-94])
    assert min(scores[-20:]) > 0.8 * onset, (onset, scores[-20:])


def test_after_lasting_s_the_model_learns_the_new_level_and_the_anomaly_closes() -> None:
    alert = replace(MULTIVARIATE_RULE.alert, hold_s=200.0, accept_after_s=200.0)
    engine = _engine(rule=replace(MULTIVARIATE_RULE, alert=alert))
    scores, events = _run(engine, ["checkout"], 160, range(60, 160), seed=3, errors=False)
    kinds = [(e.kind, e.ts_unix_nano // (10 * SECOND)) for e in events]
    closes = [k for kind, k in kinds if kind == "close"]
    assert closes, kinds
    # Held for the 20 windows of lasting_s, then learned within a few more.
    assert 60 + 20 <= closes[0] <= 60 + 40, kinds
    assert max(scores[-20:]) < 0.5 * max(scores[-99:-94]), scores[-40:]
    # The close announces the acceptance, with how long the change had lasted.
    close = next(e for e in events if e.kind == "close")
    assert "the new mix of features is now the baseline, unusual for 3m20s" in (
        close.explanation), close.explanation


def test_an_incident_that_ends_closes_as_back_to_the_usual_mix() -> None:
    _, events = _run(_engine(), ["checkout"], windows=80, incident=range(60, 64))
    closes = [e for e in events if e.kind == "close"]
    assert closes, [e.kind for e in events]
    assert "features back to their usual mix" in closes[0].explanation, closes[0].explanation


def test_a_restart_in_the_middle_of_a_hold_keeps_it() -> None:
    alert = replace(MULTIVARIATE_RULE.alert, hold_s=400.0, accept_after_s=400.0)
    rule = replace(MULTIVARIATE_RULE, alert=alert)
    rng = np.random.default_rng(3)
    requests = [_window_request("checkout", k, rng, error_p=0.01,
                                latency_ms=400.0 if k >= 60 else 100.0) for k in range(160)]

    def events(engine: Engine, part: list) -> list[tuple[str, int, str]]:
        return [(e.kind, e.ts_unix_nano, e.explanation) for request in part
                for e in engine.ingest("traces", request).events
                if e.key.metric == MULTIVARIATE_METRIC]

    whole = events(_engine(rule=rule), requests)
    before = _engine(rule=rule)
    first = events(before, requests[:80])  # 20 windows into the 40-window hold
    saved = io.BytesIO()
    checkpoint.dump(before, saved)
    saved.seek(0)
    after = checkpoint.load(saved, before.settings)
    assert first + events(after, requests[80:]) == whole
    assert [kind for kind, _, _ in whole][:1] == ["open"] and "baseline" in whole[-1][2], whole


def test_a_shift_near_the_outer_radius_is_held_whole_and_its_end_is_no_news() -> None:
    # p95 up ~4 of its spreads: windows on both sides of the 99.9 % radius, beyond the 90 %.
    model = MODELS["pca"](FLOORS, 0.02)
    for x in _normal_vectors(600):
        model.learn_one(x)
    usual = [model.score_one(x)[0] for x in _normal_vectors(200, seed=1)]
    before = model.usual.copy()
    j = FEATURE_NAMES.index("p95_latency")
    shifted = _normal_vectors(300, seed=2)
    shifted[:, j] += 5 * _NOISE[j]
    learned = 0
    for k, x in enumerate(shifted):
        if not model.holds(x, k * 10 * SECOND, accept_after_ns=4 * 3600 * SECOND):
            model.learn_one(x)
            learned += 1
    assert learned < 10, learned  # the few before the first window beyond 99.9 %
    assert abs(model.usual[j] - before[j]) < 0.5 * _NOISE[j], (model.usual[j], before[j])
    # Back to normal: the hold ends within a few windows, which score as usual, not as news.
    after = _normal_vectors(50, seed=3)
    held = [model.holds(x, (300 + k) * 10 * SECOND, accept_after_ns=4 * 3600 * SECOND)
            for k, x in enumerate(after[:10])]
    assert False in held[:6] and model.outliers_since_ns == -1, held
    assert max(model.score_one(x)[0] for x in after) <= max(usual), max(usual)


def test_a_deploy_that_changes_the_mix_is_learned_in_its_grace_not_held() -> None:
    # Version 2 from window 60 on, 4x slower: the new normal, as for every series.
    engine = _engine()
    rng = np.random.default_rng(3)
    events: list[AnomalyEvent] = []
    for k in range(160):
        request = _window_request("checkout", k, rng, error_p=0.01,
                                  latency_ms=400.0 if k >= 60 else 100.0)
        version = "2" if k >= 60 else "1"
        request.resource_spans[0].resource.attributes.add(
            key="service.version").value.string_value = version
        events += [e for e in engine.ingest("traces", request).events
                   if e.key.metric == MULTIVARIATE_METRIC]
    assert engine.deploys.deploys_total == 1
    assert not events, [(e.kind, e.explanation) for e in events]
    [model] = engine.multivariate.models.values()  # type: ignore[union-attr]
    assert model.outliers_since_ns == -1  # not holding the new level as an incident
    p95 = FEATURE_NAMES.index("p95_latency")
    assert np.expm1(model.usual[p95]) > 300, np.expm1(model.usual[p95])


def test_a_noisy_service_whose_p95_doubles_is_flagged_while_the_model_holds_it() -> None:
    # 10 calls a window with widely spread durations: the pooled p95 is noisy and the
    # service's score usually below 2. The model held the doubling (its windows are beyond
    # its 99.9 % radius), but the score's own rule learned the first held score (4.5) and
    # its band swallowed the rest: nothing opened. Held windows now teach that rule nothing.
    engine = _engine()
    rng = np.random.default_rng(0)
    events = []
    for k in range(660):
        request = _window_request("checkout", k, rng, error_p=0.01, calls=10, spread=0.6,
                                  latency_ms=200.0 if k >= 600 else 100.0)
        events += [(e.kind, e.ts_unix_nano // (10 * SECOND))
                   for e in engine.ingest("traces", request).events
                   if e.key.metric == MULTIVARIATE_METRIC]
    opens = [k for kind, k in events if kind == "open"]
    assert opens and 600 <= opens[0] <= 612, events
    assert not [k for kind, k in events if kind == "close"], events


def _bursts_held(windows: int = 3000) -> list[bool]:
    """Whether each burst window was held: one window in 10 jumps 12 spreads on one
    feature and is gone at the next (error records that come in bursts)."""
    model = PcaModel(np.full(2, 0.01), alpha=0.02)
    rng = np.random.default_rng(2)
    held = []
    for k in range(windows):
        x = rng.normal(0.0, 1.0, 2)
        if k % 10 == 5:
            x[0] += 12.0
        hold = model.holds(x, k * 10 * SECOND, accept_after_ns=4 * 3600 * SECOND)
        if not hold:
            model.learn_one(x)
        if k % 10 == 5:
            held.append(hold)
    return held


def test_outliers_that_come_often_are_learned_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    # Held whole, every burst stays an outlier for good (the model never learns one); once
    # such windows are common (1 % of the recent windows outside a hold), they start no
    # hold and are learned (clipped), so the model's usual takes them in.
    late = sum(_bursts_held()[-100:])
    with monkeypatch.context() as patch:
        patch.setattr(models_module, "COMMON_SURPRISES", np.inf)
        always = sum(_bursts_held()[-100:])
    assert always >= 90, always
    assert late <= 10, late


def test_service_vectors_take_runs_of_points_as_each_point() -> None:
    """A request's points in runs of one resource and time: refused services' points each
    count as skipped, a finished window's points are ignored, a later one's kept."""
    from otel_anomaly.processors.multivariate.features import (
        CALLS_METRIC,
        P95_METRIC,
        ServiceVectors,
    )
    from otel_anomaly.processors.types import SeriesKey

    sv = ServiceVectors(window_ns=10, max_services=1)
    api, web = (("service.name", "api"),), (("service.name", "web"),)
    op = (("span.name", "a"),)
    calls, p95 = SeriesKey(CALLS_METRIC, api, op), SeriesKey(P95_METRIC, api, op)
    web_calls, web_p95 = SeriesKey(CALLS_METRIC, web, op), SeriesKey(P95_METRIC, web, op)
    done = sv.add([calls, p95, web_calls, web_p95, calls], [10, 10, 10, 10, 20],
                  [4.0, 50.0, 1.0, 1.0, 4.0], now=0.0)
    assert [(v.end_unix_nano, float(np.expm1(v.x[2]))) for v in done] == [(10, 50.0)]
    assert sv.skipped_points == 2  # noqa: PLR2004
    # A point for the finished window (0, 10] is ignored; the same request's points of
    # newer windows are not.
    done = sv.add([calls, calls, p95, web_calls], [30, 10, 30, 30], [4.0, 9.0, 70.0, 1.0],
                  now=1.0)
    assert [(v.end_unix_nano, round(float(v.x[0]), 3)) for v in done] == [(20, 1.609)]
    assert sv.skipped_points == 3  # noqa: PLR2004
    done = sv.add([calls, p95], [50, 50], [4.0, 80.0], now=2.0)
    assert [(v.end_unix_nano, float(np.expm1(v.x[2]))) for v in done] == [(30, 70.0)]
