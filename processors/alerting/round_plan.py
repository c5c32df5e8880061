"""How a scored batch is cut into rounds, so a batch scores exactly like its rows one by one."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.slot_order import rows_by_slot
from otel_anomaly.processors.compiled import kernel


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
) -> tuple[NDArray[np.intp] | None, list[int], list[int]]:
    """Plan a batch's rounds: a row order, round boundaries in it, and each round's rule.

    Rounds go by rule, then by occurrence rank (a slot's ``r``-th row is in its rule's
    ``r``-th round), rows in each round in batch order: the order ``occurrence_rounds``
    gives per rule. The row order is ``None`` when it is the batch's own (one rule, no
    repeated slot: a live request).

    Examples
    --------
    >>> perm, bounds, rules = plan_rounds(np.array([1, 0, 1, 1, 0]), np.array([3, 1, 3, 3, 2]))
    >>> [(rule, perm[a:b].tolist()) for rule, a, b in zip(rules, bounds, bounds[1:])]
    [(0, [1, 4]), (1, [0]), (1, [2]), (1, [3])]
    >>> plan_rounds(np.array([0, 0]), np.array([5, 2]))
    (None, [0, 2], [0])
    """
    n = len(slots)
    if n == 0:
        return None, [0], []
    rules64, slots64 = np.asarray(rules, np.int64), np.asarray(slots, np.int64)
    key = np.empty(n, np.int64)
    order = np.empty(n, np.int64)
    rows_by_slot(slots64, order)
    if not _round_keys(rules64, slots64, order, key):
        return None, [0, n], [int(rules[0])]
    perm = np.empty(n, np.int64)
    _by_key(key, perm)
    bounds = np.empty(n + 1, np.int64)
    round_rules = np.empty(n, np.int64)
    rounds = _round_bounds(rules64, key, perm, bounds, round_rules)
    return perm, bounds[:rounds + 1].tolist(), round_rules[:rounds].tolist()
