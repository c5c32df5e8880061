"""Each rule's detector holds state only for the series routed to it, and slots are reused."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import DetectorRule, EngineSettings
from otel_anomaly.processors.testing import SECOND, FakeClock
from otel_anomaly.processors.types import SeriesKey

MINUTE = 60 * SECOND
RULES = (
    DetectorRule(name="levels", match=("level_*",), detector="ewma_zscore",
                 params=MappingProxyType({"warmup": 5})),
    DetectorRule(name="default", detector="seasonal_profile"),
)


def _engine(clock: FakeClock) -> Engine:
    return Engine(EngineSettings(clock=clock, rules=RULES, series_ttl_s=600.0))


def _feed(engine: Engine, names: list[str], rounds: int, start: int = 0, level: float = 10.0):
    keys = [SeriesKey(name, (), ()) for name in names]
    out = None
    for r in range(start, start + rounds):
        out = engine.ingest_series(keys, [r * MINUTE] * len(keys),
                                   [level + (r + i) % 3 for i in range(len(keys))])
    return out


def _detector(engine: Engine, rule: str):
    names = [r.name for r in engine.scorer.rules]
    return engine.scorer.detectors[names.index(rule)]


def _rows(detector_state: dict[str, np.ndarray]) -> int:
    return max(len(v) for v in detector_state.values())


def test_a_rules_detector_holds_only_the_series_routed_to_it() -> None:
    engine = _engine(FakeClock())
    _feed(engine, [f"other_{i}" for i in range(300)] + ["level_a"], rounds=3)
    levels, seasonal = _detector(engine, "levels"), _detector(engine, "default")
    # One series on the levels rule: its arrays stay at the minimum size, not 301 rows.
    assert _rows(levels.state_dict()) == 64
    assert _rows(seasonal.state_dict()) == 300


def test_evicted_series_free_their_state_for_new_ones_of_the_same_rule() -> None:
    clock = FakeClock()
    engine = _engine(clock)
    _feed(engine, [f"level_{i}" for i in range(100)], rounds=10, level=1000.0)
    clock.advance(3600.0)
    assert len(engine.evict_expired()) == 100
    out = _feed(engine, [f"level_new_{i}" for i in range(100)], rounds=1, start=20)
    levels = _detector(engine, "levels")
    assert _rows(levels.state_dict()) == 100  # the freed rows were reused
    # Reused rows start from scratch: nothing of the evicted series' level is left.
    assert out is not None
    assert np.isnan(out.scores.upper).all()
    assert engine.scorer.count_warming(out.scores.slots) == 100
