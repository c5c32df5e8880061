"""The YAML configuration tree, its defaults, and ``load_config()``.

Precedence, highest first: command-line flag, ``OTEL_ANOMALY_*`` environment variable,
config file, the embedded ``default_config.yaml``. Every problem is reported at once by
one ``ConfigError`` (see ``config_errors``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from otel_anomaly.exporter.config_detectors import (
    DETECTOR_TYPES,
    AlertConfig,
    DetectorConfig,
    EnsembleParams,
    EnsembleRule,
    EwmaZscoreParams,
    EwmaZscoreRule,
    ForecastResidualParams,
    ForecastResidualRule,
    HalfSpaceTreesParams,
    HalfSpaceTreesRule,
    SeasonalProfileParams,
    SeasonalProfileRule,
)
from otel_anomaly.exporter.config_errors import format_validation_error
from otel_anomaly.exporter.config_outputs import (
    OtlpEventsConfig,
    OtlpScoresConfig,
    OutputsConfig,
    moved_key_problems,
)
from otel_anomaly.exporter.config_security import BearerAuthConfig, TlsServerConfig
from otel_anomaly.exporter.config_types import (
    LARGEST_COUNT,
    Duration,
    Endpoint,
    Model,
    Positive,
    parse_duration,
)
from otel_anomaly.exporter.errors import ConfigError
from otel_anomaly.processors.multivariate import ModelName, MultivariateSettings
from otel_anomaly.processors.settings import DEFAULT_RULES, DetectorRule, EngineSettings

__all__ = [
    "DETECTOR_TYPES",
    "ENV_VARS",
    "AlertConfig",
    "BearerAuthConfig",
    "Config",
    "DetectorConfig",
    "EnsembleParams",
    "EnsembleRule",
    "EwmaZscoreParams",
    "EwmaZscoreRule",
    "ForecastResidualParams",
    "ForecastResidualRule",
    "HalfSpaceTreesParams",
    "HalfSpaceTreesRule",
    "ExpositionConfig",
    "GrpcReceiverConfig",
    "HttpReceiverConfig",
    "LogsConfig",
    "MultivariateConfig",
    "OtlpEventsConfig",
    "OtlpScoresConfig",
    "OutputsConfig",
    "PipelineConfig",
    "ReceiversConfig",
    "SeasonalProfileParams",
    "SeasonalProfileRule",
    "SeriesConfig",
    "StateConfig",
    "TlsServerConfig",
    "TracesConfig",
    "load_config",
    "parse_duration",
]


class GrpcReceiverConfig(Model):
    """OTLP/gRPC receiver (``receivers.grpc``)."""

    enabled: bool = True
    endpoint: Endpoint = "localhost:4317"
    max_recv_msg_size_mib: Positive = 64
    tls: TlsServerConfig = TlsServerConfig()
    separate_process: bool = False

    @model_validator(mode="after")
    def _tls_version_grpc_can_enforce(self) -> GrpcReceiverConfig:
        if self.tls.min_version != "1.2":
            # grpcio's server credentials take no TLS version bounds: 1.2 and 1.3 both pass.
            msg = ("`tls.min_version` must be 1.2 on the gRPC receiver: grpcio cannot "
                   f"refuse TLS 1.2 clients; got {self.tls.min_version!r}")
            raise ValueError(msg)
        return self


class HttpReceiverConfig(Model):
    """OTLP/HTTP receiver (``receivers.http``)."""

    enabled: bool = True
    endpoint: Endpoint = "localhost:4318"
    max_request_body_size_mib: Positive = 64
    tls: TlsServerConfig = TlsServerConfig()
    separate_process: bool = False


class ReceiversConfig(Model):
    """Both OTLP receivers, and the bearer token they both require when ``auth`` is set."""

    grpc: GrpcReceiverConfig = GrpcReceiverConfig()
    http: HttpReceiverConfig = HttpReceiverConfig()
    auth: BearerAuthConfig = BearerAuthConfig()

    @model_validator(mode="after")
    def _at_least_one_enabled(self) -> ReceiversConfig:
        # As the Collector refuses a pipeline without receivers: nothing could reach the
        # detectors, and /metrics would stay empty without saying why.
        if not (self.grpc.enabled or self.http.enabled):
            msg = ("at least one of `grpc` and `http` must be enabled: with both disabled "
                   "no telemetry can reach the sidecar")
            raise ValueError(msg)
        return self


class PipelineConfig(Model):
    """The bounded intake queue in front of the scoring worker."""

    queue_size: Positive = 64
    retry_after: Duration = Field(default=1.0, gt=0)


class SeriesConfig(Model):
    """Limits on scored series."""

    max_series: Positive = 100_000
    ttl: Duration = Field(default=3600.0, gt=0)
    deploy_grace: Duration = Field(default=900.0, ge=0)
    max_future: Duration = Field(default=600.0, ge=0)
    silence_after: Duration = Field(default=300.0, ge=0)


class TracesConfig(Model):
    """Trace-derived features (RED windows, span outliers)."""

    window: Duration = Field(default=10.0, gt=0)
    lateness: Duration = Field(default=5.0, ge=0)
    span_outliers: bool = True


class LogsConfig(Model):
    """Log-derived features (rate and error ratio windows)."""

    window: Duration = Field(default=10.0, gt=0)


_MULTIVARIATE = MultivariateSettings()


class MultivariateConfig(Model):
    """Per-service multivariate score over RED and log features (``multivariate``)."""

    model: ModelName = _MULTIVARIATE.model
    max_services: Positive = _MULTIVARIATE.max_services
    warmup: Positive = _MULTIVARIATE.warmup
    alpha: float = Field(default=_MULTIVARIATE.alpha, gt=0, le=1)

    def settings(self) -> MultivariateSettings:
        """Return the engine's ``MultivariateSettings``."""
        return MultivariateSettings(model=self.model, max_services=self.max_services,
                                    warmup=self.warmup, alpha=self.alpha)


