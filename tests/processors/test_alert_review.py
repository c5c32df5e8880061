"""Alert review through the engine: a false positive stops the same excursion from paging."""

from __future__ import annotations

import io

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import AnomalyEvent, SeriesKey

KEY = SeriesKey("queue_depth", (("service.name", "worker"),), ())
STEP_S = 60
WARM = 1_500


def feed(engine: Engine, values: np.ndarray, start: int) -> list[AnomalyEvent]:
    ts = (np.arange(start, start + len(values), dtype=np.int64) * STEP_S + 1_700_000_000)
    events = []
    for t, v in zip((ts * SECOND).tolist(), values.tolist(), strict=True):
        events += engine.ingest_series([KEY], np.array([t]), np.array([v])).events
    return events


def restarted(engine: Engine) -> Engine:
    """The engine as a restart from its checkpoint brings it back."""
    saved = io.BytesIO()
    checkpoint.dump(engine, saved)
    saved.seek(0)
    return checkpoint.load(saved, EngineSettings(clock=lambda: 0.0))


def run(judge: bool, *, restart: bool = False
        ) -> tuple[list[AnomalyEvent], list[AnomalyEvent], list[AnomalyEvent]]:
    rng = np.random.default_rng(21)
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    feed(engine, 100.0 + rng.normal(0.0, 2.0, WARM), 0)
    bump = np.r_[np.full(5, 118.0), 100.0 + rng.normal(0.0, 2.0, 600)]
    first = feed(engine, bump, WARM)
    opened = [e for e in first if e.kind == "open"]
    assert opened, "the first excursion did not open"
    if judge:
        judged = engine.judge(opened[0].anomaly_id, "false_positive", author="sre")
        assert judged.peak_score > 1.0 and judged.bar > judged.peak_score
    if restart:
        engine = restarted(engine)
    again = feed(engine, bump, WARM + len(bump))
    bigger = np.r_[np.full(5, 160.0), 100.0 + rng.normal(0.0, 2.0, 60)]
    large = feed(engine, bigger, WARM + 2 * len(bump))
    return first, again, large


def test_a_false_positive_does_not_reopen_on_the_same_excursion_but_a_larger_one_opens() -> None:
    _, again_control, _ = run(judge=False)
    assert [e for e in again_control if e.kind == "open"], (
        "control: the repeated excursion should open without feedback")
    _, again, large = run(judge=True)
    assert not [e for e in again if e.kind == "open"], [e.explanation for e in again]
    opens = [e for e in large if e.kind == "open"]
    assert opens, "a much larger excursion must still open"
    assert "raised by a false-positive verdict" in opens[0].explanation


def test_a_verdict_survives_a_restart_from_the_checkpoint() -> None:
    _, again, large = run(judge=True, restart=True)
    assert not [e for e in again if e.kind == "open"], [e.explanation for e in again]
    assert [e for e in large if e.kind == "open"]
