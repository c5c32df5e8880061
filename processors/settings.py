"""Plain settings the engine is built from (the exporter's YAML config maps onto these)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # it imports this module
    from otel_anomaly.processors.multivariate import MultivariateSettings

DirectionPolicy = Literal["both", "up", "down"]
LearnGating = Literal["clip", "skip", "off"]


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How a detector's output becomes a band, a score, a flag and events.

    Parameters
    ----------
    direction
        Which deviations count: ``up``, ``down`` or ``both``.
    band
        Half-width of the band in the detector's spread units (e.g. robust sigmas).
    min_relative_deviation
        The band is never narrower than this fraction of ``|expected|`` (noise tolerance).
    min_absolute_deviation
        The band is never narrower than this, in the series' own unit.
    open_threshold
        Score at or above which a point counts as anomalous.
    close_threshold
        Score below which a point counts as normal again (hysteresis).
    min_duration
        Anomalous points in a row before an anomaly opens (and the flag goes to 1).
    min_duration_time_s
        An anomaly also opens once its anomalous points in a row span this much event time
        at the series' usual spacing, even before ``min_duration`` points: on a series with
        a point every 30 minutes, one anomalous point is already half an hour of evidence,
        while on a scraped series one bad scrape is still not an incident. 0 disables.
    evidence_point_s
        When > 0, ``min_duration`` counts evidence, not points in a row: each point adds
        ``(score - open_threshold / 2) * weight`` to a sum that never goes below 0 (a CUSUM
        tuned to a shift to the open threshold), and an anomaly opens on a point out of
        its band when the sum reaches ``min_duration * open_threshold / 2``. The weight is
        ``min(1, max(spacing / evidence_point_s, (1 - r) / (1 + r)))``, ``r`` the lag-1
        autocorrelation of the series' scores between anomalies: a point is full evidence
        when it is this far from the last one, or when it is an independent draw (a
        window of counted calls). So ``min_duration`` such points at the open threshold
        open one, as before, while a smooth gauge scraped every 30 s, whose noise comes
        in excursions of several points, needs as much event time out of its band as one
        sent every 5 minutes. A point back inside the band lowers the sum instead of
        restarting the count. 0: points in a row.
    close_after
        Normal points in a row before an open anomaly closes. With ``evidence_point_s``
        each counts as the share of an evidence point it would add when opening: being
        back needs as much evidence as being out, so on that smooth gauge one point back
        inside is not 5 minutes back, while points 5 minutes apart or independent windows
        still close on one. (An autocorrelation of the scores within two standard errors
        of 0, about 0.063, counts as 0: independent windows are not discounted for the
        noise of its estimate.)
    close_after_time_s
        ... and only once those normal points span this much event time, each counted as
        the series' usual spacing: a level that stays shifted, with noise that dips inside
        the band now and then, is not back to normal. 0: points only.
    update_interval_s
        At most one ``update`` event per open anomaly per this many seconds of event time.
    learn_gating
        ``clip``: learn anomalous points clipped to the band edge; ``skip``: do not learn
        them; ``off``: learn everything as it is.
    tail_calibration
        Widen each series' band by how heavy its own deviations' tail is: the band is
        ``band * max(q, g) / g`` spread units, ``q`` the series' running ``tail_quantile``
        of its deviation (in spread units) and ``g`` that quantile for a normal
        distribution. One threshold then fits series of any shape; off, the band is
        ``band`` spread units everywhere.
    tail_quantile
        Quantile of the deviations that defines a series' usual extreme, in (0, 1).
    tail_window
        Points the tail quantile effectively remembers (exponential decay), >= 2.
    instant_threshold
        A single point scoring at or above this opens an anomaly at once, without waiting
        for ``min_duration`` points (an extreme spike is an incident on its own).
    cooldown
        Points after an anomaly closes during which a new one cannot open: the tail of
        the same event does not become a second anomaly. 0 disables.
    cooldown_time_s
        The cooldown also ends once this much event time has passed since the close, if
        that comes before ``cooldown`` points: points are minutes on one series and hours
        on another, and the rest of one event is a matter of time. 0: points only.
    relearn_after
        Points an anomaly may stay open before the detector learns the values as they are
        (learn gating stops), so a lasting level shift becomes the new normal. 0: never.
    false_alarm_budget
        For self-calibrating detectors (the ensemble): false anomaly opens allowed per
        series-day; only with ``evidence_point_s`` 0 (points in a row). Each series' band
        edge widens to where that series' own score tail
        (``processors.alerting.rarity``) says opens on its noise alone come about this often, given
        ``min_duration`` (or ``min_duration_time_s``) and ``instant_threshold``; it is never
        narrower than ``band`` sigmas. 0: ``band`` sigmas on every series.
    hold_s
        An open anomaly stays open while the value is outside the band it opened against,
        even where the detector's own band has widened to take it in, until the value has
        gone this long (event time) without moving further out (``processors.alerting.held_band``):
        an outage stays flagged while it lasts and a leak while it grows (a significant
        upward trend over the last ``hold_s`` counts as moving out, and keeps the anomaly
        open even where a point dips back inside the band; it fades in about 1 to 4 holds
        once the leak stops, ``processors.alerting.trend``). Then the
        detector's band decides, and a level it has taken in closes as the new baseline.
        0: the detector's band always decides.
    accept_after_s
        A lasting shift is flagged at least this long (event time) after the value last moved
        further out, as long as the value stays outside the band the anomaly opened against,
        even where the detector's own band has taken the new level in. The detector keeps
        learning after ``hold_s`` as before (so its score and band follow the new level);
        only the flag waits, so that an outage or a regression that holds stays flagged
        for hours, not for one hold, before it is accepted, with an ``anomaly.close`` that
        says so. Values at or below ``hold_s``: ``hold_s``.
    close_odds
        With ``hold_s``: an open anomaly closes only once its points since it opened are
        this many times likelier back at the level the series had before it than still at
        the anomaly's own level (Wald's sequential test, ``processors.alerting.held_band``),
        so one noisy dip of a level that holds does not end it, while the first normal
        point after a spike does. Until then a point back inside the band keeps it open,
        for at most ``accept_after_s``. 0: the first point back inside the band closes it.
    """

    direction: DirectionPolicy = "both"
    band: float = 4.0
    min_relative_deviation: float = 0.01
    min_absolute_deviation: float = 0.0
    open_threshold: float = 1.0
    close_threshold: float = 0.8
    min_duration: int = 3
    min_duration_time_s: float = 900.0
    evidence_point_s: float = 0.0
    close_after: int = 3
    close_after_time_s: float = 0.0
    update_interval_s: float = 60.0
    learn_gating: LearnGating = "clip"
    tail_calibration: bool = True
    tail_quantile: float = 0.999
    tail_window: int = 2000
    instant_threshold: float = 2.0
    cooldown: int = 0
    cooldown_time_s: float = 0.0
    relearn_after: int = 0
    hold_s: float = 3600.0
    accept_after_s: float = 4 * 3600.0
    close_odds: float = 0.0
    false_alarm_budget: float = 0.0

    @property
    def lasting_s(self) -> float:
        """How long a level that holds stays flagged before it is accepted as the baseline.

        That is ``max(hold_s, accept_after_s)``, or 0 without a hold.

        >>> AlertPolicy().lasting_s, AlertPolicy(hold_s=0).lasting_s
        (14400.0, 0.0)
        """
        return max(self.hold_s, self.accept_after_s) if self.hold_s > 0 else 0.0

    def __post_init__(self) -> None:
        if self.false_alarm_budget > 0 and self.evidence_point_s > 0:
            # rarity.points_to_open derives the budget's edge for points in a row.
            msg = ("alert: `false_alarm_budget` needs `evidence_point` 0 (its band edge is "
                   "derived for points in a row); got false_alarm_budget="
                   f"{self.false_alarm_budget}, evidence_point={self.evidence_point_s}s")
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class DetectorRule:
    """Which detector scores which series: the first rule whose glob matches wins.

    ``match`` holds ``fnmatch`` globs on the series' ``metric`` name (e.g. ``*:p99``).
    ``max_points_per_request``: of one series' points in one OTLP request, at most this
    many are scored and learned (an even spread), plus the most extreme on the alert's side,
    scored only (``processors.alerting.row_sampling``; a young series scores more, see
    ``Scorer.sample``); 0 scores every point. Backtests score every point.
    """

    name: str = "default"
    match: tuple[str, ...] = ("*",)
    detector: str = "ewma_zscore"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    alert: AlertPolicy = field(default_factory=AlertPolicy)
    max_points_per_request: int = 0


