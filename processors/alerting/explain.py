"""One-line explanations of anomaly events, for people."""

from __future__ import annotations

import math

from otel_anomaly.processors.alerting.calibration_kernels import resolved_whole
from otel_anomaly.processors.alerting.silence import duration_text
from otel_anomaly.processors.multivariate.stage import Attribution
from otel_anomaly.processors.types import SeriesKey


def series_name(key: SeriesKey) -> str:
    """``metric{service="checkout", span.name="GET /"}``: short and unambiguous."""
    parts = [f'{k}="{v}"' for k, v in key.resource if k == "service.name"]
    parts += [f'{k}="{v}"' for k, v in key.attributes]
    return f"{key.metric}{{{', '.join(parts)}}}" if parts else key.metric


def _num(x: float) -> str:
    return f"{x:.4g}"


# Unit suffixes of Prometheus-normalised names, as a person writes them.
_UNITS = (("_milliseconds", "ms"), ("_seconds", "s"), ("_bytes", "B"), ("_percent", "%"))
_FEATURES = {"mean": "mean", "rate": "rate", "ratio": "ratio"}


_DERIVED = frozenset({"rate", "ratio", "mean", "score", "silence_seconds"})


def split_feature(metric: str) -> tuple[str, str]:
    """A ``metric`` label's source name and the feature the sidecar derived from it.

    Only the sidecar's own suffixes count: a colon is also part of names such as a
    Prometheus recording rule's (``job:http_requests:rate5m``, remote-written).

    >>> split_feature("http_server_duration_milliseconds:p99"), split_feature("job:x:rate5m")
    (('http_server_duration_milliseconds', 'p99'), ('job:x:rate5m', ''))
    >>> split_feature("job:x:rate5m:rate")
    ('job:x:rate5m', 'rate')
    """
    base, _, feature = metric.rpartition(":")
    quantile = feature.startswith("p") and feature[1:].isdigit()
    if base and (feature in _DERIVED or quantile):
        return base, feature
    return metric, ""


def metric_unit(metric: str) -> tuple[str, str, float]:
    """What a ``metric`` label's value is: a short feature name, its unit and display scale.

    >>> metric_unit("http_server_duration_milliseconds:p99")
    ('p99', 'ms', 1.0)
    >>> metric_unit("traces_span_metrics_error:ratio")
    ('ratio', '%', 100.0)
    >>> metric_unit("http_server_requests_total:rate")
    ('rate', '/s', 1.0)
    >>> metric_unit("queue_depth"), metric_unit("job:request_duration_seconds:mean5m")
    (('value', '', 1.0), ('value', '', 1.0))
    """
    base, feature = split_feature(metric)
    if feature == "rate":
        return "rate", "/s", 1.0
    if feature == "ratio" or base.endswith("_ratio"):
        return _FEATURES.get(feature, feature or "value"), "%", 100.0
    label = feature if feature.startswith("p") and feature[1:].isdigit() else (
        _FEATURES.get(feature, feature or "value"))
    for suffix, unit in _UNITS:
        if base.endswith(suffix):
            return label, unit, 1.0
    return label, "", 1.0


# What a ratio's sample counts, by the metric's base name: (numerator, denominator).
_COUNTED = {"traces_span_metrics_error": ("error", "call"),
            "logs_error": ("error record", "record")}


# What a rate counts, by the metric's base name (anything else counts events).
_RATE_EVENTS = {"traces_span_metrics_calls_total": "call", "logs_records_total": "log record"}


def _events(metric: str, value: float, seconds: float) -> str:
    """`` (4 events in 1m)``: a rate's events over the interval it was counted over.

    Empty unless the rate came with its seconds and counted whole events (a counter of
    seconds or bytes is no count of events).

    >>> _events("app_errors_total:rate", 4 / 60, 60.0), _events("x:rate", 0.41, 60.0)
    (' (4 events in 1m)', '')
    """
    if not (math.isfinite(seconds) and seconds > 0 and math.isfinite(value)
            and resolved_whole(value, seconds)):  # the calibrator's test of a count
        return ""
    noun = _RATE_EVENTS.get(split_feature(metric)[0], "event")
    n = round(value * seconds)
    return f" ({n} {noun}{'' if n == 1 else 's'} in {duration_text(seconds)})"


