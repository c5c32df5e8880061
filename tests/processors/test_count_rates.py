"""Rates of events are judged as counts: a band never narrower than Poisson noise allows.

A counter's rate, a window's calls or log records come with the seconds they were counted
over (``SeriesBatch.counts``). An error counter that ticks a few times an hour rests at an
expected fraction of an event per interval, and its learned spread at about nothing: one
event must not page, a burst of them must.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_anomaly.processors.alerting.calibration_kernels import (
    DISPERSION_MEMORY,
    count_dispersion,
    count_floor,
    count_width,
    dispersion,
    dispersion_after,
    rise_cusum_after,
    run_after,
    usual_events,
)
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.state.codec import decode, encode
from otel_anomaly.processors.state.migrations import upgrade
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    bursty_counts,
    counter,
    kv,
    logs_request,
)
from otel_anomaly.processors.types import SeriesKey

STEP_S = 60
PER_DAY = 86400 // STEP_S
T0 = 1_700_000_000


def _poisson_upper_edge(mu: float, p: float) -> int:
    """The smallest ``k`` with ``P(K >= k) <= p`` for ``K ~ Poisson(mu)``, exactly."""
    pmf, below, k = math.exp(-mu), 0.0, 0
    while 1.0 - below > p:
        below += pmf
        k += 1
        pmf *= mu / k
    return k


@pytest.mark.parametrize("mu", [0.0, 0.001, 0.02, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0, 400.0])
def test_the_count_band_is_the_poisson_tail_at_its_sigmas(mu: float) -> None:
    # 3.5 Gaussian-equivalent sigmas, one-sided: the fewest events that score above 1 are
    # the exact tail's, within one event (measured: equal, or one off either way).
    exposure = 60.0
    up = count_width(mu / exposure, exposure, 3.5, 1.0)
    first_out = math.floor(mu + up * exposure) + 1
    exact = _poisson_upper_edge(mu, 0.5 * math.erfc(3.5 / math.sqrt(2.0)))
    assert abs(first_out - exact) <= 1, f"mu {mu}: {first_out} events score above 1, exact {exact}"


def test_no_exposure_no_count_band() -> None:
    assert count_width(0.5, math.nan, 3.5, 1.0) == 0.0


def _counter_rates(mean: float, seed: int, days: float = 10.0, burst: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, slice]:
    rng = np.random.default_rng(seed)
    n = int(days * PER_DAY)
    t = np.arange(n) * STEP_S
    lam = mean * (1.0 + 0.5 * np.sin(2 * np.pi * t / 86400))
    at = slice(n - PER_DAY // 2, n - PER_DAY // 2 + 10)
    lam[at] += burst
    events = rng.poisson(lam).astype(np.float64)
    return (t + T0).astype(np.int64) * SECOND, events / STEP_S, at


def _opens(flag: np.ndarray, start: int) -> int:
    return int((np.diff(flag[start - 1 :].astype(np.int8)) == 1).sum())


@pytest.mark.parametrize("mean", [0.02, 0.1, 0.5])
def test_a_rare_counter_with_its_interval_pages_nothing(mean: float) -> None:
    # Without the interval, the same rates open about 0.1 to 1.2 times a series-day
    # (measured: 1.22, 0.51, 0.08 for these means at one-minute points).
    series, bare = [], []
    for i in range(6):
        ts, rates, _ = _counter_rates(mean, seed=i)
        key = SeriesKey("app_errors_total:rate", (("instance", str(i)),), ())
        series.append(RecordedSeries(key, ts, rates, np.full(len(ts), float(STEP_S))))
        bare.append(RecordedSeries(key, ts, rates))
    warm = 2 * PER_DAY
    counted = sum(_opens(r.flag, warm) for r in backtest(Engine(EngineSettings(
        clock=lambda: 0.0)), series))
    days = len(series) * (len(series[0].values) - warm) / PER_DAY
    assert counted / days <= 0.05, f"{counted} opens in {days:.0f} series-days"
    if mean <= 0.1:  # the test can fail: the bare rates do page
        uncounted = sum(_opens(r.flag, warm) for r in backtest(Engine(EngineSettings(
            clock=lambda: 0.0)), bare))
        assert uncounted >= 5 * max(counted, 1), f"{uncounted} bare, {counted} counted"


def test_a_burst_on_a_rare_counter_opens_at_once() -> None:
    for seed in range(4):
        ts, rates, at = _counter_rates(0.02, seed=seed, burst=8.0)
        key = SeriesKey("app_errors_total:rate", (), ())
        (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [
            RecordedSeries(key, ts, rates, np.full(len(ts), float(STEP_S)))])
        first = np.flatnonzero(result.flag[at])
        assert len(first) and first[0] <= 1, f"seed {seed}: flags {result.flag[at]}"


def _learned_dispersion(events: np.ndarray, expected: float) -> float:
    sums = (0.0, 0.0, 0.0)
    decay = 1.0 - 1.0 / DISPERSION_MEMORY
    for k in events:
        sums = dispersion_after(value=k / STEP_S, expected=expected / STEP_S,
                                exposure=float(STEP_S), excess=sums[0], excess_sq=sums[1],
                                events=sums[2], decay=decay)
    return float(dispersion(excess=sums[0], excess_sq=sums[1], events=sums[2]))


@pytest.mark.parametrize("mean", [0.1, 2.0, 20.0])
def test_a_count_learns_how_bursty_it_is(mean: float) -> None:
    rng = np.random.default_rng(int(mean * 10))
    rate = np.full(20_000, mean)
    # Poisson events: nothing evident beyond Poisson noise, even where the detector
    # expects 0 (a robust centre on a rate of a tenth of an event).
    assert _learned_dispersion(bursty_counts(rate, 1.0, rng), mean) == 1.0
    assert _learned_dispersion(bursty_counts(rate, 1.0, rng), 0.0) < 1.0 + mean
    # Bursts of 4 on average: a variance 7 times Poisson's. The estimate errs low, where
    # few bursts were seen (measured about 4 at a tenth of an event, 6.5 at 20).
    bursty = _learned_dispersion(bursty_counts(rate, 4.0, rng), mean)
    assert 3.0 <= bursty <= 7.5, bursty


def _dispersion_from_gaps(events: np.ndarray, expected: float) -> float:
    run, gap_sum, gaps = 0.0, 0.0, 0.0
    for k in events:
        run, gap_sum, gaps = run_after(value=k / STEP_S, expected=expected / STEP_S,
                                       exposure=float(STEP_S), run_expected=run,
                                       gap_sum=gap_sum, gaps=gaps)
    return float(count_dispersion(excess=0.0, excess_sq=0.0, events=0.0, gap_sum=gap_sum,
                                  gaps=gaps))


@pytest.mark.parametrize("mean", [0.02, 0.1, 0.5])
def test_a_sparse_count_s_gaps_say_how_bursty_it_is_within_two_days(mean: float) -> None:
    # Where most windows are empty, two days of gaps between events (about 14 of them at
    # 0.02 in bursts of 4) tell bursts from single events long before their excess variance is
    # evident (``test_a_count_learns_how_bursty_it_is``: 20,000 windows).
    for seed in range(5):
        rng = np.random.default_rng(seed)
        rate = np.full(2 * PER_DAY, mean)
        poisson = _dispersion_from_gaps(bursty_counts(rate, 1.0, rng), mean)
        assert 1.0 <= poisson <= 1.5, (seed, poisson)
        bursty = _dispersion_from_gaps(bursty_counts(rate, 4.0, rng), mean)
        assert 4.0 <= bursty <= 10.0, (seed, bursty)  # 7 for bursts of 4 on average


def test_the_gaps_of_a_dense_count_say_nothing() -> None:
    # 20 events a minute: every window holds some, bursts or not, so the gaps end unseen
    # and the excess variance alone decides.
    rng = np.random.default_rng(1)
    assert _dispersion_from_gaps(bursty_counts(np.full(PER_DAY, 20.0), 4.0, rng), 20.0) == 1.0


def test_one_absurd_count_is_no_evidence_of_bursts() -> None:
    # A sender's bug reports 1e30 events in one minute: one outlier, however large, stays
    # inside its own noise (its square), so the count keeps its Poisson edge.
    rng = np.random.default_rng(4)
    events = bursty_counts(np.full(3000, 2.0), 1.0, rng)
    events[1500] = 1e30
    assert _learned_dispersion(events, 2.0) == 1.0


def test_a_bursty_count_needs_a_burst_s_width_unless_it_lasts() -> None:
    # 2 events a minute expected, a variance 7 times Poisson's: one row needs about 37
    # more events to reach the edge (Poisson: about 7). Once the recent rows pooled hold
    # 80 events where 10 were expected, they are beyond their own edge (64) already, and
    # the row's edge is back at Poisson's; at 40, on the way.
    seconds = float(STEP_S)

    def floor(recent_events: float, recent_expected: float) -> float:
        return float(count_floor(value=0.0, expected=2.0 / seconds, exposure=seconds,
                                 fractional=0, k=3.5, dispersion=7.0,
                                 recent_events=recent_events,
                                 recent_expected=recent_expected)) * seconds

    poisson = float(count_width(2.0 / seconds, seconds, 3.5, 1.0)) * seconds
    quiet = floor(recent_events=10.0, recent_expected=10.0)  # the last rows as expected
    assert quiet > 4 * poisson, (quiet, poisson)
    lasting = floor(recent_events=80.0, recent_expected=10.0)
    assert lasting == pytest.approx(poisson), (lasting, poisson)
    assert poisson < floor(recent_events=40.0, recent_expected=10.0) < quiet


def _bursty_series(mean: float, size: float, seed: int, days: float = 10.0,
                   rise: float = 1.0) -> tuple[RecordedSeries, slice]:
    rng = np.random.default_rng(seed)
    n = int(days * PER_DAY)
    t = np.arange(n) * STEP_S
    rate = mean * (1.0 + 0.5 * np.sin(2 * np.pi * t / 86400))
    at = slice(n - PER_DAY // 2, n - PER_DAY // 2 + 30)
    rate[at] *= rise
    events = bursty_counts(rate, size, rng)
    key = SeriesKey("app_events_total:rate", (("instance", str(seed)),), ())
    return RecordedSeries(key, (t + T0).astype(np.int64) * SECOND, events / STEP_S,
                          np.full(n, float(STEP_S))), at


def test_a_counter_whose_events_come_in_bursts_pages_no_more_than_one_without() -> None:
    # Half an event a minute, in bursts of 4 on average. Judged as Poisson counts (as
    # before the dispersion) its ordinary bursts opened 0.71 times a series-day, about
    # as often as the same rates without their interval (measured, 10 series, 12 days).
    series = [_bursty_series(0.5, 4.0, seed)[0] for seed in range(6)]
    warm = 2 * PER_DAY
    result = backtest(Engine(EngineSettings(clock=lambda: 0.0)), series)
    opens = sum(_opens(r.flag, warm) for r in result)
    days = len(series) * (len(series[0].values) - warm) / PER_DAY
    assert opens / days <= 0.05, f"{opens} opens in {days:.0f} series-days"
    bare = [RecordedSeries(s.key, s.ts_unix_nano, s.values) for s in series]
    loud = sum(_opens(r.flag, warm) for r in backtest(Engine(EngineSettings(
        clock=lambda: 0.0)), bare))
    assert loud >= 5 * max(opens, 1), f"{loud} opens without the interval, {opens} with"


def test_a_young_rare_counter_in_bursts_pages_within_its_budget() -> None:
    # An error counter that ticks about once an hour, in bursts of 4 on average: judged
    # by its excess variance alone, which a few bursts do not make evident, its ordinary
    # bursts opened 1.4 anomalies a series-day from its second day to its sixth (70 in
    # these 50 series-days, measured); with what its gaps say, 2. Its first day, with a
    # handful of bursts seen, is left out (11 opens, 23 before).
    series = [_bursty_series(0.02, 4.0, seed, days=6.0)[0] for seed in range(10)]
    result = backtest(Engine(EngineSettings(clock=lambda: 0.0)), series)
    opens = sum(_opens(r.flag, PER_DAY) for r in result)
    assert opens <= 0.2 * 5 * len(series), f"{opens} opens in {5 * len(series)} series-days"


def test_a_lasting_rise_of_a_bursty_counter_opens() -> None:
    # Two events a minute in bursts of 2, five times as many for 30 minutes: few single
    # minutes are beyond a burst's width, the recent minutes pooled are. Measured on these
    # 20 series: caught in 12 with the pooled test, 5 judging each minute alone, and 13
    # judged as Poisson counts (which also paged on 0.1 ordinary bursts a series-day).
    caught = 0
    for seed in range(20):
        series, at = _bursty_series(2.0, 2.0, seed, rise=5.0)
        (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [series])
        caught += int(result.flag[at].any())
    assert caught >= 9, f"caught in {caught} of 20"


@pytest.mark.parametrize(("mean", "size", "least"), [(0.5, 1.0, 9), (2.0, 4.0, 5)])
def test_a_counter_that_rises_for_half_an_hour_opens(mean: float, size: float,
                                                     least: int) -> None:
    # Five times the events for 30 minutes: at half an event a minute, 75 where 15 were
    # expected, yet few single minutes are past a minute's Poisson edge. Judged minute by
    # minute (and pooled over the last five, for bursts) it was caught in 2 of these 10
    # series, and in 1 of 10 at two events a minute in bursts of 4 (measured before the
    # rise CUSUM); with it, in 10 and 7, a median of 10 and 24 minutes in.
    caught = 0
    for seed in range(10):
        series, at = _bursty_series(mean, size, seed, rise=5.0)
        (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [series])
        caught += int(result.flag[at].any())
    assert caught >= least, f"caught in {caught} of 10"


def test_a_rise_is_tested_against_the_count_s_mean_where_the_detector_expects_less() -> None:
    # A robust centre of a sparse count sits near 0 where most minutes are empty; the
    # count's mean over its quiet rows (0.1 a minute: 50 events in 500 minutes) is the
    # floor of the events a rise is tested against.
    assert usual_events(expected=0.01 / 60, exposure=60.0, events=50.0,
                        exposure_sum=500 * 60.0) == pytest.approx(0.1)
    assert usual_events(expected=0.3 / 60, exposure=60.0, events=50.0,
                        exposure_sum=500 * 60.0) == pytest.approx(0.3)
    assert usual_events(expected=0.01 / 60, exposure=60.0, events=0.0,
                        exposure_sum=0.0) == pytest.approx(0.01)


def test_the_rise_cusum_grows_on_a_doubling_and_restarts_once_the_count_is_back() -> None:
    # Poisson counts: twice the usual events add ``2 mu ln 2 - mu`` each (0.386 mu); the
    # usual events take ``mu (1 - ln 2)`` off, down to 0. Past the per-day threshold, a row
    # at or below the usual events ends the alarm.
    grown = rise_cusum_after(value=20.0 / 60, exposure=60.0, rise_cusum=0.0, dispersion=1.0,
                             usual=10.0)
    assert grown == pytest.approx(20 * math.log(2) - 10)
    assert rise_cusum_after(value=10.0 / 60, exposure=60.0, rise_cusum=1.0, dispersion=1.0,
                            usual=10.0) == 0.0
    threshold = math.log(1440 / 0.01)
    assert rise_cusum_after(value=10.0 / 60, exposure=60.0, rise_cusum=threshold + 5.0,
                            dispersion=1.0, usual=10.0) == 0.0
    assert rise_cusum_after(value=20.0 / 60, exposure=60.0, rise_cusum=threshold + 5.0,
                            dispersion=1.0, usual=10.0) > threshold + 5.0


def test_a_bursty_count_s_rise_cusum_counts_a_burst_as_one_rise() -> None:
    # Negative binomial counts (dispersion 2: shape mu, c = 1): ``k ln(r (1 + c) / (r + c))
    # - c mu ln((r + c) / (1 + c))``. A burst of 40 events where 0.5 were expected, in a
    # count 7 times as variable as Poisson's, adds less than the Poisson ratio scaled down
    # by the dispersion would (3.9).
    assert rise_cusum_after(value=20.0 / 60, exposure=60.0, rise_cusum=0.0, dispersion=2.0,
                            usual=10.0) == pytest.approx(20 * math.log(4 / 3)
                                                         - 10 * math.log(3 / 2))
    burst = rise_cusum_after(value=40.0 / 60, exposure=60.0, rise_cusum=0.0, dispersion=7.0,
                             usual=0.5)
    assert burst == pytest.approx(40 * math.log(14 / 13) - 0.5 / 6 * math.log(13 / 7))
    assert burst < (40 * math.log(2) - 0.5) / 7


def test_a_counter_of_seconds_keeps_its_own_band() -> None:
    # CPU seconds: increments are fractions, so they are no events and get no count band.
    rng = np.random.default_rng(3)
    n = 3 * PER_DAY
    ts = (np.arange(n) * STEP_S + T0).astype(np.int64) * SECOND
    rates = np.abs(rng.normal(0.4, 0.05, n))
    key = SeriesKey("process_cpu_seconds_total:rate", (), ())
    (timed,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [
        RecordedSeries(key, ts, rates, np.full(n, float(STEP_S)))])
    (plain,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [
        RecordedSeries(key, ts, rates)])
    assert np.array_equal(timed.upper, plain.upper, equal_nan=True)
    assert np.array_equal(timed.score, plain.score, equal_nan=True)


def _counter_request(ts: int, totals: np.ndarray) -> ExportMetricsServiceRequest:
    metrics = [counter("app.errors", [(ts, float(total))], start=T0 * SECOND,
                       attributes={"route": f"/r{i}"}, unit="{error}")
               for i, total in enumerate(totals)]
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        resource=Resource(attributes=kv({"service.name": "shop"})),
        scope_metrics=[ScopeMetrics(metrics=metrics)])])


def _errors_over_otlp(
    increments: Callable[[int], np.ndarray], wire: bool,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Six routes' cumulative error counters exported every minute for three days, each
    minute's errors from ``increments(minute)``, through ``Engine.ingest`` (its compiled
    wire path, or the walk). Returns the opens and their explanations, each with its
    minute."""
    engine = Engine(EngineSettings(clock=FakeClock(0.0), series_ttl_s=1e9))
    totals = np.zeros(6)
    opened: list[tuple[int, str]] = []
    explained: list[tuple[int, str]] = []
    for m in range(1, 3 * PER_DAY):
        totals += increments(m)
        request = _counter_request((T0 + m * STEP_S) * SECOND, totals)
        result = engine.ingest("metrics", request,
                               request.SerializeToString() if wire else None)
        opens = [e for e in result.events if e.kind == "open"]
        opened += [(m, dict(e.key.attributes)["route"]) for e in opens]
        explained += [(m, e.explanation) for e in opens]
    if wire:
        assert engine.wire is not None and engine.wire.handled > 0, "the compiled path never ran"
    return opened, explained


