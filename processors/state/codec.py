"""State trees to JSON plus named arrays, and back: what a checkpoint is made of.

Components describe their state (``state_dict()``) as a tree of plain values: ``None``,
booleans, numbers, strings, bytes, tuples, lists, dicts (any hashable keys) and numpy
arrays. ``encode`` turns the tree into a JSON-able document and a set of named arrays,
``decode`` turns them back into an equal tree. Nothing here can construct anything but
those types: a checkpoint is data, never code.

Containers are tagged so each type comes back as itself: a tuple is a JSON list, a list
is ``{"list": [...]}``, a dict ``{"dict": [[key, value], ...]}`` (insertion order kept), bytes
``{"bytes": "<hex>"}``, a small numeric array ``{"inline": dtype, "shape": [...], "data":
[...]}`` and any other array ``{"array": name}``. Floats are written as Python writes them
(shortest round-trip form, ``NaN`` and ``Infinity`` included), so values come back bit for
bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

INLINE_MAX = 64
"""Arrays of at most this many numbers are written into the JSON document: a histogram
stream's buckets would otherwise each be a file member of their own."""
_TAGS = frozenset({"list", "dict", "bytes", "inline", "array"})


class StateFormatError(ValueError):
    """A document that is not an encoded state tree."""


def encode(tree: Any) -> tuple[Any, dict[str, NDArray[Any]]]:
    """The JSON-able document for ``tree`` and the arrays it refers to by name.

    Examples
    --------
    >>> doc, arrays = encode({"keys": [("a", 1)], "x": np.zeros(100)})
    >>> doc, list(arrays)
    ({'dict': [['keys', {'list': [['a', 1]]}], ['x', {'array': 'a0'}]]}, ['a0'])
    >>> decode(doc, arrays)["keys"]
    [('a', 1)]
    """
    arrays: dict[str, NDArray[Any]] = {}
    return _encode(tree, arrays), arrays


def _encode(value: Any, arrays: dict[str, NDArray[Any]]) -> Any:  # noqa: PLR0911 - one per type
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, tuple):
        return [_encode(item, arrays) for item in value]
    if isinstance(value, list):
        return {"list": [_encode(item, arrays) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, np.ndarray):
        return _encode_array(value, arrays)
    msg = f"cannot save a {type(value).__name__} in a checkpoint"
    raise TypeError(msg)


def _encode_array(array: NDArray[Any], arrays: dict[str, NDArray[Any]]) -> Any:
    if array.dtype.kind not in "biuf":
        msg = f"cannot save an array of dtype {array.dtype} in a checkpoint"
        raise TypeError(msg)
    if array.size <= INLINE_MAX:
        return {"inline": array.dtype.str, "shape": list(array.shape),
                "data": array.ravel().tolist()}
    name = f"a{len(arrays)}"
    arrays[name] = array
    return {"array": name}


def decode(doc: Any, arrays: dict[str, NDArray[Any]] | Any) -> Any:
    """The tree ``encode`` was given, from its document and arrays (a mapping by name).

    Raises
    ------
    StateFormatError
        If ``doc`` is not a document ``encode`` writes, or names an array that is missing.
    """
    if doc is None or isinstance(doc, (bool, int, float, str)):
        return doc
    if isinstance(doc, list):
        return tuple(decode(item, arrays) for item in doc)
    if not isinstance(doc, dict) or len(doc.keys() & _TAGS) != 1:
        msg = f"not an encoded state value: {str(doc)[:80]}"
        raise StateFormatError(msg)
    if "list" in doc:
        return [decode(item, arrays) for item in _sequence(doc["list"])]
    if "dict" in doc:
        return {decode(k, arrays): decode(v, arrays) for k, v in _pairs(doc["dict"])}
    if "bytes" in doc:
        return bytes.fromhex(str(doc["bytes"]))
    if "inline" in doc:
        return _inline(doc)
    try:
        return arrays[str(doc["array"])]
    except KeyError:
        msg = f"the state refers to an array that is not there: {doc['array']!r}"
        raise StateFormatError(msg) from None


def _sequence(value: Any) -> list[Any]:
    if not isinstance(value, list):
        msg = f"expected a list in the state; got {type(value).__name__}"
        raise StateFormatError(msg)
    return value


def _pairs(value: Any) -> list[tuple[Any, Any]]:
    pairs = _sequence(value)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):  # noqa: PLR2004
        msg = "expected [key, value] pairs in the state"
        raise StateFormatError(msg)
    return [(k, v) for k, v in pairs]


def _inline(doc: dict[str, Any]) -> NDArray[Any]:
    dtype = np.dtype(str(doc["inline"]))
    if dtype.kind not in "biuf":
        msg = f"not a numeric dtype in the state: {dtype}"
        raise StateFormatError(msg)
    shape = tuple(int(n) for n in _sequence(doc["shape"]))
    return np.array(_sequence(doc["data"]), dtype).reshape(shape)


def as_labels(pairs: Any) -> tuple[tuple[str, str], ...]:
    """Labels read back from a state tree, checked to be ``(name, value)`` strings."""
    return tuple((str(name), str(value)) for name, value in pairs)
