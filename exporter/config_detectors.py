"""Detector rules: the alert policy and one params class plus one rule class per detector type.

Adding a detector type: write its params class (defaults and ranges as the detector's) and
its rule class, and add the rule class to ``DetectorConfig`` and ``DETECTOR_TYPES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator, model_validator

from otel_anomaly.exporter.config_types import LARGEST_COUNT, Duration, Model, Positive
from otel_anomaly.processors.detectors import DETECTORS
from otel_anomaly.processors.detectors.ensemble_members import MEMBER_TYPES
from otel_anomaly.processors.settings import (
    ERROR_RATIO_ALERT,
    SEASONAL_ALERT,
    AlertPolicy,
    DirectionPolicy,
    LearnGating,
)

_ALERT = AlertPolicy()


class AlertConfig(Model):
    """How scores become flags and events; maps 1:1 onto ``AlertPolicy``."""

    direction: DirectionPolicy = _ALERT.direction
    band: float = Field(default=_ALERT.band, gt=0)
    min_relative_deviation: float = Field(default=_ALERT.min_relative_deviation, ge=0)
    min_absolute_deviation: float = Field(default=_ALERT.min_absolute_deviation, ge=0)
    open_threshold: float = Field(default=_ALERT.open_threshold, gt=0)
    close_threshold: float = Field(default=_ALERT.close_threshold, ge=0)
    min_duration: Positive = _ALERT.min_duration
    min_duration_time: Duration = Field(default=_ALERT.min_duration_time_s, ge=0)
    evidence_point: Duration = Field(default=_ALERT.evidence_point_s, ge=0)
    close_after: Positive = _ALERT.close_after
    close_after_time: Duration = Field(default=_ALERT.close_after_time_s, ge=0)
    update_interval: Duration = Field(default=_ALERT.update_interval_s, gt=0)
    learn_gating: LearnGating = _ALERT.learn_gating
    tail_calibration: bool = _ALERT.tail_calibration
    tail_quantile: float = Field(default=_ALERT.tail_quantile, gt=0, lt=1)
    tail_window: int = Field(default=_ALERT.tail_window, ge=2, le=LARGEST_COUNT)
    # .inf: never on one point (the built-in latency rules)
    instant_threshold: float = Field(default=_ALERT.instant_threshold, gt=0, allow_inf_nan=True)
    cooldown: int = Field(default=_ALERT.cooldown, ge=0, le=LARGEST_COUNT)
    cooldown_time: Duration = Field(default=_ALERT.cooldown_time_s, ge=0)
    relearn_after: int = Field(default=_ALERT.relearn_after, ge=0, le=LARGEST_COUNT)
    hold: Duration = Field(default=_ALERT.hold_s, ge=0)
    accept_after: Duration = Field(default=_ALERT.accept_after_s, ge=0)
    close_odds: float = Field(default=_ALERT.close_odds, ge=0)
    false_alarm_budget: float = Field(default=_ALERT.false_alarm_budget, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _follow_open_threshold(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return fill_alert_keys(_alert_keys(_ALERT), data)
        return data

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> AlertConfig:
        problems = []
        if self.close_threshold > self.open_threshold:
            problems.append(
                "`close_threshold` must be <= `open_threshold`; got "
                f"close_threshold={self.close_threshold}, open_threshold={self.open_threshold}"
            )
        if self.instant_threshold < self.open_threshold:
            problems.append(
                "`instant_threshold` must be >= `open_threshold`; got "
                f"instant_threshold={self.instant_threshold}, "
                f"open_threshold={self.open_threshold}"
            )
        if 0 < self.close_odds <= 1:
            problems.append(
                "`close_odds` must be 0 (off) or above 1 (odds of back to normal against "
                f"still out); got close_odds={self.close_odds}")
        if self.false_alarm_budget > 0 and self.evidence_point > 0:
            problems.append(
                "`evidence_point` must be 0 with a `false_alarm_budget` (the budget's band "
                "edge is derived for points in a row); got "
                f"false_alarm_budget={self.false_alarm_budget}, "
                f"evidence_point={self.evidence_point}s")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def policy(self) -> AlertPolicy:
        """Return the engine's ``AlertPolicy``."""
        fields = self.model_dump()
        fields["update_interval_s"] = fields.pop("update_interval")
        fields["hold_s"] = fields.pop("hold")
        fields["accept_after_s"] = fields.pop("accept_after")
        fields["min_duration_time_s"] = fields.pop("min_duration_time")
        fields["evidence_point_s"] = fields.pop("evidence_point")
        fields["cooldown_time_s"] = fields.pop("cooldown_time")
        fields["close_after_time_s"] = fields.pop("close_after_time")
        return AlertPolicy(**fields)