@pytest.mark.parametrize("wire", [True, False], ids=["compiled", "walk"])
def test_rare_errors_over_otlp_page_only_on_a_burst(wire: bool) -> None:
    # About one error per route every 20 minutes, then a burst on route 0 in the last hour.
    rng = np.random.default_rng(11)
    burst_at = 3 * PER_DAY - 60

    def increments(m: int) -> np.ndarray:
        errors = rng.poisson(0.05, 6).astype(np.float64)
        if burst_at <= m < burst_at + 5:
            errors[0] += 6
        return errors

    opened, explained = _errors_over_otlp(increments, wire)
    quiet = [(m, route) for m, route in opened if not (route == "/r0" and m >= burst_at)]
    assert quiet == [], f"opens outside the burst: {quiet}"
    burst = [m for m, route in opened if route == "/r0" and m >= burst_at]
    assert burst and burst[0] <= burst_at + 1, f"the burst opened at {burst}"
    # Said in events: the minute's errors, not only a rate per second.
    text = explained[-1][1]
    assert re.search(r"rate [0-9.]+/s \(\d+ events in 1m\)", text), text


@pytest.mark.parametrize("wire", [True, False], ids=["compiled", "walk"])
def test_errors_that_rise_fivefold_for_half_an_hour_over_otlp_open(wire: bool) -> None:
    # About half an error a minute on each route; in the last hour every route errs five
    # times as often for 30 minutes. Few single minutes are past a minute's Poisson edge;
    # the half hour is (about 75 errors where 15 were expected). Each route is its own
    # series. Before the rise CUSUM, 2 of the 6 opened.
    rng = np.random.default_rng(5)
    rise_at = 3 * PER_DAY - 60
    opened, explained = _errors_over_otlp(
        lambda m: rng.poisson(2.5 if rise_at <= m < rise_at + 30 else 0.5, 6).astype(
            np.float64), wire)
    before = [(m, route) for m, route in opened if m < rise_at]
    assert len(before) <= 1, f"opens before the rise: {before}"
    during = {route for m, route in opened if rise_at <= m < rise_at + 30}
    assert len(during) >= 5, f"routes opened during the rise: {sorted(during)}"
    texts = [text for m, text in explained if m >= rise_at]
    assert any("above the expected" in text for text in texts), texts[-3:]


