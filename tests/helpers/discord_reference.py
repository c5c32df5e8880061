"""A shape change replayed through an ensemble with a ``discord`` member, for comparing
its compiled kernels with the same code run as plain Python.

Run as a module (``python -m helpers.discord_reference OUT.npz``) it saves what ``replay``
returns and whether the kernels were compiled (``NUMBA_DISABLE_JIT=1``: plain Python).
"""

from __future__ import annotations

import sys

import numpy as np
from numba.core.registry import CPUDispatcher
from numpy.typing import NDArray

from otel_anomaly.processors.detectors import discord_kernels
from otel_anomaly.processors.detectors.discord import Discord
from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.types import SeriesBatch

STEP_NS = 300 * 10**9
FIELDS = ("score", "expected", "lower", "upper", "member_score", "member_expected")


def kernels_compiled() -> bool:
    """True if the discord kernels are numba dispatchers, False if they run as plain Python."""
    return isinstance(discord_kernels.measure, CPUDispatcher)


def shape_change(n_before: int, n_after: int, seed: int = 0) -> NDArray[np.float64]:
    """A noisy sine of period 37 points that turns three times faster (same range)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_before + n_after)
    phase = np.cumsum(2 * np.pi / np.where(t < n_before, 37.0, 12.0))
    return 100.0 + 10.0 * np.sin(phase) + rng.normal(0.0, 0.5, len(t))


def replay() -> dict[str, NDArray[np.float64]]:
    """Two series scored and learned together (rounds of two rows), default length and
    history: the ensemble's score and band, and the member's own score and forecast."""
    values = np.stack([shape_change(400, 60, seed=1), 5.0 * shape_change(380, 80, seed=2)])
    ensemble = Ensemble(members=(("ewma_zscore", (("alpha", 0.02),)), ("discord", ())))
    member = Discord()
    out: dict[str, list[NDArray[np.float64]]] = {field: [] for field in FIELDS}
    for i in range(values.shape[1]):
        batch = SeriesBatch.of([0, 1], values[:, i], [i * STEP_NS] * 2)
        band = ensemble.predict(batch, 3.5)
        own = member.predict(batch, 3.5)
        for field, got in (("score", ensemble.score(batch)), ("expected", band.expected),
                           ("lower", band.lower), ("upper", band.upper),
                           ("member_score", member.score(batch)),
                           ("member_expected", own.expected)):
            out[field].append(got)
        ensemble.learn(batch)
        member.learn(batch)
    return {field: np.concatenate(parts) for field, parts in out.items()}


if __name__ == "__main__":
    np.savez(sys.argv[1], compiled=np.array(kernels_compiled()), **replay())
