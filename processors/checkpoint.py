"""Engine state as bytes, so a restarted sidecar resumes instead of warming up again.

A weekly profile needs two weeks of data; losing it at every restart or rollout would make
the detector useless where it matters most. The whole learned state (series index, detector
and calibration arrays, alert state, counter baselines, open windows, multivariate models)
is pickled with a header: a format version and a fingerprint of every setting that shapes
the state. A checkpoint written under other settings (other detector rules, windows...) is
refused rather than misread, and the caller starts fresh.

The ingest clock (series TTL) is not event time and restarts with the process: restored
"last seen" times are shifted so each series keeps the idle time it had at the checkpoint.

Pickle runs code from the file it loads: checkpoints are trusted input, written only by
the sidecar itself to a path its operator controls.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings

MAGIC = b"otel-anomaly-checkpoint\n"
FORMAT = 3  # bump whenever a detector's state layout or defaults change (3: per-source windows)
_DIGEST = hashlib.sha256().digest_size


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: corrupt, of another format, or other settings."""


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


def dump(engine: Engine) -> bytes:
    """The engine's learned state, with a header and a checksum."""
    state = {name: value for name, value in vars(engine).items() if name != "settings"}
    payload = pickle.dumps(
        {"format": FORMAT, "settings": fingerprint(engine.settings),
         "clock": engine.settings.clock(), "state": state},
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    return MAGIC + hashlib.sha256(payload).digest() + payload


def load(data: bytes, settings: EngineSettings) -> Engine:
    """An engine with the state of ``data``, running under ``settings``.

    Raises
    ------
    CheckpointError
        If ``data`` is not a whole checkpoint of this format written under equal settings.
    """
    if not data.startswith(MAGIC):
        msg = "not an otel-anomaly checkpoint (bad header)"
        raise CheckpointError(msg)
    digest, payload = data[len(MAGIC) : len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        msg = "checkpoint is truncated or corrupt (checksum mismatch)"
        raise CheckpointError(msg)
    try:
        saved: dict[str, Any] = pickle.loads(payload)  # noqa: S301 - trusted, see module doc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        msg = f"checkpoint cannot be read: {type(exc).__name__}: {exc}"
        raise CheckpointError(msg) from None
    if saved.get("format") != FORMAT:
        msg = f"checkpoint format {saved.get('format')!r} is not {FORMAT}"
        raise CheckpointError(msg)
    if saved["settings"] != fingerprint(settings):
        msg = ("checkpoint was written under other settings (detector rules, windows, limits "
               "or multivariate model differ)")
        raise CheckpointError(msg)
    engine = Engine(settings)
    rules, grace_ns = engine.scorer.rules, engine.deploys.grace_ns
    multivariate = engine.multivariate
    vars(engine).update(saved["state"])
    engine.scorer.retune(rules)
    engine.deploys.grace_ns = grace_ns
    engine.silence.silence_after_s = settings.silence_after_s
    if engine.multivariate is not None and multivariate is not None:
        engine.multivariate.settings = multivariate.settings
    engine.shift_ingest_clock(settings.clock() - float(saved["clock"]))
    return engine