def test_a_counter_restored_from_format_14_is_judged_as_a_count_again() -> None:
    # Format 14 marked a counter's slot fractional at its first rate that was not a whole
    # number per second; the upgrade clears the mark, so the restored engine goes on as
    # one that never stopped.
    ts, rates, _ = _counter_rates(0.02, seed=5, days=3.0)
    exposure = np.full(len(ts), float(STEP_S))
    key = SeriesKey("app_errors_total:rate", (), ())
    cut = 2 * PER_DAY
    live = Engine(EngineSettings(clock=lambda: 0.0))
    backtest(live, [RecordedSeries(key, ts[:cut], rates[:cut], exposure[:cut])])
    state = decode(*encode(live.state_dict()))
    for calibrator in state["scorer"]["calibrators"]:
        calibrator["usual.fractional"] = np.ones_like(calibrator["usual.fractional"])
    restored = Engine(live.settings)
    restored.load_state_dict(upgrade(state, 14, checkpoint.FORMAT))
    rest = RecordedSeries(key, ts[cut:], rates[cut:], exposure[cut:])
    (went_on,) = backtest(live, [rest])
    (came_back,) = backtest(restored, [rest])
    assert np.array_equal(came_back.upper, went_on.upper, equal_nan=True)
    assert np.array_equal(came_back.flag, went_on.flag)


