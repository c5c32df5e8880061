"""Deploy awareness: a new ``service.version`` opens a grace period for the service's series.

A release often moves a level for good (p99 +20 %, memory +100 MB). That is a change, not
an incident: during the grace period the service's series raise no flags, and each series'
level offset follows the gap between what it sees and what its detector expects, so when
the grace period ends the detector carries on from the new level with its learned shape
(daily and weekly profiles) intact.

The version is not part of a series' identity (a release must not start every series of
the service from scratch); a deploy is the first sight of a version not seen before for
that service (``service.namespace`` + ``service.name``), so the old and new versions
interleaving during a rolling update mark one deploy, not many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.state.codec import as_labels
from otel_anomaly.processors.types import Labels

VERSION_ATTRIBUTE = "service.version"
_NEVER = np.int64(-(2**62))  # far enough from int64's limits to add a grace period to
_NO_SLOTS = np.empty(0, np.intp)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_VERSIONS_KEPT = 32  # per service: older versions are forgotten (a rollback re-deploys)
OFFSET_FLOOR = 0.1
"""Least share of a grace-period gap the level offset takes in. The offset is the mean of the
gaps since the deploy (the n-th point weighs 1/n), so the level is learned from all of the
grace period's points, not from its last few; from the tenth point on, each weighs a tenth,
so a rolling update whose new level arrives over several minutes is still followed."""
OFFSET_MEMORY_S = 300.0
"""Event time the offset remembers at least: ``OFFSET_FLOOR`` of a gap is 10 points, 5
minutes at 30-s points but 2.5 at 15-s ones, where a p99's last 10 points set a release's
offset 25 % too high and the series opened after the grace; a point of spacing ``s``
weighs at least ``min(OFFSET_FLOOR, s / OFFSET_MEMORY_S)``."""
EVIDENT_ERRORS = 2.0
"""Standard errors of the mean gap a deploy's offset leaves out (``evident_offset``)."""
RESTORED_COUNT = 1.0 / 0.3 - 1.0
"""Points a restored offset counts as (checkpoints before counts): its next point weighs 0.3,
the share every point had before."""


def split_version(resource: Labels, attribute: str = VERSION_ATTRIBUTE) -> tuple[Labels, str]:
    """``resource`` without its version attribute, and the version ("" if none).

    >>> split_version((("service.name", "cart"), ("service.version", "1.4.2")))
    ((('service.name', 'cart'),), '1.4.2')
    """
    for i, (name, value) in enumerate(resource):
        if name == attribute:
            return resource[:i] + resource[i + 1 :], value
    return resource, ""


