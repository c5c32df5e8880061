"""Which services' operations are already measured from their spans.

A Collector that runs the spanmetrics connector often sends its output beside the traces
it came from. Scoring both would score every operation twice: once from the spans, once
from the connector's ``calls`` and ``duration`` metrics (with an extra ``status_code``
label), and page twice for one incident. The spans win while they arrive: they carry the
sample sizes behind error ratios and the trace ids of slow spans. The connector's metrics
of a service are scored only when its spans have not been seen for ``horizon_s`` (the
silence after which the service would count as no longer reporting), for instance when
the Collector forwards spanmetrics but samples the traces away.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from otel_anomaly.processors.types import Labels

SPANMETRICS_SCOPE = "spanmetricsconnector"
"""The instrumentation scope the spanmetrics connector puts on every metric it builds."""

_MAX_SERVICES = 100_000  # services come from clients: bound the table


class SpanCoverage:
    """When each service last sent spans, on the ingest clock (seconds).

    Examples
    --------
    >>> coverage = SpanCoverage(horizon_s=300.0)
    >>> checkout = (("service.name", "checkout"),)
    >>> coverage.saw_spans([checkout], now=1000.0)
    >>> coverage.covers(checkout, now=1200.0), coverage.covers(checkout, now=1400.0)
    (True, False)
    """

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self._last_spans: dict[Labels, float] = {}

    def saw_spans(self, services: Iterable[Labels], now: float) -> None:
        """Note that ``services`` sent spans at ``now``."""
        for service in services:
            self._last_spans[service] = now
        if len(self._last_spans) > _MAX_SERVICES:
            self.expire(now)

    def covers(self, service: Labels, now: float) -> bool:
        """Whether ``service``'s operations are measured from its spans at ``now``."""
        last = self._last_spans.get(service)
        return last is not None and now - last <= self.horizon_s

    def expire(self, now: float) -> None:
        """Forget services whose spans stopped more than ``horizon_s`` ago."""
        self._last_spans = {s: t for s, t in self._last_spans.items()
                            if now - t <= self.horizon_s}

    def shift_clock(self, delta: float) -> None:
        """Move every time by ``delta`` seconds (the ingest clock restarted)."""
        self._last_spans = {s: t + delta for s, t in self._last_spans.items()}

    def state_dict(self) -> dict[str, Any]:
        """The table as JSON-able lists."""
        return {"services": [[list(map(list, s)), t] for s, t in self._last_spans.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the table saved by ``state_dict``."""
        self._last_spans = {tuple((str(k), str(v)) for k, v in service): float(t)
                            for service, t in state["services"]}
