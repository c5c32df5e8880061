"""Compiled row loops of ``calibration`` (and the numpy scalar rules they share).

Each kernel does for one round what the numpy version did with a dozen array calls, row by
row, with the same arithmetic: ``nan_max``/``nan_min`` are ``np.maximum``/``np.minimum``
(NaN wins), and stores into float32 columns round as numpy's casts do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.kernel_math import maximum, minimum

DIRECTIONS = {"both": 0, "up": 1, "down": 2}
"""A policy's ``direction`` as the kernels take it."""
_UP, _DOWN = 1, 2
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LESSON_MAX = 1e18  # its square, and some hundred of them, still fit in float32


@kernel
def whole(value: float) -> bool:
    """Whether ``value`` is a whole number (NaN is not; infinities are)."""
    return bool(value == np.floor(value))


_COUNT_TOLERANCE = 1e-9
"""How far (relative) a rate times its exposure may be from a whole number and still be a
count: ``k / dt * dt`` is ``k`` only to a few float roundings."""


@row_kernel
def resolved_whole(value: Any, exposure: Any) -> bool:
    """Whether a row is a whole number of its series' resolution.

    A rate with its ``exposure`` (the seconds it was counted over; NaN: none) is whole when
    it counted a whole number of events (``value * exposure``); any other value when it
    is a whole number itself.
    """
    if exposure > 0:
        events = np.float64(value) * np.float64(exposure)
        return bool(abs(events - np.round(events)) <= _COUNT_TOLERANCE * maximum(1.0, abs(events)))
    return whole(value)


@row_kernel
def count_width(expected: Any, exposure: Any, k: Any, dispersion: Any) -> Any:
    """The band half-width above ``expected`` that a count's own noise needs.

    A rate counted over ``exposure`` seconds at an expected ``expected`` per second holds
    ``mu = expected * exposure`` events on average; its upper edge at ``k`` Gaussian-
    equivalent sigmas is the Cornish-Fisher quantile of a count with variance
    ``dispersion * mu`` (a negative binomial: Poisson at ``dispersion`` 1), ``mu + k
    sqrt(dispersion mu) + (k^2 - 1) (2 dispersion - 1) / 6`` events. The skew term keeps a
    rate resting near 0 at about 2 events, where the exact Poisson tail is (at ``mu =
    0.02`` two events are 3.5 sigmas out); for events that come in bursts (``dispersion``
    above 1) it is what widens the edge most, as a burst's size does. Returned per second;
    0 without an exposure.

    Only the upper side: a count's upper tail is longer than a band learned from its
    spread allows (its skew), its lower tail shorter. A floor below as well changed no
    false open of Poisson series at 0.02 to 100 events a window (one-minute and 10-second
    windows, 10 series each), and hid sustained drops that the learned band catches (5
    events a window falling to 0 for 30 minutes: 2 of 10 caught without it, 0 with it).
    A count that falls or stops is ``count_drop_score``'s.
    """
    if not (exposure > 0 and np.isfinite(expected) and np.isfinite(k)):
        return 0.0
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    phi = maximum(np.float64(dispersion), 1.0)
    return (k * np.sqrt(phi * mu) + (k * k - 1.0) * (2.0 * phi - 1.0) / 6.0) / exposure


DISPERSION_MEMORY = 50_000
"""Points a count's dispersion remembers: as many as its usual magnitude does
(``calibration.MAGNITUDE_MEMORY``). How bursty a series is, like how large its values
are, is a property of the series, and bursts are rare: at 0.02 events per 10-second
window in bursts of 4 (about 40 bursts a day), 5,000 points (14 hours) held too few for
their size to be evident, and the bursts opened 0.85 anomalies a series-day; with
50,000, 0.017 (``benchmarks/low_counts.py --step 10 --burst-size 4``). Simulated with
the expected value known (20,000 points, bursts of 4 on average: a variance 7 times the
Poisson one), the estimate's median was 5.3 at a tenth of an event a point and 6.7 at 2
(``test_count_rates`` checks the range): it errs low, toward the Poisson edge the series
had before, where few bursts were seen."""


@row_kernel
def dispersion(excess: Any, excess_sq: Any, events: Any) -> Any:
    """How many times its Poisson variance a count's variance is, as far as it is evident.

    ``excess``: the decayed sum of ``(k - mu)^2 - k`` over the count's rows (``k`` events
    where the detector expected ``mu``), 0 on average for Poisson counts around an
    unbiased ``mu``; ``excess_sq`` the decayed sum of its squares (its own variance);
    ``events`` the decayed sum of ``k``. The excess is measured against the detector's
    expected value, as the band is, so a detector that errs (a seasonal turn it lags) adds
    its error; the events are the observed ones, not ``mu``: a detector that expects 0 on a
    rate of one event an hour (its robust centre) would otherwise make every event an
    excess. Only the excess beyond two of its own standard errors counts, as in
    ``binomial_ratio``: one burst, or a few, is not yet a series that bursts. At least 1;
    1 before any event.
    """
    if not events > 0:
        return 1.0
    evident = np.float64(excess) - 2.0 * np.sqrt(maximum(np.float64(excess_sq), 0.0))
    return 1.0 + maximum(evident, 0.0) / np.float64(events)


