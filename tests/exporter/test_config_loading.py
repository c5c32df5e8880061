"""Configuration: exact error texts per scenario file, precedence, defaults, mapping."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.config_keys import leaf_keys

from otel_anomaly.exporter.config import (
    DETECTOR_TYPES,
    ENV_VARS,
    AlertConfig,
    Config,
    EnsembleParams,
    EwmaZscoreParams,
    ForecastResidualParams,
    HalfSpaceTreesParams,
    SeasonalProfileParams,
    default_config_text,
    load_config,
    parse_duration,
)
from otel_anomaly.exporter.errors import ConfigError
from otel_anomaly.processors.detectors import DETECTORS
from otel_anomaly.processors.settings import DEFAULT_RULES, SEASONAL_ALERT, AlertPolicy

CONFIGS = Path(__file__).resolve().parents[1] / "testdata" / "config"

EXPECTED_ERRORS = {
    "unknown_key": """\
invalid configuration in {path} (1 error):
  receivers.grpc: unknown key 'endpiont' (did you mean 'endpoint'?)""",
    "bad_range": """\
invalid configuration in {path} (1 error):
  detectors[0].params.alpha: must be in (0, 1]; got 1.5""",
    "cross_field": """\
invalid configuration in {path} (1 error):
  detectors[0].alert: `close_threshold` must be <= `open_threshold`; got close_threshold=1.5, \
open_threshold=1.0""",
    "several_errors": """\
invalid configuration in {path} (6 errors):
  receivers.grpc: unknown key 'endpiont' (did you mean 'endpoint'?)
  receivers.http.endpoint: expected HOST:PORT such as 'localhost:4317'; got 'localhost'
  pipeline.queue_size: must be >= 1; got 0
  detectors[0].params.alpha: must be in (0, 1]; got 1.5
  detectors[1].type: unknown detector type 'ewma_zscor' (did you mean 'ewma_zscore'?)
  exposition.max_exported_series: expected an integer; got 'lots'""",
    "bad_duration": """\
invalid configuration in {path} (2 errors):
  series.ttl: expected a duration such as '30s', '5m', '1h' or a number of seconds; got '1 hour'
  traces.window: must be > 0; got -5""",
    "unknown_section": """\
invalid configuration in {path} (1 error):
  (root): unknown key 'exporters' (expected one of: receivers, pipeline, series, traces, logs, \
multivariate, detectors, exposition, outputs, state, warm_start)""",
    "moved_events_keys": """\
