"""Pydantic validation errors as ``path: problem`` lines, with "did you mean" hints."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails

_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}


def format_validation_error(
    exc: ValidationError, root: type[BaseModel], sources: Mapping[str, str] | None = None
) -> list[str]:
    """Return one ``dotted.path: problem`` line per error in ``exc``.

    Parameters
    ----------
    exc
        The error ``root.model_validate`` raised.
    root
        The model that was validated, to resolve paths and suggest known keys.
    sources
        Dotted keys set outside the file (flag, environment variable), named in the line.
    """
    lines = []
    for error in exc.errors():
        path, message = _describe(error, root)
        source = (sources or {}).get(path)
        suffix = f" (from {source})" if source else ""
        lines.append(f"{path or '(root)'}: {message}{suffix}")
    return lines


def _describe(error: ErrorDetails, root: type[BaseModel]) -> tuple[str, str]:
    kind = error["type"]
    loc = tuple(error["loc"])
    got = _show(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        path, node = _resolve(loc[:-1], root)
        return path, _unknown(f"unknown key {loc[-1]!r}", str(loc[-1]), _field_names(node))
    path, _ = _resolve(loc, root)
    if kind == "missing":
        return path, "required key is missing"
    if kind == "unknown_detector_type":
        known = tuple(str(ctx.get("expected", "")).split(", "))
        return _unknown_detector(path, error.get("input"), known)
    if kind in ("value_error", "assertion_error"):
        return path, str(ctx.get("error", error["msg"]))
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        return path, f"must be {op} {_show(ctx[name])}; got {got}"
    if kind in ("too_short", "string_too_short"):
        return path, f"must not be empty; got {got}"
    if kind == "finite_number":
        return path, f"must be a finite number; got {got}"
    if kind == "literal_error":
        return path, f"must be one of {ctx['expected']}; got {got}"
    if kind in _EXPECTED:
        return path, f"expected {_EXPECTED[kind]}; got {got}"
    return path, f"{error['msg']}; got {got}"


def _unknown_detector(path: str, value: object, known: tuple[str, ...]) -> tuple[str, str]:
    if not isinstance(value, Mapping):
        return path, f"expected a mapping with a `type` key; got {_show(value)}"
    given = value.get("type")
    return f"{path}.type", _unknown(
        f"unknown detector type {_show(given)}", str(given), known
    )


def _unknown(what: str, given: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(given, known, n=1)
    if close:
        return f"{what} (did you mean {close[0]!r}?)"
    if known:
        return f"{what} (expected one of: {', '.join(known)})"
    return what


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(int(value))
    if isinstance(value, int | float | str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _resolve(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[str, Any]:
    """Return the dotted path of ``loc`` and the type found there, skipping union tags."""
    path = ""
    node: Any = root
    for item in loc:
        tags = _tags(node)
        if isinstance(item, str) and item in tags:
            node = tags[item]  # a discriminated union's tag: part of pydantic's loc only
            continue
        node = _strip(node)
        if isinstance(item, int):
            path += f"[{item}]"
            args = get_args(node)
            node = args[0] if args else Any
            continue
        path = f"{path}.{item}" if path else item
        if isinstance(node, type) and issubclass(node, BaseModel) and item in node.model_fields:
            node = node.model_fields[item].annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            node = Any
    return path, _strip(node)


def _field_names(node: Any) -> tuple[str, ...]:
    if isinstance(node, type) and issubclass(node, BaseModel):
        return tuple(node.model_fields)
    return ()


def _strip(node: Any) -> Any:
    """Drop ``Annotated`` and a ``None`` member of a union."""
    while True:
        if get_origin(node) is Annotated:
            node = get_args(node)[0]
            continue
        if get_origin(node) in (Union, types.UnionType):
            members = [arg for arg in get_args(node) if arg is not type(None)]
            if len(members) == 1:
                node = members[0]
                continue
        return node


def _tags(node: Any) -> dict[str, Any]:
    """Map each ``Tag`` of a discriminated union (or single tagged type) to its member."""
    members = [node]
    if get_origin(node) is Annotated:
        members = [node]
        inner = get_args(node)[0]
        if get_origin(inner) in (Union, types.UnionType):
            members = list(get_args(inner))
    found: dict[str, Any] = {}
    for member in members:
        if get_origin(member) is Annotated:
            base, *metadata = get_args(member)
            for meta in metadata:
                if isinstance(meta, Tag):
                    found[meta.tag] = base
    return found