ScoreGauge = Literal["score", "value", "expected", "lower", "upper", "flag", "warming"]
"""A per-series gauge ``exposition.gauges`` can export (``otel_anomaly_<name>``)."""
SCORE_GAUGE_NAMES: tuple[ScoreGauge, ...] = (
    "score", "value", "expected", "lower", "upper", "flag", "warming")


class ExpositionConfig(Model):
    """The Prometheus endpoint (``auth`` guards ``/metrics``; the probes stay open).

    ``max_exported_series`` 0 exports every scored series; ``gauges`` picks the per-series
    gauges (all by default; ``[score, flag]`` makes a scrape about 2/7 the size).
    """

    endpoint: Endpoint = "localhost:9464"
    max_exported_series: int = Field(default=0, ge=0, le=LARGEST_COUNT)
    gauges: tuple[ScoreGauge, ...] = SCORE_GAUGE_NAMES
    promote_resource_attributes: tuple[str, ...] = ()
    tls: TlsServerConfig = TlsServerConfig()
    auth: BearerAuthConfig = BearerAuthConfig()

    @field_validator("gauges")
    @classmethod
    def _some_gauges_once(cls, gauges: tuple[ScoreGauge, ...]) -> tuple[ScoreGauge, ...]:
        if not gauges:
            msg = f"must list at least one of {', '.join(SCORE_GAUGE_NAMES)}"
            raise ValueError(msg)
        repeated = sorted({g for g in gauges if gauges.count(g) > 1})
        if repeated:
            msg = f"lists {', '.join(repeated)} more than once"
            raise ValueError(msg)
        return gauges


class StateConfig(Model):
    """Checkpoints of the learned state, so a restart resumes instead of warming up."""

    path: str = ""
    interval: Duration = Field(default=300.0, gt=0)