invalid configuration in {path} (4 errors):
  events.endpoint: moved to outputs.otlp_events.endpoint
  events.queue_size: moved to outputs.otlp_events.queue_size
  events.export_scores_as_metrics: moved to outputs.otlp_scores.endpoint (scores are pushed \
when it is set; give it the events' endpoint for the former behaviour)
  events.metrics_interval: moved to outputs.otlp_scores.interval""",
    "cross_field_instant": """\
invalid configuration in {path} (1 error):
  detectors[0].alert: `close_threshold` must be <= `open_threshold`; got close_threshold=3.0, \
open_threshold=2.5; `instant_threshold` must be >= `open_threshold`; got instant_threshold=2.0, \
open_threshold=2.5""",
    "unknown_detector_type": """\
invalid configuration in {path} (2 errors):
  detectors[0].type: unknown detector type 'seasonal' (did you mean 'seasonal_profile'?)
  detectors[1].type: unknown detector type 'isolation_forest' (expected one of: ensemble, \
ewma_zscore, seasonal_profile, forecast_residual, half_space_trees, binomial_ratio)""",
    "invalid_yaml": """\
invalid configuration in {path} (1 error):
  invalid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'""",
    "bad_silence_after": """\
invalid configuration in {path} (1 error):
  series.silence_after: must be >= 0; got -30""",
    "unbounded_values": """\
invalid configuration in {path} (6 errors):
  series.max_future: must be a finite number; got inf
  detectors[0].alert.min_duration: must be <= 2147483647; got 100000000000000000000
  detectors[0].alert.update_interval: must be <= 3153600000; got 1e+300
  detectors[0].alert.hold: must be a finite number; got inf
  detectors[0].params.members[0].params.period: must be a finite number; got inf
  detectors[1].params.order: must be <= 64; got 100000""",
    "booleans_as_numbers": """\
invalid configuration in {path} (3 errors):
  series.max_series: expected a number; got true
  series.ttl: expected a number; got true
  detectors[0].alert.open_threshold: expected a number; got true""",
    "unreachable_rule": """\
invalid configuration in {path} (1 error):
  detectors: detectors[1] ('b') is never used: detectors[0] matches every metric before it""",
    "rule_names_and_patterns": """\
invalid configuration in {path} (1 error):
  detectors[1].match: an empty pattern matches no metric; use '*' for every metric""",
    "duplicate_key": """\
invalid configuration in {path} (1 error):
  invalid YAML at line 4, column 1: found the key 'series' a second time""",
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED_ERRORS))
def test_invalid_config_reports_every_problem_exactly(scenario: str) -> None:
    path = str(CONFIGS / f"{scenario}.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, environ={})
    assert str(caught.value) == EXPECTED_ERRORS[scenario].format(path=path)


def test_a_config_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("series:\n  ttl: 10m  # d\u00e9lai\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 0xe9 at offset 23"):
        load_config(str(path), {}, environ={})


def test_two_rules_of_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("detectors:\n  - {name: a, match: [x]}\n  - {name: a, match: ['*']}\n")
    with pytest.raises(ConfigError, match=r"detectors\[1\] is named 'a', as detectors\[0\] is"):
        load_config(str(path), {}, environ={})


@pytest.mark.parametrize(("warm_start", "problem"), [
    ({"selectors": ["up"]}, "`selectors` are read from `prometheus`, which is not set"),
    ({"prometheus": "http://", "selectors": ["up"]}, "must be an http(s) URL with a host"),
])
def test_warm_start_needs_both_its_source_and_its_selectors(
    warm_start: dict[str, object], problem: str,
) -> None:
    overrides = {f"warm_start.{key}": value for key, value in warm_start.items()}
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(None, overrides, environ={})


def test_both_receivers_disabled_is_refused_and_either_alone_is_fine() -> None:
    overrides = {"receivers.grpc.enabled": False, "receivers.http.enabled": False}
    with pytest.raises(ConfigError, match=r"receivers: .*at least one of `grpc` and `http`"):
        load_config(None, overrides, environ={})
    for side in ("grpc", "http"):
        config = load_config(None, {f"receivers.{side}.enabled": False}, environ={})
        assert getattr(config.receivers, side).enabled is False


def test_an_infinite_instant_threshold_means_never_on_one_point() -> None:
    # The built-in latency rules' setting, so a rule written after them can say it too.
    assert AlertConfig(instant_threshold=float("inf")).instant_threshold == float("inf")


def test_valid_config_maps_onto_engine_settings() -> None:
    config = load_config(str(CONFIGS / "valid.yaml"), {}, environ={})
    settings = config.engine_settings(clock=lambda: 42.0)
    assert settings.clock() == 42.0
    assert settings.max_series == 5000
    assert settings.series_ttl_s == 1800.0
    latency, default = settings.rules
    assert latency.name == "latency"
    assert latency.match == ("*_milliseconds:p99", "*_milliseconds:p95")
    assert latency.detector == "ewma_zscore"
    assert dict(latency.params) == {"alpha": 0.1, "warmup": 20, "log_transform": True}
    assert latency.alert == AlertPolicy(direction="up", band=5.0, update_interval_s=120.0)
    assert default.detector == "ensemble"
    assert default.alert == SEASONAL_ALERT
    assert config.receivers.http.enabled is False
    assert config.outputs.otlp_events.headers == {"authorization": "Bearer x"}


def test_silence_after_maps_onto_the_engine_and_zero_disables() -> None:
    assert load_config(None, {}, environ={}).engine_settings().silence_after_s == 300.0
    for text, seconds in (("90s", 90.0), ("0", 0.0)):
        config = load_config(None, {"series.silence_after": text}, environ={})
        assert config.engine_settings().silence_after_s == seconds


def test_no_detectors_means_the_built_in_rules() -> None:
    assert load_config(None, {}, environ={}).engine_settings().rules == DEFAULT_RULES


def test_embedded_default_config_loads_and_equals_the_model_defaults() -> None:
    assert load_config(None, {}, environ={}) == Config()


def test_alert_keys_map_one_to_one_onto_the_engine_alert_policy() -> None:
    config_keys = set(AlertConfig.model_fields)
    policy_keys = {name.removesuffix("_s") for name in AlertPolicy.__dataclass_fields__}
    assert config_keys == policy_keys
    assert AlertConfig().policy() == AlertPolicy()


@pytest.mark.parametrize("detector_type", DETECTOR_TYPES)
def test_every_detector_type_builds_its_detector_from_default_params(detector_type: str) -> None:
    config = load_config(None, {"detectors": [{"name": "x", "type": detector_type}]}, environ={})
    rule, = config.detector_rules()
    assert rule.detector == detector_type
    DETECTORS[detector_type](**rule.params)


def test_seasonal_profile_params_map_durations_to_seconds() -> None:
    rule = {"name": "daily", "type": "seasonal_profile", "params": {"period": "7d", "buckets": 7}}
    config = load_config(None, {"detectors": [rule]}, environ={})
    params = dict(config.detector_rules()[0].params)
    assert params == {"period_s": 604800.0, "buckets": 7, "alpha": 0.25, "warmup_cycles": 2.0,
                      "spread_mix": 0.1, "phase_tolerance": 0}


def test_embedded_default_config_lists_every_key() -> None:
    data = yaml.safe_load(default_config_text())
    missing = []
    for dotted in leaf_keys(Config):
        node: Any = data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    assert not missing, f"keys missing from default_config.yaml: {missing}"
    # The detector example documents every params and alert key.
    text = default_config_text()
    params = [*EwmaZscoreParams.model_fields, *SeasonalProfileParams.model_fields,
              *EnsembleParams.model_fields, *ForecastResidualParams.model_fields,
              *HalfSpaceTreesParams.model_fields]
    for key in (*params, *AlertConfig.model_fields):
        assert f"#       {key}: " in text, f"{key} is not documented"


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("receivers:\n  grpc:\n    endpoint: file:1\n")
    env = {"OTEL_ANOMALY_GRPC_ENDPOINT": "env:2"}
    flag = {"receivers.grpc.endpoint": "flag:3"}

    def grpc_endpoint(path_: str | None, flags: dict[str, object], environ: dict[str, str]) -> str:
        return load_config(path_, flags, environ).receivers.grpc.endpoint

    assert grpc_endpoint(str(path), flag, env) == "flag:3"
    assert grpc_endpoint(str(path), {"receivers.grpc.endpoint": None}, env) == "env:2"
    assert grpc_endpoint(str(path), {}, {}) == "file:1"
    assert grpc_endpoint(None, {}, {}) == "localhost:4317"


def test_file_merges_key_by_key_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("receivers:\n  grpc:\n    max_recv_msg_size_mib: 4\n")
    config = load_config(str(path), {}, environ={})
    assert config.receivers.grpc.max_recv_msg_size_mib == 4
    assert config.receivers.grpc.endpoint == "localhost:4317"


@pytest.mark.parametrize(("name", "key"), sorted(ENV_VARS.items()))
def test_every_env_var_sets_its_key(name: str, key: str) -> None:
    value = "127.0.0.1:7" if key.endswith("endpoint") else "7"
    config = load_config(None, {}, environ={name: value})
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    assert str(node) == value


def test_unknown_env_var_and_bad_env_value_are_errors_naming_the_variable() -> None:
    environ = {"OTEL_ANOMALY_GRPC_ENDPIONT": "x:1", "OTEL_ANOMALY_MAX_SERIES": "many"}
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, environ=environ)
    assert str(caught.value) == (
        "invalid configuration (2 errors):\n"
        "  OTEL_ANOMALY_GRPC_ENDPIONT: unknown environment variable "
        "(did you mean OTEL_ANOMALY_GRPC_ENDPOINT?)\n"
        "  series.max_series: expected an integer; got 'many' "
        "(from environment variable OTEL_ANOMALY_MAX_SERIES)"
    )


