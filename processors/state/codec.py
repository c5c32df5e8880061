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

Per-series text (series keys, label sets) would make millions of JSON values: components
save it as columns instead, with ``pack_strings`` / ``pack_labels`` (a few integer arrays and
one UTF-8 blob of the distinct strings) and read it back with ``unpack_strings`` /
``unpack_labels``, equal strings and equal pairs then shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

INLINE_MAX = 64
"""Arrays of at most this many numbers are written into the JSON document: a histogram
stream's buckets would otherwise each be a file member of their own."""
_TAGS = frozenset({"list", "dict", "bytes", "inline", "array", "table"})
TABLE_MIN = 32
"""Lists of at least this many equal-length tuples are written as columns (``table``)."""
_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Types that are their own JSON value, and decode as themselves."""


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
    if isinstance(value, (tuple, list)) and all(type(item) in _PLAIN for item in value):
        # Plain values only (the common case): no call per item.
        return list(value) if isinstance(value, tuple) else {"list": list(value)}
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if len(value) >= TABLE_MIN if isinstance(value, (tuple, list)) else False:
        table = _encode_table(value, arrays)
        if table is not None:
            return table
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


def _encode_table(rows: list[Any] | tuple[Any, ...], arrays: dict[str, NDArray[Any]]) -> Any:
    """Rows that are all tuples of one length, as columns; ``None`` for other rows.

    ``{"table": [column, ...], "of": "list" | "tuple"}``; a column is ``{"int64": array}``
    (all ints), ``{"float64": array}`` (all floats), or ``{"codes": array, "values": [...]}``:
    its distinct values (told apart by ``repr`` when made of plain values only, else by
    identity) and each row's code. Per-series rows (a slot and its service, say) then
    cost no JSON value each, and a value many rows share is written once.
    """
    width = len(rows[0]) if type(rows[0]) is tuple else 0
    if not width or not all(type(row) is tuple and len(row) == width for row in rows):
        return None
    columns = [_encode_column([row[i] for row in rows], arrays) for i in range(width)]
    return {"table": columns, "of": "tuple" if isinstance(rows, tuple) else "list"}


def _encode_column(values: list[Any], arrays: dict[str, NDArray[Any]]) -> Any:
    for kind, dtype in ((int, np.int64), (float, np.float64)):
        if all(type(value) is kind for value in values):
            try:
                column = np.array(values, dtype)
            except OverflowError:
                break
            return {np.dtype(dtype).name: _encode_array(column, arrays)}
    by_id: dict[int, int] = {}
    by_repr: dict[str, int] = {}
    distinct: list[Any] = []
    codes = np.empty(len(values), np.int64)
    for i, value in enumerate(values):
        code = by_id.get(id(value))  # the tree holds every value: ids are stable here
        if code is None:
            key = repr(value) if _plain(value) else None
            code = by_repr.get(key) if key is not None else None
            if code is None:
                code = len(distinct)
                distinct.append(value)
                if key is not None:
                    by_repr[key] = code
            by_id[id(value)] = code
        codes[i] = code
    return {"codes": _encode_array(codes, arrays),
            "values": [_encode(value, arrays) for value in distinct]}


def _plain(value: Any) -> bool:
    """Made of plain values and tuples only: then equal ``repr`` means equal encoding."""
    if type(value) is tuple:
        return all(_plain(item) for item in value)
    return type(value) in _PLAIN


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
        if all(type(item) in _PLAIN for item in doc):
            return tuple(doc)
        return tuple(decode(item, arrays) for item in doc)
    if not isinstance(doc, dict) or len(doc.keys() & _TAGS) != 1:
        msg = f"not an encoded state value: {str(doc)[:80]}"
        raise StateFormatError(msg)
    if "list" in doc:
        items = _sequence(doc["list"])
        if all(type(item) in _PLAIN for item in items):
            return list(items)
        return [decode(item, arrays) for item in items]
    if "dict" in doc:
        return {decode(k, arrays): decode(v, arrays) for k, v in _pairs(doc["dict"])}
    if "bytes" in doc:
        return bytes.fromhex(str(doc["bytes"]))
    if "inline" in doc:
        return _inline(doc)
    if "table" in doc:
        return _decode_table(doc, arrays)
    try:
        return arrays[str(doc["array"])]
    except KeyError:
        msg = f"the state refers to an array that is not there: {doc['array']!r}"
        raise StateFormatError(msg) from None


def _decode_table(doc: dict[str, Any], arrays: Any) -> Any:
    columns = [_decode_column(column, arrays) for column in _sequence(doc["table"])]
    if not columns or len({len(column) for column in columns}) != 1:
        msg = "a table in the state has no columns, or columns of different lengths"
        raise StateFormatError(msg)
    rows = list(zip(*columns, strict=True))
    if doc.get("of") not in ("list", "tuple"):
        msg = f"a table in the state is of {doc.get('of')!r}"
        raise StateFormatError(msg)
    return rows if doc["of"] == "list" else tuple(rows)


def _decode_column(column: Any, arrays: Any) -> list[Any]:
    if not isinstance(column, dict):
        msg = "not a table column in the state"
        raise StateFormatError(msg)
    for kind in ("int64", "float64"):
        if kind in column:
            values = decode(column[kind], arrays)
            if not isinstance(values, np.ndarray) or values.dtype != np.dtype(kind):
                msg = f"a table column in the state is not {kind}"
                raise StateFormatError(msg)
            return values.tolist()  # type: ignore[no-any-return]
    distinct = [decode(value, arrays) for value in _sequence(column.get("values"))]
    codes = decode(column.get("codes"), arrays)
    if not isinstance(codes, np.ndarray) or codes.dtype.kind not in "iu":
        msg = "a table column in the state has no codes"
        raise StateFormatError(msg)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(distinct)):
        msg = "a table code in the state is out of range"
        raise StateFormatError(msg)
    return list(map(distinct.__getitem__, codes.tolist()))


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


def pack_strings(values: Sequence[str]) -> dict[str, NDArray[Any]]:
    """``values`` as columns: a code per value into the distinct strings, as one text.

    ``codes`` (int32, one per value) index the distinct strings, which are ``text``
    (their UTF-8, joined) cut at ``ends`` (int64, in characters).

    >>> packed = pack_strings(["a", "bc", "a"])
    >>> packed["codes"].tolist(), packed["text"].tobytes(), packed["ends"].tolist()
    ([0, 1, 0], b'abc', [1, 3])
    >>> unpack_strings(packed)
    ['a', 'bc', 'a']
    """
    table = {value: code for code, value in enumerate(dict.fromkeys(values))}
    codes = np.fromiter(map(table.__getitem__, values), np.int32, len(values))
    # surrogatepass: a lone surrogate (valid in JSON OTLP) round-trips instead of failing.
    text = "".join(table).encode("utf-8", "surrogatepass")
    ends = np.cumsum(np.fromiter(map(len, table), np.int64, len(table)), dtype=np.int64)
    return {"codes": codes, "text": np.frombuffer(text, np.uint8).copy(), "ends": ends}


def unpack_strings(packed: dict[str, Any]) -> list[str]:
    """The strings ``pack_strings`` was given (equal strings are one object).

    Raises
    ------
    StateFormatError
        If the columns do not fit together.
    """
    distinct, codes = _strings(packed)
    return list(map(distinct.__getitem__, codes.tolist()))


def _strings(packed: dict[str, Any]) -> tuple[list[str], NDArray[np.int64]]:
    """The distinct strings and each value's code into them, checked."""
    try:
        text = np.asarray(packed["text"], np.uint8).tobytes().decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        msg = f"strings in the state are not UTF-8 ({exc})"
        raise StateFormatError(msg) from None
    ends = np.asarray(packed["ends"], np.int64)
    if len(ends) and (ends[-1] != len(text) or np.any(np.diff(ends, prepend=0) < 0)):
        msg = "string offsets in the state do not fit its text"
        raise StateFormatError(msg)
    bounds = ends.tolist()
    distinct = [text[start:end] for start, end in zip([0, *bounds], bounds, strict=False)]
    codes = np.asarray(packed["codes"], np.int64)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(distinct)):
        msg = "a string code in the state is out of range"
        raise StateFormatError(msg)
    return distinct, codes