class WarmStartConfig(Model):
    """History from a Prometheus query API that primes the detectors at start-up."""

    prometheus: str = ""
    selectors: tuple[str, ...] = ()
    lookback: Duration = Field(default=2 * 86400.0, gt=0)
    step: Duration = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _selectors_when_on(self) -> WarmStartConfig:
        if self.prometheus and not self.selectors:
            msg = ("`selectors` must list at least one PromQL series selector when "
                   "`prometheus` is set, e.g. ['{job=\"cart\"}']")
            raise ValueError(msg)
        if self.prometheus and not re.match(r"^https?://[^/]", self.prometheus):
            msg = f"`prometheus` must be an http(s) URL with a host; got {self.prometheus!r}"
            raise ValueError(msg)
        if self.selectors and not self.prometheus:
            msg = ("`selectors` are read from `prometheus`, which is not set: give the query "
                   "API's URL, e.g. http://prometheus:9090, or leave `selectors` out")
            raise ValueError(msg)
        return self


class Config(Model):
    """The whole configuration, as users write it."""

    receivers: ReceiversConfig = ReceiversConfig()
    pipeline: PipelineConfig = PipelineConfig()
    series: SeriesConfig = SeriesConfig()
    traces: TracesConfig = TracesConfig()
    logs: LogsConfig = LogsConfig()
    multivariate: MultivariateConfig = MultivariateConfig()
    detectors: tuple[DetectorConfig, ...] | None = ()
    exposition: ExpositionConfig = ExpositionConfig()
    outputs: OutputsConfig = OutputsConfig()
    state: StateConfig = StateConfig()
    warm_start: WarmStartConfig = WarmStartConfig()

    @field_validator("detectors")
    @classmethod
    def _rules_all_reachable(
        cls, rules: tuple[DetectorConfig, ...] | None,
    ) -> tuple[DetectorConfig, ...] | None:
        # A series goes to the first rule that matches it: a rule after one matching every
        # metric never scores anything, and two rules of one name cannot be told apart.
        named: dict[str, int] = {}
        catch_all = None
        for index, rule in enumerate(rules or ()):
            if rule.name in named:
                msg = (f"detectors[{index}] is named {rule.name!r}, as detectors"
                       f"[{named[rule.name]}] is: rule names must differ")
                raise ValueError(msg)
            named[rule.name] = index
            if catch_all is not None:
                msg = (f"detectors[{index}] ({rule.name!r}) is never used: detectors"
                       f"[{catch_all}] matches every metric before it")
                raise ValueError(msg)
            if "*" in rule.match:
                catch_all = index
        return rules

    def detector_rules(self) -> tuple[DetectorRule, ...]:
        """The engine's rules; ``DEFAULT_RULES`` when the config names none."""
        if not self.detectors:
            return DEFAULT_RULES
        return tuple(
            DetectorRule(
                name=rule.name,
                match=rule.match,
                detector=rule.type,
                params=rule.params.engine_params(),
                alert=rule.alert.policy(),
                max_points_per_request=rule.max_points_per_request,
            )
            for rule in self.detectors
        )

    def engine_settings(
        self, clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] | None = None,
    ) -> EngineSettings:
        """Map onto the engine's settings, with an injected ingest-time ``clock``.

        With a ``wall_clock`` (seconds since the epoch; live ingest, not backtests), OTLP
        items stamped more than ``series.max_future`` ahead of it are rejected.
        """
        max_future = self.series.max_future
        latest = None if wall_clock is None or max_future <= 0 else (
            lambda: int((wall_clock() + max_future) * 1e9))
        return EngineSettings(
            clock=clock,
            rules=self.detector_rules(),
            max_series=self.series.max_series,
            series_ttl_s=self.series.ttl,
            deploy_grace_s=self.series.deploy_grace,
            traces_window_s=self.traces.window,
            logs_window_s=self.logs.window,
            lateness_s=self.traces.lateness,
            span_outliers=self.traces.span_outliers,
            promote_resource_attributes=self.exposition.promote_resource_attributes,
            multivariate=self.multivariate.settings(),
            latest_event_time=latest,
            silence_after_s=self.series.silence_after,
        )