def test_flag_errors_name_the_command_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"exposition.endpoint": "nowhere"}, environ={})
    assert caught.value.problems == [
        "exposition.endpoint: expected HOST:PORT such as 'localhost:4317'; got 'nowhere' "
        "(from command line)"
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="cannot read file: No such file or directory"):
        load_config(path, {}, environ={})


@pytest.mark.parametrize(("events_endpoint", "expected"), [
    ("", None), (None, None), ("collector:4319", "collector:4319"),
    ("http://collector:4319", "http://collector:4319"),
])
def test_empty_events_endpoint_disables_events(
    events_endpoint: str | None, expected: str | None
) -> None:
    config = load_config(None, {}, environ={"OTEL_ANOMALY_EVENTS_ENDPOINT": events_endpoint}
                         if events_endpoint is not None else {})
    assert config.outputs.otlp_events.endpoint == expected


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1m30s", 90.0), ("250ms", 0.25),
    ("1.5s", 1.5), ("90", 90.0), (12, 12), (0.5, 0.5),
])
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1 hour", "s", "5x", "1h-2m", "nan s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_ensemble_members_map_onto_the_detectors_member_specs() -> None:
    rule = {"name": "mix", "params": {"combine": "fallback", "members": [
        {"type": "ewma_zscore", "params": {"alpha": 0.1}},
        {"type": "seasonal_profile", "params": {"period": "1h", "buckets": 12}},
    ]}}
    config = load_config(None, {"detectors": [rule]}, environ={})
    (engine_rule,) = config.detector_rules()
    assert engine_rule.detector == "ensemble"
    params = dict(engine_rule.params)
    assert params["combine"] == "fallback"
    (ewma, ewma_params), (profile, profile_params) = params["members"]
    assert (ewma, dict(ewma_params)["alpha"]) == ("ewma_zscore", 0.1)
    assert (profile, dict(profile_params)["period_s"], dict(profile_params)["buckets"]) == (
        "seasonal_profile", 3600.0, 12)
    DETECTORS["ensemble"](**params)


