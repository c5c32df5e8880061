"""The incidents replayed through the default rules, for comparing compiled and plain kernels.

Run as a module (``python -m helpers.compiled_reference OUT.npz``) it saves what
``replay`` returns, and whether the kernels were compiled: with ``NUMBA_DISABLE_JIT=1``
in the environment the same kernel code runs as plain Python, the reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numba.core.registry import CPUDispatcher
from numpy.typing import NDArray

from otel_anomaly.processors.detectors import ensemble_kernels
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import incident_cases, replay_incidents

FIELDS = ("score", "expected", "lower", "upper", "flag")
TESTS = Path(__file__).resolve().parents[1]


def plain_reference(module: str, out: Path) -> Any:
    """What ``python -m module out`` saves with the kernels run as plain Python.

    ``module`` (under ``tests/``) must save its outputs and ``compiled`` to ``out``.
    """
    subprocess.run([sys.executable, "-m", module, str(out)], cwd=TESTS,
                   env={**os.environ, "NUMBA_DISABLE_JIT": "1"}, check=True, timeout=240)
    reference = np.load(out)
    assert not reference["compiled"], "the reference must run the kernels as plain Python"
    return reference


def kernels_compiled() -> bool:
    """True if the kernels are numba dispatchers, False if they run as plain Python."""
    return isinstance(ensemble_kernels.band, CPUDispatcher)


def replay() -> dict[str, NDArray[np.float64] | NDArray[np.bool_]]:
    """Every incident kind and control, six days at 5-minute points: all series together
    (rounds of many rows, the live path) and the first series alone (rounds of one row)."""
    cases = incident_cases(1, days=6.0, step_s=300.0)
    together = replay_incidents(Engine(EngineSettings(clock=lambda: 0.0)), cases)
    alone = replay_incidents(Engine(EngineSettings(clock=lambda: 0.0)), cases[:1])
    results = [*together, *alone]
    return {field: np.concatenate([getattr(r, field) for r in results]) for field in FIELDS}


if __name__ == "__main__":
    np.savez(sys.argv[1], compiled=np.array(kernels_compiled()), **replay())
