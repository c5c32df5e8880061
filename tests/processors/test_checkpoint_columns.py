"""Checkpoints of many series: per-series text saved as columns, arrays streamed, exact.

A checkpoint of a large engine must not hold a second copy of the state (the arrays are
written from the engine's own memory and read straight into the restored engine's), and
must not turn each series into JSON values (keys, labels and per-slot tables are columns).
Format 5 files, written before, still load.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.engine_state import assert_same_state

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays, no_copies
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint, codec
from otel_anomaly.processors.state.codec import (
    StateFormatError,
    decode,
    encode,
    pack_labels,
    pack_strings,
    unpack_labels,
    unpack_strings,
)
from otel_anomaly.processors.testing import SECOND, FakeClock
from otel_anomaly.processors.types import SeriesKey

SERIES = 3_000


def _settings() -> EngineSettings:
    return EngineSettings(clock=FakeClock(), max_series=SERIES, series_ttl_s=100.0)


def _keys(start: int, n: int) -> list[SeriesKey]:
    """Series with varied resources (some shared), attributes and unusual text."""
    keys = []
    for i in range(start, start + n):
        resource = (("host.name", f"h{i % 7}"), ("process.pid", str(i % 3)),
                    ("service.name", ["api", "caché", "日本", "a\ud800b"][i % 4]))
        attributes = (("series", str(i)),) if i % 5 else ()
        keys.append(SeriesKey(["load", "queue.depth", "x y"][i % 3], resource, attributes))
    return keys


def _many_series_engine() -> Engine:
    clock = FakeClock()
    engine = Engine(EngineSettings(clock=clock, max_series=SERIES, series_ttl_s=100.0))
    rng = np.random.default_rng(3)
    keys = _keys(0, SERIES - 500)
    for step in range(4):
        clock.now = float(step)
        n = len(keys)
        engine.ingest_series(keys, np.full(n, (1_000 + 60 * step) * SECOND, np.int64),
                             100.0 + rng.normal(0.0, 1.0, n))
    clock.now = 150.0  # half the series stay, the other half goes idle and is expired
    kept = keys[::2]
    engine.ingest_series(kept, np.full(len(kept), 1_500 * SECOND, np.int64),
                         rng.normal(0.0, 1.0, len(kept)))
    clock.now = 200.0
    late = _keys(SERIES, 400)
    engine.ingest_series(late, np.full(len(late), 2_000 * SECOND, np.int64),
                         rng.normal(0.0, 1.0, len(late)))
    assert len(engine.evict_expired())
    engine.ingest_series(late[:200], np.full(200, 2_060 * SECOND, np.int64),
                         rng.normal(0.0, 1.0, 200))
    return engine


def _round_trip(engine: Engine) -> tuple[Engine, bytes]:
    out = io.BytesIO()
    checkpoint.dump(engine, out)
    data = out.getvalue()
    return checkpoint.load(io.BytesIO(data), engine.settings), data


def test_a_checkpoint_of_many_series_round_trips_exactly() -> None:
    engine = _many_series_engine()
    restored, data = _round_trip(engine)
    assert_same_state(engine, restored)
    live = engine.index.live_slots()
    assert np.array_equal(restored.index.live_slots(), live)
    assert len(live) > 1_000 and engine.index.capacity > len(live)  # free slots too
    for slot in live.tolist():
        assert restored.series_key(slot) == engine.series_key(slot)
        assert restored.series_labels(slot) == engine.series_labels(slot)
    # The series keep their slots: the restored engine finds them where they were.
    keys = [engine.series_key(slot) for slot in live.tolist()]
    assert restored.index.lookup(keys, now=0.0)[0].tolist() == live.tolist()
    # Equal resources and label pairs come back as one object each.
    assert len({id(key.resource) for key in map(restored.series_key, live.tolist())}) <= 84


def test_the_json_document_does_not_grow_with_the_series() -> None:
    small, large = Engine(_settings()), _many_series_engine()
    small.ingest_series(_keys(0, 40), np.full(40, SECOND, np.int64), np.ones(40))
    sizes = []
    for engine in (small, large):
        _, data = _round_trip(engine)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            sizes.append(archive.getinfo("state.npy").file_size)
    assert sizes[1] < 2 * sizes[0] + 20_000, sizes


def test_saving_and_restoring_hold_no_second_copy_of_the_arrays() -> None:
    arrays = SlotArrays(n=Column(np.int32), level=Column(np.float64, np.nan, (2,)))
    arrays.grow(100)
    with no_copies():
        saved = arrays.state_dict()
    assert saved["n"] is arrays.n and saved["level"] is arrays.level
    restored = SlotArrays(n=Column(np.int32), level=Column(np.float64, np.nan, (2,)))
    given = {"n": np.arange(100, dtype=np.int32), "level": np.zeros((100, 2))}
    with no_copies():
        restored.load_state_dict(given)
    assert restored.n is given["n"] and restored.level is given["level"]
    wider = {"n": np.arange(100, dtype=np.int64), "level": np.zeros((100, 2))}
    with no_copies():
        restored.load_state_dict(wider)  # another dtype: cast, as always
    assert restored.n.dtype == np.int32 and restored.n is not wider["n"]
    # Outside the context, both sides copy (a state_dict may be kept and compared).
    assert arrays.state_dict()["n"] is not arrays.n


def _format_5(engine: Engine) -> bytes:
    """The checkpoint format 5 wrote: per-series keys and labels as JSON values."""
    state = engine.state_dict()
    keys = engine.index._keys  # noqa: SLF001 - rebuilding the old layout
    state["index"] = {
        "keys": [None if key is None else [key.metric, key.resource, key.attributes]
                 for key in keys],
        "free": list(engine.index._free),  # noqa: SLF001
        "last": state["index"]["last"]}
    labels = engine.scorer._labels._labels  # noqa: SLF001
    state["scorer"]["labels"] = {"labels": [[slot, [list(pair) for pair in pairs]]
                                            for slot, pairs in enumerate(labels)
                                            if pairs is not None]}
    old_table_min = codec.TABLE_MIN
    codec.TABLE_MIN = 10**12  # format 5 had no tables
    try:
        doc, arrays = encode(state)
    finally:
        codec.TABLE_MIN = old_table_min
    header = {"magic": checkpoint.MAGIC, "version": 5,
              "settings": checkpoint.fingerprint(engine.settings),
              "clock": engine.settings.clock()}
    out = io.BytesIO()
    np.savez(out, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
             state=np.frombuffer(json.dumps(doc).encode(), np.uint8), **arrays)
    return out.getvalue()


def test_a_format_5_checkpoint_still_loads_theassert_same_state() -> None:
    engine = _many_series_engine()
    old = _format_5(engine)
    assert "table" not in old[:200_000].decode("latin-1")
    restored = checkpoint.load(io.BytesIO(old), engine.settings)
    assert_same_state(engine, restored)
    for slot in engine.index.live_slots().tolist():
        assert restored.series_labels(slot) == engine.series_labels(slot)


def _with_state(data: bytes, change: Any) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    doc = json.loads(members["state"].tobytes())
    change(doc, members)
    members["state"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **members)
    return out.getvalue()


def _index_column(doc: dict[str, Any], name: str) -> Any:
    index = dict(dict(doc["dict"])["index"]["dict"])
    return dict(index[name]["dict"])


def _bad_codes(doc: dict[str, Any], members: dict[str, Any]) -> None:
    codes = _index_column(doc, "metric")["codes"]
    members[codes["array"]] = members[codes["array"]] + 1_000


def _bad_text(doc: dict[str, Any], members: dict[str, Any]) -> None:
    text = _index_column(doc, "attributes")
    values = dict(text["values"]["dict"])["text"]
    members[values["array"]] = np.full_like(members[values["array"]], 0xFF)


@pytest.mark.parametrize(("damage", "reason"), [
    (_bad_codes, "string code in the state is out of range"),
    (_bad_text, "not UTF-8"),
])
def test_inconsistent_columns_are_refused_with_a_reason(damage: Any, reason: str,
                                                         tmp_path: Path) -> None:
    engine = _many_series_engine()
    _, data = _round_trip(engine)
    path = tmp_path / "state.ckpt"
    path.write_bytes(_with_state(data, damage))
    with pytest.raises(checkpoint.CheckpointError, match=reason), path.open("rb") as source:
        checkpoint.load(source, engine.settings)


def test_strings_and_labels_round_trip_as_columns() -> None:
    strings = ["", "a", "é", "日本", "a\ud800b", "a", "\x00", ""]
    assert unpack_strings(pack_strings(strings)) == strings
    assert unpack_strings(pack_strings([])) == []
    rows = [(("a", "1"),), None, (), (("a", "1"), ("b", "\ud83d"))]
    unpacked = unpack_labels(pack_labels(rows))
    assert unpacked == rows
    assert unpacked[0][0] is unpacked[3][0]  # type: ignore[index] - equal pairs: one tuple
    with pytest.raises(StateFormatError, match="do not fit"):
        unpack_labels({**pack_labels(rows), "count": np.array([5, -1, 0, 2], np.int32)})


def test_tables_keep_every_value_as_itself() -> None:
    shared = ["mutable"]
    tree = {
        "mixed": [(1, True, 1.0, "1", None, (1,), (True,))] * 40,
        "numbers": [(i, float(i) / 3, -0.0, float("nan")) for i in range(50)],
        "numpy": tuple((np.float32(0.1), np.int64(2)) for _ in range(40)),
        "big": [(2**70, i) for i in range(40)],
        "lists": [(i, shared) for i in range(40)],
        "ragged": [(1,), (1, 2)] * 20,
    }
    doc, arrays = encode(tree)
    back = decode(json.loads(json.dumps(doc)), arrays)
    assert repr(back["mixed"]) == repr(tree["mixed"])
    assert repr(back["numbers"]) == repr(tree["numbers"])
    assert back["numpy"] == tuple((float(np.float32(0.1)), 2) for _ in range(40))
    assert type(back["numpy"]) is tuple and type(back["numpy"][0][0]) is float
    assert back["big"] == tree["big"] and back["lists"] == tree["lists"]
    assert back["ragged"] == tree["ragged"]
    assert "table" in json.dumps(doc)
