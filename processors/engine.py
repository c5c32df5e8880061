"""The engine: OTLP requests in, scores and anomaly events out. One owner, one thread.

Not thread-safe by design: the exporter's pipeline worker is its only caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from google.protobuf.message import Message
from numpy.typing import NDArray
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_anomaly.processors.alerting.deploys import DeployTracker
from otel_anomaly.processors.alerting.explain import explain_multivariate
from otel_anomaly.processors.alerting.feedback import (
    FeedbackBook,
    Judged,
    Silence,
    Verdict,
)
from otel_anomaly.processors.alerting.held_band import hold_ns
from otel_anomaly.processors.alerting.scorer import Scorer
from otel_anomaly.processors.alerting.silence import SilenceWatch
from otel_anomaly.processors.multivariate import (
    MULTIVARIATE_METRIC,
    Attribution,
    MultivariateSettings,
    MultivariateStage,
)
from otel_anomaly.processors.series.index import SeriesIndex
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.adapter import AdapterContext, Signal, SignalAdapter
from otel_anomaly.processors.signals.cumulative_streams import SourceTable
from otel_anomaly.processors.signals.metrics import MetricsExtractor
from otel_anomaly.processors.signals.otlp_resources import (
    LATEST_EVENT_TIME_NS,
    labels_of,
    service_labels,
)
from otel_anomaly.processors.signals.registry import ADAPTERS
from otel_anomaly.processors.signals.span_coverage import SpanCoverage
from otel_anomaly.processors.signals.span_ids import SpanIds
from otel_anomaly.processors.signals.span_path import SpanPath
from otel_anomaly.processors.signals.traces import TracesExtractor
from otel_anomaly.processors.signals.wire_path import WirePath
from otel_anomaly.processors.types import (
    AnomalyEvent,
    IngestResult,
    Labels,
    Observations,
    SeriesBatch,
    SeriesKey,
    SlottedRows,
)

_SERVICE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Gauges and counters the exporter publishes as self-metrics."""

    series_active: int
    series_warming: int
    series_evicted_total: int
    points_scored_total: int
    multivariate_services: int = 0
    multivariate_skipped_total: int = 0
    deploys_total: int = 0
    services_silent: int = 0