def test_a_counter_stays_a_count_after_its_service_deploys() -> None:
    # A release gives every series of the service a level offset (an amount here), taken
    # out of what the detector sees from then on: the count is still judged in the events
    # it counted, so the rare errors after the release page no more than before it.
    series = []
    for i in range(6):
        ts, rates, _ = _counter_rates(0.1, seed=20 + i, days=6.0)
        service = (("service.name", f"shop{i}"),)
        series.append(RecordedSeries(SeriesKey("app_errors_total:rate", service, ()), ts, rates,
                                     np.full(len(ts), float(STEP_S))))
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    release = 2 * PER_DAY + 100
    for s in series:
        engine.observe_version(s.key.resource, "1", int(s.ts_unix_nano[0]))
        engine.observe_version(s.key.resource, "2", int(s.ts_unix_nano[release]))
    results = backtest(engine, series)
    after = release + PER_DAY // 24  # past the grace period (15 minutes)
    opens = sum(_opens(r.flag, after) for r in results)
    assert engine.scorer.offsets.active, "the release left no level offset"
    assert opens == 0, f"{opens} opens after the release"


def _restored_without(series: RecordedSeries, names: tuple[str, ...], version: int,
                      learned: str) -> None:
    """Learn ``series``' first two days, save them as format ``version`` (the calibrators'
    ``usual.<names>`` columns left out), upgrade and restore: the restored columns are 0,
    and the rest of ``series`` teaches ``usual.<learned>`` again."""
    cut = 2 * PER_DAY
    live = Engine(EngineSettings(clock=lambda: 0.0))
    backtest(live, [RecordedSeries(series.key, series.ts_unix_nano[:cut],
                                   series.values[:cut], series.counts[:cut])])
    state = decode(*encode(live.state_dict()))
    for calibrator in state["scorer"]["calibrators"]:
        for name in names:
            del calibrator[f"usual.{name}"]
    if version <= 17:  # nor the spread of a deploy offset's gaps
        del state["scorer"]["offsets"]["square"]
    restored = Engine(live.settings)
    restored.load_state_dict(upgrade(state, version, checkpoint.FORMAT))
    for calibrator in restored.state_dict()["scorer"]["calibrators"]:
        assert all(not calibrator[f"usual.{name}"].any() for name in names)
    rest = RecordedSeries(series.key, series.ts_unix_nano[cut:], series.values[cut:],
                          series.counts[cut:])
    backtest(restored, [rest])
    after = [c[f"usual.{learned}"] for c in restored.state_dict()["scorer"]["calibrators"]]
    assert max(float(column.max(initial=0.0)) for column in after) > 0, learned


