"""Prometheus' own checker (Debian's prometheus package), for what Prometheus would parse."""

from __future__ import annotations

import os
import shutil

import pytest


def promtool() -> str:
    """Path of promtool; fails in CI (which must install it), skips elsewhere."""
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run must install Debian's prometheus")
        pytest.skip("promtool not installed (Debian package prometheus); CI installs it")
    return tool
