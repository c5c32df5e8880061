"""``plan_rounds`` (compiled) cuts batches into rounds as a plain sort by (rule, rank, row)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_anomaly.processors.alerting.round_plan import plan_rounds
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
    assert (bounds, round_rules) == (expected_bounds, expected_rules)


def test_an_empty_batch_has_no_rounds() -> None:
    assert plan_rounds(np.zeros(0, np.intp), np.zeros(0, np.intp)) == (None, [0], [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 7, 16, 1024, 65_536, 2**40 + 3, 2**62]), max_size=60))
def test_rows_by_slot_groups_each_slots_rows_in_batch_order(slots: list[int]) -> None:
    """Slots in order of their first row (slots that share hash bits included)."""
    order = np.empty(len(slots), np.int64)
    groups = rows_by_slot(np.array(slots, np.int64), order)
    firsts = list(dict.fromkeys(slots))
    assert groups == len(firsts)
    assert order.tolist() == [i for slot in firsts for i, s in enumerate(slots) if s == slot]