SPAN_DURATION_METRIC = "traces_span_duration_milliseconds"

EVENTS_SCOPE_NAME = "otel-anomaly"
"""The instrumentation scope of the sidecar's own anomaly events. Log records in it that
come back in (a Collector that sends every log pipeline here) are the sidecar's, not the
service's: they are accepted and skipped, never counted as the service's logs."""

SEASONAL_ALERT = AlertPolicy(
    band=3.5, min_duration=2, instant_threshold=1.5, close_threshold=1.0, close_after=1,
    cooldown=60, cooldown_time_s=5 * 3600.0, learn_gating="off", evidence_point_s=300.0,
    close_odds=20.0,
)
"""Alerting for the default ensemble rules (tuned once on NAB's DEV files, see
``benchmarks/nab.py``, then the band widened from 3 to 3.5 for ``benchmarks/incidents.py``:
autocorrelated gauges false-flagged 0.26 times a series-day at 3, 0.03 at 3.5, while the
ensemble's persistence narrowing keeps sustained regressions detected): the ensemble
calibrates itself (3.5 Gaussian-equivalent sigmas), its members cap what one point teaches
them (so gating is off), an anomaly opens on 2 points out of band or one at 1.5x the band,
closes at a point back inside once the points since it opened are 20 times likelier back
at the level before than still at the anomaly's (``close_odds``: about Wald's odds for 5 %
errors either way, chosen before any measurement and not swept), and for the next 60
points or the next 5 hours,
whichever ends first, no other one opens (the same event) unless a point scores above that
anomaly's peak. 5 hours is what the 60 points
were tuned as on NAB's 5-minute series; counted in points alone, an hourly series was
blind for two and a half days after each close (msmon: event F1 0.392 -> 0.466 with the
time limit, NAB unchanged).

The 2 points are evidence of 5 minutes each (``evidence_point_s``), the spacing they were
tuned at: closer points weigh their share of it, unless they are independent draws. With
points every 30 s, 2 in a row opened 0.128 false anomalies per quiet CPU-like gauge and day
(``benchmarks/incidents.py --step 30``), 0.028 with the evidence; NAB's held-out ``flag``
column went 45.5 -> 48.3 (its points are 5 minutes apart, so only the CUSUM's tolerance of a
dip changed it)."""