def _alert_keys(policy: AlertPolicy) -> dict[str, Any]:
    fields = {name: getattr(policy, name) for name in policy.__dataclass_fields__}
    fields["update_interval"] = fields.pop("update_interval_s")
    fields["hold"] = fields.pop("hold_s")
    fields["accept_after"] = fields.pop("accept_after_s")
    fields["min_duration_time"] = fields.pop("min_duration_time_s")
    fields["evidence_point"] = fields.pop("evidence_point_s")
    fields["cooldown_time"] = fields.pop("cooldown_time_s")
    fields["close_after_time"] = fields.pop("close_after_time_s")
    return fields


def fill_alert_keys(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``; an ``open_threshold`` set alone carries the other two.

    Raising ``open_threshold`` without touching ``close_threshold``/``instant_threshold``
    should not be an ordering error, so those defaults follow it (close at most, instant
    at least the new open threshold); values the user sets are kept and validated. A
    ``false_alarm_budget`` set without ``evidence_point`` turns the evidence off, as in the
    built-in latency rules: the budget's edge is derived for points in a row.
    """
    out = {**defaults, **given}
    budget = _number(given.get("false_alarm_budget"))
    if budget is not None and budget > 0 and "evidence_point" not in given:
        out["evidence_point"] = 0.0
    opened = _number(given.get("open_threshold"))
    if opened is not None:
        if "close_threshold" not in given:
            out["close_threshold"] = min(defaults["close_threshold"], opened)
        if "instant_threshold" not in given:
            out["instant_threshold"] = max(defaults["instant_threshold"], opened)
    return out


def _number(value: object) -> float | None:
    """``value`` as validation will read it (a quoted ``'3'`` too), or None if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# --- Detector types: a params class and a rule class per type, both listed below. ---


def _unit_interval(value: float) -> float:
    if not 0.0 < value <= 1.0:
        msg = f"must be in (0, 1]; got {value}"
        raise ValueError(msg)
    return value


Alpha = Annotated[float, AfterValidator(_unit_interval)]


class _Params(Model):
    detector_type: ClassVar[str]

    def engine_params(self) -> dict[str, Any]:
        """Keyword arguments of the detector class (durations become ``*_s`` seconds)."""
        return self.model_dump()

    @model_validator(mode="after")
    def _detector_accepts(self) -> _Params:
        # Cross-parameter rules (warmup > order, tolerance < buckets...) live in the
        # detector itself; building one here reports them at start-up, in its words.
        try:
            {**MEMBER_TYPES, **DETECTORS}[self.detector_type](**self.engine_params())
        except (ValueError, OverflowError, MemoryError) as exc:
            raise ValueError(str(exc).removeprefix(f"{self.detector_type}: ")
                             or type(exc).__name__) from None
        return self


class EwmaZscoreParams(_Params):
    """Parameters of ``ewma_zscore`` (see ``processors.detectors.EwmaZScore``)."""

    detector_type: ClassVar[str] = "ewma_zscore"

    alpha: Alpha = 0.05
    warmup: Positive = 30
    log_transform: bool = False


class SeasonalProfileParams(_Params):
    """Parameters of ``seasonal_profile`` (see ``processors.detectors.SeasonalProfile``)."""

    detector_type: ClassVar[str] = "seasonal_profile"
    period: Duration = Field(default=86400.0, gt=0)
    buckets: int = Field(default=288, ge=1, le=10_080)  # a minute of a week: state per series
    alpha: Alpha = 0.25
    warmup_cycles: float = Field(default=2.0, ge=0)
    spread_mix: float = Field(default=0.1, ge=0)
    phase_tolerance: int = Field(default=0, ge=0, le=LARGEST_COUNT)

    def engine_params(self) -> dict[str, Any]:
        """Keyword arguments of ``SeasonalProfile``."""
        params = self.model_dump()
        params["period_s"] = params.pop("period")
        return params


class ForecastResidualParams(_Params):
    """Parameters of ``forecast_residual`` (see ``processors.detectors.ForecastResidual``)."""

    detector_type: ClassVar[str] = "forecast_residual"
    order: int = Field(default=4, ge=1, le=64)  # order**2 state per series
    forgetting: Alpha = 0.999
    alpha: Alpha = 0.02
    warmup: Positive = 50


class HalfSpaceTreesParams(_Params):
    """Parameters of ``half_space_trees`` (see ``processors.detectors.HalfSpaceTrees``)."""

    detector_type: ClassVar[str] = "half_space_trees"
    window: int = Field(default=4, ge=1, le=1024)
    trees: int = Field(default=16, ge=1, le=256)  # trees * 2**height state per series
    height: int = Field(default=7, ge=1, le=12)
    memory: int = Field(default=1000, ge=2, le=LARGEST_COUNT)
    warmup: Positive = 100
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class DiscordParams(_Params):
    """Parameters of the ``discord`` member (see ``processors.detectors.discord.Discord``)."""

    detector_type: ClassVar[str] = "discord"
    length: int = Field(default=16, ge=3, le=1024)
    history: int = Field(default=256, ge=1, le=16_384)  # length + history per series


class BinomialRatioParams(_Params):
    """Parameters of ``binomial_ratio`` (see ``processors.detectors.BinomialRatio``)."""

    detector_type: ClassVar[str] = "binomial_ratio"
    memory: int = Field(default=8640, ge=2, le=LARGEST_COUNT)
    prior_rate: float = Field(default=0.01, gt=0, lt=1)
    prior_calls: float = Field(default=100.0, gt=0)
    warmup: Positive = 30
    warmup_calls: float = Field(default=200.0, ge=0)
    default_count: float = Field(default=100.0, gt=0)
    dispersion: bool = True
    max_dispersion: float = Field(default=0.25, ge=0, lt=1)
    learn_cap: float = Field(default=5.0, gt=0)
    recent: float = Field(default=0.8, ge=0, lt=1)
    recent_margin: float = Field(default=0.0, ge=0)


Member = Annotated[
    Annotated["EwmaZscoreMember", Tag("ewma_zscore")]
    | Annotated["SeasonalProfileMember", Tag("seasonal_profile")]
    | Annotated["ForecastResidualMember", Tag("forecast_residual")]
    | Annotated["DiscordMember", Tag("discord")],
    Discriminator(
        lambda v: v.get("type") if isinstance(v, Mapping) else getattr(v, "type", None),
        custom_error_type="unknown_detector_type",
        custom_error_message="unknown detector type",
        custom_error_context={
            "expected": "ewma_zscore, seasonal_profile, forecast_residual, discord"},
    ),
]


class EwmaZscoreMember(Model):
    """An ensemble member of ``type: ewma_zscore``."""

    type: Literal["ewma_zscore"]
    params: EwmaZscoreParams = EwmaZscoreParams()


class SeasonalProfileMember(Model):
    """An ensemble member of ``type: seasonal_profile``."""

    type: Literal["seasonal_profile"]
    params: SeasonalProfileParams = SeasonalProfileParams()


class ForecastResidualMember(Model):
    """An ensemble member of ``type: forecast_residual``."""

    type: Literal["forecast_residual"]
    params: ForecastResidualParams = ForecastResidualParams()


class DiscordMember(Model):
    """An ensemble member of ``type: discord`` (shape; not a detector rule of its own)."""

    type: Literal["discord"]
    params: DiscordParams = DiscordParams()


class EnsembleParams(_Params):
    """Parameters of ``ensemble`` (see ``processors.detectors.Ensemble``).

    Keys left out take the detector's own defaults (``members`` unset or empty means its
    built-in members: a level, a daily and a weekly profile).
    """

    detector_type: ClassVar[str] = "ensemble"
    members: tuple[Member, ...] = ()  # empty: the ensemble's built-in members
    combine: Literal["max", "fallback"] | None = None
    tail_quantile: float | None = Field(default=None, gt=0, lt=1)
    tail_window: int | None = Field(default=None, ge=2)
    refractory_level: float | None = Field(default=None, ge=0)
    refractory_hold: int | None = Field(default=None, ge=0)
    refractory_decay: float | None = Field(default=None, gt=0, le=1)
    refractory_grace: int | None = Field(default=None, ge=0)
    persistence_alpha: float | None = Field(default=None, ge=0, lt=1)
    persistence_level: float | None = Field(default=None, gt=0)
    persistence_shrink: float | None = Field(default=None, gt=0, le=1)
    persistence_window: int | None = Field(default=None, ge=2)
    persistence_alarm: bool | None = None
    log_transform: bool | None = None
    log_offset: float | None = Field(default=None, gt=0)
    level_follows_season: bool | None = None

    def engine_params(self) -> dict[str, Any]:
        """Keyword arguments of ``Ensemble``: only the keys the config sets."""
        params: dict[str, Any] = {
            key: value for key, value in self.model_dump(exclude={"members"}).items()
            if value is not None
        }
        if self.members:
            params["members"] = tuple(
                (member.type, tuple(member.params.engine_params().items()))
                for member in self.members
            )
        return params



class _RuleConfig(Model):
    name: str = Field(min_length=1)
    match: tuple[str, ...] = Field(default=("*",), min_length=1)
    alert: AlertConfig = AlertConfig()
    # Of one series' points in one request: how many are scored (0: all); see DetectorRule.
    max_points_per_request: int = Field(default=0, ge=0, le=LARGEST_COUNT)

    @field_validator("match")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        if "" in patterns:
            msg = "an empty pattern matches no metric; use '*' for every metric"
            raise ValueError(msg)
        return patterns


class EnsembleRule(_RuleConfig):
    """A detector rule of ``type: ensemble`` (the default type).

    Its ``alert`` keys default to ``SEASONAL_ALERT``, the policy the ensemble was tuned
    with, rather than to the single-detector defaults.
    """

    type: Literal["ensemble"] = "ensemble"
    params: EnsembleParams = EnsembleParams()
    alert: AlertConfig = AlertConfig(**_alert_keys(SEASONAL_ALERT))

    @model_validator(mode="before")
    @classmethod
    def _seasonal_alert_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("alert"), Mapping):
            data = {**data, "alert": fill_alert_keys(_alert_keys(SEASONAL_ALERT), data["alert"])}
        return data