def _counted(metric: str, value: float, count: float) -> str:
    """``12 errors in 40 calls (30%)``: a ratio with its sample size, as counts."""
    hit, of = _COUNTED.get(split_feature(metric)[0], ("error", "sample"))
    n = round(count)
    k = round(value * count)
    return (f"{k} {hit}{'' if k == 1 else 's'} in {n} {of}{'' if n == 1 else 's'} "
            f"({value * 100:.3g}%)")


def _change(value: float, expected: float) -> str:
    """``+171%``, ``-45%`` or ``3.2x`` next to the expected value (empty if meaningless)."""
    if not expected > 0 or not value >= 0:
        return ""
    ratio = value / expected
    return f"{ratio:.2g}x" if ratio >= 2 else f"{ratio - 1:+.0%}"


def explain(
    kind: str, key: SeriesKey, *, value: float, expected: float, lower: float, upper: float,
    score: float, detector: str, agreeing: tuple[str, ...] = (), baseline: bool = False,
    count: float = math.nan, drift: float = math.nan,
) -> str:
    """Describe an open, update or close event in one line, in the series' own unit.

    ``baseline``: a close because the detector has taken the new level in (the value is
    still where the anomaly took it), not because the value came back. ``count``: a
    ratio's sample size (calls, log records), said in counts when known; a rate's seconds,
    its events then said too. ``drift``: the
    value still moves away (a leak) at this rate per hour; its sign is said, when known.

    Examples
    --------
    >>> key = SeriesKey("http_server_duration_milliseconds:p99", (("service.name", "api"),), ())
    >>> print(explain("open", key, value=840, expected=310, lower=250, upper=390, score=7.6,
    ...               detector="ensemble", agreeing=("daily profile", "level")))
    http_server_duration_milliseconds:p99{service.name="api"}: p99 840 ms, above the expected
    310 ms (2.7x; band 250 to 390 ms), 7.6x the band half-width, by ensemble (daily profile
    and level agree)

    A value that keeps moving away (a leak) says so:

    >>> print(explain("update", key, value=840, expected=310, lower=250, upper=390, score=7.6,
    ...               detector="ensemble", drift=120))
    http_server_duration_milliseconds:p99{service.name="api"}: p99 840 ms, above the expected
    310 ms (2.7x; band 250 to 390 ms), 7.6x the band half-width, by ensemble; still rising
    >>> key = SeriesKey("traces_span_metrics_error:ratio", (("service.name", "cart"),), ())
    >>> print(explain("close", key, value=0.01, expected=0.012, lower=0, upper=0.05, score=0.1,
    ...               detector="ensemble"))
    traces_span_metrics_error:ratio{service.name="cart"}: back to normal, ratio 1% vs expected
    1.2% (band 0 to 5%)

    With the calls behind the ratio, it is said in counts:

    >>> print(explain("open", key, value=0.3, expected=0.005, lower=0, upper=0.12, score=2.5,
    ...               detector="binomial_ratio", count=40))
    traces_span_metrics_error:ratio{service.name="cart"}: 12 errors in 40 calls (30%), usual
    0.5% (band up to 12% for 40 calls), 2.5x the band half-width, by binomial_ratio

    A rate counted over known seconds says its events:

    >>> key = SeriesKey("app_errors_total:rate", (("service.name", "cart"),), ())
    >>> print(explain("open", key, value=0.1, expected=0.02, lower=0, upper=0.06, score=2.0,
    ...               detector="ensemble", count=60))
    app_errors_total:rate{service.name="cart"}: rate 0.1/s (6 events in 1m), above the expected
    0.02/s (5x; band 0 to 0.06/s), 2x the band half-width, by ensemble
    """
    name = series_name(key)
    feature, unit, scale = metric_unit(key.metric)
    space = "" if unit in ("%", "/s") else " "

    def show(x: float) -> str:
        return f"{_num(x * scale)}{space}{unit}".rstrip()

    band = f"band {_num(lower * scale)} to {show(upper)}"
    seen = f"{feature} {show(value)}"
    if unit == "/s":
        seen += _events(key.metric, value, count)
    if unit == "%" and math.isfinite(count) and count > 0 and not baseline:
        return _explain_counted(kind, name, key.metric, value=value, expected=expected,
                                upper=upper, score=score, detector=detector, count=count)
    if kind == "close" and baseline:
        return (f"{name}: the new level is now the baseline, {feature} {show(value)} held "
                f"outside the band it left ({band}, expected {show(expected)}) until the "
                "detector accepted it as normal")
    if kind == "close":
        return f"{name}: back to normal, {seen} vs expected {show(expected)} ({band})"
    side = "above" if value >= expected else "below"
    change = _change(value, expected)
    detail = f"{change}; {band}" if change else band
    members = ""
    if len(agreeing) == 1:
        members = f" ({agreeing[0]})"
    elif agreeing:
        members = f" ({', '.join(agreeing[:-1])} and {agreeing[-1]} agree)"
    # Only the direction: the trend's slope lags a fresh ramp (its fit still holds the
    # flat hour before it), so a figure would understate a young leak several times over.
    moving = ""
    if math.isfinite(drift) and drift != 0:
        moving = f"; still {'rising' if drift > 0 else 'falling'}"
    return (
        f"{name}: {seen}, {side} the expected {show(expected)} ({detail}), "
        f"{score:.2g}x the band half-width, by {detector}{members}{moving}"
    )


