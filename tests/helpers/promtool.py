"""Prometheus' own tools (Debian's prometheus package): promtool and the server."""

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


def prometheus() -> str:
    """Path of the Prometheus server binary (same package as promtool)."""
    promtool()
    tool = shutil.which("prometheus")
    if tool is None:
        pytest.fail("promtool is installed but the prometheus server binary is not")
    return tool
