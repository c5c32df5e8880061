"""Shared pytest setup.

This file also puts ``tests/`` on ``sys.path`` (pytest's rootdir-relative import of a
conftest), so test modules can ``import helpers``.
"""

from __future__ import annotations