def test_a_count_restored_from_format_15_learns_its_bursts_anew() -> None:
    # Format 15 had no dispersion: the upgrade starts every count at Poisson noise (the
    # edge it had), and the restored engine learns its bursts again from there.
    series, _ = _bursty_series(0.5, 4.0, seed=3, days=4.0)
    _restored_without(series, ("count_excess", "count_excess_sq", "count_events",
                               "count_recent_events", "count_recent_expected"), 15,
                      "count_events")


def test_a_count_restored_from_format_16_learns_its_runs_anew() -> None:
    # Format 16 had no runs of empty windows: a restored count judges its next run by its
    # dispersion alone (``calibration_kernels.gap_scale``: none seen, 1), and learns anew.
    series, _ = _bursty_series(0.5, 1.0, seed=3, days=4.0)
    _restored_without(series, ("count_run_expected", "count_gap_sum", "count_gaps"), 16,
                      "count_gaps")


def test_a_count_restored_from_format_17_learns_its_falls_anew() -> None:
    # Format 17 had no drop CUSUM (nor the spread of a deploy offset's gaps): a restored
    # count starts it at 0 (no evidence of a fall yet). The series stops in its last 10
    # minutes, so the restored engine's sum has grown by its end.
    series, _ = _bursty_series(2.0, 1.0, seed=3, days=4.0)
    values = series.values.copy()
    values[-10:] = 0.0
    stopped = RecordedSeries(series.key, series.ts_unix_nano, values, series.counts)
    _restored_without(stopped, ("count_drop_cusum",), 17, "count_drop_cusum")


