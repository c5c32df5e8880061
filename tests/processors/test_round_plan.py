"""``plan_rounds`` (compiled) cuts batches into rounds as a plain sort by (rule, rank, row)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_anomaly.processors.alerting.round_plan import (
    EWMA_SCAN,
    NO_SCAN,
    ROW_SCAN,
    plan_rounds,
    scan_stretches,
)
from otel_anomaly.processors.alerting.slot_order import rows_by_slot


def reference(rules: list[int], slots: list[int]) -> tuple[list[int] | None, list[int],
                                                           list[int]]:
    """Rows sorted by rule, then by occurrence rank of their slot, then by batch order."""
    seen: Counter[int] = Counter()
    rank = []
    for slot in slots:
        rank.append(seen[slot])
        seen[slot] += 1
    n = len(slots)
    if len(set(rules)) == 1 and max(rank) == 0:
        return None, [0, n], [rules[0]]
    order = sorted(range(n), key=lambda i: (rules[i], rank[i], i))
    keys = [(rules[i], rank[i]) for i in order]
    bounds = [k for k in range(n) if k == 0 or keys[k] != keys[k - 1]] + [n]
    return order, bounds, [rules[order[b]] for b in bounds[:-1]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), min_size=1, max_size=40))
def test_rounds_are_the_plain_sort(rows: list[tuple[int, int]]) -> None:
    rules, slots = [r for r, _ in rows], [s for _, s in rows]
    perm, bounds, round_rules = plan_rounds(np.array(rules, np.intp), np.array(slots, np.intp))
    order, expected_bounds, expected_rules = reference(rules, slots)
    assert (None if perm is None else perm.tolist()) == order
    assert (bounds.tolist(), round_rules.tolist()) == (expected_bounds, expected_rules)


def test_an_empty_batch_has_no_rounds() -> None:
    perm, bounds, round_rules = plan_rounds(np.zeros(0, np.intp), np.zeros(0, np.intp))
    assert (perm, bounds.tolist(), round_rules.tolist()) == (None, [0], [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 7, 16, 1024, 65_536, 2**40 + 3, 2**62]), max_size=60))
def test_rows_by_slot_groups_each_slots_rows_in_batch_order(slots: list[int]) -> None:
    """Slots in order of their first row (slots that share hash bits included)."""
    order = np.empty(len(slots), np.int64)
    groups = rows_by_slot(np.array(slots, np.int64), order)
    firsts = list(dict.fromkeys(slots))
    assert groups == len(firsts)
    assert order.tolist() == [i for slot in firsts for i, s in enumerate(slots) if s == slot]


def stretches_reference(rules: list[int], bounds: list[int], kinds: list[int],
                        counts: list[float] | None, sampled: bool, scan_rows: int,
                        ) -> list[tuple[int, int, int, bool]]:
    """Scannable rounds marked one by one, then consecutive ones of a rule merged."""
    marks = []
    for rule, a, b in zip(rules, bounds[:-1], bounds[1:], strict=True):
        unexposed = counts is None or all(np.isnan(counts[a:b]))
        marks.append((kinds[rule] == EWMA_SCAN and unexposed)
                     or (kinds[rule] == ROW_SCAN and not sampled and b - a <= scan_rows))
    out: list[tuple[int, int, int, bool]] = []
    for rule, a, b, scan in zip(rules, bounds[:-1], bounds[1:], marks, strict=True):
        if scan and out and out[-1][3] and out[-1][0] == rule:
            out[-1] = (rule, out[-1][1], b, True)
        else:
            out.append((rule, a, b, scan))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)), max_size=12),
       st.lists(st.sampled_from([NO_SCAN, ROW_SCAN, EWMA_SCAN]), min_size=4, max_size=4),
       st.booleans(), st.booleans(), st.data())
def test_scan_stretches_merge_consecutive_scannable_rounds_of_a_rule(
        rounds: list[tuple[int, int]], kinds: list[int], sampled: bool, exposed: bool,
        data: st.DataObject) -> None:
    rules = [rule for rule, _ in rounds]
    bounds = np.cumsum([0] + [size for _, size in rounds]).tolist()
    counts = (data.draw(st.lists(st.sampled_from([float("nan"), 3.0]), min_size=bounds[-1],
                                 max_size=bounds[-1])) if exposed else None)
    out = np.empty((len(rules), 4), np.int64)
    m = scan_stretches(np.array(rules, np.int64), np.array(bounds, np.int64),
                       np.array(kinds, np.int8),
                       np.zeros(0) if counts is None else np.array(counts), sampled, 2, out)
    got = [(r, a, b, scan == 1) for r, a, b, scan in out[:m].tolist()]
    assert got == stretches_reference(rules, bounds, kinds, counts, sampled, 2)
