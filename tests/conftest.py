"""Shared pytest setup.

This file also puts ``tests/`` on ``sys.path`` (pytest's rootdir-relative import of a
conftest), so test modules can ``import helpers``.
"""

from __future__ import annotations

import pytest

from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.kernel_warm_up import warm_up


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile (or load) the scoring kernels once, before the first test.

    On a fresh clone numba's cache is cold: compiling here, once, writes it, so the sidecars
    the tests start as subprocesses load the kernels instead of each compiling them within
    its readiness timeout.
    """
    warm_up(load_config(None, environ={}).engine_settings())
