"""Label sets stay distinct: a colliding series is told apart by its resource, never dropped."""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.series.label_sets import LabelSets
from otel_anomaly.processors.types import SeriesKey


def key(pid: str, *, metric: str = "process_load", extra: tuple[tuple[str, str], ...] = ()
        ) -> SeriesKey:
    return SeriesKey(metric, (("process.pid", pid), ("service.name", "api"), *extra), ())


def test_replicas_told_apart_only_by_pid_get_distinct_labels_and_the_first_keeps_its_own() -> None:
    sets = LabelSets()
    first = sets.assign(0, key("1"), "ensemble")
    second = sets.assign(1, key("2"), "ensemble")
    third = sets.assign(2, key("3"), "ensemble")
    assert "process_pid" not in dict(first)
    assert dict(second)["process_pid"] == "2" and dict(third)["process_pid"] == "3"
    assert len({first, second, third}) == 3
    assert sets.of(0) == first  # unchanged by the collisions that came later


def test_forgetting_frees_the_label_set_and_reuse_relabels_the_slot() -> None:
    sets = LabelSets()
    first = sets.assign(0, key("1"), "ensemble")
    sets.assign(1, key("2"), "ensemble")
    sets.forget(0)
    assert sets.of(0) == ()
    # A new series with the first one's identity takes its plain labels again.
    assert sets.assign(2, key("1"), "ensemble") == first
    assert sets.assign(1, key("9", metric="other"), "ensemble") != first


def test_an_unresolvable_collision_is_kept_and_handed_over_when_the_owner_goes() -> None:
    sets = LabelSets()
    same = SeriesKey("m", (("service.name", "api"),), (("http.route", "/"),))
    clash = SeriesKey("m", (("service.name", "api"),), (("http_route", "/"),))
    a, b = sets.assign(0, same, "ensemble"), sets.assign(1, clash, "ensemble")
    assert a == b  # nothing in the resource tells them apart: counted downstream
    sets.forget(0)
    c = sets.assign(2, SeriesKey("m", (("service.name", "api"),), (("http.route", "/"),)),
                    "ensemble")
    assert c == a  # slot 1 owns the set now; the newcomer collides with it, not lost
    assert sets.of(1) == a


def test_with_key_of_the_keys_are_not_kept_and_collisions_still_resolve() -> None:
    keys = {0: key("1"), 1: key("2")}
    sets = LabelSets(key_of=keys.__getitem__)
    first, second = sets.assign(0, keys[0], "ensemble"), sets.assign(1, keys[1], "ensemble")
    assert dict(second)["process_pid"] == "2" and "process_pid" not in dict(first)
    assert not sets._keys  # noqa: SLF001 - the index owns the keys
    # Pairs many series carry are one tuple, shared between their label sets.
    assert first[0] is second[0]
    restored = LabelSets(key_of=keys.__getitem__)
    restored.load_state_dict(sets.state_dict(), keys)
    assert restored.of(0) == first and restored.of(1) == second and restored.of(7) == ()


def test_of_many_answers_what_of_answers_for_every_slot() -> None:
    # Assigned, forgotten, never assigned and beyond the table; one slot, many, repeats.
    sets = LabelSets()
    for slot in range(6):
        sets.assign(slot, key(str(slot)), "ensemble")
    sets.forget(3)
    for slots in ([], [4], [3], [5, 0, 3, 5], [1, 2], [0, 9], [7], [-1, 2]):
        found = sets.of_many(np.array(slots, np.intp)).tolist()
        assert [() if labels is None else labels for labels in found] == [
            sets.of(slot) for slot in slots], slots
    assert sets.of_many(np.array([3, 1]))[0] is None and sets.of_many(np.array([3, 1]))[1]
    # A copy: forgetting a slot later does not change a round's labels already taken.
    before = sets.of(1)
    taken = sets.of_many(np.array([1, 2]))
    sets.forget(1)
    assert sets.of(1) == () and taken[0] == before != ()


def test_replicas_told_apart_by_a_reserved_name_get_an_attr_label_not_a_reserved_one() -> None:
    # `__name__="b"` on the second replica made Prometheus refuse the whole page ("label
    # name __name__ is not unique"), and `job="y"` would have re-labelled its job.
    sets = LabelSets()
    sets.assign(0, SeriesKey("load", (("__name__", "a"), ("job", "x"), ("service.name", "api")),
                             ()), "ensemble")
    second = dict(sets.assign(1, SeriesKey(
        "load", (("__name__", "b"), ("job", "y"), ("service.name", "api")), ()), "ensemble"))
    assert second["attr___name__"] == "b" and second["attr_job"] == "y"
    assert second["job"] == "api" and not any(name.startswith("__") for name in second)


def test_an_empty_value_is_no_label_so_series_prometheus_would_merge_are_duplicates() -> None:
    # Prometheus reads {route=""} as {}: two such series were exported as two and stored as
    # one, the later one's values lost and not counted as a duplicate.
    sets = LabelSets()
    pid = sets.assign(0, SeriesKey("m", (("process.pid", "1"), ("service.name", "s")), ()),
                      "ensemble")
    bare = sets.assign(1, SeriesKey("m", (("service.name", "s"),), ()), "ensemble")
    empty = sets.assign(2, SeriesKey("m", (("service.name", "s"),), (("route", ""),)),
                        "ensemble")
    assert "process_pid" not in dict(bare) and "route" not in dict(empty)  # were ""
    assert pid == bare == empty  # one set to Prometheus: duplicates, exported once, counted
