"""ScoreTable: latest row per slot, label tuples kept per slot, removal, snapshots."""

from __future__ import annotations

import threading

import numpy as np

from otel_anomaly.exporter.outputs.score_table import ScoreTable
from otel_anomaly.processors.types import Labels, ScoreBatch


def batch(slots: list[int], values: list[float], flags: list[bool] | None = None) -> ScoreBatch:
    v = np.asarray(values, np.float64)
    return ScoreBatch(
        np.asarray(slots, np.intp), np.arange(len(slots), dtype=np.int64), v, v + 1, v - 1,
        v + 2, v / 10, np.asarray(flags or [False] * len(slots), np.bool_),
    )


class Labeller(dict[int, Labels]):
    """A round's labels for any slot (``m<slot>``, generation ``gen``); remembers lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.generation = 0

    def __missing__(self, slot: int) -> Labels:
        self.calls.append(slot)
        return (("metric", f"m{slot}"), ("gen", str(self.generation)))


def test_last_row_of_a_slot_wins_and_every_column_is_kept() -> None:
    table, labels = ScoreTable(), Labeller()
    table.update(batch([3, 1, 3], [10.0, 20.0, 30.0], [False, True, False]), labels)
    snap = table.snapshot()
    assert snap.slots.tolist() == [1, 3]
    assert snap.value.tolist() == [20.0, 30.0]
    assert snap.expected.tolist() == [21.0, 31.0]
    assert snap.lower.tolist() == [19.0, 29.0]
    assert snap.upper.tolist() == [22.0, 32.0]
    assert snap.score.tolist() == [2.0, 3.0]
    assert snap.flag.tolist() == [True, False]
    assert snap.ts_unix_nano.tolist() == [1, 2]
    assert snap.labels == [{"metric": "m1", "gen": "0"}, {"metric": "m3", "gen": "0"}]
    assert len(table) == snap.total == 2


def test_labels_are_read_once_per_series_and_again_after_removal() -> None:
    labels = Labeller()
    table = ScoreTable()
    table.update(batch([0, 1], [1.0, 2.0]), labels)
    table.update(batch([0, 1], [3.0, 4.0]), labels)
    assert labels.calls == [0, 1]
    table.remove(np.array([1], np.intp))
    assert [row["metric"] for row in table.snapshot().labels] == ["m0"]
    labels.generation = 1  # the slot is reused by a new series
    table.update(batch([1], [5.0]), labels)
    assert labels.calls == [0, 1, 1]
    assert table.snapshot().labels[1] == {"metric": "m1", "gen": "1"}


def test_arrays_grow_geometrically_to_the_highest_slot() -> None:
    table, labels = ScoreTable(), Labeller()
    table.update(batch([5000], [1.0]), labels)
    table.update(batch([2], [2.0]), labels)
    assert table.snapshot().slots.tolist() == [2, 5000]
    assert len(table) == 2


def test_snapshot_limit_exports_open_anomalies_first() -> None:
    table, labels = ScoreTable(), Labeller()
    table.update(batch([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], [False, False, True, False]), labels)
    snap = table.snapshot(limit=2)
    assert snap.slots.tolist() == [2, 0]
    assert snap.total == 4


def test_snapshot_is_a_copy() -> None:
    table, labels = ScoreTable(), Labeller()
    table.update(batch([0], [1.0]), labels)
    snap = table.snapshot()
    table.update(batch([0], [99.0]), labels)
    assert snap.value.tolist() == [1.0]


def test_removing_unknown_or_repeated_slots_is_harmless() -> None:
    table, labels = ScoreTable(), Labeller()
    table.update(batch([0], [1.0]), labels)
    table.remove(np.array([0, 0, 7, 12345], np.intp))
    table.remove(np.empty(0, np.intp))
    table.update(ScoreBatch.empty(), {})
    assert len(table) == 0
    assert len(table.snapshot()) == 0


def test_snapshots_during_updates_see_whole_rows() -> None:
    table, labels = ScoreTable(), Labeller()
    stop = threading.Event()

    def writer() -> None:
        i = 0.0
        while not stop.is_set():
            i += 1.0
            table.update(batch(list(range(200)), [i] * 200), labels)

    thread = threading.Thread(target=writer, name="test-writer")
    thread.start()
    try:
        for _ in range(200):
            snap = table.snapshot()
            # expected is always value + 1: a row is never half-written
            assert np.array_equal(snap.expected, snap.value + 1)
    finally:
        stop.set()
        thread.join()


def test_series_with_equal_labels_are_exported_once_open_anomaly_first() -> None:
    table = ScoreTable()
    same: Labels = (("metric", "cpu"), ("job", "checkout"))
    table.update(batch([0, 1, 2], [1.0, 2.0, 3.0], [False, True, False]), dict.fromkeys(range(3), same))
    snap = table.snapshot()
    assert snap.slots.tolist() == [1]
    assert (snap.total, snap.duplicates) == (3, 2)
    table.remove(np.array([1, 2], np.intp))
    snap = table.snapshot()
    assert (snap.slots.tolist(), snap.duplicates) == ([0], 0)
