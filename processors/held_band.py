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

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.calibration import Calibrated
from otel_anomaly.processors.series import grown

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
        self._expected = np.zeros(0)
        self._lower = np.zeros(0)
        self._upper = np.zeros(0)
        self._extreme_ns = np.zeros(0, np.int64)  # when the value last went further out
        self._peak = np.zeros(0)  # the furthest out it went, in held half-widths
        self.active = False  # no band held anywhere: ``apply`` is a no-op

    def __setstate__(self, state: dict[str, object]) -> None:
        # Checkpoints from before growth tracking held from the opening time.
        opened = state.pop("_opened_ns", None)
        self.__dict__.update(state)
        if opened is not None:
            self._extreme_ns = opened  # type: ignore[assignment]
            self._peak = np.ones(len(self._extreme_ns))

    def remember(
        self, slots: NDArray[np.intp], calibrated: Calibrated, ts_unix_nano: NDArray[np.int64]
    ) -> None:
        """Hold the band of newly opened ``slots`` (the other arguments have their rows)."""
        if not len(slots):
            return
        needed = int(slots.max()) + 1
        self._expected = grown(self._expected, needed, np.nan)  # type: ignore[assignment]
        self._lower = grown(self._lower, needed, np.nan)  # type: ignore[assignment]
        self._upper = grown(self._upper, needed, np.nan)  # type: ignore[assignment]
        self._extreme_ns = grown(self._extreme_ns, needed, 0)  # type: ignore[assignment]
        self._peak = grown(self._peak, needed, 0.0)  # type: ignore[assignment]
        self._extreme_ns[slots] = ts_unix_nano
        self._peak[slots] = calibrated.score
        self._expected[slots] = calibrated.expected
        self._lower[slots] = calibrated.lower
        self._upper[slots] = calibrated.upper
        self.active = True

    def apply(
        self, slots: NDArray[np.intp], values: NDArray[np.float64], calibrated: Calibrated,
        is_open: NDArray[np.bool_], ts_unix_nano: NDArray[np.int64], hold_s: float,
    ) -> Calibrated:
        """Rows of open anomalies scored against their held band when that scores higher.

        A row that goes ``GROWTH_STEP`` further out than the anomaly's furthest so far
        restarts its ``hold_s``.
        """
        holding = is_open & (slots < len(self._expected))
        if not holding.any() or hold_s <= 0:
            return calibrated
        at = np.where(holding, slots, 0)
        score = self._held_score(at, values)
        growing = holding & (score >= self._peak[at] + GROWTH_STEP)
        if growing.any():
            grew = at[growing]
            self._peak[grew] = score[growing]
            self._extreme_ns[grew] = ts_unix_nano[growing]
        holding &= ts_unix_nano - self._extreme_ns[at] <= int(hold_s * 1e9)
        expected, lower, upper = self._expected[at], self._lower[at], self._upper[at]
        use = holding & np.isfinite(score) & (score > calibrated.score)
        if not use.any():
            return calibrated
        return Calibrated(
            np.where(use, expected, calibrated.expected), np.where(use, lower, calibrated.lower),
            np.where(use, upper, calibrated.upper), np.where(use, score, calibrated.score),
        )

    def _held_score(self, at: NDArray[np.intp], values: NDArray[np.float64]) -> NDArray[np.float64]:
        expected, lower, upper = self._expected[at], self._lower[at], self._upper[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = values - expected
            half = np.where(dev >= 0, upper - expected, expected - lower)
            out: NDArray[np.float64] = np.abs(dev) / np.maximum(
                half, 1e-12 * (1.0 + np.abs(expected)))
        return out

    def outside(self, slots: NDArray[np.intp], values: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each value is still outside the band its slot's anomaly opened against.

        An anomaly that closes while its value is still out there closed because the
        detector took the new level in: the level is the new baseline.
        """
        known = slots < len(self._expected)
        at = np.where(known, slots, 0)
        with np.errstate(invalid="ignore"):
            return known & (self._held_score(at, values) >= 1.0)

    def closing(self, slots: NDArray[np.intp], calibrated: Calibrated,
                closed: NDArray[np.bool_]) -> Calibrated:
        """Rows that close report the band their anomaly was held against."""
        rows = closed & (slots < len(self._expected))
        if not rows.any():
            return calibrated
        at = np.where(rows, slots, 0)
        use = rows & np.isfinite(self._expected[at])
        return Calibrated(
            np.where(use, self._expected[at], calibrated.expected),
            np.where(use, self._lower[at], calibrated.lower),
            np.where(use, self._upper[at], calibrated.upper), calibrated.score,
        )

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget the bands of ``slots``."""
        slots = slots[slots < len(self._expected)]
        self._expected[slots] = np.nan
        self._lower[slots] = np.nan
        self._upper[slots] = np.nan
