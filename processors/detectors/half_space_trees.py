"""Half-Space Trees on a short window of values and differences, vectorised over series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.detectors.base import Prediction, SlotStateDetector
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch

_TINY = 1e-12
_LEVEL_ALPHA = 0.01  # how fast the normalising level and scale follow the series
_SQUASH = 3.0  # normalised deviations of +-3 scales map to about 0.05 and 0.95
_RESCALE_AT = 1e30  # lazy decay: masses are rescaled when the increment gets this large


class HalfSpaceTrees(SlotStateDetector):
    """Isolation-style score: how rarely recent windows of a series fell in this region.

    Each row becomes a point in ``[0, 1]**(2 * window - 1)``: the last ``window`` values
    and their ``window - 1`` first differences, normalised by a slow per-series level and
    mean absolute deviation and squashed by ``tanh``. ``trees`` random half-space trees of
    depth ``height`` (split dimensions and points drawn from ``seed``, shared by all
    series) cut that space into ``2**height`` leaves each; per series and leaf an
    exponentially decayed mass counts the points that landed there (about ``memory``
    points). The score is the surprise of the row's leaves in bits, averaged over trees,
    ``-log2((mass + 1) / (total + 1))``: high where the series rarely went, both in level and
    in shape (a spike, a change of slope or of noise). Unlike river's HalfSpaceTrees, which
    is one object (about 1 MB) per series, all state is one float32 array.

    The band is value-dependent (the score is not a distance): ``expected`` is the level,
    and the half-width is ``|x - level| * band / score``, so the calibrated score reproduces
    the isolation score; it is not a range of normal values. 0 (band NaN) for the first
    ``warmup`` points. Cost per row: ``height`` gathers over ``trees``; state per series
    ``trees * 2**height`` float32 plus ``window + 4`` floats (8 KB with the defaults).

    Parameters
    ----------
    window
        Recent values per point, >= 1 (``window - 1`` differences are added).
    trees
        Number of trees, >= 1.
    height
        Depth of every tree, in [1, 12].
    memory
        Points the leaf masses effectively remember (exponential decay), >= 2.
    warmup
        Points a series must have before it is scored, >= ``window``.
    seed
        Seed of the tree structure.

    Examples
    --------
    >>> det = HalfSpaceTrees(warmup=50, seed=1)
    >>> rng = np.random.default_rng(0)
    >>> det.learn(SeriesBatch.of([0] * 300, 10.0 + rng.standard_normal(300)))
    >>> det.score(SeriesBatch.of([0, 0], [10.0, 30.0])).round(1)
    array([3.5, 5.1])

    References
    ----------
    [^1]: Tan, S. C., Ting, K. M., & Liu, T. F. (2011). Fast anomaly detection for
        streaming data. IJCAI, 1511-1516.
    """

    name: ClassVar[str] = "half_space_trees"

    def __init__(
        self, *, window: int = 4, trees: int = 16, height: int = 7, memory: int = 1000,
        warmup: int = 100, seed: int = 0,
    ) -> None:
        if window < 1 or trees < 1 or not 1 <= height <= 12:
            msg = (f"half_space_trees: window and trees must be >= 1 and height in [1, 12]; "
                   f"got {window}, {trees}, {height}")
            raise ValueError(msg)
        if memory < 2:
            msg = f"half_space_trees: memory must be >= 2 points; got {memory}"
            raise ValueError(msg)
        if warmup < window:
            msg = f"half_space_trees: `warmup` must be >= `window`; got {warmup} < {window}"
            raise ValueError(msg)
        self.window = window
        self.trees = trees
        self.height = height
        self.memory = memory
        self.warmup = warmup
        self.seed = seed
        rng = np.random.default_rng(seed)
        nodes = 2**height - 1
        dims = 2 * window - 1
        self._feat = rng.integers(0, dims, size=(trees, nodes)).astype(np.intp)
        self._split = rng.uniform(0.2, 0.8, size=(trees, nodes))
        self._growth = 1.0 / (1.0 - 1.0 / memory)
        self._slots = SlotArrays(
            n=Column(np.int64),
            level=Column(np.float64, 0.0),
            scale=Column(np.float64, 0.0),
            inc=Column(np.float64, 1.0),
            total=Column(np.float64, 0.0),
            recent=Column(np.float64, 0.0, (window - 1,)),  # newest first
            mass=Column(np.float32, 0.0, (trees, 2**height)),
        )

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def _leaves(self, batch: SeriesBatch) -> NDArray[np.intp]:
        """Leaf index per row and tree."""
        slots = batch.slots
        level = self._slots.level[slots, None]
        scale = self._slots.scale[slots, None] + _TINY * (1.0 + np.abs(level))
        values = np.concatenate([batch.values[:, None], self._slots.recent[slots]], axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            parts = [(values - level) / scale]
            if self.window > 1:
                parts.append((values[:, :-1] - values[:, 1:]) / scale)
            point = 0.5 + 0.5 * np.tanh(np.concatenate(parts, axis=1) / _SQUASH)
        point = np.nan_to_num(point, nan=0.5)
        tree = np.arange(self.trees)[None, :]
        node = np.zeros((len(slots), self.trees), np.intp)
        for _ in range(self.height):
            feat = self._feat[tree, node]
            right = np.take_along_axis(point, feat, axis=1) > self._split[tree, node]
            node = 2 * node + 1 + right
        out: NDArray[np.intp] = node - (2**self.height - 1)
        return out

    def _surprise(self, batch: SeriesBatch) -> NDArray[np.float64]:
        self._ensure(batch.slots)
        slots = batch.slots
        leaf = self._leaves(batch)
        mass = self._slots.mass[slots[:, None], np.arange(self.trees)[None, :], leaf]
        inc = self._slots.inc[slots, None]
        bits = -np.log2((mass / inc + 1.0) / (self._slots.total[slots, None] / inc + 1.0))
        out: NDArray[np.float64] = bits.mean(axis=1)
        return out

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """The level and a band whose edge is where the row's own score would be ``band``."""
        score = self.score(batch)
        level = self._slots.level[batch.slots]
        ready = ~self.warming(batch.slots)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            width = np.abs(batch.values - level) * band / score
        width = np.where(np.isfinite(width), width, np.inf)
        expected = np.where(self._slots.n[batch.slots] > 0, level, np.nan)
        return Prediction(expected, np.where(ready, level - width, np.nan),
                          np.where(ready, level + width, np.nan))

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Mean leaf surprise in bits per row (0 while warming, NaN if not finite)."""
        bits = self._surprise(batch)
        bits = np.where(self._slots.n[batch.slots] >= self.warmup, bits, 0.0)
        return np.where(np.isfinite(batch.values), bits, np.nan)

    def _learn_unique(self, batch: SeriesBatch) -> None:
        slots, x = batch.slots, batch.values
        self._ensure(slots)
        n = self._slots.n[slots] + 1
        level = self._slots.level[slots]
        fresh = n == 1
        recent = np.where(fresh[:, None], x[:, None], self._slots.recent[slots])
        self._slots.recent[slots] = recent
        # The leaf masses learn once the window holds real values and the scale exists.
        counted = n > self.window
        if counted.any():
            rows = slots[counted]
            leaf = self._leaves(batch.take(np.flatnonzero(counted)))
            inc = self._slots.inc[rows]
            self._slots.mass[rows[:, None], np.arange(self.trees)[None, :], leaf] += inc[:, None]
            self._slots.total[rows] += inc
            inc = inc * self._growth
            big = inc > _RESCALE_AT
            if big.any():
                self._slots.mass[rows[big]] /= inc[big, None, None].astype(np.float32)
                self._slots.total[rows[big]] /= inc[big]
                inc[big] = 1.0
            self._slots.inc[rows] = inc
        lw = np.maximum(_LEVEL_ALPHA, 1.0 / n)
        self._slots.level[slots] = level + lw * (x - level)
        self._slots.scale[slots] = np.where(fresh, 0.0, self._slots.scale[slots]
                                      + lw * (np.abs(x - level) - self._slots.scale[slots]))
        if self.window > 1:
            self._slots.recent[slots] = np.concatenate([x[:, None], recent[:, :-1]], axis=1)
        self._slots.n[slots] = n

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True where fewer than ``warmup`` points were learned."""
        self._ensure(slots)
        return self._slots.n[slots] < self.warmup

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"warmup": 20, "memory": 200}
        yield {"window": 1, "trees": 4, "height": 3, "memory": 50, "warmup": 5, "seed": 3}
