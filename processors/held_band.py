"""The band an anomaly opened against, held while it lasts.

Detectors keep adapting during an incident (their spreads and tails learn the first
excursions, a refractory stretch damps repeats), so their own band soon swallows a
lasting shift: the flag would drop minutes into an outage that is still going on. While
an anomaly is open, the value is therefore also scored against the band it opened
against, and the larger score is what alerts and what events report: the flag stays up
until the value is back inside that band, or until the policy's ``hold_s`` (event time)
has passed and the detector's own band decides again (a lasting shift then becomes the
new normal). The exported score and band stay the detector's own.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.calibration import Calibrated
from otel_anomaly.processors.series import grown


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
        self._opened_ns = np.zeros(0, np.int64)
        self.active = False  # no band held anywhere: ``apply`` is a no-op

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
        self._opened_ns = grown(self._opened_ns, needed, 0)  # type: ignore[assignment]
        self._opened_ns[slots] = ts_unix_nano
        self._expected[slots] = calibrated.expected
        self._lower[slots] = calibrated.lower
        self._upper[slots] = calibrated.upper
        self.active = True

    def apply(
        self, slots: NDArray[np.intp], values: NDArray[np.float64], calibrated: Calibrated,
        is_open: NDArray[np.bool_], ts_unix_nano: NDArray[np.int64], hold_s: float,
    ) -> Calibrated:
        """Rows of open anomalies scored against their held band when that scores higher."""
        holding = is_open & (slots < len(self._expected))
        if not holding.any() or hold_s <= 0:
            return calibrated
        at = np.where(holding, slots, 0)
        holding &= ts_unix_nano - self._opened_ns[at] <= int(hold_s * 1e9)
        expected, lower, upper = self._expected[at], self._lower[at], self._upper[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = values - expected
            half = np.where(dev >= 0, upper - expected, expected - lower)
            score = np.abs(dev) / np.maximum(half, 1e-12 * (1.0 + np.abs(expected)))
        use = holding & np.isfinite(score) & (score > calibrated.score)
        if not use.any():
            return calibrated
        return Calibrated(
            np.where(use, expected, calibrated.expected), np.where(use, lower, calibrated.lower),
            np.where(use, upper, calibrated.upper), np.where(use, score, calibrated.score),
        )

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
