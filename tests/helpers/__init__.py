"""Helpers shared by the exporter tests: waiting, sidecars on port 0, engines, clients."""

from __future__ import annotations

from helpers.wait import wait_for

__all__ = ["wait_for"]