class DeployTracker:
    """Which services were deployed when, and which series are in their grace period.

    Parameters
    ----------
    grace_s
        Length of the grace period after a deploy, in event-time seconds; 0 disables.

    Examples
    --------
    >>> tracker = DeployTracker(grace_s=600)
    >>> cart = (("service.name", "cart"),)
    >>> tracker.track(np.array([0]), [cart])
    >>> tracker.observe(cart, "1.0", 0).tolist()  # first sight: not a deploy
    []
    >>> tracker.observe(cart, "1.1", 1_000 * 10**9).tolist()  # a deploy: its slots
    [0]
    >>> tracker.in_grace(np.array([0, 0]), np.array([1_100, 1_700]) * 10**9).tolist()
    [True, False]
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_ns = np.int64(int(grace_s * 1e9))
        self.deploys_total = 0
        # Per service (few): its versions, its last deploy, and its number in ``service``.
        self._versions: dict[Labels, dict[str, None]] = {}
        self._deployed_at: dict[Labels, int] = {}
        self._services: list[Labels] = []
        self._service_ids: dict[Labels, int] = {}
        # Per series (many): columns only, no Python object per series.
        self._slots = SlotArrays(
            service=Column(np.int32, -1),  # the series' service, in ``_services``
            at=Column(np.int64, _NEVER),  # the last deploy's time
        )

    def observe(self, service: Labels, version: str, ts_unix_nano: int) -> NDArray[np.intp]:
        """Note that ``service`` ran ``version`` at ``ts_unix_nano``.

        Returns the slots this put in a grace period (a deploy of their service), if any.
        """
        if not version or self.grace_ns <= 0:
            return _NO_SLOTS
        seen = self._versions.get(service)
        if seen is None:
            self._versions[service] = {version: None}
            return _NO_SLOTS
        if version in seen:
            return _NO_SLOTS
        seen[version] = None
        if len(seen) > _VERSIONS_KEPT:
            del seen[next(iter(seen))]
        self.deploys_total += 1
        self._deployed_at[service] = ts_unix_nano
        number = self._service_ids.get(service)
        if number is None or not len(self._slots):
            return _NO_SLOTS
        # A scan of one int32 column: deploys are rare, series are many.
        deployed = np.flatnonzero(self._slots.service == number)
        self._slots.at[deployed] = ts_unix_nano
        return deployed

    def service_in_grace(self, service: Labels, ts_unix_nano: int) -> bool:
        """Whether ``ts_unix_nano`` falls in ``service``'s grace period after its last deploy.

        >>> tracker = DeployTracker(grace_s=600)
        >>> cart = (("service.name", "cart"),)
        >>> _ = tracker.observe(cart, "1.0", 0), tracker.observe(cart, "1.1", 1_000 * 10**9)
        >>> [tracker.service_in_grace(cart, t * 10**9) for t in (999, 1_100, 1_700)]
        [False, True, False]
        """
        deployed = self._deployed_at.get(service)
        return deployed is not None and 0 <= ts_unix_nano - deployed < int(self.grace_ns)

    def track(self, slots: NDArray[np.intp], services: Sequence[Labels]) -> None:
        """Remember the service of new ``slots`` (a series created after a deploy inherits it)."""
        if self.grace_ns <= 0 or not len(slots):
            return
        self._slots.ensure(slots)
        self._slots.service[slots] = np.fromiter(
            (self._number(service) for service in services), np.int32, len(services))
        self._slots.at[slots] = np.fromiter(
            (self._deployed_at.get(service, _NEVER) for service in services), np.int64,
            len(services))

    def _number(self, service: Labels) -> int:
        number = self._service_ids.get(service)
        if number is None:
            number = self._service_ids[service] = len(self._services)
            self._services.append(service)
        return number

    def state_dict(self) -> dict[str, Any]:
        """Versions and deploy times per service, and each tracked slot's service.

        The grace period is not saved: it is a setting, read afresh after a restore.
        """
        return {
            "deploys_total": self.deploys_total,
            "versions": [(service, list(seen)) for service, seen in self._versions.items()],
            "deployed_at": list(self._deployed_at.items()),
            "services": list(self._services),
            "slots": self._slots.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        self.deploys_total = int(state["deploys_total"])
        self._versions = {as_labels(service): dict.fromkeys(map(str, seen))
                          for service, seen in state["versions"]}
        self._deployed_at = {as_labels(service): int(ts) for service, ts in state["deployed_at"]}
        self._services = [as_labels(service) for service in state["services"]]
        self._service_ids = {service: i for i, service in enumerate(self._services)}
        self._slots.load_state_dict(state["slots"])

    def forget(self, slots: NDArray[np.intp]) -> None:
        """Drop evicted ``slots``."""
        self._slots.reset(slots[slots < len(self._slots)])

    def in_grace(
        self, slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64]
    ) -> NDArray[np.bool_] | None:
        """Per row, whether its point falls in its service's grace period; ``None``: no row does."""
        if not self._deployed_at or not len(slots):
            return None
        known = slots < len(self._slots)
        deployed = np.where(known, self._slots.at[np.where(known, slots, 0)], _NEVER)
        grace = (deployed <= ts_unix_nano) & (ts_unix_nano < deployed + self.grace_ns)
        return grace if grace.any() else None