def test_discord_is_an_ensemble_member_only_and_its_params_are_checked() -> None:
    members = [{"type": "ewma_zscore"}, {"type": "discord", "params": {"history": 64}}]
    rule = {"name": "shape", "params": {"members": members}}
    (engine_rule,) = load_config(None, {"detectors": [rule]}, environ={}).detector_rules()
    assert engine_rule.params["members"][1] == ("discord", (("length", 16), ("history", 64)))
    short = {"name": "x", "params": {"members": [{"type": "discord", "params": {"length": 2}}]}}
    with pytest.raises(ConfigError, match=r"members\[0\]\.params\.length"):
        load_config(None, {"detectors": [short]}, environ={})
    with pytest.raises(ConfigError, match="discord"):
        load_config(None, {"detectors": [{"name": "x", "type": "discord"}]}, environ={})


def test_ensemble_rule_alert_defaults_are_the_tuned_seasonal_policy() -> None:
    rule = {"name": "x", "alert": {"band": 5}}
    (engine_rule,) = load_config(None, {"detectors": [rule]}, environ={}).detector_rules()
    assert engine_rule.alert == replace(SEASONAL_ALERT, band=5.0)


def test_a_false_alarm_budget_counts_points_in_a_row() -> None:
    # The budget's band edge is derived for points in a row: a budget set alone turns the
    # ensemble's evidence points off, as the built-in latency rules have it.
    rule = {"name": "x", "alert": {"false_alarm_budget": 0.1, "tail_window": 10000}}
    (engine_rule,) = load_config(None, {"detectors": [rule]}, environ={}).detector_rules()
    assert engine_rule.alert == replace(SEASONAL_ALERT, false_alarm_budget=0.1,
                                        tail_window=10000, evidence_point_s=0.0)
    both = {"name": "x", "alert": {"false_alarm_budget": 0.1, "evidence_point": "5m"}}
    with pytest.raises(ConfigError, match=r"`evidence_point` must be 0 with a "
                       r"`false_alarm_budget`.*false_alarm_budget=0\.1, evidence_point=300"):
        load_config(None, {"detectors": [both]}, environ={})
    with pytest.raises(ValueError, match="false_alarm_budget"):
        replace(SEASONAL_ALERT, false_alarm_budget=0.1)


