"""The band an anomaly opened against, held while it lasts.

Detectors keep adapting during an incident (their spreads and tails learn the first
excursions, a refractory stretch damps repeats), so their own band soon swallows a
lasting shift: the flag would drop minutes into an outage that is still going on. While
an anomaly is open, the value is therefore also scored against the band it opened
against, and the larger score is what alerts and what events report: the flag stays up
until the value is back inside that band, or until the value has gone ``hold_s`` (event
time) without moving further away (a new extreme at least ``GROWTH_STEP`` band
half-widths beyond the last). A leak that keeps growing therefore stays flagged while it
grows; a level shift that holds is handed back to the detector's own band, and when that
band has taken the new level in, the anomaly closes as "the new level is the baseline".
The exported score and band stay the detector's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.calibration import Calibrated
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.settings import DirectionPolicy

GROWTH_STEP = 0.5
"""How much further out (in half-widths of the held band) a value must go to count as the
anomaly still growing: about two sigmas of noise at the band's usual 3.5 to 4 sigmas, so
noise at a new level does not count, while a leak does every few points."""


class HeldBands:
    """Per-slot expected value and band frozen when an anomaly opened.

    Examples
    --------
    >>> held = HeldBands()
    >>> slots = np.array([0])
    >>> opened = Calibrated(np.array([100.0]), np.array([90.0]), np.array([110.0]),
    ...                     np.array([3.0]))
    >>> held.remember(slots, opened, np.array([0]))
    >>> adapted = Calibrated(np.array([125.0]), np.array([100.0]), np.array([150.0]),
    ...                      np.array([0.2]))  # the detector's band swallowed the shift
    >>> out = held.apply(slots, np.array([130.0]), adapted, np.array([True]),
    ...                  np.array([60 * 10**9]), hold_s=3600.0)
    >>> out.expected.tolist(), out.upper.tolist(), out.score.tolist()
    ([100.0], [110.0], [3.0])
    """

    def __init__(self) -> None:
        self._bands = SlotArrays(
            expected=Column(np.float64, np.nan),
            lower=Column(np.float64, np.nan),
            upper=Column(np.float64, np.nan),
            extreme_ns=Column(np.int64),  # when the value last went further out
            peak=Column(np.float64, 0.0),  # the furthest out it went, in held half-widths
        )
        self.active = False  # no band held anywhere: ``apply`` is a no-op

    def state_dict(self) -> dict[str, Any]:
        """The held bands, and whether any is held."""
        return {"active": self.active, **self._bands.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        self._bands.load_state_dict(state)
        self.active = bool(state["active"])

    def remember(
        self, slots: NDArray[np.intp], calibrated: Calibrated, ts_unix_nano: NDArray[np.int64]
    ) -> None:
        """Hold the band of newly opened ``slots`` (the other arguments have their rows)."""
        if not len(slots):
            return
        self._bands.ensure(slots)
        self._bands.extreme_ns[slots] = ts_unix_nano
        self._bands.peak[slots] = calibrated.score
        self._bands.expected[slots] = calibrated.expected
        self._bands.lower[slots] = calibrated.lower
        self._bands.upper[slots] = calibrated.upper
        self.active = True

    def apply(
        self, slots: NDArray[np.intp], values: NDArray[np.float64], calibrated: Calibrated,
        is_open: NDArray[np.bool_], ts_unix_nano: NDArray[np.int64], hold_s: float,
        direction: DirectionPolicy = "both",
    ) -> Calibrated:
        """Rows of open anomalies scored against their held band when that scores higher.

        A row that goes ``GROWTH_STEP`` further out than the anomaly's furthest so far
        restarts its ``hold_s``. Only deviations on the rule's ``direction`` count, as for
        the detector's own score.
        """
        holding = is_open & (slots < len(self._bands))
        if not holding.any() or hold_s <= 0:
            return calibrated
        at = np.where(holding, slots, 0)
        score = self._held_score(at, values, direction)
        growing = holding & (score >= self._bands.peak[at] + GROWTH_STEP)
        if growing.any():
            grew = at[growing]
            self._bands.peak[grew] = score[growing]
            self._bands.extreme_ns[grew] = ts_unix_nano[growing]
        holding &= ts_unix_nano - self._bands.extreme_ns[at] <= int(hold_s * 1e9)
        bands = self._bands
        expected, lower, upper = bands.expected[at], bands.lower[at], bands.upper[at]
        use = holding & np.isfinite(score) & (score > calibrated.score)
        if not use.any():
            return calibrated
        return Calibrated(
            np.where(use, expected, calibrated.expected), np.where(use, lower, calibrated.lower),
            np.where(use, upper, calibrated.upper), np.where(use, score, calibrated.score),
        )

    def _held_score(self, at: NDArray[np.intp], values: NDArray[np.float64],
                    direction: DirectionPolicy) -> NDArray[np.float64]:
        bands = self._bands
        expected, lower, upper = bands.expected[at], bands.lower[at], bands.upper[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = values - expected
            if direction == "up":
                dev = np.maximum(dev, 0.0)
            elif direction == "down":
                dev = np.minimum(dev, 0.0)
            half = np.where(dev >= 0, upper - expected, expected - lower)
            out: NDArray[np.float64] = np.abs(dev) / np.maximum(
                half, 1e-12 * (1.0 + np.abs(expected)))
        return out

    def outside(self, slots: NDArray[np.intp], values: NDArray[np.float64],
                direction: DirectionPolicy = "both") -> NDArray[np.bool_]:
        """Whether each value is still outside the band its slot's anomaly opened against.

        Only the rule's ``direction`` counts. An anomaly that closes while its value is still
        out there closed because the detector took the new level in: the level is the new
        baseline.
        """
        known = slots < len(self._bands)
        at = np.where(known, slots, 0)
        with np.errstate(invalid="ignore"):
            return known & (self._held_score(at, values, direction) >= 1.0)

    def closing(self, slots: NDArray[np.intp], calibrated: Calibrated,
                closed: NDArray[np.bool_]) -> Calibrated:
        """Rows that close report the band their anomaly was held against."""
        rows = closed & (slots < len(self._bands))
        if not rows.any():
            return calibrated
        at = np.where(rows, slots, 0)
        use = rows & np.isfinite(self._bands.expected[at])
        return Calibrated(
            np.where(use, self._bands.expected[at], calibrated.expected),
            np.where(use, self._bands.lower[at], calibrated.lower),
            np.where(use, self._bands.upper[at], calibrated.upper), calibrated.score,
        )

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget the bands of ``slots``."""
        # Rows not allocated yet hold nothing: resetting them would only allocate them.
        self._bands.reset(slots[slots < len(self._bands)])