class EwmaZscoreRule(_RuleConfig):
    """A detector rule of ``type: ewma_zscore``."""

    type: Literal["ewma_zscore"]
    params: EwmaZscoreParams = EwmaZscoreParams()


class SeasonalProfileRule(_RuleConfig):
    """A detector rule of ``type: seasonal_profile``."""

    type: Literal["seasonal_profile"]
    params: SeasonalProfileParams = SeasonalProfileParams()


class ForecastResidualRule(_RuleConfig):
    """A detector rule of ``type: forecast_residual``."""

    type: Literal["forecast_residual"]
    params: ForecastResidualParams = ForecastResidualParams()


class HalfSpaceTreesRule(_RuleConfig):
    """A detector rule of ``type: half_space_trees``."""

    type: Literal["half_space_trees"]
    params: HalfSpaceTreesParams = HalfSpaceTreesParams()


class BinomialRatioRule(_RuleConfig):
    """A detector rule of ``type: binomial_ratio``.

    Its ``alert`` keys default to ``ERROR_RATIO_ALERT``, the policy of the built-in
    ``error_ratios`` rule.
    """

    type: Literal["binomial_ratio"]
    params: BinomialRatioParams = BinomialRatioParams()
    alert: AlertConfig = AlertConfig(**_alert_keys(ERROR_RATIO_ALERT))

    @model_validator(mode="before")
    @classmethod
    def _error_ratio_alert_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("alert"), Mapping):
            data = {**data, "alert": fill_alert_keys(_alert_keys(ERROR_RATIO_ALERT),
                                                     data["alert"])}
        return data