ERROR_RATIO_ALERT = replace(SEASONAL_ALERT, direction="up", min_absolute_deviation=0.02,
                            false_alarm_budget=0.0, close_after=5)
"""Alerting for ``binomial_ratio`` rules: as the ensemble's, but up only, never for a rise of
less than 2 points of ratio, without a false-alarm budget (the detector's sigmas are already
each series' own tail probabilities), and closed only after 5 windows in a row back inside
the band (5 windows' evidence: the detector pools each window with the recent ones, so its
scores are correlated and a window back counts as about 0.6 of one, see ``close_after``; 9
windows in ``tests/processors/test_error_ratios.py``). One window of a few calls is no sign
that a burst is over: at 5 calls a window and 20 % errors, a third of the windows hold no
error at all. Closed at the first such window (the ensemble's ``close_after`` of 1, tuned on
NAB's series, which carry no counts), 39 of 39 bursts of 5 minutes at that traffic closed
while they went on, and the cooldown then kept them closed (19 % of each burst flagged after
its open); with 3 windows 25-32 closed (61-70 % flagged), with 5 windows 9-16 (88-90 %),
closing 3-4 windows after the burst ended; with those 5 counted as evidence, 0 of 40 in
either test case (100 %) (``tests/processors/test_error_ratios.py``)."""


LATENCY_ALERT = replace(SEASONAL_ALERT, false_alarm_budget=0.1, tail_window=10000,
                        instant_threshold=math.inf, evidence_point_s=0.0, close_after=3)
"""Latency quantiles are heavy-tailed (a p99 of a few requests jumps by factors): each
series' band edge is widened to the score that series reaches about 0.1 times a day (see
``processors.alerting.rarity``), never narrower than the seasonal band. The general rule keeps
3.5 sigmas: on NAB's and msmon's labelled series the same widening cost more missed
incidents than it saved false alarms (see ``benchmarks/nab.py``, ``benchmarks/msmon.py``).

Points in a row, not evidence (``evidence_point_s`` 0): the budget's edge
(``rarity.points_to_open``) is derived for a run of independent points; with the CUSUM,
which also gathers points below the band, spiky and Student-t series opened about 4 times
the budget in ``tests/processors/test_rarity_calibration.py``.

No single point opens a latency anomaly (``instant_threshold`` infinite): one window's
quantile of a few calls is one draw from a heavy tail, and a slowdown worth a page lasts
longer than one window. Every false open of ``benchmarks/traces.py`` (8 in 27 quiet
operation-days) and ``benchmarks/histograms.py`` (8 in 60 series-days) was such a single
point at 1.5 to 1.7 band half-widths; with two points in a row required there were none,
and every injected latency regression was still caught, 10 s later.

Nor does a single point back inside the band close one (``close_after`` 3): a slowdown that
goes on has windows inside the band now and then. Closed at the first, 6 of 12 latency
leaks (``benchmarks/incidents.py``'s ``latency_leak``, series 17 days old) dropped the flag
while they still grew, and the cooldown kept it down (32-79 % of the time after the first
open, up to 6 opens; ``tests/processors/test_incident_lifecycle.py``); with 3 every one kept
it at least 95 % of the time. Quiet latency series open no more (closing later opens
nothing: ``benchmarks/histograms.py``, ``traces.py`` unchanged)."""