class Engine:
    """Turns OTLP requests into scored series.

    Every signal ends in the same place: its adapter (``signals.adapter``) turns a request
    into ``Observations``, which go through ``ingest_series``'s scoring path, the one
    backtests use directly.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.index = SeriesIndex(settings.max_series)
        multivariate = settings.multivariate or MultivariateSettings()
        self.scorer = Scorer(multivariate.rules(settings.rules),
                             settings.promote_resource_attributes, key_of=self.index.key)
        self._sources = SourceTable(settings.max_series)
        self.span_coverage = SpanCoverage(
            settings.silence_after_s if settings.silence_after_s > 0 else settings.series_ttl_s)
        context = AdapterContext(settings, self._sources, self.span_coverage)
        self.adapters: dict[Signal, SignalAdapter] = {
            signal: adapter.create(context) for signal, adapter in ADAPTERS.items()}
        metrics, traces = self.adapters["metrics"], self.adapters["traces"]
        # Requests that come with their bytes skip the per-point (per-span) Python walk.
        self.wire = WirePath(metrics, self.index) if isinstance(metrics, MetricsExtractor) else None
        self.spans = SpanPath(traces, self.index) if isinstance(traces, TracesExtractor) else None
        self.deploys = DeployTracker(settings.deploy_grace_s)
        # Per-service vectors span traces and logs: they share the traces window.
        # Its models hold lasting outliers as long as the score's rule holds the anomaly.
        self.multivariate = MultivariateStage(
            multivariate, int(settings.traces_window_s * 1e9),
            hold_ns(self.scorer.rules[self.scorer.rule_for(MULTIVARIATE_METRIC)].alert.lasting_s),
        ) if multivariate.enabled else None
        self.silence = SilenceWatch(settings.silence_after_s, settings.max_series)
        # Alert review: the scorer consults the book before its hysteresis.
        self.feedback = FeedbackBook()
        self.scorer.feedback = self.feedback
        self._evicted_total = 0
        # Each resource's service labels, one tuple for every series of the service
        # (the deploy tracker keeps one per series). Bounded: resources come from clients.
        self._services: dict[Labels, Labels] = {}  # by resource
        self._service_tuples: dict[Labels, Labels] = {}

    def _latest(self) -> int:
        """The latest event time an OTLP item of this request may carry (ns)."""
        limit = self.settings.latest_event_time
        return LATEST_EVENT_TIME_NS if limit is None else min(LATEST_EVENT_TIME_NS, limit())

    def ingest(self, signal: Signal, request: Message, data: bytes | None = None) -> IngestResult:
        """Extract, score and learn every item of one request of ``signal``.

        Metrics points are scored as they come; spans and log records go into windows,
        scored when their window closes. Every item the signal's adapter counts is either
        accepted or rejected in the result. ``data``: the serialized ``request``, when the
        receiver has it; a metrics request then takes the compiled path
        (``signals.wire_path``), a traces request ``signals.span_path``, with the same
        outcome.

        Raises
        ------
        ValueError
            If no adapter handles ``signal``, or ``request`` is not of its request type.
        """
        adapter = self.adapters.get(signal)
        if adapter is None:
            msg = f"no adapter for signal {signal!r}; known: {', '.join(self.adapters)}"
            raise ValueError(msg)
        if not isinstance(request, adapter.request_type):
            msg = (f"a {signal} request must be {adapter.request_type.__name__}, "
                   f"not {type(request).__name__}")
            raise ValueError(msg)
        result, out = IngestResult(), Observations()
        self._seen(adapter.resources(request))
        now, latest = self.settings.clock(), self._latest()
        if not (data is not None and self._compiled(signal, request, data, out, result, now,
                                                    latest)):
            adapter.extract(request, out, result, now, latest)
        self._score(out, result)
        return result

    def _compiled(self, signal: Signal, request: Message, data: bytes, out: Observations,
                  result: IngestResult, now: float, latest: int) -> bool:
        """Extract from the request's bytes if a compiled path takes them (else False)."""
        if signal == "metrics" and isinstance(request, ExportMetricsServiceRequest):
            return self.wire is not None and self.wire.extract(request, data, out, result, now,
                                                               latest)
        if signal == "traces" and isinstance(request, ExportTraceServiceRequest):
            return self.spans is not None and self.spans.extract(request, data, out, result,
                                                                 now, latest)
        return False

    def _seen(self, resources: Iterable[Resource]) -> None:
        if self.silence.silence_after_s > 0:
            services = {service_labels(labels_of(r.attributes)) for r in resources}
            self.silence.seen(services, self.settings.clock())

    def check_silence(self, ts_unix_nano: int) -> list[AnomalyEvent]:
        """Events for services that stopped reporting, or reported again, since the last check.

        The exporter calls this on a periodic tick while it runs (never at shutdown, never
        in backtests); ``ts_unix_nano`` (the wall clock) stamps the events.
        """
        return self.silence.check(self.settings.clock(), ts_unix_nano)

    def ingest_series(
        self,
        keys: Sequence[SeriesKey],
        ts_unix_nano: NDArray[np.int64],
        values: NDArray[np.float64],
        counts: NDArray[np.float64] | None = None,
    ) -> IngestResult:
        """Score already-extracted points (the path backtests and every signal share).

        Non-finite values are rejected as ``non_finite``; they are not learned. ``counts``:
        each point's sample size (``SeriesBatch.counts``: a ratio's calls or records, a
        rate's seconds), NaN or None where unknown.
        """
        # Copies: the scores returned must not alias the caller's arrays.
        ts = np.array(ts_unix_nano, np.int64)
        vals = np.array(values, np.float64)
        sizes = None if counts is None else np.array(counts, np.float64)
        if not len(keys) == len(ts) == len(vals) == (len(vals) if sizes is None else len(sizes)):
            msg = (f"ingest_series: keys, ts_unix_nano, values and counts must have equal "
                   f"length; got {len(keys)}, {len(ts)}, {len(vals)}, "
                   f"{'-' if sizes is None else len(sizes)}")
            raise ValueError(msg)
        result = IngestResult()
        finite = np.isfinite(vals)
        result.accepted = int(np.count_nonzero(finite))
        result.reject("non_finite", len(vals) - result.accepted)
        if result.accepted < len(vals):
            rows = np.flatnonzero(finite)
            keys = [keys[i] for i in rows.tolist()]
            ts, vals = ts[rows], vals[rows]
            sizes = None if sizes is None else sizes[rows]
        self._score_points(keys, ts, vals, {}, result, sizes)
        return result

    def observe_version(self, service: Labels, version: str, ts_unix_nano: int) -> None:
        """Note that ``service`` ran ``version`` at ``ts_unix_nano`` (event time).

        The first sight of a version not seen before for the service is a deploy: its
        series raise no flag for ``deploy_grace_s`` while they learn the new level. The
        OTLP paths call this from each resource's ``service.version``; backtests may too.
        """
        self.scorer.offsets.restart(self.deploys.observe(service, version, ts_unix_nano))

    def _score(self, out: Observations, result: IngestResult) -> None:
        for service, version, ts in out.versions:
            self.observe_version(service, version, ts)
        why = self.multivariate.observe(out, self.settings.clock(),
                                        self.deploys.service_in_grace) if self.multivariate else {}
        if out.slotted is None:
            self._score_points(out.keys, np.array(out.ts, np.int64),
                               np.array(out.values, np.float64), out.exemplars, result,
                               out.count_array(), per_request=True,
                               teaches=out.learned_array())
        else:
            self._score_merged(out, out.slotted, result)
        if why and result.events:
            result.events = [_explained(event, why) for event in result.events]

    def _score_merged(self, out: Observations, fast: SlottedRows, result: IngestResult) -> None:
        """Score walked rows (keys) and compiled rows (slots) together, in request order."""
        self.index.touch(fast.slots, self.settings.clock())
        walked = self._slots_of(out.keys)
        n_fast = len(fast.slots)
        slots = np.concatenate([fast.slots, walked])
        ts = np.concatenate([fast.ts_unix_nano, np.array(out.ts, np.int64)])
        values = np.concatenate([fast.values, np.array(out.values, np.float64)])
        counts = out.count_array()
        if counts is not None or fast.counts is not None:
            counts = np.concatenate([np.full(n_fast, np.nan) if fast.counts is None else
                                     fast.counts,
                                     np.full(len(walked), np.nan) if counts is None else counts])
        teaches = out.learned_array()
        if teaches is not None:
            teaches = np.concatenate([np.ones(n_fast, np.bool_), teaches])
        # The spans path's exemplars are read lazily (``SpanIds``): merged only if needed.
        exemplars = ({**fast.exemplars, **{n_fast + row: ids for row, ids in out.exemplars.items()}}
                     if out.exemplars else fast.exemplars)
        places = np.concatenate([fast.order, fast.walked_order(len(walked))])
        # The walked rows go back to their places among the compiled ones (if they are not
        # in place already: the spans path puts every outlier before the RED points).
        if len(walked) and (np.diff(places) < 0).any():
            order = np.argsort(places, kind="stable")
            slots, ts, values = slots[order], ts[order], values[order]
            counts = None if counts is None else counts[order]
            teaches = None if teaches is None else teaches[order]
            if exemplars:
                place = np.empty_like(order)
                place[order] = np.arange(len(order))
                exemplars = {int(place[row]): ids for row, ids in exemplars.items()}
        self._score_slots(slots, ts, values, exemplars, result, counts, per_request=True,
                          teaches=teaches)

    def _slots_of(self, keys: Sequence[SeriesKey]) -> NDArray[np.intp]:
        """Each key's slot (-1 past ``max_series``); new series start fresh everywhere."""
        if not len(keys):
            return np.empty(0, np.intp)
        slots, created = self.index.lookup(keys, self.settings.clock())
        created_keys = [self.index.key(slot) for slot in created.tolist()]
        self.scorer.assign_many(created, created_keys)
        self.deploys.track(created, [self._service(key.resource) for key in created_keys])
        self.feedback.reset(created)
        return slots

    def _score_points(  # noqa: PLR0913 -- as ``_score_slots``, with keys for slots
        self, keys: Sequence[SeriesKey], ts: NDArray[np.int64], values: NDArray[np.float64],
        exemplars: Mapping[int, tuple[bytes, bytes]], result: IngestResult,
        counts: NDArray[np.float64] | None = None, per_request: bool = False,
        teaches: NDArray[np.bool_] | None = None,
    ) -> None:
        if len(keys):
            self._score_slots(self._slots_of(keys), ts, values, exemplars, result, counts,
                              per_request, teaches)

    def _score_slots(  # noqa: PLR0913 -- the rows, their exemplars and counts, and the path
        self, slots: NDArray[np.intp], ts: NDArray[np.int64], values: NDArray[np.float64],
        exemplars: Mapping[int, tuple[bytes, bytes]], result: IngestResult,
        counts: NDArray[np.float64] | None = None, per_request: bool = False,
        teaches: NDArray[np.bool_] | None = None,
    ) -> None:
        """Score rows that have slots (-1: past ``max_series``, skipped).

        ``per_request``: the rows are one OTLP request's, so rules that cap a series'
        points per request apply (``Scorer.sample``); backtests score every row.
        ``teaches``: per row, whether it may teach its detector (None: every row may).
        """
        if not len(slots):
            return
        kept = slots >= 0
        n_kept = int(np.count_nonzero(kept))
        result.skip("series_limit", len(slots) - n_kept)
        if not n_kept:
            return
        rows = None if n_kept == len(slots) else np.flatnonzero(kept)
        learned = drawn = None
        if per_request:
            sampled = self.scorer.sample(slots if rows is None else slots[rows],
                                         values if rows is None else values[rows])
            if sampled is not None:
                picked, learned, drawn = sampled
                result.skip("sampled", (len(slots) if rows is None else len(rows)) - len(picked))
                rows = picked if rows is None else rows[picked]
        if teaches is not None:
            mine = teaches if rows is None else teaches[rows]
            learned = mine if learned is None else learned & mine
        if rows is not None:
            slots, ts, values = slots[rows], ts[rows], values[rows]
            counts = None if counts is None else counts[rows]
            exemplars = _exemplars_of(exemplars, rows)
        batch = SeriesBatch(slots, ts, values, counts)
        grace = self.deploys.in_grace(slots, ts)
        result.scores, result.events = self.scorer.run(batch, self.index.key, exemplars, grace,
                                                       learned, drawn)
        if result.events:
            self.feedback.saw(result.events)
            if self.feedback.active:
                result.events = [self._with_feedback(event) for event in result.events]

    def _service(self, resource: Labels) -> Labels:
        """The service labels of ``resource``, as the one tuple other series share."""
        service = self._services.get(resource)
        if service is None:
            if len(self._services) >= _SERVICE_CACHE_SIZE:
                self._services.clear()
                self._service_tuples.clear()
            labels = service_labels(resource)
            service = self._service_tuples.setdefault(labels, labels)
            self._services[resource] = service
        return service

    def _with_feedback(self, event: AnomalyEvent) -> AnomalyEvent:
        """An open past a bar that a false positive raised says so."""
        note = self.feedback.note(event.slot, event.ts_unix_nano) if event.kind == "open" else ""
        return replace(event, explanation=f"{event.explanation}; {note}") if note else event

    def judge(self, anomaly_id: str, verdict: Verdict, author: str = "") -> Judged:
        """Record a person's verdict on an anomaly (alert review; see ``alerting.feedback``).

        Raises
        ------
        UnknownAnomalyError
            If the anomaly is not among those still remembered.
        """
        return self.feedback.judge(anomaly_id, verdict, author=author)

    def silence_series(self, matchers: Mapping[str, str], start_unix_nano: int,
                       end_unix_nano: int, author: str = "") -> Silence:
        """Mute opens on the series whose labels match ``matchers``, over the window."""
        return self.feedback.silence(matchers, start_unix_nano, end_unix_nano, author)

    def evict_expired(self) -> NDArray[np.intp]:
        """Free series idle for longer than ``series_ttl_s``; return their slots."""
        now = self.settings.clock()
        stale = self.index.expire(now, self.settings.series_ttl_s)
        self._sources.expire(now, self.settings.series_ttl_s)
        self.silence.expire(now, self.settings.series_ttl_s)
        self.span_coverage.expire(now)
        if self.multivariate is not None:
            self.multivariate.expire(now, self.settings.series_ttl_s)
        if len(stale):
            self.scorer.forget(stale)
            self.deploys.forget(stale)
            self.feedback.reset(stale)
            self._evicted_total += len(stale)
        return stale

    def shift_ingest_clock(self, delta: float) -> None:
        """Move every ingest-time "last seen" by ``delta`` seconds.

        After a restore the ingest clock has restarted: each series keeps its idle time.
        """
        self.index.shift_clock(delta)
        self._sources.shift_clock(delta)
        self.silence.shift_clock(delta)
        self.span_coverage.shift_clock(delta)
        if self.multivariate is not None:
            self.multivariate.vectors.shift_clock(delta)

    def state_dict(self) -> dict[str, Any]:
        """Every component's learned state, as a tree of plain values and arrays.

        Settings are not part of it (``processors.state.checkpoint`` fingerprints them), nor are
        derived caches (labels, routing, canonical resources). The tree shares structure
        with the live engine: encode it before the engine ingests again.
        """
        return {
            "index": self.index.state_dict(),
            "scorer": self.scorer.state_dict(),
            "sources": self._sources.state_dict(),
            "adapters": {signal: adapter.state_dict()
                         for signal, adapter in self.adapters.items()},
            "span_coverage": self.span_coverage.state_dict(),
            "deploys": self.deploys.state_dict(),
            "silence": self.silence.state_dict(),
            "multivariate": None if self.multivariate is None else self.multivariate.state_dict(),
            "evicted_total": self._evicted_total,
            "feedback": self.feedback.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict`` (into an engine built with equal settings).

        Raises
        ------
        ValueError, KeyError, TypeError
            If ``state`` does not fit this engine's components.
        """
        if (state["multivariate"] is None) != (self.multivariate is None):
            msg = "the saved state and the settings disagree on the multivariate stage"
            raise ValueError(msg)
        self.index.load_state_dict(state["index"])
        live = {slot: self.index.key(slot) for slot in self.index.live_slots().tolist()}
        self.scorer.load_state_dict(state["scorer"], live)
        self._sources.load_state_dict(state["sources"])
        for signal, adapter in self.adapters.items():
            adapter.load_state_dict(state["adapters"][signal])
        self.span_coverage.load_state_dict(state["span_coverage"])
        self.deploys.load_state_dict(state["deploys"])
        self.silence.load_state_dict(state["silence"])
        if self.multivariate is not None:
            self.multivariate.load_state_dict(state["multivariate"])
        self._evicted_total = int(state["evicted_total"])
        if "feedback" in state:  # saved before alert review existed: no verdicts yet
            self.feedback.load_state_dict(state["feedback"])

    def series_key(self, slot: int) -> SeriesKey:
        """Identity of the series in ``slot``."""
        return self.index.key(slot)

    def series_labels(self, slot: int) -> Labels:
        """Prometheus labels of the series in ``slot`` (``metric``, ``detector``, ``job``...)."""
        return self.scorer.labels(slot)

    def series_labels_of(self, slots: NDArray[np.intp]) -> NDArray[np.object_]:
        """``series_labels`` of each of ``slots`` (a round's; None: no series), a copy."""
        return self.scorer.labels_of(slots)

    def stats(self) -> EngineStats:
        """Current counts for self-metrics."""
        live = self.index.live_slots()
        return EngineStats(
            series_active=len(live),
            series_warming=self.scorer.count_warming(live),
            series_evicted_total=self._evicted_total,
            points_scored_total=self.scorer.points_scored,
            multivariate_services=len(self.multivariate.models) if self.multivariate else 0,
            multivariate_skipped_total=(
                self.multivariate.skipped_points if self.multivariate else 0
            ),
            deploys_total=self.deploys.deploys_total,
            services_silent=self.silence.silent,
        )



def _exemplars_of(exemplars: Mapping[int, tuple[bytes, bytes]], rows: NDArray[np.intp],
                  ) -> Mapping[int, tuple[bytes, bytes]]:
    """The exemplars of ``rows``, renumbered as the rows are.

    The spans path's stay lazy (``SpanIds.take``): the rows a request scores of a busy
    operation are hundreds, and only those that raise an event read their pair.
    """
    if isinstance(exemplars, SpanIds):
        # Rows past its end have none (the RED points after the outliers): lazily taken
        # when the rows that have one come first, as the spans path orders them.
        inside = rows < len(exemplars)
        k = int(np.count_nonzero(inside))
        if inside[:k].all():
            return exemplars.take(rows[:k])
    return {new: exemplars[old] for new, old in enumerate(rows.tolist()) if old in exemplars
            } if exemplars else {}


def _explained(
    event: AnomalyEvent, why: dict[tuple[SeriesKey, int], Attribution]
) -> AnomalyEvent:
    """A multivariate event explained by its top features; any other event as it is."""
    if event.key.metric != MULTIVARIATE_METRIC:
        return event
    attribution = why.get((event.key, event.ts_unix_nano))
    if attribution is None:
        return event
    text = explain_multivariate(event.kind, event.key, score=event.score, why=attribution)
    return replace(event, explanation=text)
