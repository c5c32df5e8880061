"""Alert review: what people said about anomalies, and what a false positive teaches.

A false positive marked on an anomaly raises that series' bar for new anomalies on the
same side: an excursion whose alerting score stays within ``FALSE_POSITIVE_MARGIN`` times
the marked anomaly's peak no longer opens (an open one closes), while an incident several
times larger still does. The lesson fades with event time (halved every
``LESSON_HALF_LIFE_S``), so a series is never muted for good, and it is forgotten with
the series. A silence mutes opens on the series its label matchers select, for a window
of event time. Verdicts are kept (bounded) so later events can say what was decided.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import AnomalyEvent, Labels

Verdict = Literal["false_positive", "true_positive"]
FALSE_POSITIVE_MARGIN = 1.5
"""How much larger than the marked anomaly's peak an excursion must be to open again."""
LESSON_HALF_LIFE_S = 7 * 86400.0
"""Event time over which a false positive's raised bar halves."""
_REMEMBERED = 10_000  # anomalies whose id can still be judged (the most recent ones)


class UnknownAnomalyError(KeyError):
    """No anomaly with this id is remembered (too old, evicted, or never seen)."""


@dataclass(frozen=True, slots=True)
class Judged:
    """What a verdict applied to: the anomaly's series and the bar it now has."""

    anomaly_id: str
    slot: int
    verdict: Verdict
    peak_score: float
    bar: float  # the alerting score new excursions must exceed (0: no lesson)
    changed: bool = True  # False: the anomaly already had this verdict (nothing new)


@dataclass(frozen=True, slots=True)
class Silence:
    """No anomaly opens on series whose labels match ``matchers`` in ``[start, end]``."""

    matchers: tuple[tuple[str, str], ...]
    start_unix_nano: int
    end_unix_nano: int
    author: str = ""

    def covers(self, labels: Labels, ts_unix_nano: int) -> bool:
        """Whether a point of a series with ``labels`` at ``ts_unix_nano`` is silenced."""
        if not self.start_unix_nano <= ts_unix_nano <= self.end_unix_nano:
            return False
        have = dict(labels)
        return all(have.get(name) == value for name, value in self.matchers)


@dataclass(slots=True)
class _Seen:
    slot: int
    peak: float
    direction: int  # +1 above the expected value, -1 below
    last_ts: int  # event time of its latest event
    verdict: str = ""
    author: str = ""