@dataclass(frozen=True, slots=True)
class LevelCorrection:
    """A round's deploy corrections: between the values received and what the detector sees.

    Per row an ``amount`` and a ``scale``: a detector that models log values gets a factor
    (a release moves a latency by a factor: p99 +25 % at every hour of the day), any other
    an amount; only a checkpoint saved before factors existed leaves a log model with an
    amount, until its next point (``LevelOffsets.convert``).

    >>> c = LevelCorrection(np.array([0.0]), np.array([1.25]))
    >>> c.removed(np.array([125.0])).tolist(), c.restored(np.array([80.0])).tolist()
    ([100.0], [100.0])
    """

    amount: NDArray[np.float64]
    scale: NDArray[np.float64]  # exp of the slot's log factor, computed once per round

    def removed(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """``values`` as the detector sees them."""
        out: NDArray[np.float64] = (values - self.amount) / self.scale
        return out

    def restored(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """The detector's ``values`` (expected, band) as the outside world sees them."""
        out: NDArray[np.float64] = values * self.scale + self.amount
        return out


def mean_weight_squares(count: NDArray[np.float32]) -> NDArray[np.float64]:
    """The sum of the squared weights of ``count`` gaps in their running mean (1 / n_eff).

    The n-th gap weighs ``max(1 / n, OFFSET_FLOOR)``: the first ten equally (``1 / n``), each
    later one ``OFFSET_FLOOR`` while the earlier ones fade by ``1 - OFFSET_FLOOR``.
    """
    n = np.asarray(count, np.float64)
    equal = 1.0 / OFFSET_FLOOR
    keep = (1.0 - OFFSET_FLOOR) ** 2
    later = np.maximum(n - equal, 0.0)
    faded = keep ** later
    out: NDArray[np.float64] = np.where(
        n <= equal, 1.0 / np.maximum(n, 1.0),
        faded * OFFSET_FLOOR + OFFSET_FLOOR**2 * (1.0 - faded) / (1.0 - keep))
    return out


def evident_offset(mean: NDArray[Any], square: NDArray[Any],
                   count: NDArray[np.float32]) -> NDArray[np.float64]:
    """The part of a mean gap beyond ``EVIDENT_ERRORS`` of its standard errors (toward 0).

    ``square``: the running mean of the squared gaps (same weights). A grace period's gaps
    are noise around the release's step: on an error counter of 0.1 events a minute, 15
    minutes hold one or two events, and their mean put the detector's expected events at 3.5
    times the rate for good. Only the evident part of the step is taken; what is left is
    within the noise of a few points, which the detector's own level follows.
    Where ``square`` is 0 (a checkpoint saved before it was kept) the mean is taken whole.

    >>> evident_offset(np.array([5.0, 0.1]), np.array([25.1, 0.1]), np.array([15.0, 15.0]))
    array([4.83..., 0.        ])
    """
    m = np.asarray(mean, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd gaps: no evident offset
        spread = np.maximum(np.asarray(square, np.float64) - m * m, 0.0)
        error = EVIDENT_ERRORS * np.sqrt(spread * mean_weight_squares(count))
        out: NDArray[np.float64] = np.sign(m) * np.maximum(np.abs(m) - error, 0.0)
    return np.where(np.isfinite(out), out, 0.0)


class LevelOffsets:
    """Per-slot level corrections learned during grace periods.

    Detectors see the values with the correction removed; their expected value and band are
    corrected back for the outside world, so scores are unchanged by the correction itself.
    A detector that models log values (``relative``) learns a factor, any other an amount
    (``LevelCorrection``); a slot keeps its rule, so each slot uses one of the two.
    """

    def __init__(self) -> None:
        # ``amount`` / ``log_factor``: the mean gap since the deploy; ``square``: the mean
        # of its squares (same weights), for its standard error (``evident_offset``).
        self._offsets = SlotArrays(amount=Column(np.float64, 0.0),
                                   log_factor=Column(np.float32, 0.0),
                                   square=Column(np.float32, 0.0),
                                   count=Column(np.float32, 0.0))  # gaps since the deploy
        self.active = False  # no slot has an offset: every method is a no-op

    def correction(self, slots: NDArray[np.intp]) -> LevelCorrection | None:
        """The rows' corrections (none for slots never corrected), or None while no slot has one."""
        if not self.active:
            return None
        known = slots < len(self._offsets)
        at = np.where(known, slots, 0)
        amount, log_factor = self._evident(at)
        return LevelCorrection(np.where(known, amount, 0.0),
                               np.exp(np.where(known, log_factor, 0.0)))

    def _evident(self, at: NDArray[np.intp]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The amounts and log factors of slots ``at`` that are evident (``evident_offset``)."""
        offsets = self._offsets
        amount, log_factor, square = (offsets.amount[at], offsets.log_factor[at],
                                      offsets.square[at])
        if not square.any():  # no count among them: every offset is taken whole
            return amount.astype(np.float64), log_factor.astype(np.float64)
        count = offsets.count[at]
        return (evident_offset(amount, square, count), evident_offset(log_factor, square, count))

    def restart(self, slots: NDArray[np.intp]) -> None:
        """A deploy of these slots' service: their offsets average the gaps afresh."""
        if len(slots):  # every resource of every request asks; deploys are rare
            self._offsets.count[slots[slots < len(self._offsets)]] = 0.0

    def absorb(  # noqa: PLR0913 -- the rows, and what they are
        self, slots: NDArray[np.intp], seen: NDArray[np.float64],
        expected: NDArray[np.float64], relative: bool,
        counted: NDArray[np.bool_] | None = None,
        spacing_s: NDArray[np.float64] | None = None,
    ) -> None:
        """Move the offsets of ``slots`` (distinct) toward the gap from ``expected``.

        Both are as the detector sees them (less the evident offset it was given).
        ``relative``: the gap is a log ratio and moves the factor (only where both are
        positive); else it is a difference and moves the amount. The offset is the running
        mean of the gaps from the detector's expected value since the slot's deploy (the
        n-th weighs 1/n, at least ``OFFSET_FLOOR``, or its share of ``OFFSET_MEMORY_S`` at
        the row's usual ``spacing_s`` if that is less, 0 while unknown). Rows that count
        events (``counted``) also keep the mean of the squared gaps, and the detector is
        given the evident part of their mean (``evident_offset``); any other offset is
        taken whole: what a shrunk offset leaves of a gauge's step lasts, and its
        detector's persistence narrowing finds it (a p99 release x1.25 at 30-s points
        paged after its grace period in 6 of 10 series, against 1;
        ``benchmarks/incidents.py``). Non-finite gaps move nothing.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            gaps = np.log(seen / expected) if relative else seen - expected
        if relative:
            gaps = np.where((seen > 0) & (expected > 0), gaps, np.nan)
        finite = np.isfinite(gaps)
        if not finite.any():
            return
        slots, gaps = slots[finite], gaps[finite]
        counted = np.zeros(len(slots), np.bool_) if counted is None else counted[finite]
        floor = np.full(len(slots), OFFSET_FLOOR)
        if spacing_s is not None:
            spacing = spacing_s[finite]
            floor = np.where(spacing > 0, np.minimum(floor, spacing / OFFSET_MEMORY_S), floor)
        offsets = self._offsets
        offsets.ensure(slots)
        given = self._evident(slots)[1 if relative else 0]
        gaps = gaps + given  # from the expected value, as the offset's mean is
        count = offsets.count[slots] + 1.0
        offsets.count[slots] = count
        weight = np.maximum(1.0 / count, floor)
        column = offsets.log_factor if relative else offsets.amount
        column[slots] += weight * (gaps - column[slots])
        square = offsets.square[slots].astype(np.float64)
        with np.errstate(over="ignore"):  # a float32 mean: absurd gaps saturate it
            learned = np.minimum(square + weight * (np.square(gaps) - square), _FLOAT32_MAX)
        offsets.square[slots] = np.where(counted, learned, 0.0)
        self.active = True

    def convert(
        self, slots: NDArray[np.intp], shift: LevelCorrection, expected: NDArray[np.float64],
    ) -> None:
        """Turn the amounts of a log model's ``slots`` into the factor that shows the same.

        ``expected``: the detector's, as it sees them (before ``shift`` restores it). An
        amount ``a`` on an expected ``e`` shows ``e + a``; the factor ``(e + a) / e`` does
        too, at this point, and scales with the level from then on. Rows where either is
        not positive keep their amount until a later point.
        """
        restored = expected + shift.amount
        rows = (shift.amount != 0) & (expected > 0) & (restored > 0)
        if not rows.any():
            return
        at = slots[rows]
        self._offsets.log_factor[at] += np.log(restored[rows] / expected[rows])
        self._offsets.amount[at] = 0.0
        self._offsets.square[at] = 0.0  # of amounts: the factor is taken whole

    def state_dict(self) -> dict[str, Any]:
        """The offsets, and whether any slot has one."""
        return {"active": self.active, **self._offsets.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        self.active = bool(state["active"])
        self._offsets.load_state_dict(state)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget the offsets of ``slots`` (evicted or reassigned)."""
        self._offsets.reset(slots[slots < len(self._offsets)])
