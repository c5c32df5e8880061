"""OTel to Prometheus names and labels, after the OpenTelemetry compatibility rules.

Metric names: characters outside ``[a-zA-Z0-9_:]`` become ``_``; the unit is appended as a
suffix (``ms`` -> ``milliseconds``); unit ``1`` on a gauge becomes ``_ratio``; monotonic sums
end in ``_total``. Labels: ``job`` is ``service.namespace/service.name``, ``instance`` is
``service.instance.id``; attribute names have invalid characters replaced by ``_``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from otel_anomaly.processors.types import Labels, SeriesKey

_INVALID_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]+")
_MULTI_UNDERSCORE = re.compile(r"__+")

# From the collector-contrib prometheus translator's unit map (the common subset).
_UNIT_WORDS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes",
    "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes", "m": "meters", "V": "volts",
    "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "%": "percent",
}
_PER_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}


def _unit_suffix(unit: str) -> str:
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()  # annotations like {requests} carry no unit
    if not unit or unit == "1":
        return ""
    if "/" in unit:
        num, _, per = unit.partition("/")
        num_word = _UNIT_WORDS.get(num, num)
        per_word = _PER_WORDS.get(per, per)
        return f"{num_word}_per_{per_word}" if num_word else f"per_{per_word}"
    return _UNIT_WORDS.get(unit, unit)


@lru_cache(maxsize=65536)
def prometheus_metric_name(name: str, unit: str, *, monotonic_sum: bool, gauge: bool) -> str:
    """Return the Prometheus name of an OTel metric.

    Examples
    --------
    >>> prometheus_metric_name("http.server.duration", "ms", monotonic_sum=False, gauge=False)
    'http_server_duration_milliseconds'
    >>> prometheus_metric_name("app.requests", "{requests}", monotonic_sum=True, gauge=False)
    'app_requests_total'
    >>> prometheus_metric_name("system.cpu.utilization", "1", monotonic_sum=False, gauge=True)
    'system_cpu_utilization_ratio'
    """
    base = _MULTI_UNDERSCORE.sub("_", _INVALID_METRIC_CHARS.sub("_", name)).strip("_") or "metric"
    if base[0].isdigit():
        base = "_" + base
    words = base.split("_")
    suffix = _INVALID_METRIC_CHARS.sub("_", _unit_suffix(unit)).strip("_")
    if suffix and suffix not in words:
        base = f"{base}_{suffix}"
    if monotonic_sum:
        base = base.removesuffix("_total") + "_total"
    elif gauge and unit.strip() == "1" and not base.endswith("_ratio"):
        base += "_ratio"
    return base


@lru_cache(maxsize=65536)
def prometheus_label_name(name: str) -> str:
    """Return a valid Prometheus label name for an attribute name.

    Examples
    --------
    >>> prometheus_label_name("http.response.status_code")
    'http_response_status_code'
    >>> prometheus_label_name("0day")
    'key_0day'
    """
    label = _INVALID_LABEL_CHARS.sub("_", name)
    if not label or label[0].isdigit():
        label = "key_" + label
    return label


_RESERVED = frozenset({"metric", "detector", "job", "instance"})
IDENTIFYING_ATTRIBUTES = ("host.name", "k8s.namespace.name", "k8s.pod.name", "container.name")
"""Resource attributes that tell replicas apart, always labels when present: SDK resource
detectors set ``host.name`` while ``service.instance.id`` is often missing, and two hosts
of one service would otherwise share one label set (one of them hidden from scrapes)."""


def attribute_label_name(name: str) -> str:
    """The label an attribute becomes: valid, and never one the sidecar or Prometheus owns.

    >>> attribute_label_name("__name__"), attribute_label_name("job"), attribute_label_name("k.v")
    ('attr___name__', 'attr_job', 'k_v')
    """
    label = prometheus_label_name(name)
    return "attr_" + label if label in _RESERVED or label.startswith("__") else label


def prometheus_labels(key: SeriesKey, detector: str, promote: tuple[str, ...] = ()) -> Labels:
    """Labels of a scored series as the exporter shows them, sorted by name.

    ``IDENTIFYING_ATTRIBUTES`` and the ``promote`` list of resource attributes become labels
    when present. Point attributes that clash with a reserved label get an ``attr_`` prefix, so the
    sidecar's own labels are never overwritten; so do names starting with ``__``, which
    Prometheus reserves (a ``__name__`` label fails the whole scrape).

    >>> key = SeriesKey("m", (), (("__name__", "x"), ("job", "y"), ("ok", "z")))
    >>> [name for name, _ in prometheus_labels(key, "ensemble")]
    ['attr___name__', 'attr_job', 'detector', 'metric', 'ok']
    """
    resource = dict(key.resource)
    labels: dict[str, str] = {"metric": key.metric, "detector": detector}
    service = resource.get("service.name", "")
    namespace = resource.get("service.namespace", "")
    job = f"{namespace}/{service}" if namespace and service else service
    if job:
        labels["job"] = job
    instance = resource.get("service.instance.id", "")
    if instance:
        labels["instance"] = instance
    # An empty value is no label to Prometheus (``{a=""}`` is ``{}``): kept, it would make
    # two series that Prometheus stores as one look distinct here, and one would be lost.
    for name in (*IDENTIFYING_ATTRIBUTES, *promote):
        if resource.get(name):
            labels.setdefault(attribute_label_name(name), resource[name])
    for name, value in key.attributes:
        if value:
            labels.setdefault(attribute_label_name(name), value)
    return tuple(sorted(labels.items()))
