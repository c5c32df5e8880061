"""Services that stopped reporting: silence is a signal of its own, not a rate of zero.

Every request marks the services it carries as seen, on the ingest clock. A service that
reported regularly (at least ``MIN_REPORTS`` requests) and then sends nothing for
``silence_after_s``, and for at least ``USUAL_INTERVALS`` of its usual interval between
requests, opens an anomaly on ``service_reporting:silence_seconds``; its next request closes
it. Services are keyed by ``service.namespace`` and ``service.name``, not by instance: an
instance replaced in a rollout has not gone silent.

Nothing here reads a clock. The exporter's worker calls ``check`` on a periodic tick, so a
backtest (which never ticks) and a sidecar that is stopping (which no longer does) raise
no silence.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from otel_anomaly.processors.state.codec import as_labels
from otel_anomaly.processors.types import AnomalyEvent, EventKind, Labels, SeriesKey, anomaly_id

SILENCE_METRIC = "service_reporting:silence_seconds"
SILENCE_DETECTOR = "silence"
MIN_REPORTS = 3
USUAL_INTERVALS = 3.0
_ALPHA = 0.1  # weight of the newest gap in a service's usual interval


class _Service:
    __slots__ = ("last_seen", "opened_ns", "reports", "resumed", "silent", "usual")

    def __init__(self, now: float) -> None:
        self.last_seen = now
        self.reports = 1
        self.usual = 0.0  # seconds between requests, a running average
        self.silent = False
        self.resumed = False
        self.opened_ns = 0  # the stamp of the open silence's open event


def duration_text(seconds: float) -> str:
    """A duration as people write it.

    >>> duration_text(300), duration_text(90.4), duration_text(3725), duration_text(0.25)
    ('5m', '1m30s', '1h2m5s', '0.25s')
    """
    if seconds < 1:
        return f"{seconds:.2g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def service_text(service: Labels) -> str:
    """``namespace/name`` (or just the name), as the ``job`` label reads."""
    names = dict(service)
    name = names.get("service.name", "unknown service")
    namespace = names.get("service.namespace")
    return f"{namespace}/{name}" if namespace else name


class SilenceWatch:
    """When each service last reported, and which ones stopped.

    Parameters
    ----------
    silence_after_s
        Seconds without a request before a regular reporter counts as silent; 0 disables.
    max_services
        Services tracked at most; further ones are not watched.

    Examples
    --------
    >>> watch = SilenceWatch(silence_after_s=60, max_services=10)
    >>> checkout = (("service.name", "checkout"),)
    >>> for now in (0.0, 10.0, 20.0, 30.0):
    ...     watch.seen([checkout], now)
    >>> watch.check(now=80.0, ts_unix_nano=0)
    []
    >>> [e.explanation for e in watch.check(now=95.0, ts_unix_nano=0)]
    ['checkout stopped reporting (no data for 1m5s, usually every 10s)']
    >>> watch.seen([checkout], now=100.0)
    >>> [(e.kind, e.explanation) for e in watch.check(now=101.0, ts_unix_nano=0)]
    [('close', 'checkout reports again (after 1m10s without data)')]
    """

    def __init__(self, silence_after_s: float, max_services: int) -> None:
        self.silence_after_s = silence_after_s
        self.max_services = max_services
        self._services: dict[Labels, _Service] = {}
        self._gaps: dict[Labels, float] = {}  # silent services: how long they were quiet

    @property
    def silent(self) -> int:
        """Services currently silent."""
        return sum(state.silent for state in self._services.values())

    def seen(self, services: Iterable[Labels], now: float) -> None:
        """Mark ``services`` as reporting at ingest time ``now`` (seconds)."""
        if self.silence_after_s <= 0:
            return
        for service in services:
            state = self._services.get(service)
            if state is None:
                if len(self._services) < self.max_services:
                    self._services[service] = _Service(now)
                continue
            gap = now - state.last_seen
            if state.silent:
                # The gap that ends a silence is not a usual interval.
                if not state.resumed:
                    self._gaps[service] = gap
                state.resumed = True
            elif gap > 0:
                state.usual = gap if state.reports == 1 else state.usual + _ALPHA * (
                    gap - state.usual)
                state.reports += 1
            state.last_seen = max(state.last_seen, now)

    def check(self, now: float, ts_unix_nano: int) -> list[AnomalyEvent]:
        """Open an anomaly for each service that fell silent, close it for each that resumed.

        ``now`` is the ingest clock (seconds); ``ts_unix_nano`` stamps the events.
        """
        events: list[AnomalyEvent] = []
        if self.silence_after_s <= 0:
            return events
        for service, state in self._services.items():
            if state.silent and state.resumed:
                state.silent = state.resumed = False
                quiet = self._gaps.pop(service, 0.0)
                text = f"{service_text(service)} reports again (after {duration_text(quiet)} " \
                       "without data)"
                events.append(self._event("close", service, state, quiet, ts_unix_nano, text))
                continue
            quiet = now - state.last_seen
            if (state.silent or state.reports < MIN_REPORTS
                    or quiet < max(self.silence_after_s, USUAL_INTERVALS * state.usual)):
                continue
            state.silent = True
            state.opened_ns = ts_unix_nano
            text = (f"{service_text(service)} stopped reporting (no data for "
                    f"{duration_text(quiet)}, usually every {duration_text(state.usual)})")
            events.append(self._event("open", service, state, quiet, ts_unix_nano, text))
        return events

    def _event(
        self, kind: EventKind, service: Labels, state: _Service, quiet: float, ts: int,
        text: str,
    ) -> AnomalyEvent:
        key = SeriesKey(SILENCE_METRIC, service, ())
        return AnomalyEvent(
            kind=kind, slot=-1, key=key, ts_unix_nano=max(ts, state.opened_ns),
            direction="down", score=quiet / self.silence_after_s, value=quiet,
            expected=state.usual, lower=0.0, upper=self.silence_after_s,
            detector=SILENCE_DETECTOR, explanation=text,
            anomaly_id=anomaly_id(key, state.opened_ns),
        )

    def expire(self, now: float, ttl_s: float) -> None:
        """Forget services quiet for longer than ``ttl_s``, unless they are silent now."""
        stale = [service for service, state in self._services.items()
                 if now - state.last_seen > ttl_s and not state.silent]
        for service in stale:
            del self._services[service]

    def state_dict(self) -> dict[str, Any]:
        """Each watched service's reporting history, and the gaps of silent ones."""
        return {"services": [(service, s.last_seen, s.reports, s.usual, s.silent, s.resumed,
                              s.opened_ns) for service, s in self._services.items()],
                "gaps": list(self._gaps.items())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict`` (the settings stay this watch's own)."""
        services: dict[Labels, _Service] = {}
        for service, last_seen, reports, usual, silent, resumed, opened in state["services"]:
            watched = services[as_labels(service)] = _Service(float(last_seen))
            watched.reports, watched.usual = int(reports), float(usual)
            watched.silent, watched.resumed = bool(silent), bool(resumed)
            watched.opened_ns = int(opened)
        self._services = services
        self._gaps = {as_labels(service): float(gap) for service, gap in state["gaps"]}

    def shift_clock(self, delta: float) -> None:
        """Move every "last seen" by ``delta`` seconds (after a restore)."""
        for state in self._services.values():
            state.last_seen += delta
