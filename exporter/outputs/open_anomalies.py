"""OpenAnomalies: the id, explanation and held band of every open anomaly, for the info gauge.

``otel_anomaly_open_info`` is 1 for each open anomaly, with its series' labels and the
``INFO_LABELS`` of its latest open or update event, so an alert can join
``otel_anomaly_flag`` with it and say why in words. Open and update events set an
anomaly's labels, its close or its series' eviction removes them: one label set per open
anomaly, never more (an update replaces the labels of its anomaly; updates come at most
once per ``alert.update_interval``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Container, Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.prometheus_names import prometheus_labels
from otel_anomaly.processors.types import AnomalyEvent, Labels

INFO_LABELS = (
    "anomaly_id", "anomaly_direction", "anomaly_expected", "anomaly_lower", "anomaly_upper",
    "anomaly_explanation",
)
"""Labels the info gauge adds to the series' own (they win over a point attribute of the
same name; alerts match with ``ignoring(<these>)``, so such a clash still joins)."""


def number_text(value: float) -> str:
    """A band edge or expected value as label text: six significant digits.

    >>> number_text(1234.56789), number_text(0.000123456789), number_text(float("nan"))
    ('1234.57', '0.000123457', 'NaN')
    """
    return "NaN" if math.isnan(value) else format(value, ".6g")


def info_labels(event: AnomalyEvent, series: Labels) -> dict[str, str]:
    """The info gauge's labels of ``event``'s anomaly: ``series`` then ``INFO_LABELS``.

    ``lower`` and ``upper`` are the band the anomaly is held against (the event's), which
    for a held anomaly differ from the series' exported ``otel_anomaly_lower`` / ``_upper``.
    """
    labels = dict(series)
    labels.update({
        "anomaly_id": event.anomaly_id,
        "anomaly_direction": event.direction,
        "anomaly_expected": number_text(event.expected),
        "anomaly_lower": number_text(event.lower),
        "anomaly_upper": number_text(event.upper),
        "anomaly_explanation": event.explanation,
    })
    return labels


class OpenAnomalies:
    """The info labels of every open anomaly, by anomaly id (and the slot it is on).

    Written by one thread (the Prometheus output's ``publish``), read by scrapes through
    ``snapshot``, which copies under the lock.

    Examples
    --------
    >>> from otel_anomaly.processors.types import SeriesKey
    >>> key = SeriesKey("cpu", (("service.name", "checkout"),), ())
    >>> opened = AnomalyEvent("open", 3, key, 1, "up", 4.0, 9.0, 5.0, 4.0, 6.0, "ewma_zscore",
    ...                       "cpu up", anomaly_id="a1")
    >>> table = OpenAnomalies()
    >>> table.apply([opened], {3: (("job", "checkout"), ("metric", "cpu"))})
    >>> [(labels["job"], labels["anomaly_id"], labels["anomaly_upper"])
    ...  for labels in table.snapshot()]
    [('checkout', 'a1', '6')]
    >>> table.evict(np.array([3])); table.snapshot()
    []
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, tuple[int, dict[str, str]]] = {}
        self._by_slot: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def apply(self, events: Iterable[AnomalyEvent], labels: Mapping[int, Labels]) -> None:
        """Open and update events set their anomaly's labels; close events remove them.

        ``labels``: the Prometheus labels of the round's scored slots
        (``ScoringRound.labels``); an event on no scored slot (a silent service) gets
        labels of its own key.
        """
        for event in events:
            if not event.anomaly_id:
                continue
            with self._lock:
                if event.kind == "close":
                    self._remove(event.anomaly_id)
                    continue
                series = labels.get(event.slot)
                if series is None:
                    series = prometheus_labels(event.key, event.detector)
                if event.slot >= 0:
                    earlier = self._by_slot.get(event.slot)
                    if earlier is not None and earlier != event.anomaly_id:
                        self._remove(earlier)  # the slot's earlier anomaly never closed
                    self._by_slot[event.slot] = event.anomaly_id
                self._by_id[event.anomaly_id] = (event.slot, info_labels(event, series))

    def evict(self, slots: NDArray[np.intp]) -> None:
        """Forget the open anomalies of evicted slots (an evicted series sends no close)."""
        if not len(slots) or not self._by_slot:
            return
        with self._lock:
            for slot in np.unique(slots).tolist():
                anomaly = self._by_slot.get(slot)
                if anomaly is not None:
                    self._remove(anomaly)

    def _remove(self, anomaly: str) -> None:
        slot, _ = self._by_id.pop(anomaly, (-1, {}))
        if self._by_slot.get(slot) == anomaly:
            del self._by_slot[slot]

    def snapshot(self, shown: Container[int] | None = None) -> list[dict[str, str]]:
        """Label sets of the open anomalies; with ``shown``, only of those slots' series.

        Anomalies on no slot (a silent service) are always included.
        """
        with self._lock:
            return [labels for slot, labels in self._by_id.values()
                    if shown is None or slot < 0 or slot in shown]
