"""How a scored batch is cut into rounds, so a batch scores exactly like its rows one by one.

``scan_stretches`` then says which runs of those rounds are scanned.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.slot_order import rows_by_slot
from otel_anomaly.processors.compiled import kernel

NO_SCAN, ROW_SCAN, EWMA_SCAN = 0, 1, 2
"""How a rule's quiet rows may be scanned: not at all, ``row_scan``, ``ewma_scan``."""


@kernel
def _round_keys(rules: NDArray[np.int64], slots: NDArray[np.int64], order: NDArray[np.int64],
                key: NDArray[np.int64]) -> bool:
    """Each row's round key (rule, then occurrence rank of its slot); False: batch order.

    ``order`` holds the rows slot by slot, each slot's in batch order (``rows_by_slot``).
    """
    n = len(slots)
    first_rule = rules[0]
    one_rule, distinct = True, True
    top = 0
    for k in range(n):
        i = order[k]
        if k > 0 and slots[i] == slots[order[k - 1]]:
            key[i] = key[order[k - 1]] + 1
            distinct = False
            top = max(top, key[i])
        else:
            key[i] = 0
        one_rule = one_rule and rules[i] == first_rule
    if distinct and one_rule:
        return False
    if not one_rule:
        for i in range(n):
            key[i] += rules[i] * (top + 1)
    return True


@kernel
def _by_key(key: NDArray[np.int64], perm: NDArray[np.int64]) -> None:
    """``perm``: the rows sorted stably by ``key`` (small non-negative ints: counted)."""
    counts = np.zeros(key.max() + 2, np.int64)
    for i in range(len(key)):
        counts[key[i] + 1] += 1
    for k in range(1, len(counts)):
        counts[k] += counts[k - 1]
    for i in range(len(key)):
        perm[counts[key[i]]] = i
        counts[key[i]] += 1


@kernel
def _round_bounds(rules: NDArray[np.int64], key: NDArray[np.int64], perm: NDArray[np.int64],
                  bounds: NDArray[np.int64], round_rules: NDArray[np.int64]) -> int:
    """Where each round starts in ``perm`` (rows sorted stably by key), and its rule."""
    rounds = 0
    for k in range(len(perm)):
        if k == 0 or key[perm[k]] != key[perm[k - 1]]:
            bounds[rounds] = k
            round_rules[rounds] = rules[perm[k]]
            rounds += 1
    bounds[rounds] = len(perm)
    return rounds


def plan_rounds(
    rules: NDArray[np.intp], slots: NDArray[np.intp]
) -> tuple[NDArray[np.intp] | None, NDArray[np.int64], NDArray[np.int64]]:
    """Plan a batch's rounds: a row order, round boundaries in it, and each round's rule.

    Rounds go by rule, then by occurrence rank (a slot's ``r``-th row is in its rule's
    ``r``-th round), rows in each round in batch order: the order ``occurrence_rounds``
    gives per rule. The row order is ``None`` when it is the batch's own (one rule, no
    repeated slot: a live request).

    Examples
    --------
    >>> perm, bounds, rules = plan_rounds(np.array([1, 0, 1, 1, 0]), np.array([3, 1, 3, 3, 2]))
    >>> [(int(rule), perm[a:b].tolist()) for rule, a, b in zip(rules, bounds, bounds[1:])]
    [(0, [1, 4]), (1, [0]), (1, [2]), (1, [3])]
    >>> perm, bounds, rules = plan_rounds(np.array([0, 0]), np.array([5, 2]))
    >>> perm, bounds.tolist(), rules.tolist()
    (None, [0, 2], [0])
    """
    n = len(slots)
    if n == 0:
        return None, np.zeros(1, np.int64), np.zeros(0, np.int64)
    rules64, slots64 = np.asarray(rules, np.int64), np.asarray(slots, np.int64)
    key = np.empty(n, np.int64)
    order = np.empty(n, np.int64)
    rows_by_slot(slots64, order)
    if not _round_keys(rules64, slots64, order, key):
        return None, np.array([0, n], np.int64), rules64[:1].copy()
    perm = np.empty(n, np.int64)
    _by_key(key, perm)
    bounds = np.empty(n + 1, np.int64)
    round_rules = np.empty(n, np.int64)
    rounds = _round_bounds(rules64, key, perm, bounds, round_rules)
    return perm, bounds[:rounds + 1], round_rules[:rounds]


@kernel
def scan_stretches(  # noqa: PLR0913 -- the plan, the rules' kinds and the rows' exposures
    round_rules: NDArray[np.int64], bounds: NDArray[np.int64], kind_of_rule: NDArray[np.int8],
    counts: NDArray[np.float64], sampled: bool, scan_rows: int, out: NDArray[np.int64],
) -> int:
    """The rounds as stretches ``(rule, first row, end row, scanned)`` in ``out``; how many.

    A round is scannable when its rule's rows scan with ``ewma_scan`` and none of them has
    an exposure (a non-NaN count; ``counts`` is empty when no row has one), or with
    ``row_scan``, the request is not ``sampled`` and the round has at most ``scan_rows``
    rows. Consecutive scannable rounds of one rule are one stretch; any other round is
    its own.
    """
    m = 0
    for r in range(len(round_rules)):
        rule, a, b = round_rules[r], bounds[r], bounds[r + 1]
        kind = kind_of_rule[rule]
        scan = False
        if kind == EWMA_SCAN:
            scan = True
            if len(counts):
                for i in range(a, b):
                    if not np.isnan(counts[i]):
                        scan = False
                        break
        elif kind == ROW_SCAN:
            scan = not sampled and b - a <= scan_rows
        if scan and m > 0 and out[m - 1, 3] == 1 and out[m - 1, 0] == rule:
            out[m - 1, 2] = b
        else:
            out[m, 0], out[m, 1], out[m, 2], out[m, 3] = rule, a, b, scan
            m += 1
    return m