def test_a_count_restored_from_format_18_learns_its_rises_anew() -> None:
    # Format 18 had no rise CUSUM nor the seconds a count's mean rate is measured over: a
    # restored count starts both at 0 and counts its seconds again.
    series, _ = _bursty_series(2.0, 1.0, seed=3, days=4.0)
    _restored_without(series, ("count_rise_cusum", "count_exposure_sum"), 18,
                      "count_exposure_sum")


def test_error_log_lines_in_bursts_over_otlp_page_nothing() -> None:
    # A service logs about 20 INFO records a 10-s window and its ERROR records in bursts
    # (a failure writes 5 lines on average, about one burst every 10 windows), through the
    # real logs path for three days. Judged as Poisson counts, the ERROR rate opened 9
    # anomalies on days 2 and 3 (measured); with its dispersion, none. The service's
    # multivariate score held every burst as an incident and opened 710 times; now its
    # model learns bursts that come this often (``MultivariateModel.surprises``).
    rng = np.random.default_rng(7)
    clock = FakeClock(float(T0))
    engine = Engine(EngineSettings(clock=clock, series_ttl_s=1e9))
    day = 8640
    opened: list[tuple[str, int]] = []
    for w in range(3 * day):
        t = T0 + w * 10
        info = int(rng.poisson(20.0 * (1 + 0.5 * np.sin(2 * np.pi * t / 86400))))
        bursts = int(rng.poisson(0.1))
        errors = int(rng.geometric(0.2, size=bursts).sum()) if bursts else 0
        stamps = t * SECOND + np.sort(rng.integers(0, 10 * SECOND, info + errors))
        severities = [9] * info + [17] * errors
        rng.shuffle(severities)
        clock.now = float(t + 10)
        records = zip(stamps.tolist(), severities, strict=True)
        result = engine.ingest("logs", logs_request(records, {"service.name": "shop"}))
        opened += [(e.key.metric, w) for e in result.events if e.kind == "open"]
    assert engine.scorer.calibrators, "no series was scored"
    late = [(metric, w) for metric, w in opened if w > day]
    assert late == [], late
