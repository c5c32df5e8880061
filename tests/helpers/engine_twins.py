"""What a compiled ingest path must share with the Python walk: the same outcome.

``test_wire_path`` (metrics) and ``test_span_path`` (traces) feed the same requests to two
engines, one with the message only and one with its bytes too; this is the comparison
both make of every request's result.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import IngestResult


def restarted(engine: Engine, settings: EngineSettings) -> Engine:
    """A new engine restored from ``engine``'s checkpoint, as after a restart."""
    fresh = Engine(settings)
    fresh.load_state_dict(engine.state_dict())
    return fresh


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def assert_same_outcome(walk: Engine, wire: Engine, expected: IngestResult,
                        got: IngestResult) -> None:
    """Counts by reason, scores, events field by field, and the scored series' identity."""
    assert (got.accepted, got.rejected, got.skipped) == (
        expected.accepted, expected.rejected, expected.skipped)
    for name in ("slots", "ts_unix_nano", "values", "expected", "lower", "upper", "score",
                 "flag"):
        np.testing.assert_array_equal(getattr(got.scores, name), getattr(expected.scores, name),
                                      err_msg=name)
    assert len(got.events) == len(expected.events)
    for a, b in zip(expected.events, got.events, strict=True):
        for f in dataclasses.fields(a):
            assert _same(getattr(a, f.name), getattr(b, f.name)), f.name
    for slot in set(expected.scores.slots.tolist()):
        assert wire.series_key(slot) == walk.series_key(slot)
        assert wire.series_labels(slot) == walk.series_labels(slot)