@row_kernel
def count_dispersion(excess: Any, excess_sq: Any, events: Any, gap_sum: Any, gaps: Any) -> Any:
    """A count's ``dispersion``, or what its gaps between events say, whichever is larger.

    Where windows hold few events, a count's excess variance is evident only after many
    bursts (each adds a large, noisy lesson), while its gaps say at once how clustered its
    events are: by the time-rescaling theorem (``gap_scale``) single events leave gaps of
    about 1 expected event, events in bursts of ``S`` about ``S``, and bursts of geometric
    size with mean ``S`` vary ``2 S - 1`` times as much as Poisson events (the inverse of
    ``count_drop_score``'s ``(dispersion + 1) / 2``). The mean gap is used as it is, from
    the first gap on: taken at a lower bound (two standard errors below), it left the
    rarest bursty counts opening 2.3 times as often, and Poisson counts moved in neither
    case (``benchmarks/low_counts.py``, one-minute windows). Where windows hold many
    events the gaps end unseen and say nothing (their mean falls below 1); the excess
    variance then decides.
    """
    phi = dispersion(excess=excess, excess_sq=excess_sq, events=events)
    n = np.float64(gaps)
    if not n > 0.0:
        return phi
    return maximum(phi, 2.0 * np.float64(gap_sum) / n - 1.0)


@row_kernel
def dispersion_after(  # noqa: PLR0913 -- a count row and its slot's three cells
    value: Any, expected: Any, exposure: Any, excess: Any, excess_sq: Any, events: Any,
    decay: float,
) -> Any:
    """A slot's ``dispersion`` sums after a count row (``value`` and ``expected`` per second).

    float32 cells: a lesson is at most ``_LESSON_MAX`` either way and the sums are clamped
    to float32's range, so an absurd row is one outlier (no evidence: its square outweighs
    it) rather than saturated sums whose ratio says anything.
    """
    k = np.float64(value) * np.float64(exposure)
    gap = k - maximum(np.float64(expected), 0.0) * np.float64(exposure)
    lesson = minimum(maximum(gap * gap - k, -_LESSON_MAX), _LESSON_MAX)
    return (minimum(maximum(np.float64(excess) * decay + lesson, -_FLOAT32_MAX), _FLOAT32_MAX),
            minimum(np.float64(excess_sq) * decay * decay + lesson * lesson, _FLOAT32_MAX),
            minimum(np.float64(events) * decay + k, _FLOAT32_MAX))


@kernel
def _calibrate_row(  # noqa: PLR0913 -- a row, its floors and the policy's
    value: Any, expected: Any, lower: Any, upper: Any, floor: Any,
    min_abs: float, min_rel: float, direction: int, min_width: float, count_up: Any,
    count_down: Any, count_rise: Any,
) -> Any:
    """One row of ``calibrate``: its band's lower and upper edge, and its score.

    ``count_up``: the least half-width above that a count's noise needs (``count_width``;
    0 for no count). ``count_down``: how far below its expected events a count's recent
    rows are, as a score (``count_drop_score``; 0 for no count): a row below the expected
    value scores at least that, its band's lower edge narrowed to where it does.
    ``count_rise``: the same above (``count_rise_score``), past ``count_up`` too: a rise
    that lasts is evident where no single row is.
    """
    floor = maximum(maximum(min_abs, floor), min_rel * np.abs(expected))
    deviation = value - expected
    learned_up = maximum(upper - expected, count_up)
    if deviation > 0 and count_rise > 0 and not np.isnan(upper):
        learned_up = minimum(learned_up, deviation / count_rise)
    up_width = maximum(maximum(learned_up, floor), min_width)
    learned_down = expected - lower
    if deviation < 0 and count_down > 0 and not np.isnan(lower):
        learned_down = minimum(learned_down, -deviation / count_down)
    down_width = maximum(maximum(learned_down, floor), min_width)
    score = deviation / up_width if deviation >= 0 else -deviation / down_width
    if (direction == _UP and deviation < 0) or (direction == _DOWN and deviation > 0):
        score = 0.0
    if np.isnan(upper) or np.isnan(lower):  # warming up
        score = 0.0
    if not np.isfinite(value):
        score = np.nan
    return expected - down_width, expected + up_width, score


@row_kernel
def count_references(expected: Any, last_cycle: Any) -> Any:
    """The expected value a count's fall is tested against, and the one its rise is.

    The lower and the higher of the detector's ``expected`` and its ``last_cycle`` (what
    its longest seasonal model saw at this phase a cycle ago; NaN: none): a count's
    sequential tests take the expected events as the truth, and at thousands of events a
    window even a seasonal model's error is far beyond their noise. Before a weekly
    profile is ready, the daily one expects a busy day's traffic on a quiet day; at 0.6
    of it, request rates at 2-minute points opened for 5 to 20 hours on each quiet day of
    a series' first two weeks. What the weekly profile saw a week ago says such a day is
    usual. A fall or rise against both models is one still.
    """
    if not (np.isfinite(last_cycle) and np.isfinite(expected)):
        return expected, expected
    return minimum(expected, last_cycle), maximum(expected, last_cycle)


