"""Shared pytest setup.

This file also puts ``tests/`` on ``sys.path`` (pytest's rootdir-relative import of a
conftest), so test modules can ``import helpers``.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.kernel_warm_up import warm_up

# No wall-clock limit on a property's examples: a first call that loads or compiles a kernel
# on a busy machine took 254 ms against hypothesis' default deadline of 200 ms.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile (or load) the scoring kernels once, before the first test.

    On a fresh clone numba's cache is cold: compiling here, once, writes it, so the sidecars
    the tests start as subprocesses load the kernels instead of each compiling them within
    its readiness timeout.
    """
    warm_up(load_config(None, environ={}).engine_settings())
