"""Upgrades of saved state between checkpoint format versions, all in one place.

When a component's ``state_dict`` changes shape, bump ``checkpoint.FORMAT`` and add the
step from the previous version here: it receives the decoded state tree of version ``N``
and returns that of version ``N + 1``. A checkpoint is upgraded one step at a time up to
the current version, so every step only knows its two neighbours.

Format 4 is the first one saved without pickle; older checkpoints are foreign.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.deploys import RESTORED_COUNT
from otel_anomaly.processors.alerting.hysteresis import LAG_PRIOR
from otel_anomaly.processors.alerting.tail_quantile import TAIL_BINS, TAIL_TOP, integer_bins
from otel_anomaly.processors.detectors.seasonal_codes import encode_profiles
from otel_anomaly.processors.detectors.seasonal_counts import encode_counts
from otel_anomaly.processors.state.codec import (
    as_labels,
    pack_labels,
    pack_strings,
    unpack_strings,
)

FIRST_FORMAT = 4
"""The oldest format that can be read (the first saved as arrays and JSON)."""

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def _each_prefix(state: Any, suffix: str, fix: Callable[[dict[str, Any], str], None]) -> Any:
    """``fix(table, prefix)`` for every dict of the tree and every key of it ending in ``suffix``.

    A component's columns sit under a prefix (an ensemble member's ``m1.``, or none), in
    any dict of the decoded state tree; the prefixes are found before ``fix`` changes the
    dict, then the walk goes on into its values (and into lists).
    """
    if isinstance(state, list):
        return [_each_prefix(value, suffix, fix) for value in state]
    if not isinstance(state, dict):
        return state
    for prefix in [key[: -len(suffix)] for key in state if str(key).endswith(suffix)]:
        fix(state, prefix)
    for key, value in state.items():
        state[key] = _each_prefix(value, suffix, fix)
    return state



def _anomaly_stamps(state: dict[str, Any]) -> dict[str, Any]:
    """Format 4 -> 5: open anomalies remember their open's stamp (their ``anomaly_id``).

    An anomaly open at the upgrade gets its last event's time as its open's: its id then
    stays the same until it closes, which is all an id needs.
    """
    per_slot = state["scorer"]["per_slot"]
    last = np.asarray(state["scorer"]["hysteresis"]["last_event_ts"], np.int64)
    opened = np.where(np.asarray(state["scorer"]["hysteresis"]["open"], np.bool_), last, 0)
    rows = len(per_slot["age"])
    per_slot["opened_ns"] = _fit(opened, rows)
    per_slot["stamped_ns"] = _fit(opened, rows)
    state["silence"]["services"] = [
        [*service, 0] for service in state["silence"]["services"]]
    return state


def _fit(values: NDArray[np.int64], rows: int) -> NDArray[np.int64]:
    """``values`` cut or padded with zeros to ``rows`` rows."""
    out = np.zeros(rows, np.int64)
    n = min(rows, len(values))
    out[:n] = values[:n]
    return out


def _text_columns(state: dict[str, Any]) -> dict[str, Any]:
    """Format 5 -> 6: series keys and label sets are saved as columns, not JSON values.

    A state already in columns (as a test builds it from a live engine) is left as it is.
    """
    index = state["index"]
    if "keys" in index:
        keys = [None if key is None else (str(key[0]), as_labels(key[1]), as_labels(key[2]))
                for key in index.pop("keys")]
        resources: dict[Any, int] = {}
        index["metric"] = pack_strings(["" if key is None else key[0] for key in keys])
        index["resource"] = np.array(
            [-1 if key is None else resources.setdefault(key[1], len(resources))
             for key in keys], np.int32)
        index["resources"] = pack_labels(list(resources))
        index["attributes"] = pack_labels([None if key is None else key[2] for key in keys])
        index["free"] = np.asarray(index["free"], np.int64)
    labels = state["scorer"].get("labels")
    if labels is not None and not isinstance(labels["labels"], dict):
        saved = {int(slot): as_labels(pairs) for slot, pairs in labels["labels"]}
        rows: list[Any] = [None] * (max(saved, default=-1) + 1)
        for slot, pairs in saved.items():
            rows[slot] = pairs
        labels["labels"] = pack_labels(rows)
    return state


def _compact_profiles(state: Any) -> Any:
    """Format 6 -> 7: seasonal profiles keep two-byte codes for their phases' mean and spread.

    Every saved ``SeasonalProfile`` (its float32 ``gdev``, ``mean``, ``dev`` and ``count``
    columns, under an ensemble member's prefix such as ``m1.`` or none, wherever it sits in
    the tree) gets its means and spreads encoded as ``seasonal_codes`` encodes them
    (rounded to the nearest code); the rest of the tree is left as it is.
    """
    return _each_prefix(state, "gdev", _compact_profile)


def _compact_profile(state: dict[str, Any], prefix: str) -> None:
    names = [prefix + name for name in ("mean", "dev", "count")]
    if all(name in state for name in names) and np.ndim(state[names[0]]) == 2:
        mean, dev, count = (state.pop(name) for name in names)
        count = np.ascontiguousarray(count, np.uint16)
        codes = encode_profiles(np.ascontiguousarray(mean, np.float32),
                                np.ascontiguousarray(dev, np.float32), count)
        for name, array in zip(("centre", "unit", "mean_code", "dev_code"), codes, strict=True):
            state[prefix + name] = array
        state[prefix + "count"] = count


_OLD_TAIL_BINS = 88
"""Bins of a tail histogram up to format 7 (86 from 0.5 up by 1.25, two open ends)."""


def _fewer_tail_bins(state: Any) -> Any:
    """Format 7 -> 8: tail histograms end at ~1.3e5 (58 bins) instead of ~1.1e8 (88).

    The mass of the bins past the new top is added to its open end, and cached estimates
    past its edge become the edge (what the shorter histogram answers for them). Every
    ``TailQuantile``'s columns (``hist``, ``total``, ``q``, under any prefix) wherever it
    sits in the tree; the rest is left as it is.
    """
    return _each_prefix(state, "hist", _fewer_bins)


def _fewer_bins(state: dict[str, Any], prefix: str) -> None:
    hist = state[prefix + "hist"]
    if prefix + "total" in state and np.ndim(hist) == 2 and np.shape(hist)[1] == _OLD_TAIL_BINS:
        top = TAIL_BINS + 1  # the new open end
        hist = np.asarray(hist, np.float64)
        folded = np.concatenate([hist[:, :top], hist[:, top:].sum(axis=1, keepdims=True)],
                                axis=1)
        state[prefix + "hist"] = folded.astype(np.float32)
        if prefix + "q" in state:
            state[prefix + "q"] = np.minimum(
                np.asarray(state[prefix + "q"], np.float32), np.float32(TAIL_TOP))


def _count_codes(state: Any) -> Any:
    """Format 8 -> 9: seasonal profiles keep their phases' counts in one-byte codes.

    Every saved ``SeasonalProfile``'s uint16 ``count`` (beside its ``mean_code``, under any
    prefix, wherever it sits in the tree) becomes the code of the largest count a code
    stands for that is not above it (``seasonal_counts``): counts below 240 as they are.
    """
    return _each_prefix(state, "mean_code", _count_code)


def _count_code(state: dict[str, Any], prefix: str) -> None:
    count = state.get(prefix + "count")
    if count is not None and np.asarray(count).dtype != np.uint8:
        state[prefix + "count"] = encode_counts(count)


def _integer_tail_bins(state: Any) -> Any:
    """Format 9 -> 10: tail histograms keep 24-bit integer bins instead of float32.

    Every ``TailQuantile``'s float ``hist``, ``total`` and ``inc`` (under any prefix,
    wherever it sits in the tree) become ``hist`` and ``low`` (a bin's high 16 and low 8
    bits, in units that put the largest bin at 2**23) and ``inc`` in those units;
    ``total`` (the bins' sum) goes. The rest is left as it is.
    """
    return _each_prefix(state, "hist", _integer_bins)


def _integer_bins(state: dict[str, Any], prefix: str) -> None:
    hist = state[prefix + "hist"]
    if (prefix + "total" in state and prefix + "inc" in state and np.ndim(hist) == 2
            and np.asarray(hist).dtype.kind == "f"):
        del state[prefix + "total"]
        state[prefix + "hist"], state[prefix + "low"], state[prefix + "inc"] = (
            integer_bins(hist, state[prefix + "inc"]))


def _deploy_columns(state: dict[str, Any]) -> dict[str, Any]:
    """Format 10 -> 11: the deploy tracker keeps each series' service as a number in a column.

    ``service_of`` (a ``[slot, service]`` pair per series) becomes ``services`` (each
    service once, in order of first sight) and the int32 column ``slots.service`` (-1 for
    a slot without one); ``slot_deploy``'s ``at`` column moves to ``slots.at``. A state
    already in this shape (as a test builds it from a live engine) is left as it is.
    """
    deploys = state["deploys"]
    if "slot_deploy" not in deploys:
        return state
    at = np.asarray(deploys.pop("slot_deploy")["at"], np.int64)
    services: list[Any] = []
    numbers: dict[Any, int] = {}
    column = np.full(len(at), -1, np.int32)
    for slot, service in deploys.pop("service_of"):
        labels = as_labels(service)
        number = numbers.setdefault(labels, len(services))
        if number == len(services):
            services.append(labels)
        if 0 <= int(slot) < len(column):
            column[int(slot)] = number
    deploys["services"] = services
    deploys["slots"] = {"service": column, "at": at}
    return state


def _resolution_flags(state: Any) -> Any:
    """Format 11 -> 12: a calibrator remembers, per slot, whether a value was fractional.

    Every saved ``Calibrator`` (its ``usual.points`` column, wherever it sits in the tree)
    gains ``usual.fractional``, all 0: what the series sent before is not known, so each
    counts as whole-numbered until its next fractional value (the first point after the
    restore, for a series that is not a count).
    """
    return _each_prefix(state, "usual.points", _resolution_flag)


def _resolution_flag(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "usual.points"]))
    state.setdefault(prefix + "usual.fractional", np.zeros(rows, np.uint8))


def _evidence_columns(state: Any) -> Any:
    """Format 12 -> 13: the hysteresis keeps each slot's evidence (``evidence_point_s``).

    Every saved ``Hysteresis`` (its ``since_close`` column) gains ``evidence``, all 0 (a
    restored series gathers its evidence afresh, as one that restarted a run of points),
    and the running moments of its scores at a new slot's prior (``LAG_PRIOR``).
    """
    return _each_prefix(state, "since_close", _evidence_column)


def _evidence_column(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "since_close"]))
    state.setdefault(prefix + "evidence", np.zeros(rows, np.float32))
    for name, prior in LAG_PRIOR.items():
        state.setdefault(prefix + name, np.full(rows, prior, np.float32))


def _offset_factors(state: dict[str, Any]) -> dict[str, Any]:
    """Format 13 -> 14: deploy offsets are an amount or, for log models, a factor.

    The saved ``offsets.offset`` column (amounts, for every rule) becomes ``amount``, and
    ``log_factor`` is added, all 0. A log model's slot turns its amount into the factor that
    shows the same expected value at its first point after the restore
    (``LevelOffsets.convert``): which rule a slot has is known only then. Offsets now
    average the gaps since their deploy; ``count`` (gaps so far) is added at
    ``RESTORED_COUNT``, so a grace period cut by the restart goes on as it did before.
    """
    offsets = state["scorer"]["offsets"]
    if "offset" in offsets:
        amount = np.asarray(offsets.pop("offset"), np.float64)
        offsets["amount"] = amount
        offsets["log_factor"] = np.zeros(len(amount), np.float32)
        offsets["count"] = np.full(len(amount), RESTORED_COUNT, np.float32)
    return state


def _event_resolution(state: dict[str, Any]) -> dict[str, Any]:
    """Format 14 -> 15: a rate counted over known seconds is whole when its events are.

    A counter's rate (``<name>:rate``: events over their interval) was marked fractional
    by its first value that was not a whole number per second, so it would never be judged
    as a count. Its calibrator row's ``usual.fractional`` is reset to 0: the series is
    whole-numbered again until its first increase that is not a whole number of events
    (a counter of seconds or bytes: its first point). Every other series keeps its flag.
    """
    scorer = state["scorer"]
    metrics = unpack_strings(state["index"]["metric"])
    rates = np.array([name.endswith(":rate") for name in metrics], np.bool_)
    rule_of = np.asarray(scorer["per_slot"]["rule_of"])[: len(rates)]
    local = np.asarray(scorer["per_slot"]["local"])[: len(rates)]
    for rule, calibrator in enumerate(scorer["calibrators"]):
        flags = np.array(calibrator["usual.fractional"], np.uint8)
        rows = local[rates[: len(local)] & (rule_of == rule) & (local >= 0)]
        flags[rows[rows < len(flags)]] = 0
        calibrator["usual.fractional"] = flags
    return state


def _count_dispersions(state: Any) -> Any:
    """Format 15 -> 16: a calibrator learns how bursty each count is (``dispersion``).

    Every saved ``Calibrator`` (its ``usual.points`` column) gains the three sums it is
    measured from and the two recent sums of its pooled test, all 0: a restored count
    starts again from Poisson noise, the edge it had before, and learns its bursts anew.
    """
    return _each_prefix(state, "usual.points", _count_dispersion)


def _count_dispersion(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "usual.points"]))
    for name in ("count_excess", "count_excess_sq", "count_events", "count_recent_events",
                 "count_recent_expected"):
        state.setdefault(f"{prefix}usual.{name}", np.zeros(rows, np.float32))


def _count_runs(state: Any) -> Any:
    """Format 16 -> 17: a count learns its runs of empty windows (``count_drop_score``).

    Every saved ``Calibrator`` gains the current run's expected events and the two sums of
    its ``gap_scale``, all 0: a restored count judges its next run of empty windows by its
    dispersion alone, and learns its gaps anew.
    """
    return _each_prefix(state, "usual.points", _count_run)


def _count_run(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "usual.points"]))
    for name in ("count_run_expected", "count_gap_sum", "count_gaps"):
        state.setdefault(f"{prefix}usual.{name}", np.zeros(rows, np.float32))


def _drops_and_evident_offsets(state: Any) -> Any:
    """Format 17 -> 18: a count's drop CUSUM, and the spread of a deploy offset's gaps.

    Every saved ``Calibrator`` gains ``count_drop_cusum``, 0 (no evidence of a drop yet),
    and the deploy offsets gain ``square``, 0: an offset saved before is taken whole
    (``deploys.evident_offset``) until its service's next deploy.
    """
    offsets = state["scorer"]["offsets"]
    offsets.setdefault("square", np.zeros(len(np.asarray(offsets["count"])), np.float32))
    return _each_prefix(state, "usual.points", _drop_cusum)


def _drop_cusum(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "usual.points"]))
    state.setdefault(f"{prefix}usual.count_drop_cusum", np.zeros(rows, np.float32))


def _rise_cusums(state: Any) -> Any:
    """Format 18 -> 19: a count's rise CUSUM and its seconds counted (``count_rise_score``).

    Every saved ``Calibrator`` gains ``count_rise_cusum``, 0 (no evidence of a rise yet),
    and ``count_exposure_sum``, 0. The count's mean rate (``usual_events``: its events
    over those seconds) then starts high and falls to its level as the seconds add up, so
    a restored count's rise test is slow at first, never loud.
    """
    return _each_prefix(state, "usual.points", _rise_cusum)


def _rise_cusum(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "usual.points"]))
    state.setdefault(f"{prefix}usual.count_rise_cusum", np.zeros(rows, np.float32))
    state.setdefault(f"{prefix}usual.count_exposure_sum", np.zeros(rows, np.float32))


def _back_tests(state: Any) -> Any:
    """Format 19 -> 20: held bands test whether an open anomaly is back (``close_odds``).

    Every saved ``HeldBands`` gains the test's columns: the level before each anomaly, its
    variance (NaN: unknown, so a restored open anomaly is not kept open by the test and
    closes at its first point back inside its band, as it would have before), the
    anomaly's level and its points (0), the test's log odds (0), and whether its levels
    have stood apart (no).
    """
    return _each_prefix(state, "trend_ns", _back_test)


def _back_test(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "trend_ns"]))
    for name in ("before", "level", "back"):
        state.setdefault(prefix + name, np.zeros(rows, np.float32))
    state.setdefault(prefix + "before_variance", np.full(rows, np.nan, np.float32))
    state.setdefault(prefix + "level_points", np.zeros(rows, np.int32))
    state.setdefault(prefix + "told", np.zeros(rows, np.bool_))


def _level_follows(state: Any) -> Any:
    """Format 20 -> 21: the ensemble's level follows its weekly profile (``level_follow``).

    Every saved ``Ensemble`` gains ``follow_ref``, two NaN columns (the profile's value and
    spread at the last point are not known: each slot's next point starts following) and
    ``follow_var``, 0.
    """
    return _each_prefix(state, "peak_ns", _follow_columns)


def _follow_columns(state: dict[str, Any], prefix: str) -> None:
    rows = len(np.asarray(state[prefix + "peak_ns"]))
    state.setdefault(prefix + "follow_ref", np.full((rows, 2), np.nan))
    state.setdefault(prefix + "follow_var", np.zeros(rows, np.float32))


MIGRATIONS: dict[int, Upgrade] = {4: _anomaly_stamps, 5: _text_columns, 6: _compact_profiles,
                                  7: _fewer_tail_bins, 8: _count_codes, 9: _integer_tail_bins,
                                  10: _deploy_columns, 11: _resolution_flags,
                                  12: _evidence_columns, 13: _offset_factors,
                                  14: _event_resolution, 15: _count_dispersions,
                                  16: _count_runs, 17: _drops_and_evident_offsets,
                                  18: _rise_cusums, 19: _back_tests, 20: _level_follows}
"""Format ``N`` -> the step that turns its state into format ``N + 1``'s."""


def upgrade(state: dict[str, Any], version: int, target: int) -> dict[str, Any]:
    """``state`` of format ``version`` brought to format ``target``.

    Raises
    ------
    KeyError
        If a step on the way is missing (a format that cannot be upgraded).

    Examples
    --------
    >>> upgrade({"x": 1}, 4, 4)
    {'x': 1}
    """
    for step in range(version, target):
        state = MIGRATIONS[step](state)
    return state