@row_kernel
def count_calibrated(  # noqa: PLR0913 -- a row, its slot's count cells and the policy's floors
    value: Any, expected: Any, lower: Any, upper: Any, floor: Any, k: Any, exposure: Any,
    fractional: Any, excess: Any, excess_sq: Any, events: Any, recent_events: Any,
    recent_expected: Any, run_expected: Any, gap_sum: Any, gaps: Any, drop_cusum: Any,
    rise_cusum: Any, exposure_sum: Any, min_abs: float, min_rel: float, direction: int,
    min_width: float, last_cycle: Any,
) -> Any:
    """``_calibrate_row`` with a count's floors, from its slot's cells (``calibrate_slots``).

    For a row judged as it arrived (no deploy offset). ``last_cycle``: the detector's
    (``count_references``; NaN: none). Returns the band's lower and upper edge, the score,
    and the count's ``dispersion`` (the row scans learn with it).
    """
    fall_expected, rise_expected = count_references(expected=expected, last_cycle=last_cycle)
    phi = count_dispersion(excess=excess, excess_sq=excess_sq, events=events,
                           gap_sum=gap_sum, gaps=gaps)
    count_up = count_floor(value=value, expected=expected, exposure=exposure,
                           fractional=fractional, k=k, dispersion=phi,
                           recent_events=recent_events, recent_expected=recent_expected)
    count_down = count_drop_score(value=value, expected=fall_expected, exposure=exposure,
                                  fractional=fractional, k=k, dispersion=phi,
                                  recent_events=recent_events,
                                  recent_expected=recent_expected, run_expected=run_expected,
                                  gap_sum=gap_sum, gaps=gaps, drop_cusum=drop_cusum)
    count_rise = count_rise_score(value=value, expected=rise_expected, exposure=exposure,
                                  fractional=fractional, k=k, dispersion=phi,
                                  rise_cusum=rise_cusum, events=events,
                                  exposure_sum=exposure_sum)
    band_lower, band_upper, score = _calibrate_row(value, expected, lower, upper, floor,
                                                   min_abs, min_rel, direction, min_width,
                                                   count_up, count_down, count_rise)
    return band_lower, band_upper, score, phi


@kernel
def calibrate_rows(
    values: Any, expected: Any, lower: Any, upper: Any, floor: Any,
    min_abs: float, min_rel: float, direction: int, min_width: float,
) -> Any:
    """``calibrate`` of each row, ``floor`` given per row: the band's edges and the scores."""
    n = len(values)
    band_lower, band_upper, score = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        band_lower[i], band_upper[i], score[i] = _calibrate_row(
            values[i], expected[i], lower[i], upper[i], floor[i], min_abs, min_rel, direction,
            min_width, 0.0, 0.0, 0.0)
    return band_lower, band_upper, score


@row_kernel
def floor_of(value: Any, magnitude: Any, fractional: Any, min_rel: float,
             exposure: Any) -> Any:
    """A row's band floor from its slot's usual magnitude (see ``calibrate_slots``).

    A rate with its exposure gets no floor of 1: its resolution is an event, which
    ``count_floor`` judges.
    """
    floor: float = min_rel * np.float64(magnitude)
    if fractional == 0 and not exposure > 0 and whole(value):
        floor = maximum(floor, 1.0)
    return floor


RECENT = 0.8
"""Weight per row of a count's recent events in its pooled test (``count_floor``), as in
``binomial_ratio``'s ``recent``: about the last 5 rows."""


@row_kernel
def count_floor(  # noqa: PLR0913 -- a row and its slot's count columns
    value: Any, expected: Any, exposure: Any, fractional: Any, k: Any, dispersion: Any,
    recent_events: Any, recent_expected: Any,
) -> Any:
    """A rate's least half-width above (``count_width``), or 0.

    Only for a row with an exposure that counted a whole number of events, on a slot whose
    every row has (``fractional`` 0): a counter of seconds or bytes, with fractional
    increments, is no count of events, and its band stays its own.

    A count that comes in bursts (``dispersion`` above 1) needs the width of its bursts,
    or one ordinary burst pages. A rise that lasts is evident before any one row is that
    far out: the recent rows pooled (``recent_events`` against ``recent_expected``,
    weighted ``RECENT`` per row, as ``recent_after`` keeps them) with this one are tested
    against the same quantile of their pooled count, and the width this row needs for
    that, when narrower, is the one used. Never narrower than Poisson noise alone.
    """
    if not counts_events(value=value, exposure=exposure, fractional=fractional):
        return 0.0
    window = count_width(expected=expected, exposure=exposure, k=k, dispersion=dispersion)
    if not dispersion > 1.0:
        return window
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    pooled = RECENT * np.float64(recent_expected) + mu
    edge = pooled + count_width(expected=pooled, exposure=1.0, k=k, dispersion=dispersion)
    needed = (edge - RECENT * np.float64(recent_events) - mu) / exposure
    poisson = count_width(expected=expected, exposure=exposure, k=k, dispersion=1.0)
    return maximum(poisson, minimum(window, needed))


DROP_OPENS_PER_DAY = 0.01
"""False opens a series-day that ``count_drop_score``'s tests may add at most, were the
expected events right: a tenth of the 0.1 a series-day the product aims at. A run of
empty windows, once rare, only grows rarer, so it opens where one window as far out would
not; its threshold is set per window of the day, not per point of the band."""