def _explain_counted(
    kind: str, name: str, metric: str, *, value: float, expected: float, upper: float,
    score: float, detector: str, count: float,
) -> str:
    """A ratio event in counts: 1 error in 4 calls is not 25 errors in 100."""
    seen = _counted(metric, value, count)
    usual = f"usual {expected * 100:.2g}%"
    if kind == "close":
        return f"{name}: back to normal, {seen}, {usual}"
    # The band depends on the calls: say where it was for these.
    of = _COUNTED.get(split_feature(metric)[0], ("error", "sample"))[1]
    return (f"{name}: {seen}, {usual} (band up to {upper * 100:.3g}% for {round(count)} "
            f"{of}{'' if round(count) == 1 else 's'}), {score:.2g}x the band half-width, "
            f"by {detector}")


def service_name(key: SeriesKey) -> str:
    """``namespace/name`` of the service a series belongs to, as the ``job`` label shows it."""
    resource = dict(key.resource)
    name, namespace = resource.get("service.name", "?"), resource.get("service.namespace", "")
    return f"{namespace}/{name}" if namespace else name


def explain_multivariate(kind: str, key: SeriesKey, *, score: float, why: Attribution) -> str:
    """Describe an event on a service's multivariate score, naming the top features.

    Examples
    --------
    >>> from otel_anomaly.processors.multivariate import FeatureShare
    >>> key = SeriesKey("service_multivariate:score", (("service.name", "checkout"),),
    ...                 (("model", "pca"),))
    >>> why = Attribution("pca", (FeatureShare("error ratio", 0.81, "0.35", "0.012"),
    ...                           FeatureShare("p95 latency (ms)", 0.15, "820", "120")))
    >>> print(explain_multivariate("open", key, score=7.2, why=why))
    service checkout: unusual mix of features, error ratio contributes 81% (0.35, usual
    0.012), then p95 latency (ms) 15% (820, usual 120); multivariate score 7.2x the band
    half-width, by pca

    A close after the model took a lasting change in as normal says so:

    >>> print(explain_multivariate("close", key, score=0.5, why=Attribution("pca", (), 14400)))
    service checkout: the new mix of features is now the baseline, unusual for 4h until the
    model accepted it as normal, by pca
    """
    service = service_name(key)
    if kind == "close" and why.baseline_after_s > 0:
        return (f"service {service}: the new mix of features is now the baseline, unusual for "
                f"{duration_text(why.baseline_after_s)} until the model accepted it as normal, "
                f"by {why.model}")
    if kind == "close":
        return f"service {service}: features back to their usual mix, by {why.model}"
    parts = [f"{f.share:.0%} ({f.value}, usual {f.usual})" for f in why.top]
    named = [f"{f.label} contributes {part}" if i == 0 else f"then {f.label} {part}"
             for i, (f, part) in enumerate(zip(why.top, parts, strict=True))]
    mix = ", ".join(["unusual mix of features", *named])
    return (f"service {service}: {mix}; multivariate score {score:.2g}x the band half-width, "
            f"by {why.model}")
