"""Counting the rows a scorer's row scan took, for the scan-against-``_step`` tests."""

from __future__ import annotations

from typing import Any

import pytest

from otel_anomaly.processors.alerting import scorer as scorer_module


def count_scanned_rows(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Rows the scorer's scan ``name`` took, per call (the scanner itself is unchanged)."""
    taken: list[int] = []
    scan = getattr(scorer_module, name)

    def counting(start: int, stop: int, *args: Any) -> int:
        done = scan(start, stop, *args)
        taken.append(done - start)
        return int(done)

    monkeypatch.setattr(scorer_module, name, counting)
    return taken
