"""How a scored batch is cut into rounds, so a batch scores exactly like its rows one by one."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


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
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first_rule = int(rules[0])
    one_rule = bool((rules == first_rule).all())
    if len(starts) == n and one_rule:
        return None, [0, n], [first_rule]
    rank = np.empty(n, np.intp)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    key = rank if one_rule else rules * (int(rank.max()) + 1) + rank
    perm = np.argsort(key, kind="stable")
    ordered_key = key[perm]
    cuts = np.flatnonzero(ordered_key[1:] != ordered_key[:-1]) + 1
    bounds = [0, *cuts.tolist(), n]
    round_rules = rules[perm[bounds[:-1]]].tolist()
    return perm, bounds, round_rules
