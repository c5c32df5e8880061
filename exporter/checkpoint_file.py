"""The checkpoint file: restore the engine at start, save it periodically and at shutdown.

Writes are atomic (a temporary file in the same folder, written, flushed and fsynced, then
renamed over the old checkpoint), so a crash mid-write leaves the previous checkpoint
intact. A missing or unreadable checkpoint never stops the sidecar: it starts fresh and
says why. One that cannot be used (corrupt, truncated, foreign, of a future format or of
other settings) is also moved aside to ``<path>.rejected-<unix time>``, so the next save
does not destroy what an operator may want to look at or roll back to.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint

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
            with self.path.open("rb") as source:
                engine = checkpoint.load(source, settings)
        except FileNotFoundError:
            logger.info("state: no checkpoint at %s yet; starting fresh", self.path)
            return None
        except checkpoint.CheckpointError as exc:
            self._set_aside(exc)
            return None
        except OSError as exc:
            logger.warning("state: cannot read %s (%s); starting fresh", self.path, exc)
            return None
        series = engine.stats().series_active
        logger.info("state: restored %d series from %s", series, self.path)
        if engine.multivariate is not None and not engine.multivariate.models_savable:
            logger.info("state: multivariate %r models are not checkpointed (river models "
                        "cannot be saved without pickle); they restart cold",
                        engine.multivariate.settings.model)
        self._telemetry.restored(series)
        return engine

    def _set_aside(self, reason: checkpoint.CheckpointError) -> None:
        """Move a checkpoint that cannot be used out of the way, and say why."""
        aside = self.path.with_name(f"{self.path.name}.rejected-{int(time.time())}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            logger.warning("state: rejected checkpoint %s: %s; could not move it aside (%s); "
                           "starting fresh", self.path, reason, exc)
            return
        logger.warning("state: rejected checkpoint %s: %s; moved it to %s; starting fresh",
                       self.path, reason, aside)

    def save(self, engine: Engine) -> None:
        """Write a checkpoint of ``engine`` (call it on the thread that owns the engine)."""
        started = time.perf_counter()
        try:
            size = self._write(engine)
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop scoring
            self._telemetry.checkpoint("failed", time.perf_counter() - started, 0)
            logger.warning("state: checkpoint to %s failed: %s", self.path, exc)
            return
        self._telemetry.checkpoint("ok", time.perf_counter() - started, size)

    def _write(self, engine: Engine) -> int:
        """Stream the checkpoint into a temporary file, then rename it over the old one."""
        handle, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                checkpoint.dump(engine, out)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size
