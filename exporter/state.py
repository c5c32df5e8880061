"""The checkpoint file: restore the engine at start, save it periodically and at shutdown.

Writes are atomic (a temporary file in the same folder, flushed, then renamed over the
old checkpoint), so a crash mid-write leaves the previous checkpoint intact. A missing,
unreadable or incompatible checkpoint never stops the sidecar: it starts fresh and says why.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors import checkpoint
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings

logger = logging.getLogger(__name__)


class StateStore:
    """One checkpoint file.

    Parameters
    ----------
    path
        The checkpoint file (``state.path``); its folder must exist and be writable.
    telemetry
        Self-metrics: checkpoints written or failed, and how long the last one took.
    """

    def __init__(self, path: str, telemetry: Telemetry) -> None:
        self.path = Path(path)
        self._telemetry = telemetry

    def restore(self, settings: EngineSettings) -> Engine | None:
        """The checkpointed engine, or ``None`` (no checkpoint, or one that cannot be used)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            logger.info("state: no checkpoint at %s yet; starting fresh", self.path)
            return None
        except OSError as exc:
            logger.warning("state: cannot read %s (%s); starting fresh", self.path, exc)
            return None
        try:
            engine = checkpoint.load(data, settings)
        except checkpoint.CheckpointError as exc:
            logger.warning("state: ignoring %s: %s; starting fresh", self.path, exc)
            return None
        series = engine.stats().series_active
        logger.info("state: restored %d series from %s", series, self.path)
        self._telemetry.restored(series)
        return engine

    def save(self, engine: Engine) -> None:
        """Write a checkpoint of ``engine`` (call it on the thread that owns the engine)."""
        started = time.perf_counter()
        try:
            data = checkpoint.dump(engine)
            handle, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                           dir=self.path.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop scoring
            self._telemetry.checkpoint("failed", time.perf_counter() - started, 0)
            logger.warning("state: checkpoint to %s failed: %s", self.path, exc)
            return
        self._telemetry.checkpoint("ok", time.perf_counter() - started, len(data))
