"""SeriesIndex keeps one copy of what many series share: resources and metric names."""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.series.index import SeriesIndex
from otel_anomaly.processors.types import SeriesKey


def resource() -> tuple[tuple[str, str], ...]:
    # A new tuple each call, as every decoded request brings its own.
    return tuple((name, value) for name, value in (("host.name", "h1"), ("service.name", "a")))


def test_equal_resources_of_different_requests_are_kept_once() -> None:
    index = SeriesIndex(max_series=10)
    a, b = SeriesKey("m", resource(), (("i", "1"),)), SeriesKey("m", resource(), (("i", "2"),))
    assert a.resource is not b.resource
    slots, _ = index.lookup([a], now=0.0)
    more, _ = index.lookup([b], now=1.0)
    kept_a, kept_b = index.key(int(slots[0])), index.key(int(more[0]))
    assert kept_a == a and kept_b == b
    assert kept_a.resource is kept_b.resource
    # The keys found again are the same slots.
    assert index.lookup([b, a], now=2.0)[0].tolist() == [int(more[0]), int(slots[0])]
    assert index.expire(now=100.0, ttl=5.0).tolist() == [0, 1]


def test_restored_keys_share_their_resources_too() -> None:
    index = SeriesIndex(max_series=10)
    index.lookup([SeriesKey("m", resource(), (("i", str(i)),)) for i in range(3)], now=0.0)
    restored = SeriesIndex(max_series=10)
    restored.load_state_dict(index.state_dict())
    keys = [restored.key(slot) for slot in restored.live_slots().tolist()]
    assert len({id(key.resource) for key in keys}) == 1
    assert restored.lookup(keys, now=1.0)[0].tolist() == [0, 1, 2]
    assert np.array_equal(restored.live_slots(), np.arange(3))