DEFAULT_DETECTOR_TYPE = "ensemble"


def _detector_type(value: Any) -> str | None:
    if isinstance(value, Mapping):
        found = value.get("type", DEFAULT_DETECTOR_TYPE)
        return found if isinstance(found, str) else None
    return getattr(value, "type", DEFAULT_DETECTOR_TYPE)


DETECTOR_TYPES: tuple[str, ...] = (
    "ensemble", "ewma_zscore", "seasonal_profile", "forecast_residual", "half_space_trees",
    "binomial_ratio",
)
DetectorConfig = Annotated[
    Annotated[EnsembleRule, Tag("ensemble")]
    | Annotated[EwmaZscoreRule, Tag("ewma_zscore")]
    | Annotated[SeasonalProfileRule, Tag("seasonal_profile")]
    | Annotated[ForecastResidualRule, Tag("forecast_residual")]
    | Annotated[HalfSpaceTreesRule, Tag("half_space_trees")]
    | Annotated[BinomialRatioRule, Tag("binomial_ratio")],
    Discriminator(
        _detector_type,
        custom_error_type="unknown_detector_type",
        custom_error_message="unknown detector type",
        custom_error_context={"expected": ", ".join(DETECTOR_TYPES)},
    ),
]
"""A detector rule: the union of every type's rule class, discriminated by ``type``."""