class FeedbackBook:
    """Anomalies people can still judge, the lessons per slot, and active silences."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._slots = SlotArrays(
            bar=Column(np.float64, 0.0),  # alerting score to exceed, at ``taught_ns``
            side=Column(np.int8, 0),  # +1 / -1: the side the false positive was on
            taught_ns=Column(np.int64, 0),
        )
        self.silences: list[Silence] = []
        self.verdicts: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Whether any lesson or silence exists (otherwise ``quieted`` is a no-op)."""
        return bool(self.silences) or bool(len(self._slots) and self._slots.bar.any())

    def saw(self, events: Sequence[AnomalyEvent]) -> None:
        """Remember the anomalies of ``events`` (their slot, side and peak score)."""
        for event in events:
            if not event.anomaly_id:
                continue
            seen = self._seen.get(event.anomaly_id)
            side = 1 if event.direction == "up" else -1
            if seen is None:
                self._seen[event.anomaly_id] = _Seen(event.slot, event.score, side,
                                                     event.ts_unix_nano)
                if len(self._seen) > _REMEMBERED:
                    self._seen.popitem(last=False)
            else:
                seen.peak = max(seen.peak, event.score)
                seen.last_ts = max(seen.last_ts, event.ts_unix_nano)

    def judge(self, anomaly_id: str, verdict: Verdict, ts_unix_nano: int | None = None,
              author: str = "") -> Judged:
        """Apply ``verdict`` to the anomaly ``anomaly_id``.

        The lesson is dated ``ts_unix_nano`` (event time), by default the anomaly's latest
        event: lessons fade with the series' own time, not the reviewer's clock.

        Raises
        ------
        UnknownAnomalyError
            If the anomaly is not remembered.
        """
        seen = self._seen.get(anomaly_id)
        if seen is None:
            msg = (f"no anomaly {anomaly_id!r} is remembered (its series was evicted, or it "
                   f"is older than the last {_REMEMBERED})")
            raise UnknownAnomalyError(msg)
        before = seen.verdict
        seen.verdict, seen.author = verdict, author
        if ts_unix_nano is None:
            ts_unix_nano = seen.last_ts
        if verdict != before:  # a repeated verdict is not counted twice
            self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
        state = self._slots
        state.ensure(np.array([seen.slot]))
        if verdict == "false_positive" and before != verdict:
            bar = FALSE_POSITIVE_MARGIN * seen.peak
            state.bar[seen.slot] = max(bar, float(self._bar_now(seen.slot, ts_unix_nano)))
            state.side[seen.slot] = seen.direction
            state.taught_ns[seen.slot] = ts_unix_nano
        elif verdict == "true_positive" and before == "false_positive":
            # A corrected verdict takes its lesson back: the series opens as before.
            state.reset(np.array([seen.slot]))
        return Judged(anomaly_id, seen.slot, verdict, seen.peak,
                      float(self._bar_now(seen.slot, ts_unix_nano)), verdict != before)

    def verdict_of(self, anomaly_id: str) -> tuple[str, str]:
        """The verdict given on an anomaly and by whom (empty strings if none)."""
        seen = self._seen.get(anomaly_id)
        return ("", "") if seen is None else (seen.verdict, seen.author)

    def silence(self, matchers: Mapping[str, str], start_unix_nano: int, end_unix_nano: int,
                author: str = "") -> Silence:
        """Mute opens on the series ``matchers`` select over the window; expired ones go."""
        silence = Silence(tuple(sorted(matchers.items())), start_unix_nano, end_unix_nano,
                          author)
        self.silences = [s for s in self.silences if s.end_unix_nano >= start_unix_nano]
        self.silences.append(silence)
        return silence

    def _bar_now(self, slot: int | NDArray[np.intp], ts_unix_nano: int | NDArray[np.int64]
                 ) -> NDArray[np.float64]:
        state = self._slots
        age_s = np.maximum(np.asarray(ts_unix_nano) - state.taught_ns[slot], 0) / 1e9
        bar: NDArray[np.float64] = state.bar[slot] * 0.5 ** (age_s / LESSON_HALF_LIFE_S)
        return bar

    def quieted(self, slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64],
                scores: NDArray[np.float64], above: NDArray[np.bool_],
                labels_of: Any) -> NDArray[np.float64]:
        """``scores`` with rows that feedback mutes set to 0.

        ``above``: whether each row's value is above its expected value; ``labels_of``
        gives a slot's labels (read only for rows a silence could mute).
        """
        out = scores
        state = self._slots
        if len(state) and state.bar.any():
            state.ensure(slots)
            bar = self._bar_now(slots, ts_unix_nano)
            side = state.side[slots]
            same_side = np.where(above, side > 0, side < 0)
            out = np.where((bar > 0) & same_side & (scores <= bar), 0.0, out)
        if self.silences:
            out = np.array(out, np.float64)
            for row in np.flatnonzero(out > 0).tolist():
                labels = labels_of(int(slots[row]))
                if any(s.covers(labels, int(ts_unix_nano[row])) for s in self.silences):
                    out[row] = 0.0
        return out

    def note(self, slot: int, ts_unix_nano: int) -> str:
        """A clause for a later event of ``slot`` whose bar a false positive raised, or ''."""
        state = self._slots
        if slot >= len(state) or state.bar[slot] <= 0:
            return ""
        bar = float(self._bar_now(slot, ts_unix_nano))
        return f"opened past a bar of {bar:.1f} raised by a false-positive verdict"

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget the lessons and anomalies of ``slots`` (evicted or reused).

        An evicted series' anomalies go too: its slot may be given to another series, which
        a late verdict on them would otherwise teach.
        """
        if len(self._slots):
            self._slots.reset(slots[slots < len(self._slots)])
        if len(slots) and self._seen:
            gone = set(slots.tolist())
            for anomaly_id in [k for k, seen in self._seen.items() if seen.slot in gone]:
                del self._seen[anomaly_id]

    def state_dict(self) -> dict[str, Any]:
        """Lessons, silences, remembered anomalies and verdict counts, as plain data."""
        return {
            "slots": self._slots.state_dict(),
            "silences": [[list(map(list, s.matchers)), s.start_unix_nano, s.end_unix_nano,
                          s.author] for s in self.silences],
            "seen": [[k, s.slot, s.peak, s.direction, s.last_ts, s.verdict, s.author]
                     for k, s in self._seen.items()],
            "verdicts": dict(self.verdicts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        self._slots.load_state_dict(state["slots"])
        self.silences = [Silence(tuple((str(k), str(v)) for k, v in m), int(a), int(b), str(w))
                         for m, a, b, w in state["silences"]]
        self._seen = OrderedDict(
            (str(k), _Seen(int(slot), float(peak), int(side), int(ts), str(v), str(w)))
            for k, slot, peak, side, ts, v, w in state["seen"])
        self.verdicts = {str(k): int(v) for k, v in state["verdicts"].items()}
