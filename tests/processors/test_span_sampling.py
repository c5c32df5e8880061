"""A request's many spans of one operation: an even sample learned, the slowest judged."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.row_sampling import (
    BOTH,
    DOWN,
    UP,
    max_of_n_band,
    sample_rows,
)
from otel_anomaly.processors.alerting.scorer import Scorer
from otel_anomaly.processors.alerting.young_series import YOUNG_POINTS
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import (
    DEFAULT_RULES,
    SPAN_DURATION_METRIC,
    EngineSettings,
)
from otel_anomaly.processors.state.codec import encode
from otel_anomaly.processors.testing import SECOND, FakeClock, span, traces_request
from otel_anomaly.processors.types import SeriesBatch, SeriesKey

CAP = next(r for r in DEFAULT_RULES if r.name == "span_outliers").max_points_per_request
SLOW_TRACE = b"\xab" * 16


def _engine() -> Engine:
    return Engine(EngineSettings(clock=FakeClock(), lateness_s=0))


def _request(t: int, n: int, rng: np.random.Generator, slow_at: int | None = None) -> Any:
    """``n`` spans of one operation about 20 ms each, 1 ms apart; one of 900 ms at ``slow_at``."""
    spans = [span("GET /items", t + i * SECOND // 1000, float(rng.lognormal(np.log(20), 0.1)))
             for i in range(n)]
    if slow_at is not None:
        spans[slow_at] = span("GET /items", t + slow_at * SECOND // 1000, 900.0,
                              trace_id=SLOW_TRACE)
    return traces_request(spans)


def _outlier_rows(result: Any, engine: Engine) -> int:
    return sum(engine.series_key(slot).metric == SPAN_DURATION_METRIC
               for slot in result.scores.slots.tolist())


@pytest.mark.parametrize("wire", [False, True], ids=["walk", "wire"])
def test_a_request_of_one_operation_scores_a_sample_and_opens_on_its_slowest_span(
        wire: bool) -> None:
    engine, rng = _engine(), np.random.default_rng(1)

    def ingest(request: Any) -> Any:
        return engine.ingest("traces", request, request.SerializeToString() if wire else None)

    n = 1000
    for r in range(20):  # warm: 20 requests of 1,000 ordinary spans
        result = ingest(_request((100 + r) * SECOND, n, rng))
        rows = _outlier_rows(result, engine)  # the slowest adds one, unless in the sample
        assert result.skipped.get("sampled") == n - rows, result.skipped
        assert not [e for e in result.events if e.kind == "open"], result.events
        if r >= 2:  # of age: the young series scored more (the next test)
            assert rows in (CAP, CAP + 1), result.scores.slots
    # 637 is not in the even sample of 1,000: scored as the slowest, not learned.
    assert 637 * CAP % n >= CAP
    result = ingest(_request(121 * SECOND, n, rng, slow_at=637))
    assert result.accepted == n
    assert _outlier_rows(result, engine) == CAP + 1
    assert result.skipped.get("sampled") == n - CAP - 1
    opened = [e for e in result.events if e.kind == "open"]
    assert len(opened) == 1, result.events
    assert opened[0].trace_id == SLOW_TRACE and opened[0].value == 900.0


def test_a_new_operation_comes_of_age_in_its_first_busy_request_and_opens_there() -> None:
    engine, rng = _engine(), np.random.default_rng(3)
    n = 1000
    result = engine.ingest("traces", _request(100 * SECOND, n, rng, slow_at=637))
    # Its young rows are scored (up to YOUNG_POINTS), not only the cap's worth.
    assert _outlier_rows(result, engine) in (YOUNG_POINTS, YOUNG_POINTS + 1)
    opened = [e for e in result.events if e.kind == "open"]
    assert len(opened) == 1 and opened[0].trace_id == SLOW_TRACE, result.events


def test_a_backtest_scores_every_point_of_the_same_series() -> None:
    engine = _engine()
    key = SeriesKey(SPAN_DURATION_METRIC, (("service.name", "test"),),
                    (("span.kind", "SPAN_KIND_SERVER"), ("span.name", "GET /")))
    n = 500
    result = engine.ingest_series([key] * n, np.arange(n, dtype=np.int64) * SECOND,
                                  np.full(n, 20.0))
    assert len(result.scores) == n and "sampled" not in result.skipped


def _detector_state(scorer: Scorer, rule: int) -> str:
    doc, arrays = encode({"detector": scorer.detectors[rule].state_dict(),
                          "calibrator": scorer.calibrators[rule].state_dict()})
    return json.dumps(doc) + "".join(f"{k}:{v.tobytes().hex()}" for k, v in sorted(arrays.items()))


@pytest.mark.parametrize("learned", [False, True])
def test_a_row_scored_but_not_learned_leaves_the_detector_and_calibrator_unchanged(
        learned: bool) -> None:
    scorer = Scorer(DEFAULT_RULES)
    key = SeriesKey(SPAN_DURATION_METRIC, (("service.name", "a"),), ())
    rule = scorer.rule_for(SPAN_DURATION_METRIC)
    scorer.assign(0, key)
    rng = np.random.default_rng(2)
    warm = rng.lognormal(np.log(20), 0.1, 300)
    scorer.run(SeriesBatch.of([0] * 300, warm, np.arange(300) * SECOND), lambda _: key, {})
    before = _detector_state(scorer, rule)
    batch = SeriesBatch.of([0, 0], [25.0, 900.0], [300 * SECOND, 301 * SECOND])
    scores, _ = scorer.run(batch, lambda _: key, {}, learned=np.array([learned, False]))
    assert scores.flag.tolist() == [False, True]
    assert (_detector_state(scorer, rule) == before) is not learned


def _sample_per_slot(slots: NDArray[np.intp], values: NDArray[np.float64],
                     caps: list[int], sides: list[int]
                     ) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.float64]] | None:
    """``sample_rows`` with each slot its own rule (cap and side), none of them young."""
    rule_of = np.arange(len(caps), dtype=np.int16)
    return sample_rows(slots, values, rule_of, np.zeros(len(caps), np.uint8),
                       np.array(caps, np.intp), np.array(sides, np.int8), young=0)


def test_the_slowest_in_the_spread_is_still_the_slowest_of_all() -> None:
    # Ranks 0 and 2 of 4 are the spread; the slowest (rank 0) is one of them, learned, and
    # still the largest of the request's 4 (before: judged as one draw, 4 times in n).
    picked = _sample_per_slot(np.array([7, 7, 7, 7]), np.array([9.0, 1.0, 2.0, 3.0]), [2],
                              [UP])
    assert picked is not None
    rows, learned, drawn = picked
    assert rows.tolist() == [0, 2] and learned.tolist() == [True, True]
    assert drawn.tolist() == [4.0, 1.0]


def test_sample_rows_example_per_side() -> None:
    slots = np.array([5, 5, 5, 5, 5, 5])
    values = np.array([3.0, 1.0, 9.0, 4.0, 0.5, 2.0])
    picks = {side: _sample_per_slot(slots, values, [2] * 6, [side] * 6)
             for side in (UP, DOWN, BOTH)}
    # The even sample of 6 rows by 2 is ranks 0 and 3; the extremes are rows 2 (9) and 4.
    got = {side: (None if p is None else (p[0].tolist(), p[1].tolist()))
           for side, p in picks.items()}
    assert got == {UP: ([0, 2, 3], [True, False, True]),
                   DOWN: ([0, 3, 4], [True, True, False]),
                   BOTH: ([0, 2, 3, 4], [True, False, True, False])}


@given(st.lists(st.tuples(st.integers(0, 4), st.floats(-1e6, 1e6)), min_size=0, max_size=80),
       st.lists(st.integers(0, 6), min_size=5, max_size=5),
       st.sampled_from([UP, DOWN, BOTH]))
def test_sample_rows_keeps_a_cap_per_slot_and_its_extreme(
        rows: list[tuple[int, float]], caps: list[int], side: int) -> None:
    slots = np.array([s for s, _ in rows], np.intp)
    values = np.array([v for _, v in rows], np.float64)
    picked = _sample_per_slot(slots, values, caps, [side] * len(caps))
    if picked is None:  # every row scored: no slot was over its cap
        for s in set(slots.tolist()):
            assert caps[s] == 0 or np.count_nonzero(slots == s) <= caps[s]
        return
    kept, learned, drawn = picked
    assert (np.diff(kept) > 0).all(), "rows stay in batch order"
    for s in set(slots.tolist()):
        mine = np.flatnonzero(slots == s)
        ours = np.isin(kept, mine)
        if caps[s] == 0 or len(mine) <= caps[s]:
            assert ours.sum() == len(mine) and learned[ours].all()
            assert (drawn[ours] == 1).all()
            continue
        assert learned[ours].sum() == caps[s], "the cap's worth of rows is learned"
        # A row is one draw; the slot's extreme, in the spread or not, the largest of them all.
        extremes = {_first_extreme(values[mine], up) for up, wanted in
                    ((True, (UP, BOTH)), (False, (DOWN, BOTH))) if side in wanted}
        want = [len(mine) if i in extremes else 1 for i in np.flatnonzero(np.isin(mine, kept))]
        assert drawn[ours].tolist() == want, (drawn[ours], want)
        assert (drawn[ours & ~learned] == len(mine)).all(), drawn[ours]
        scored_values = values[kept[ours]]
        if side in (UP, BOTH):
            assert scored_values.max() == values[mine].max()
        if side in (DOWN, BOTH):
            assert scored_values.min() == values[mine].min()
        assert ours.sum() <= caps[s] + (2 if side == BOTH else 1)


def _first_extreme(values: NDArray[np.float64], up: bool) -> int:
    """Index of the first largest (``up``) or smallest value; 0 if every value is NaN."""
    if np.isnan(values).all():
        return 0
    return int(np.nanargmax(values) if up else np.nanargmin(values))


def _numpy_sample_rows(
    slots: NDArray[np.intp], values: NDArray[np.float64], limits: NDArray[np.intp],
    sides: NDArray[np.int8],
) -> tuple[NDArray[np.intp], NDArray[np.bool_]] | None:
    """``sample_rows`` as it was written with numpy sorts, before its kernel (reference)."""
    n = len(slots)
    capped = limits > 0
    if n < 2 or not np.count_nonzero(capped):
        return None
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, n])
    size = np.repeat(sizes, sizes)
    limit = limits[order]
    over = capped[order] & (size > limit)
    if not np.count_nonzero(over):
        return None
    rank = np.arange(n) - np.repeat(starts, sizes)
    # Rank r is kept when floor(r * K / n) steps up: K ranks, evenly spread, the first kept.
    spread = ~over | ((rank * limit) % np.maximum(size, 1) < limit)
    extreme = np.zeros(n, np.bool_)
    group = np.repeat(np.arange(len(starts)), sizes)
    side = sides[order]
    ordered_values = values[order]
    for wanted, sign in ((UP, -1.0), (DOWN, 1.0)):
        # Within each group, sorted by value (largest first for UP): the first is the extreme.
        by_value = np.lexsort((sign * ordered_values, group))
        first = by_value[starts]
        # |=: one row can be both extremes (the only value that is not NaN).
        extreme[first] |= over[first] & ((side[first] == wanted) | (side[first] == BOTH))
    keep_sorted = spread | extreme
    keep = np.empty(n, np.bool_)
    keep[order] = keep_sorted
    learned_all = np.empty(n, np.bool_)
    learned_all[order] = spread
    rows = np.flatnonzero(keep)
    return rows, learned_all[rows]


@given(st.lists(st.tuples(st.integers(0, 4),
                          st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.0, -3.0, np.inf, -np.inf,
                                           np.nan])), min_size=0, max_size=60),
       st.lists(st.integers(0, 4), min_size=5, max_size=5),
       st.lists(st.sampled_from([UP, DOWN, BOTH]), min_size=5, max_size=5))
@example(rows=[(0, np.nan), (0, 0.0)], caps=[1, 0, 0, 0, 0], side_of=[UP] * 5)
def test_sample_rows_kernel_equals_the_numpy_sorts(
        rows: list[tuple[int, float]], caps: list[int], side_of: list[int]) -> None:
    # Ties, signed zeros, infinities and NaN: the same rows, learned the same, as before.
    slots = np.array([s for s, _ in rows], np.intp)
    values = np.array([v for _, v in rows], np.float64)
    limits = np.array(caps, np.intp)[slots] if len(slots) else np.empty(0, np.intp)
    sides = np.array(side_of, np.int8)[slots] if len(slots) else np.empty(0, np.int8)
    got = _sample_per_slot(slots, values, caps, side_of)
    want = _numpy_sample_rows(slots, values, limits, sides)
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got[0].tolist() == want[0].tolist()
        assert got[1].tolist() == want[1].tolist()


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([1.0, 2.0, 5.0, np.nan])),
                max_size=40),
       st.lists(st.integers(0, 2), min_size=6, max_size=6),
       st.lists(st.integers(0, 12), min_size=6, max_size=6),
       st.lists(st.integers(0, 3), min_size=3, max_size=3),
       st.lists(st.sampled_from([UP, DOWN, BOTH]), min_size=3, max_size=3))
def test_sample_rows_takes_caps_and_sides_by_rule_and_raises_young_caps(
        rows: list[tuple[int, float]], rule_of: list[int], age: list[int], caps: list[int],
        sides: list[int]) -> None:
    """Caps and sides by each slot's rule; a young slot's cap raised to the points it needs
    (``young`` 8 here), as ``Scorer.sample`` computed them with numpy before."""
    slots = np.array([s for s, _ in rows], np.intp)
    values = np.array([v for _, v in rows], np.float64)
    rules, ages = np.array(rule_of, np.int16), np.array(age, np.uint8)
    rule_caps, rule_sides = np.array(caps, np.intp), np.array(sides, np.int8)
    got = sample_rows(slots, values, rules, ages, rule_caps, rule_sides, 8)
    limits = rule_caps[rules[slots]]
    limits = np.where(limits > 0, np.maximum(limits, 8 - ages[slots].astype(np.intp)), 0)
    want = _numpy_sample_rows(slots, values, limits, rule_sides[rules[slots]])
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got[0].tolist() == want[0].tolist()
        assert got[1].tolist() == want[1].tolist()


@given(st.floats(0.5, 29.0), st.integers(1, 10**7))
def test_max_of_n_band_is_the_band_the_largest_of_n_draws_leaves_as_rarely(
        band: float, n: int) -> None:
    wide = max_of_n_band(band, float(n))

    def tail(z: float) -> float:  # P(N(0, 1) > z)
        return 0.5 * math.erfc(z / math.sqrt(2.0))

    if n == 1:
        assert wide == band
        return
    assert wide > band
    # Sidak: the largest of n draws passes ``wide`` as often as one draw passes ``band``.
    largest = -math.expm1(n * math.log1p(-tail(wide)))
    assert largest == pytest.approx(tail(band), rel=1e-9)


def test_max_of_n_band_of_a_band_past_any_float_tail_is_its_limit() -> None:
    # Past 30 sigmas no tail resolves; the limit sqrt(b**2 + 2 log n) is where it tends.
    assert max_of_n_band(40.0, 1000.0) == pytest.approx(math.sqrt(1600 + 2 * math.log(1000)))
    assert max_of_n_band(6.0, math.nan) == 6.0


def test_the_slowest_of_a_thousand_spans_is_judged_against_a_wider_band() -> None:
    """The same duration opens as one span and not as the slowest of 1,000 (Sidak)."""
    scorer = Scorer(DEFAULT_RULES)
    key = SeriesKey(SPAN_DURATION_METRIC, (("service.name", "a"),), ())
    rule = scorer.rules[scorer.rule_for(SPAN_DURATION_METRIC)]
    scorer.assign(0, key)
    rng = np.random.default_rng(4)
    warm = rng.lognormal(np.log(20), 0.4, 300)
    scorer.run(SeriesBatch.of([0] * 300, warm, np.arange(300) * SECOND), lambda _: key, {})
    factor = max_of_n_band(rule.alert.band, 1000.0) / rule.alert.band
    assert factor > 1.15  # noqa: PLR2004 -- 7.04 / 6 sigmas: a band 17 % wider

    def judged(value: float, drawn: float) -> tuple[float, float, bool]:
        """The row's log half-width, score and flag, as the slowest of ``drawn`` spans."""
        batch = SeriesBatch.of([0], [value], [400 * SECOND])
        scores, _ = scorer.run(batch, lambda _: key, {}, learned=np.array([False]),
                               drawn=np.array([drawn]))
        width = math.log1p(scores.upper[0]) - math.log1p(scores.expected[0])
        return width, float(scores.score[0]), bool(scores.flag[0])

    one, _, _ = judged(20.0, 1.0)
    # Halfway (in log space) between the band of one span and the band of the slowest.
    value = math.expm1(math.log1p(20.0) + one * (1 + factor) / 2)
    width_max, score_max, flag_max = judged(value, 1000.0)  # first: it opens nothing
    width_one, score_one, flag_one = judged(value, 1.0)
    assert width_one == pytest.approx(one, rel=1e-12)  # nothing learned in between
    assert width_max == pytest.approx(factor * width_one, rel=1e-12)
    assert flag_one and score_one > 1.0
    assert not flag_max and score_max < 1.0