@row_kernel
def count_drop_score(  # noqa: PLR0913 -- a row and its slot's count columns
    value: Any, expected: Any, exposure: Any, fractional: Any, k: Any, dispersion: Any,
    recent_events: Any, recent_expected: Any, run_expected: Any, gap_sum: Any, gaps: Any,
    drop_cusum: Any,
) -> Any:
    """How far below its expected events a count's recent rows are, as a score; 0 if not.

    A count's lower tail is bounded by 0: at 10 events a window or fewer, no single window
    is ``k`` sigmas low, so a count that stopped (a service's calls falling to 0 for half
    an hour) stayed inside its learned band. Two tests of the rows up to this one, each
    scored by the exponent of a Chernoff bound on its probability, ``-ln P``:

    - pooled: the recent events (``RECENT`` per row, as ``count_floor``'s) against their
      pooled expected events, ``x`` against ``m``: ``m - x + x ln(x / m)`` for Poisson
      counts, over ``dispersion`` for counts that vary more;
    - a run of empty windows (``value`` 0): ``run_expected`` events were expected since
      the last window with any (``run_after``), with this one ``E``: ``E`` over the
      count's ``gap_scale`` (Poisson events, rightly expected, leave a run that long
      empty with probability ``exp(-E)``; the scale is what the count's own past gaps
      say instead, bursts and the detector's errors included), and at least over
      ``(dispersion + 1) / 2``: events in bursts of that mean size (geometric sizes have
      that variance) leave a window empty as often as ``2 / (dispersion + 1)`` times as
      many single events would. Where windows hold many events, gaps end within them,
      unseen, and cannot tell bursts from Poisson events; the dispersion can;
    - a fall that lasts: Page's CUSUM of the log-likelihood ratio of the rows' events at
      half their expected rate against the expected rate (``drop_cusum_after``), with
      this row's, over ``dispersion``. It is the sequential test that finds a lasting
      change of that size soonest for its false-alarm rate (Lorden 1971): the pooled test
      remembers about 5 windows, so traffic falling to a quarter of 2 events a minute
      (15 events in half an hour where 60 were expected) never reached its threshold.
      Where the detector expects too many (a lagging daily turn), the sum still drifts
      down while the count stays above 0.72 of what it expects.

    The score is the larger exponent over the one a row must reach: that of ``k`` sigmas,
    and at least ``ln(windows a day / DROP_OPENS_PER_DAY)``, as at most one run starts per
    window. Only for a row below its expected events that counts whole events on a slot
    of counts (``counts_events``).
    """
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    got = np.float64(value) * np.float64(exposure)
    if not got < mu:  # first: the cheapest test, and half of all rows
        return 0.0
    if not (np.isfinite(expected) and np.isfinite(k)
            and counts_events(value=value, exposure=exposure, fractional=fractional)):
        return 0.0
    phi = maximum(np.float64(dispersion), 1.0)
    pooled = RECENT * np.float64(recent_expected) + mu
    seen = minimum(RECENT * np.float64(recent_events) + got, pooled)
    exponent: float = pooled - seen
    if seen > 0.0:
        exponent += seen * math.log(seen / pooled)
    exponent /= phi
    if got == 0.0:
        scale = maximum(gap_scale(gap_sum=gap_sum, gaps=gaps), (phi + 1.0) / 2.0)
        exponent = maximum(exponent, (np.float64(run_expected) + mu) / scale)
    lasting = drop_cusum_after(value=value, expected=expected, exposure=exposure,
                               drop_cusum=drop_cusum, dispersion=phi)
    exponent = maximum(exponent, lasting / phi)
    return exponent / maximum(_rare_exponent(k=k),
                              alarm_exponent(exposure=exposure, opens_per_day=DROP_OPENS_PER_DAY))


@row_kernel
def _rare_exponent(k: Any) -> Any:
    """``-ln p``, ``p`` the probability that a Gaussian lies more than ``k`` sigmas above."""
    tail = 0.5 * math.erfc(np.float64(k) / math.sqrt(2.0))
    return -math.log(maximum(tail, 1e-300))


@row_kernel
def alarm_exponent(exposure: Any, opens_per_day: float) -> Any:
    """The ``-ln p`` a test of windows must reach to alarm ``opens_per_day`` times a day.

    ``ln(windows a day / opens_per_day)`` for windows of ``exposure`` seconds: at most one
    alarm can start per window.
    """
    return math.log(86400.0 / np.float64(exposure) / opens_per_day)


@row_kernel
def recent_after(value: Any, expected: Any, exposure: Any, recent_events: Any,
                 recent_expected: Any) -> Any:
    """A slot's recent events and expected events after a count row (``count_floor``)."""
    return (minimum(RECENT * np.float64(recent_events) + np.float64(value) * exposure,
                    _FLOAT32_MAX),
            minimum(RECENT * np.float64(recent_expected)
                    + maximum(np.float64(expected), 0.0) * exposure, _FLOAT32_MAX))


GAP_MEMORY = 1000
"""Gaps a count's ``gap_scale`` remembers (one ends at each window with events): about
five weeks of them at one event an hour, 17 hours at ten a minute."""
_GAP_DECAY = 1.0 - 1.0 / GAP_MEMORY


