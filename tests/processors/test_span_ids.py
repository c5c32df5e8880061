"""Exemplars cut from request bytes on demand read like the dict they stand for."""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.signals.span_ids import SpanIds

DATA = b"T0T0s0T1T1s1"
BOUNDS = np.array([[0, 4, 4, 6], [6, 10, 10, 12], [0, 0, 0, 0]], np.int64)
EXPECTED = {0: (b"T0T0", b"s0"), 1: (b"T1T1", b"s1"), 2: (b"", b"")}


def test_reads_see_every_row() -> None:
    ids = SpanIds(DATA, BOUNDS)
    assert len(ids) == 3 and bool(ids)
    assert dict(ids) == EXPECTED and {**ids} == EXPECTED
    assert dict(ids.items()) == EXPECTED and list(ids) == [0, 1, 2]
    assert list(ids.keys()) == [0, 1, 2] and list(ids.values()) == list(EXPECTED.values())
    assert ids.get(np.intp(1)) == EXPECTED[1] and ids[0] == EXPECTED[0]


def test_rows_outside_are_missing() -> None:
    ids = SpanIds(DATA, BOUNDS)
    assert ids.get(3) is None and ids.get(-1, (b"", b"x")) == (b"", b"x")
    assert 3 not in ids and -1 not in ids and "0" not in ids
    with pytest.raises(KeyError):
        ids[3]
    assert not SpanIds(DATA, BOUNDS[:0])
