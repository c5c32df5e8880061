"""What a scored round teaches its detector: the values it learns, clipped or not."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.calibration import Calibrated, clip_to_band
from otel_anomaly.processors.alerting.deploys import LevelCorrection
from otel_anomaly.processors.settings import AlertPolicy
from otel_anomaly.processors.types import SeriesBatch


@dataclass(frozen=True, slots=True)
class ScoredRound:
    """One round of distinct slots and the rule's prediction for it."""

    part: SeriesBatch  # engine slots, values as received
    seen: SeriesBatch  # the rule's own slots, values less the deploy offset
    shift: LevelCorrection | None  # the rows' deploy corrections, None: no offsets
    spacing: NDArray[np.float64]  # each series' usual spacing, seconds
    calibrated: Calibrated  # band and score around ``seen``
    shown: Calibrated  # the same, offset restored: what is exported


def held_rows(rnd: ScoredRound, held: Calibrated) -> NDArray[np.bool_]:
    """Rows scored against their anomaly's held band instead of the detector's own.

    A series' first point has no expected value (NaN, never equal to itself): it is never
    held, whatever other rows of its round are.
    """
    expected = rnd.shown.expected
    out: NDArray[np.bool_] = (held.expected != expected) & ~np.isnan(expected)
    return out


def pending_rows(
    alerting: NDArray[np.float64], open_threshold: float, flag: NDArray[np.bool_],
    opened: NDArray[np.bool_],
) -> NDArray[np.bool_]:
    """Rows at or above the open threshold that may start an anomaly: not open yet, or opening.

    A rule that never opens on one point (the latency rules' infinite
    ``instant_threshold``) waits for the next one; ``alerting`` is the score the hysteresis
    saw. NaN scores are never pending.
    """
    out: NDArray[np.bool_] = (alerting >= open_threshold) & (~flag | opened)
    return out


def held_lesson(rnd: ScoredRound, held: Calibrated) -> SeriesBatch:
    """What the detector learns without learn gating: values clipped to a held band.

    A held anomaly teaches the detector only up to the band it opened against, so an
    outage does not swell the spreads and tails for the next day.
    """
    if held is rnd.shown:
        return rnd.seen
    seen = rnd.seen
    holding = held_rows(rnd, held)
    lo, hi = ((held.lower, held.upper) if rnd.shift is None
              else (rnd.shift.removed(held.lower), rnd.shift.removed(held.upper)))
    return seen.with_values(np.where(holding, np.clip(seen.values, lo, hi), seen.values))


def gated(
    part: SeriesBatch, cal: Calibrated, policy: AlertPolicy,
    settled: NDArray[np.bool_] | None = None,
) -> SeriesBatch:
    """What the detector learns: anomalous points clipped, skipped or as they are.

    Rows marked ``settled`` (their anomaly outlasted ``relearn_after``) are learned as they
    are, so a lasting shift becomes the new normal.
    """
    if policy.learn_gating == "off":
        return part
    anomalous = cal.score >= policy.open_threshold
    if settled is not None:
        anomalous &= ~settled
    if not np.count_nonzero(anomalous):  # cheaper than ``any()`` on a round's few rows
        return part
    if policy.learn_gating == "skip":
        return part.take(np.flatnonzero(~anomalous))
    return part.with_values(clip_to_band(part.values, cal))
