"""One-line explanations of anomaly events, for people."""

from __future__ import annotations

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