def pack_labels(rows: Sequence[Sequence[tuple[str, str]] | None]) -> dict[str, Any]:
    """Label sets (``None`` for none) as columns.

    ``count`` (int32 per row, -1 for ``None``) and the ``names`` and ``values`` of all
    pairs in order, each ``pack_strings``.

    >>> packed = pack_labels([(("a", "1"), ("b", "2")), None, ()])
    >>> packed["count"].tolist()
    [2, -1, 0]
    >>> unpack_labels(packed)
    [(('a', '1'), ('b', '2')), None, ()]
    """
    count = np.fromiter((-1 if row is None else len(row) for row in rows), np.int32, len(rows))
    pairs = [pair for row in rows if row for pair in row]
    return {"count": count, "names": pack_strings([name for name, _ in pairs]),
            "values": pack_strings([value for _, value in pairs])}


def unpack_labels(packed: dict[str, Any]) -> list[tuple[tuple[str, str], ...] | None]:
    """The label sets ``pack_labels`` was given; equal pairs are one tuple.

    Raises
    ------
    StateFormatError
        If the columns do not fit together.
    """
    names, name_codes = _strings(packed["names"])
    values, value_codes = _strings(packed["values"])
    count = np.asarray(packed["count"], np.int64)
    if len(name_codes) != len(value_codes) or int(count[count > 0].sum()) != len(name_codes):
        msg = "label columns in the state do not fit together"
        raise StateFormatError(msg)
    # Each distinct pair built once, by its two codes.
    unique, first, inverse = np.unique(name_codes * max(len(values), 1) + value_codes,
                                       return_index=True, return_inverse=True)
    del unique
    distinct = list(zip(map(names.__getitem__, name_codes[first].tolist()),
                        map(values.__getitem__, value_codes[first].tolist()), strict=True))
    pairs = list(map(distinct.__getitem__, inverse.ravel().tolist()))
    rows: list[tuple[tuple[str, str], ...] | None] = [None] * len(count)
    starts = np.concatenate(([0], np.cumsum(np.maximum(count, 0))[:-1])) if len(count) else count
    for width in np.unique(count[count >= 0]).tolist():
        which = np.flatnonzero(count == width)
        if width == 0:
            for row in which.tolist():
                rows[row] = ()
            continue
        taken = (starts[which][:, None] + np.arange(width)).ravel().tolist()
        sets = zip(*[iter(list(map(pairs.__getitem__, taken)))] * width, strict=True)
        for row, labels in zip(which.tolist(), sets, strict=True):
            rows[row] = labels
    return rows