@row_kernel
def run_after(value: Any, expected: Any, exposure: Any, run_expected: Any, gap_sum: Any,
              gaps: Any) -> Any:
    """A slot's empty run (its expected events) and ``gap_scale`` sums after a count row.

    A window without events adds its expected events to the run; a window with events
    ends the gap before it, and teaches the events expected over that gap (0 if there was
    none).
    """
    mu = maximum(np.float64(expected), 0.0) * exposure
    if not np.float64(value) * exposure > 0.0:
        return minimum(np.float64(run_expected) + mu, _FLOAT32_MAX), gap_sum, gaps
    return (0.0, minimum(np.float64(gap_sum) * _GAP_DECAY + np.float64(run_expected),
                         _FLOAT32_MAX), np.float64(gaps) * _GAP_DECAY + 1.0)


DROP_RATIO = 0.5
"""The fall ``drop_cusum_after`` is tuned to find soonest: half the expected events (half a
service's traffic lost). Larger falls are found sooner still; a count above
``(1 - r) / ln(1 / r)`` (0.72) of its expected events lowers the sum on average."""
_DROP_LOG = math.log(1.0 / DROP_RATIO)


@row_kernel
def drop_cusum_after(value: Any, expected: Any, exposure: Any, drop_cusum: Any,
                     dispersion: Any) -> Any:
    """A slot's drop CUSUM after a count row: ``max(0, S + mu (1 - r) - k ln(1 / r))``.

    ``k`` events where ``mu`` were expected; the increment is the log-likelihood ratio of
    Poisson counts at ``r = DROP_RATIO`` times the expected rate against it. ``S`` crosses
    ``h`` about once in ``e^h`` windows of counts as expected (Lorden's bound on the
    average run length), so ``count_drop_score`` holds it to its per-day threshold.

    A row at or above its expected events while the sum is past that threshold (times
    ``dispersion``, as it is scored) ends the alarm, and the sum starts again from 0, as
    a CUSUM does after it signals: left to drift down, the sum of a 30-minute stop at 2
    events a minute held rows below the expected value at 3.3 times the band for over an
    hour after the count was back (a detector that expects 0.8 of it drains it slowly).
    """
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    got = np.float64(value) * np.float64(exposure)
    cusum = np.float64(drop_cusum)
    if got >= mu and cusum >= np.float64(dispersion) * alarm_exponent(
            exposure=exposure, opens_per_day=DROP_OPENS_PER_DAY):
        return 0.0
    step = mu * (1.0 - DROP_RATIO) - got * _DROP_LOG
    return minimum(maximum(cusum + step, 0.0), _FLOAT32_MAX)


@row_kernel
def exposure_sum_after(exposure: Any, exposure_sum: Any, decay: float) -> Any:
    """A slot's decayed sum of seconds counted after a quiet count row (``usual_events``).

    Decayed as ``dispersion_after``'s sum of the events seen, over the same rows.
    """
    return minimum(np.float64(exposure_sum) * decay + np.float64(exposure), _FLOAT32_MAX)


@row_kernel
def usual_events(expected: Any, exposure: Any, events: Any, exposure_sum: Any) -> Any:
    """The events a rise is tested against: the detector's, or the count's mean, if more.

    A robust centre sits below the mean of a skewed count, far below it where most windows
    are empty: on Poisson events at 0.1 a minute with a daily cycle, the default ensemble
    expected 0.069 on average and 0.031 in the quiet hours, where 0.068 came (at times
    0.01 where 0.06 came). Tested against that, ordinary events read as a rise (0.075
    false opens a series-day instead of 0.008, even with the detector's expected scaled to
    the events seen on average). The count's mean rate over its quiet rows (``events``
    over ``exposure_sum``, decayed alike) is unbiased, though not seasonal: the larger of
    the two only makes a rise in the busy hours, where the detector is close, slower to
    find.
    """
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    if not exposure_sum > 0.0:
        return mu
    return maximum(mu, np.float64(events) / np.float64(exposure_sum) * np.float64(exposure))


RISE_RATIO = 2.0
"""The rise ``rise_cusum_after`` is tuned to find soonest: twice the expected events, as
``DROP_RATIO`` is a fall to half. Larger rises are found sooner still; a count below
``(r - 1) / ln r`` (1.44) of its expected events lowers the sum on average, so a detector
that expects somewhat too few (a lagging morning ramp) does not feed it."""
_RISE_LOG = math.log(RISE_RATIO)
RISE_OPENS_PER_DAY = DROP_OPENS_PER_DAY
"""False opens a series-day that ``count_rise_score`` may add at most, were the expected
events right (as ``DROP_OPENS_PER_DAY`` for falls)."""


@row_kernel
def rise_cusum_after(value: Any, exposure: Any, rise_cusum: Any, dispersion: Any,
                     usual: Any) -> Any:
    """A slot's rise CUSUM after a count row: ``max(0, S + llr)``.

    ``k`` events where ``mu`` (``usual``, from ``usual_events``) were expected; ``llr`` is
    the log-likelihood ratio of the row's count at ``r = RISE_RATIO`` times the expected
    rate against it (Page 1954), so ``S`` crosses ``h`` about once in ``e^h`` windows of
    counts as expected (Lorden 1971). Poisson counts: ``k ln r - mu (r - 1)``. Counts that
    vary ``dispersion`` times as much are taken as negative binomial with that variance
    (shape ``mu / (dispersion - 1)``, the same at both rates), whose ratio weighs each
    event less (``ln(r (1 + c) / (r + c))``, ``c = 1 / (dispersion - 1)``): one large
    burst is one rise of the burst rate, not as many as its events. Scaling the Poisson
    ratio by the dispersion instead let the ordinary bursts of a count at 0.5 events per
    10 s in bursts of 4 open 0.067 times a series-day (0.025 before the rise test).
    A row at or below its expected events while the sum is past the per-day threshold
    ends the alarm and the sum starts again from 0, as ``drop_cusum_after`` does.
    """
    mu = np.float64(usual)
    got = np.float64(value) * np.float64(exposure)
    cusum = np.float64(rise_cusum)
    if got <= mu and cusum >= alarm_exponent(exposure=exposure,
                                             opens_per_day=RISE_OPENS_PER_DAY):
        return 0.0
    phi = np.float64(dispersion)
    if phi > 1.0 + 1e-6:
        c = 1.0 / (phi - 1.0)
        step = got * math.log(RISE_RATIO * (1.0 + c) / (RISE_RATIO + c)) - c * mu * math.log(
            (RISE_RATIO + c) / (1.0 + c))
    else:
        step = got * _RISE_LOG - mu * (RISE_RATIO - 1.0)
    return minimum(maximum(cusum + step, 0.0), _FLOAT32_MAX)


