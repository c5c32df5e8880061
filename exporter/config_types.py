"""Building blocks of the config models: the frozen base model, durations, endpoints."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from otel_anomaly.exporter.net import split_endpoint

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """Turn ``"1h"``, ``"1m30s"``, ``"250ms"`` or a number of seconds into seconds.

    Examples
    --------
    >>> parse_duration("1m30s"), parse_duration("250ms"), parse_duration(5)
    (90.0, 0.25, 5)
    """
    if not isinstance(value, str):
        return value  # numbers (and wrong types) go on to pydantic's float check
    text = value.strip()
    try:
        return float(text)  # "90" from an environment variable or a quoted YAML value
    except ValueError:
        pass
    parts = list(_DURATION.finditer(text))
    if not text or "".join(part.group(0) for part in parts) != text:
        msg = f"expected a duration such as '30s', '5m', '1h' or a number of seconds; got {value!r}"
        raise ValueError(msg)
    return sum(float(part.group(1)) * _UNIT_SECONDS[part.group(2)] for part in parts)


def check_readable_file(value: str) -> str:
    """Validate that a configured file can be opened for reading (empty: not set)."""
    if value:
        try:
            with open(value, "rb"):
                pass
        except OSError as exc:
            msg = f"cannot read {value!r}: {exc.strerror or exc}"
            raise ValueError(msg) from exc
    return value


def check_endpoint(value: str) -> str:
    """Validate ``HOST:PORT`` (``ValueError`` says what was expected)."""
    split_endpoint(value)
    return value


LONGEST_DURATION_S = 100 * 365 * 86400.0
"""The longest duration a key takes (100 years): event times plus durations stay within
int64 nanoseconds (292 years), which an infinite ``hold`` or ``max_future`` overflowed on
the first request, failing every request after start-up."""
LARGEST_COUNT = 2**31 - 1
"""The largest count a key takes: counts are compared and summed in int32 and int64
state, and a detector's size parameters allocate per series."""

Duration = Annotated[float, BeforeValidator(parse_duration),
                     Field(le=LONGEST_DURATION_S, allow_inf_nan=False)]
"""Seconds; written in YAML as a number or a string like ``30s``."""
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
Positive = Annotated[int, Field(ge=1, le=LARGEST_COUNT)]
ReadableFile = Annotated[str, AfterValidator(check_readable_file)]
"""A path that must be readable when set; empty means not set."""


class Model(BaseModel):
    """Frozen, and unknown keys are errors."""

    # No NaN or infinity in any float key (a threshold that is never reached is a large
    # number, not .inf); a key that means "never" says so with 0 where it documents it.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        # YAML reads `yes`, `on` and `true` as booleans, which pydantic would take as 1:
        # `max_series: yes` became "at most 1 series".
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields[info.field_name]
            if field.annotation in (int, float):
                msg = f"expected a number; got {str(value).lower()}"
                raise ValueError(msg)
        return value

