"""Comparing two engines' whole state, as a checkpoint would write it."""

from __future__ import annotations

import json

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.state.codec import encode


def assert_same_state(a: Engine, b: Engine) -> None:
    """The two engines' state trees are equal, arrays bit for bit (NaN equal to NaN)."""
    doc_a, arrays_a = encode(a.state_dict())
    doc_b, arrays_b = encode(b.state_dict())
    assert json.dumps(doc_a) == json.dumps(doc_b)  # as text: NaN equals NaN
    assert arrays_a.keys() == arrays_b.keys()
    for name, array in arrays_a.items():
        np.testing.assert_array_equal(array, arrays_b[name], err_msg=name)