def _latency_rule(name: str, unit: str, offset: float) -> DetectorRule:
    """Latency quantiles and means in ``unit``, on an ensemble of their logs.

    Latencies vary by factors, not by amounts: on log values their noise is symmetric and a
    slowdown by half scores alike at 100 ms and at 2 s. ``offset`` (1 ms) keeps zeros finite.
    A quantile is noisy from one window to the next (a p99 that doubles is 4 to 5 of its
    sigmas per point, inside a band of 3.5 widened by its heavy tail), so a lasting
    slowdown is judged on its average: ``persistence_alarm`` narrows the slowed side at
    once when the members' short average of signed deviations leaves its control limit
    (``benchmarks/incidents.py --days 11``, series a week old: a p99 x1.5 for two hours
    caught in 10 of 10 series, 0 of 10 without; no false open on the latency controls).
    """
    return DetectorRule(
        name=name,
        match=(f"*_{unit}:p*", f"*_{unit}:mean"),
        detector="ensemble",
        params=MappingProxyType({"log_transform": True, "log_offset": offset,
                                 "persistence_alarm": True}),
        alert=LATENCY_ALERT,
    )


DEFAULT_RULES: tuple[DetectorRule, ...] = (
    # One slow span is itself worth reporting (with its trace id), so no min duration;
    # only slower-than-usual matters, and the band is wide because span latency is skewed.
    # A request's spans of one operation are one series' points, each a scoring round and
    # each a chance to pass a band that rests on a short EWMA: 4 of them (learned) and the
    # slowest (judged as the slowest of them all, ``row_sampling.max_of_n_band``) cost 5
    # rounds, not one per span (``benchmarks/traces.py --span-outliers``, seeds 0-4 and 7:
    # 1 false open in 162 quiet operation-days; 23 with one span's band).
    DetectorRule(
        name="span_outliers",
        match=(SPAN_DURATION_METRIC,),
        detector="ewma_zscore",
        params=MappingProxyType({"log_transform": True}),
        alert=AlertPolicy(direction="up", band=6.0, min_duration=1, close_after=1),
        max_points_per_request=4,
    ),
    # Error ratios of spans and log records carry their calls (records), and are judged as
    # counts: 1 error in 4 calls is not a 25 % error rate.
    # (The names are those of ``red.ERROR_RATIO_METRIC`` and ``otlp_logs.ERROR_RATIO_METRIC``,
    # which import this module.)
    DetectorRule(
        name="error_ratios",
        match=("traces_span_metrics_error:ratio", "logs_error:ratio"),
        detector="binomial_ratio",
        alert=ERROR_RATIO_ALERT,
    ),
    # Other ratios (from metrics) come without their sample size.
    DetectorRule(
        name="ratios",
        match=("*:ratio",),
        detector="ensemble",
        alert=replace(SEASONAL_ALERT, direction="up", min_absolute_deviation=0.02),
    ),
    _latency_rule("latencies_ms", "milliseconds", 1.0),
    _latency_rule("latencies_s", "seconds", 0.001),
    DetectorRule(name="default", detector="ensemble", alert=SEASONAL_ALERT),
)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Everything the engine needs; ``clock`` returns seconds and is injected (never read here).

    Parameters
    ----------
    clock
        Ingest-time clock in seconds, used only for series expiry (TTL), never for scoring.
    rules
        Detector routing, first match wins; the last rule should match ``*``.
    max_series
        Hard cap on scored series; points of new series beyond it are rejected.
    series_ttl_s
        A series not updated for this long (ingest time) is evicted and its state freed.
    traces_window_s, logs_window_s
        Width of the event-time windows that RED and log-rate features are computed over.
    lateness_s
        How long after a window's end late spans or records are still accepted.
    span_outliers
        Score every span's duration against its operation's baseline.
    deploy_grace_s
        After a service reports a ``service.version`` not seen before, its series raise no
        flag for this long (event time) while their level offsets learn the new level;
        0 disables deploy awareness.
    latest_event_time
        Returns the latest event time (ns) an OTLP item may carry, e.g. the wall clock plus
        a grace; later items are rejected (``future_timestamp``). ``None`` (backtests): only
        the fixed bound of the year 2116 applies.
    silence_after_s
        A service that reported regularly and then sends nothing for this long (ingest
        clock) is reported as silent, when the exporter checks (``Engine.check_silence``);
        0 disables.
    """

    clock: Callable[[], float]
    rules: tuple[DetectorRule, ...] = DEFAULT_RULES
    max_series: int = 100_000
    series_ttl_s: float = 3600.0
    traces_window_s: float = 10.0
    logs_window_s: float = 10.0
    lateness_s: float = 5.0
    span_outliers: bool = True
    deploy_grace_s: float = 900.0
    promote_resource_attributes: tuple[str, ...] = ()
    multivariate: MultivariateSettings | None = None  # None: MultivariateSettings()
    latest_event_time: Callable[[], int] | None = None
    silence_after_s: float = 300.0