def test_unknown_ensemble_member_type_is_named() -> None:
    rule = {"name": "x", "params": {"members": [{"type": "prophet"}]}}
    with pytest.raises(ConfigError, match=r"detectors\[0\]\.params\.members\[0\].*prophet"):
        load_config(None, {"detectors": [rule]}, environ={})


@pytest.mark.parametrize("detector_type", ["ensemble", "ewma_zscore"])
@pytest.mark.parametrize("written", [2.5, "2.5"])  # quoted in YAML, or from a flag
def test_open_threshold_alone_carries_close_and_instant_thresholds(
    detector_type: str, written: object,
) -> None:
    rule = {"name": "x", "type": detector_type, "alert": {"open_threshold": written}}
    (engine_rule,) = load_config(None, {"detectors": [rule]}, environ={}).detector_rules()
    alert = engine_rule.alert
    assert alert.close_threshold <= alert.open_threshold == 2.5 <= alert.instant_threshold


def test_kubernetes_service_link_variables_are_not_settings() -> None:
    env = {
        "OTEL_ANOMALY_SERVICE_HOST": "10.0.0.7",
        "OTEL_ANOMALY_SERVICE_PORT": "4317",
        "OTEL_ANOMALY_SERVICE_PORT_OTLP_GRPC": "4317",
        "OTEL_ANOMALY_PORT": "tcp://10.0.0.7:4317",
        "OTEL_ANOMALY_PORT_4317_TCP_ADDR": "10.0.0.7",
        "OTEL_ANOMALY_HEADLESS_SERVICE_HOST": "10.0.0.8",
    }
    assert load_config(None, {}, environ=env) == Config()
    with pytest.raises(ConfigError, match="OTEL_ANOMALY_SERVICE_HOSTS: unknown"):
        load_config(None, {}, environ={"OTEL_ANOMALY_SERVICE_HOSTS": "x"})


def test_cross_parameter_rules_of_a_detector_are_reported_at_load() -> None:
    rule = {"name": "x", "type": "forecast_residual", "params": {"order": 8, "warmup": 5}}
    with pytest.raises(ConfigError, match=r"detectors\[0\]\.params: .*warmup"):
        load_config(None, {"detectors": [rule]}, environ={})


def test_a_rules_max_points_per_request_reaches_the_engine_and_is_checked() -> None:
    rule = {"name": "spans", "match": ["traces_span_duration_milliseconds"],
            "type": "ewma_zscore", "max_points_per_request": 8}
    config = load_config(None, {"detectors": [rule, {"name": "rest"}]}, environ={})
    assert [r.max_points_per_request for r in config.detector_rules()] == [8, 0]
    with pytest.raises(ConfigError, match=r"detectors\[0\]\.max_points_per_request"):
        load_config(None, {"detectors": [{**rule, "max_points_per_request": -1}]}, environ={})


def test_export_headers_are_lower_case_grpc_metadata() -> None:
    # grpcio refuses a call carrying "Authorization"; gRPC-Go (so the Collector) lowercases.
    config = load_config(None, {"outputs.otlp_events.headers": {"Authorization": "Bearer x"}},
                         environ={})
    assert config.outputs.otlp_events.headers == {"authorization": "Bearer x"}
    for headers, problem in (({"bad key": "x"}, "header 'bad key': a gRPC metadata key"),
                             ({"x-tenant": "a\nb"}, "header 'x-tenant': the value must be")):
        with pytest.raises(ConfigError, match=problem):
            load_config(None, {"outputs.otlp_events.headers": headers}, environ={})
