"""One-line explanations of anomaly events, for people."""

from __future__ import annotations

from otel_anomaly.processors.multivariate.stage import Attribution
from otel_anomaly.processors.types import SeriesKey


def series_name(key: SeriesKey) -> str:
    """``metric{service="checkout", span.name="GET /"}``: short and unambiguous."""
    parts = [f'{k}="{v}"' for k, v in key.resource if k == "service.name"]
    parts += [f'{k}="{v}"' for k, v in key.attributes]
    return f"{key.metric}{{{', '.join(parts)}}}" if parts else key.metric


def _num(x: float) -> str:
    return f"{x:.4g}"


def explain(
    kind: str, key: SeriesKey, *, value: float, expected: float, lower: float, upper: float,
    score: float, detector: str,
) -> str:
    """Describe an open, update or close event in one line.

    Examples
    --------
    >>> key = SeriesKey("http_server_duration_milliseconds:p99", (("service.name", "api"),), ())
    >>> print(explain("open", key, value=840, expected=310, lower=250, upper=390, score=7.6,
    ...               detector="ewma_zscore"))
    http_server_duration_milliseconds:p99{service.name="api"} is 840, above the expected 310
    (band 250 to 390): 7.6x the band half-width, by ewma_zscore
    """
    name = series_name(key)
    band = f"(band {_num(lower)} to {_num(upper)})"
    if kind == "close":
        return f"{name} is back to normal: {_num(value)} vs expected {_num(expected)} {band}"
    side = "above" if value >= expected else "below"
    return (
        f"{name} is {_num(value)}, {side} the expected {_num(expected)} {band}: "
        f"{score:.2g}x the band half-width, by {detector}"
    )


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
    """
    service = service_name(key)
    if kind == "close":
        return f"service {service}: features back to their usual mix, by {why.model}"
    parts = [f"{f.share:.0%} ({f.value}, usual {f.usual})" for f in why.top]
    named = [f"{f.label} contributes {part}" if i == 0 else f"then {f.label} {part}"
             for i, (f, part) in enumerate(zip(why.top, parts, strict=True))]
    mix = ", ".join(["unusual mix of features", *named])
    return (f"service {service}: {mix}; multivariate score {score:.2g}x the band half-width, "
            f"by {why.model}")