@row_kernel
def count_rise_score(  # noqa: PLR0913 -- a row and its slot's count cells
    value: Any, expected: Any, exposure: Any, fractional: Any, k: Any, dispersion: Any,
    rise_cusum: Any, events: Any, exposure_sum: Any,
) -> Any:
    """How far above its expected events a count's recent rows are, as a score; 0 if not.

    A count's band above is as wide as its noise at ``k`` sigmas for one row
    (``count_width``), so a rise that lasts but leaves each row within it never opened: an
    error counter at 0.5 events a minute going to 2.5 for half an hour (75 events where
    15 were expected) was caught in 5 of 10 series, at 0.1 a minute in none. Page's CUSUM
    of the rows' events at ``RISE_RATIO`` times their expected rate (``rise_cusum_after``,
    with this row's, as negative binomial counts of the count's ``dispersion``; the
    expected events are ``usual_events``) finds such a change soonest for its false-alarm
    rate. The score is that exponent over the one a row must reach: that of ``k`` sigmas,
    and at least ``ln(windows a day / RISE_OPENS_PER_DAY)``. Only for a row above its
    expected events that counts whole events on a slot of counts (``counts_events``).
    """
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    got = np.float64(value) * np.float64(exposure)
    if not got > mu:  # first: the cheapest test, and half of all rows
        return 0.0
    if not (np.isfinite(expected) and np.isfinite(k)
            and counts_events(value=value, exposure=exposure, fractional=fractional)):
        return 0.0
    phi = maximum(np.float64(dispersion), 1.0)
    usual = usual_events(expected=expected, exposure=exposure, events=events,
                         exposure_sum=exposure_sum)
    if not got > usual:
        return 0.0
    lasting = rise_cusum_after(value=value, exposure=exposure, rise_cusum=rise_cusum,
                               dispersion=phi, usual=usual)
    return lasting / maximum(_rare_exponent(k=k),
                             alarm_exponent(exposure=exposure, opens_per_day=RISE_OPENS_PER_DAY))


@row_kernel
def gap_scale(gap_sum: Any, gaps: Any) -> Any:
    """How many times its expected events a count's runs of empty windows usually hold.

    By the time-rescaling theorem, the events expected between two of a Poisson count's
    events are exponential with mean 1 where they are expected rightly, so where windows
    hold few events the mean gap (``run_after``) is about 1 (less where they hold many: a
    gap then ends within a window, unseen). Events in bursts of ``S`` leave gaps ``S``
    times as long, a detector that expects too many after each burst longer still. The
    mean gap times ``1 + 2 / sqrt(n)`` for ``n`` gaps learned (an exponential mean's upper
    bound at about two standard errors), at least 1: a young count, with few gaps seen,
    judges a run cautiously once its gaps are long; one whose windows mostly hold events
    is judged as Poisson events would be (its ``dispersion`` still widens them).
    """
    if not gaps > 0:
        return 1.0
    n = np.float64(gaps)
    return maximum(np.float64(gap_sum) / n * (1.0 + 2.0 / np.sqrt(n)), 1.0)


@row_kernel
def counts_events(value: Any, exposure: Any, fractional: Any) -> bool:
    """Whether a row is a count of events: a whole number of them, on a slot of counts."""
    return bool(fractional == 0 and exposure > 0 and np.isfinite(value)
                and resolved_whole(value=value, exposure=exposure))


@kernel
def count_rows(slots: Any, received: Any, exposure: Any, fractional: Any) -> Any:
    """Per row, whether it counts whole events on a slot of counts (``counts_events``)."""
    out = np.zeros(len(slots), np.bool_)
    if len(exposure) == 0:
        return out
    for i in range(len(slots)):
        s = slots[i]
        out[i] = s < len(fractional) and counts_events(
            value=received[i], exposure=exposure[i], fractional=fractional[s])
    return out


