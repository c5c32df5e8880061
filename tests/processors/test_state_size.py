"""Per-series state of the default univariate stack stays compact (bytes per slot row).

Counts the bytes of one row of every ``SlotArrays`` a default engine allocates for gauge
series: deterministic, unlike RSS. ``benchmarks/memory.py`` measures the process itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.series.slot_arrays import SlotArrays
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import SeriesKey

ROW_BYTES_BOUND = 3384
"""Bytes of slot-array state per gauge series (3,377 today, 20 of them the ensemble's level
following its weekly profile (``level_follow``: the profile's last value and spread and
the level's extra variance); 3,357 before, 21 of them the held band's test of
"back" (``AlertPolicy.close_odds``: the level before an anomaly, its variance, the anomaly's
level, its points, the test's log odds and whether it tells); 3,336 before, 8 of them a count's rise CUSUM
and the seconds its mean rate is measured over (``calibration_kernels.count_rise_score``);
3,328 before, 4 of them a count's drop CUSUM; 3,324 before, 12 of them a count's run of
empty windows and its gap sums (``calibration_kernels.count_drop_score``); 3,312 before,
20 of them a count's dispersion
and recent sums (``calibration_kernels.count_floor``), kept for every series as its other
usual-magnitude columns are; 3,292 before, 20 of them the hysteresis'
evidence and its scores' running moments (``AlertPolicy.evidence_point_s``); 3,272 before,
as measured then by this walk; earlier figures as the docstring had them: 3,267, of which 28
the profiles' phase
snapshots (``test_seasonal_snapshot``); 3,239 before them, 3,437 before the tail
histograms' 24-bit bins, 3,893 before the profiles' one-byte counts, 4,249 before the tail
histograms ended at ~1.3e5, 6,058 before the profiles' two-byte codes, 8,010 before the
compact dtypes), with a little headroom: raise it only on purpose. Most of it is the daily
and weekly profiles (1,472 and 872 bytes) and the three tail histograms (190 bytes each).
The held bands' 158 bytes (97 of them the trend fit of ``processors.alerting.trend``) are
kept for every series since #7: a leak's trend must predate its open (5,921 before)."""


def slot_arrays(root: object) -> dict[str, SlotArrays]:
    """Every ``SlotArrays`` reachable from ``root``'s attributes, by attribute path."""
    found: dict[str, SlotArrays] = {}
    seen: set[int] = set()

    def walk(obj: Any, path: str) -> None:
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray)):
            return
        seen.add(id(obj))
        if isinstance(obj, SlotArrays):
            found[path] = obj
            return
        if isinstance(obj, dict):
            for name, value in obj.items():
                walk(value, f"{path}[{name!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                walk(value, f"{path}[{i}]")
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            names = list(getattr(obj, "__dict__", {}))
            names += [n for n in getattr(type(obj), "__slots__", ()) if hasattr(obj, n)]
            for name in names:
                walk(getattr(obj, name), f"{path}.{name}")

    walk(root, "engine")
    return found


def gauge_engine(n: int = 3) -> Engine:
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    keys = [SeriesKey("load", (("service.name", "api"),), (("i", str(i)),)) for i in range(n)]
    for minute in range(3):
        engine.ingest_series(keys, np.full(n, (1_700_000_000 + 60 * minute) * 10**9),
                             np.full(n, 10.0 + minute))
    return engine


def test_default_gauge_state_per_series_stays_under_its_bound() -> None:
    arrays = {path: state for path, state in slot_arrays(gauge_engine()).items() if len(state)}
    per_row = {path: state.row_bytes() for path, state in arrays.items()}
    total = sum(per_row.values())
    biggest = sorted(per_row.items(), key=lambda item: -item[1])[:5]
    assert total <= ROW_BYTES_BOUND, f"{total} bytes per series; biggest: {biggest}"
    # The walk did find the detector state (it is most of the total).
    assert any("detectors" in path for path in arrays)


def test_row_bytes_counts_every_array_of_a_row() -> None:
    from otel_anomaly.processors.series.slot_arrays import Column

    state = SlotArrays(n=Column(np.int32), hist=Column(np.float32, 0.0, (10,)))
    assert state.row_bytes() == 4 + 40
