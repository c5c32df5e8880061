"""Engine state in a file, so a restarted sidecar resumes instead of warming up again.

A weekly profile needs two weeks of data; losing it at every restart or rollout would make
the detector useless where it matters most. The whole learned state (series index, detector
and calibration arrays, alert state, counter baselines, open windows, deploys, silences,
multivariate models) is saved from each component's ``state_dict()``.

The file is an ``.npz`` archive (a zip of ``.npy`` arrays, CRC-checked member by member)
and nothing else, read with ``allow_pickle=False``: a checkpoint is data and cannot run
code, whoever wrote it. Its members, in order:

- ``header``: JSON (UTF-8 bytes): ``magic``, the format ``version``, a ``settings``
  fingerprint and the ingest ``clock`` at the save;
- ``state``: JSON, the state tree as ``processors.state.codec`` encodes it;
- ``a0``, ``a1``...: the arrays the state refers to.

A checkpoint written under other settings (other detector rules, windows...) is refused
rather than misread; so is one of a future format. Older formats are upgraded by
``processors.state.migrations``. River-based multivariate models (``dbstream``,
``one_class_svm``) cannot be saved without pickle: they are left out and restart cold.

The ingest clock (series TTL) is not event time and restarts with the process: restored
"last seen" times are shifted so each series keeps the idle time it had at the checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from typing import IO, Any

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state.codec import StateFormatError, decode, encode
from otel_anomaly.processors.state.migrations import FIRST_FORMAT, upgrade

MAGIC = "otel-anomaly-checkpoint"
FORMAT = 5  # bump (and add a migration) whenever a component's saved state changes shape
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"otel-anomaly-checkpoint\n"  # formats 1 to 3: a pickle behind this line


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: corrupt, foreign, future, or of other settings."""


# Settings read afresh after a restore, so changing them keeps the learned state.
_RETUNABLE = ("clock", "series_ttl_s", "deploy_grace_s", "latest_event_time", "silence_after_s")


def fingerprint(settings: EngineSettings) -> str:
    """What the learned state depends on: detectors and routing, windows, limits.

    Alert thresholds are left out (they can be retuned without losing what was learned);
    so are the TTL and the deploy grace period.
    """
    fields: dict[str, Any] = {
        name: getattr(settings, name)
        for name in settings.__dataclass_fields__
        if name not in _RETUNABLE
    }
    # The tail keys size the calibration state; the other alert keys can change freely.
    fields["rules"] = [(r.name, r.match, r.detector, sorted(dict(r.params).items()),
                        r.alert.tail_calibration, r.alert.tail_quantile, r.alert.tail_window)
                       for r in settings.rules]
    return repr(sorted(fields.items()))


def _json_member(value: Any) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.frombuffer(json.dumps(value).encode(), np.uint8)


def dump(engine: Engine, out: IO[bytes]) -> None:
    """Write the engine's learned state to ``out`` (a binary file, written front to back)."""
    doc, arrays = encode(engine.state_dict())
    header = {"magic": MAGIC, "version": FORMAT, "settings": fingerprint(engine.settings),
              "clock": engine.settings.clock()}
    # ``header`` and ``state`` go first: a reader checks them before touching any array.
    np.savez(out, allow_pickle=False, header=_json_member(header), state=_json_member(doc),
             **arrays)


def load(source: IO[bytes], settings: EngineSettings) -> Engine:
    """An engine with the state saved in ``source`` (a seekable binary file), under ``settings``.

    Raises
    ------
    CheckpointError
        If ``source`` is not a whole checkpoint of a known format written under equal
        settings.
    """
    start = source.read(len(_PICKLE_MAGIC))
    source.seek(0)
    if start.startswith(_PICKLE_MAGIC):
        msg = "a checkpoint of an older, pickle-based format (3 or earlier): not loaded"
        raise CheckpointError(msg)
    if not start.startswith(_ZIP_MAGIC):
        msg = "not an otel-anomaly checkpoint (not an npz archive)"
        raise CheckpointError(msg)
    try:
        with np.load(source, allow_pickle=False) as archive:
            header, doc = _read_head(archive)
            _check_header(header, settings)
            state = decode(doc, archive)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError,
            RecursionError) as exc:
        msg = f"checkpoint is truncated or corrupt ({type(exc).__name__}: {exc})"
        raise CheckpointError(msg) from None
    return _restore(state, int(header["version"]), float(header["clock"]), settings)


def _read_head(archive: Any) -> tuple[dict[str, Any], Any]:
    if archive.files[:2] != ["header", "state"]:
        msg = f"not an otel-anomaly checkpoint (members {archive.files[:3]})"
        raise CheckpointError(msg)
    try:
        header = json.loads(archive["header"].tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"checkpoint header is unreadable ({exc})"
        raise CheckpointError(msg) from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        msg = "not an otel-anomaly checkpoint (bad header)"
        raise CheckpointError(msg)
    return header, json.loads(archive["state"].tobytes())


def _check_header(header: dict[str, Any], settings: EngineSettings) -> None:
    version = header.get("version")
    if not isinstance(version, int) or version < FIRST_FORMAT:
        msg = f"checkpoint format {version!r} is foreign (this version reads {FIRST_FORMAT}+)"
        raise CheckpointError(msg)
    if version > FORMAT:
        msg = (f"checkpoint format {version} is newer than this version reads ({FORMAT}); "
               "written by a later release")
        raise CheckpointError(msg)
    if header.get("settings") != fingerprint(settings):
        msg = ("checkpoint was written under other settings (detector rules, windows, limits "
               "or multivariate model differ)")
        raise CheckpointError(msg)
    if not isinstance(header.get("clock"), (int, float)):
        msg = "checkpoint header has no ingest clock"
        raise CheckpointError(msg)


def _restore(state: Any, version: int, clock: float, settings: EngineSettings) -> Engine:
    engine = Engine(settings)
    try:
        engine.load_state_dict(upgrade(state, version, FORMAT))
    except (StateFormatError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            RecursionError) as exc:
        msg = (f"checkpoint state does not fit this version's engine "
               f"({type(exc).__name__}: {exc})")
        raise CheckpointError(msg) from None
    # Retunable settings (_RETUNABLE, alert policies) are the new engine's own: components
    # keep them out of their saved state.
    engine.shift_ingest_clock(settings.clock() - clock)
    return engine