@kernel
def calibrate_slots(  # noqa: PLR0913 -- a round's rows, the slots' state and the policy
    values: Any, expected: Any, lower: Any, upper: Any, slots: Any, magnitude: Any,
    fractional: Any, k: Any, scale_floor: Any, min_abs: float, min_rel: float, direction: int,
    min_width: float, exposure: Any, received: Any, count_sums: tuple[Any, ...],
    last_cycle: Any,
) -> Any:
    """``Calibrator.step``'s floor and ``calibrate`` in one loop.

    The floor is ``min_rel`` times the slot's usual magnitude and, when ``scale_floor``
    has rows (a tail-calibrated detector), at least ``k`` times it; for a whole value on a
    slot whose values have all been whole numbers (``fractional`` 0), at least 1: the
    series' own resolution, so a count resting at 0 puts a single 1 on the band's edge, not
    1e9 widths past it. A fractional value shows the series is no count (an error ratio
    leaving 0): it is scored without that floor. A rate whose row has an ``exposure``
    (seconds; empty: no row has) is whole when it counted whole events, and its band is at
    least as wide above as its count's noise at ``k`` sigmas (``count_floor``, from the
    slot's ``count_sums``: the excess, excess_sq and events columns of its ``dispersion``,
    and its recent events and recent expected events). Both judge the value as
    ``received`` (empty: as ``values``): a deploy's level offset, taken out of ``values``
    and ``expected`` alike, does not make a count fractional. ``last_cycle`` (empty: none):
    the detector's ``Prediction.last_cycle``, a count's second opinion (``count_references``).
    """
    n = len(values)
    band_lower, band_upper, score = np.empty(n), np.empty(n), np.empty(n)
    (excess, excess_sq, events, recent_events, recent_expected, run_expected, gap_sum,
     gaps, drop_cusum, rise_cusum, exposure_sum) = count_sums
    for i in range(n):
        seconds = exposure[i] if len(exposure) else np.nan
        got = received[i] if len(received) else values[i]
        floor = floor_of(value=got, magnitude=magnitude[slots[i]],
                         fractional=fractional[slots[i]], min_rel=min_rel, exposure=seconds)
        if len(scale_floor):
            floor = maximum(floor, k[i] * scale_floor[i])
        s = slots[i]
        phi = count_dispersion(excess=excess[s], excess_sq=excess_sq[s], events=events[s],
                               gap_sum=gap_sum[s], gaps=gaps[s])
        mu = expected[i] + (got - values[i])
        fall_mu, rise_mu = count_references(
            expected=mu,
            last_cycle=last_cycle[i] + (got - values[i]) if len(last_cycle) else np.nan)
        count_up = count_floor(value=got, expected=mu, exposure=seconds,
                               fractional=fractional[s], k=k[i], dispersion=phi,
                               recent_events=recent_events[s],
                               recent_expected=recent_expected[s])
        count_down = count_drop_score(value=got, expected=fall_mu, exposure=seconds,
                                      fractional=fractional[s], k=k[i], dispersion=phi,
                                      recent_events=recent_events[s],
                                      recent_expected=recent_expected[s],
                                      run_expected=run_expected[s], gap_sum=gap_sum[s],
                                      gaps=gaps[s], drop_cusum=drop_cusum[s])
        count_rise = count_rise_score(value=got, expected=rise_mu, exposure=seconds,
                                      fractional=fractional[s], k=k[i], dispersion=phi,
                                      rise_cusum=rise_cusum[s], events=events[s],
                                      exposure_sum=exposure_sum[s])
        band_lower[i], band_upper[i], score[i] = _calibrate_row(
            values[i], expected[i], lower[i], upper[i], floor, min_abs, min_rel, direction,
            min_width, count_up, count_down, count_rise)
    return band_lower, band_upper, score


@kernel
def clip_rows(values: Any, lower: Any, upper: Any) -> Any:
    """``np.clip`` of each value into its band; a NaN edge does not bound (warming rows)."""
    out = np.empty(len(values))
    for i in range(len(values)):
        low = -np.inf if np.isnan(lower[i]) else lower[i]
        high = np.inf if np.isnan(upper[i]) else upper[i]
        out[i] = minimum(maximum(values[i], low), high)
    return out


@kernel
def learn_magnitude_rows(  # noqa: PLR0913 -- the rows and the slots' three columns
    slots: Any, values: Any, received: Any, magnitude: Any, points: Any, fractional: Any,
    memory: int, exposure: Any,
) -> bool:
    """Move each finite row's slot's usual ``|value|`` toward it, over ``memory`` points.

    ``magnitude`` and ``points`` are float32 columns. ``fractional`` (uint8) becomes 1 for
    a slot whose row as ``received`` is finite and not a whole number (of events, for a
    row with an ``exposure``: see ``resolved_whole``; empty: no row has one).

    Returns False, changing nothing, when a finite row's slot is past the columns (the
    caller grows them and calls again).
    """
    for i in range(len(slots)):
        if np.isfinite(values[i]) and slots[i] >= len(magnitude):
            return False
    for i in range(len(slots)):
        if not np.isfinite(values[i]):
            continue
        s = slots[i]
        magnitude[s], points[s], fractional[s] = magnitude_after(
            value=values[i], received=received[i], magnitude=magnitude[s], points=points[s],
            fractional=fractional[s], memory=memory,
            exposure=exposure[i] if len(exposure) else np.nan)
    return True


