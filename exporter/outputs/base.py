"""What outputs receive (``ScoringRound``) and what they implement (``Output``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.types import AnomalyEvent, Labels, ScoreBatch


def _no_slots() -> NDArray[np.intp]:
    return np.empty(0, np.intp)


class RoundLabels(Mapping[int, Labels]):
    """A round's labels by slot: ``labels[i]`` is ``slots[i]``'s as of the round (None: none).

    The arrays are the round's own (a snapshot); the mapping is built when first read, on
    whichever thread reads it. Outputs read only the labels of series new to them, so most
    rounds are never read: a dict of a thousand slots per request was 3 to 8 % of the
    pipeline thread (``benchmarks/ingest.py``).

    >>> labels = np.empty(3, object)
    >>> labels[0], labels[1] = (("job", "a"),), (("job", "b"),)
    >>> mapped = RoundLabels(np.array([4, 2, 7]), labels)
    >>> mapped[2], mapped[7], len(mapped), sorted(mapped)
    ((('job', 'b'),), (), 3, [2, 4, 7])
    """

    __slots__ = ("_by_slot", "_labels", "_slots")

    def __init__(self, slots: NDArray[np.intp], labels: NDArray[np.object_]) -> None:
        self._slots, self._labels = slots, labels
        self._by_slot: dict[int, Labels] | None = None

    def _table(self) -> dict[int, Labels]:
        if self._by_slot is None:
            self._by_slot = {slot: () if labels is None else labels for slot, labels
                             in zip(self._slots.tolist(), self._labels.tolist(), strict=True)}
        return self._by_slot

    def __getitem__(self, slot: int) -> Labels:
        return self._table()[slot]

    def __iter__(self) -> Iterator[int]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


@dataclass(frozen=True, slots=True)
class ScoringRound:
    """What one pipeline step produced: one request's scores and events, or a timer's.

    Self-contained: an output needs nothing else (no call back into the engine), so it can
    run on its own thread, late, or after some rounds were dropped. Outputs must not modify
    the arrays.

    Apply ``evicted`` **before** ``scores``: a slot freed in this round may already hold a
    new series, whose rows and labels are in ``scores`` and ``labels``.

    Parameters
    ----------
    scores
        Score rows, in ingest order (several rows may share a slot; the last is the latest).
    labels
        Prometheus labels of every slot in ``scores``, as of this round (a reused slot maps
        to its new series).
    resources
        OpenTelemetry resource attributes of every slot in ``scores``, when an output asked
        for them (``needs_resources``); empty otherwise.
    events
        Anomaly events (open, update, close), in the order the engine produced them.
    evicted
        Slots whose series were evicted (idle or replaced): forget them.
    """

    scores: ScoreBatch = field(default_factory=ScoreBatch.empty)
    labels: Mapping[int, Labels] = field(default_factory=dict)
    resources: Mapping[int, Labels] = field(default_factory=dict)
    events: tuple[AnomalyEvent, ...] = ()
    evicted: NDArray[np.intp] = field(default_factory=_no_slots)

    def after_evictions(self, earlier: NDArray[np.intp]) -> ScoringRound:
        """Return this round, also evicting ``earlier`` first (a dropped round's evictions).

        A dropped round may lose its scores and events, never its evictions: an output that
        missed one would keep a departed series, or give its slot's next series old labels.
        """
        if not len(earlier):
            return self
        return replace(self, evicted=np.concatenate([earlier, self.evicted]))


class Output(Protocol):
    """Where scoring rounds go: an exporter component, as in the OpenTelemetry Collector.

    The pipeline hands every round to every output through ``OutputFanout``, which also
    runs the lifecycle: ``start`` before the first round, ``shutdown`` after the last.
    """

    @property
    def name(self) -> str:
        """Short ``lower_snake_case`` id: the ``output`` label of self-metrics, thread names."""

    @property
    def inline(self) -> bool:
        """Whether ``publish`` may run on the pipeline thread.

        Only for a ``publish`` that is cheap and cannot block (no I/O, no lock held for
        long by anyone else); any other output gets its own bounded queue and thread.
        """

    def start(self) -> None:
        """Get ready to publish; return quickly."""

    def publish(self, scoring_round: ScoringRound) -> None:
        """Take one round; raising counts a failure, and the next round still comes."""

    def shutdown(self, timeout: float) -> None:
        """Flush what was published and stop; idempotent, safe before ``start``.

        An output may also define ``dropped(round, reason)``: its worker calls it for each
        round it drops, so the output can count what the round carried (events); and
        ``needs_resources = True``: its rounds then carry each slot's resource attributes
        (``ScoringRound.resources``), which the others do without.
        """