ENV_PREFIX = "OTEL_ANOMALY_"
ENV_VARS: Mapping[str, str] = {
    "OTEL_ANOMALY_GRPC_ENDPOINT": "receivers.grpc.endpoint",
    "OTEL_ANOMALY_HTTP_ENDPOINT": "receivers.http.endpoint",
    "OTEL_ANOMALY_METRICS_ENDPOINT": "exposition.endpoint",
    "OTEL_ANOMALY_EVENTS_ENDPOINT": "outputs.otlp_events.endpoint",
    "OTEL_ANOMALY_MAX_SERIES": "series.max_series",
    "OTEL_ANOMALY_QUEUE_SIZE": "pipeline.queue_size",
    "OTEL_ANOMALY_STATE_PATH": "state.path",
}
"""Environment variables that set a config key (below flags, above the file)."""
# Kubernetes injects these for any Service whose name starts with "otel-anomaly" (service
# links): they are not settings, so they are ignored rather than rejected.
_SERVICE_LINK_ENV = re.compile(
    r"OTEL_ANOMALY_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)
ENV_CONFIG_FILE = "OTEL_ANOMALY_CONFIG"
ENV_LOG_LEVEL = "OTEL_ANOMALY_LOG_LEVEL"
ENV_KERNEL_SEED = "OTEL_ANOMALY_KERNEL_SEED"  # compiled kernels to start from (kernel_cache)
_ENV_OTHER = (ENV_CONFIG_FILE, ENV_LOG_LEVEL, ENV_KERNEL_SEED)


def default_config_text() -> str:
    """Return the embedded ``default_config.yaml`` (every key, documented)."""
    return resources.files(__package__).joinpath("default_config.yaml").read_text("utf-8")


def load_config(
    path: str | None,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Parameters
    ----------
    path
        YAML file; ``None`` for the embedded defaults only.
    overrides
        Command-line values by dotted key (``{"receivers.grpc.endpoint": "..."}``); ``None``
        values are ignored (flag not given).
    environ
        Environment to read ``OTEL_ANOMALY_*`` from (``os.environ`` when ``None``).

    Raises
    ------
    ConfigError
        Listing every problem, each prefixed by its dotted path.
    """
    env = os.environ if environ is None else environ
    data = _merge(_read_yaml(default_config_text(), "default_config.yaml"), _read_file(path))
    problems: list[str] = []
    sources: dict[str, str] = {}
    for name, text in sorted(env.items()):
        if (not name.startswith(ENV_PREFIX) or name in _ENV_OTHER
                or _SERVICE_LINK_ENV.fullmatch(name)):
            continue
        if name not in ENV_VARS:
            problems.append(_unknown_env(name))
            continue
        _set_dotted(data, ENV_VARS[name], text)
        sources[ENV_VARS[name]] = f"environment variable {name}"
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
            sources[key] = "command line"
    # Before validation, which would only call the former section an unknown key.
    problems.extend(moved_key_problems(data))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc, Config, sources))
        raise ConfigError(path, problems) from None
    if problems:
        raise ConfigError(path, problems)
    return config


def _unknown_env(name: str) -> str:
    import difflib  # noqa: PLC0415 - error path only

    known = [*ENV_VARS, *_ENV_OTHER]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(sorted(known))
    return f"{name}: unknown environment variable ({hint})"


def _read_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(path, [f"cannot read file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        msg = f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        raise ConfigError(path, [msg]) from exc
    return _read_yaml(text, path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key repeated in one mapping.

    PyYAML keeps the last of two ``series:`` sections and drops the first without a word;
    the Collector refuses such a file, and so does this loader, naming the line.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if repeated:
                context, problem = "while reading a mapping", f"found the key {key!r} a second time"
                raise yaml.constructor.ConstructorError(context, node.start_mark, problem,
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"invalid YAML{where}: {problem}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(source, [f"(root): expected a mapping of keys; got a {got}"])
    return data


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; anything else in ``top`` (lists too) replaces ``base``."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            child = {}
            node[name] = child
        node = child
    node[leaf] = value