@kernel
def learn_count_rows(  # noqa: PLR0913 -- the rows and the slots' count columns
    slots: Any, values: Any, received: Any, expected: Any, exposure: Any, fractional: Any,
    quiet: Any, count_sums: tuple[Any, ...], decay: float, unclipped: Any, last_cycle: Any,
) -> None:
    """Each count row's lesson to its slot's ``count_sums`` (see ``calibrate_slots``).

    A count row: an ``exposure``, a whole number of events as ``received``, on a slot of
    counts (``fractional`` 0, as learned from this round), with a finite ``expected``
    (measured, like ``unclipped``, without a deploy's offset: it is put back).
    ``unclipped``: the rows' values less that offset, before any clipping (empty: as
    ``values``). ``quiet`` (empty: every row): the rows outside an open anomaly, or opening
    one. Every count row moves the recent sums (``recent_after``) and the run of empty
    windows (``run_after``), so an anomaly opened on them closes once its count is back,
    not while the rise or the stop goes on (so do the drop and rise CUSUMs,
    ``drop_cusum_after`` and ``rise_cusum_after``); only quiet rows teach how bursty the
    series is (``dispersion_after``), its mean rate (``exposure_sum_after``) and how long
    its gaps usually are (``run_after``). The tests of a fall follow the lower of
    ``expected`` and ``last_cycle`` (empty: none), the rise test the higher
    (``count_references``); the dispersion is the detector's error, as the band's is. The
    slots are within the columns (``learn_magnitude_rows`` grew them).
    """
    if len(exposure) == 0:
        return
    (excess, excess_sq, events, recent_events, recent_expected, run_expected, gap_sum,
     gaps, drop_cusum, rise_cusum, exposure_sum) = count_sums
    for i in range(len(slots)):
        s = slots[i]
        if not (np.isfinite(expected[i]) and counts_events(
                value=received[i], exposure=exposure[i], fractional=fractional[s])):
            continue
        offset = received[i] - (unclipped[i] if len(unclipped) else values[i])
        mu = expected[i] + offset
        fall_mu, rise_mu = count_references(
            expected=mu, last_cycle=last_cycle[i] + offset if len(last_cycle) else np.nan)
        recent_events[s], recent_expected[s] = recent_after(
            value=received[i], expected=fall_mu, exposure=exposure[i],
            recent_events=recent_events[s], recent_expected=recent_expected[s])
        run, gap_sum_after, gaps_after = run_after(
            value=received[i], expected=fall_mu, exposure=exposure[i],
            run_expected=run_expected[s], gap_sum=gap_sum[s], gaps=gaps[s])
        run_expected[s] = run
        phi = count_dispersion(excess=excess[s], excess_sq=excess_sq[s], events=events[s],
                               gap_sum=gap_sum[s], gaps=gaps[s])
        drop_cusum[s] = drop_cusum_after(value=received[i], expected=fall_mu,
                                         exposure=exposure[i], drop_cusum=drop_cusum[s],
                                         dispersion=phi)
        rise_cusum[s] = rise_cusum_after(
            value=received[i], exposure=exposure[i], rise_cusum=rise_cusum[s], dispersion=phi,
            usual=usual_events(expected=rise_mu, exposure=exposure[i], events=events[s],
                               exposure_sum=exposure_sum[s]))
        if len(quiet) and not quiet[i]:  # a gap that ends in an anomaly teaches nothing
            continue
        gap_sum[s], gaps[s] = gap_sum_after, gaps_after
        excess[s], excess_sq[s], events[s] = dispersion_after(
            value=received[i], expected=mu, exposure=exposure[i], excess=excess[s],
            excess_sq=excess_sq[s], events=events[s], decay=decay)
        exposure_sum[s] = exposure_sum_after(exposure=exposure[i],
                                             exposure_sum=exposure_sum[s], decay=decay)


@row_kernel
def magnitude_after(  # noqa: PLR0913 -- a finite row and its slot's three cells
    value: Any, received: Any, magnitude: Any, points: Any, fractional: Any, memory: int,
    exposure: Any,
) -> Any:
    """A slot's usual ``|value|``, points seen and fractional flag after a finite row."""
    if np.isfinite(received) and not resolved_whole(value=received, exposure=exposure):
        fractional = 1
    seen = minimum(np.float64(points) + 1.0, np.float64(memory))
    weight = maximum(1.0 / seen, 1.0 / memory)
    typical = np.float64(magnitude)
    learned = typical + weight * (np.abs(value) - typical)
    if np.isfinite(learned):  # ``saturated``: finite values stay finite in float32
        learned = minimum(maximum(learned, -_FLOAT32_MAX), _FLOAT32_MAX)
    return learned, seen, fractional


@kernel
def ready_rows(upper: Any, score: Any, mask: Any, quiet: Any) -> Any:
    """Rows with a band and a finite score (and, where given, ``mask`` and ``quiet``)."""
    rows = np.empty(len(upper), np.intp)
    n = 0
    for i in range(len(upper)):
        if (not np.isnan(upper[i]) and np.isfinite(score[i])
                and (len(mask) == 0 or mask[i]) and (len(quiet) == 0 or quiet[i])):
            rows[n] = i
            n += 1
    return rows[:n]


@kernel
def scale_lesson(rows: Any, slots: Any, score: Any, k: Any, values: Any, expected: Any) -> Any:
    """What the deviation scale learns from ``rows``: slots, spread units, absolute sizes."""
    n = len(rows)
    at, z, size = np.empty(n, slots.dtype), np.empty(n), np.empty(n)
    for j in range(n):
        i = rows[j]
        at[j], z[j], size[j] = slots[i], score[i] * k[i], np.abs(values[i] - expected[i])
    return at, z, size
