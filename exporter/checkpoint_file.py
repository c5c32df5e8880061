"""The checkpoint file: restore the engine at start, save it periodically and at shutdown.

Writes are atomic (a temporary file in the same folder, written, flushed and fsynced, then
renamed over the old checkpoint), so a crash mid-write leaves the previous checkpoint
intact. Scoring pauses only while the state is written into the file (the engine must not
change meanwhile); the fsync, which waits for the disk, and the rename follow on a thread
of their own, one checkpoint at a time. A missing or unreadable checkpoint never stops the
sidecar: it starts fresh and says why. One that cannot be used (corrupt, truncated,
foreign, of a future format or of other settings) is also moved aside to
``<path>.rejected-<unix time>``, so the next save does not destroy what an operator may
want to look at or roll back to.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from typing import IO

from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint

logger = logging.getLogger(__name__)


def _check_writable(path: str) -> None:
    """Refuse, at start-up, a checkpoint path that could never be written (``StartupError``).

    It only warned at every save, and a restart found nothing to resume from. Checked when
    the sidecar starts, not by ``check-config``: a config is checked where the volume is
    not mounted (CI, an image build).
    """
    if os.path.isdir(path):
        msg = f"state.path: {path!r} is a folder; give the checkpoint file's path in it"
        raise StartupError(msg)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        msg = f"state.path: the folder {folder!r} does not exist"
        raise StartupError(msg)
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"state.path: cannot write to the folder {folder!r}"
        raise StartupError(msg)


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
        _check_writable(path)
        self.path = Path(path)
        self._telemetry = telemetry
        # Makes written checkpoints durable (fsync, rename); its thread starts at the first.
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="otel-anomaly-checkpoint")
        self._pending: Future[None] | None = None

    def start(self) -> None:
        """Nothing to start: the commit thread starts with the first checkpoint."""

    def shutdown(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the last checkpoint to be committed; idempotent.

        Call it after the pipeline's final checkpoint. A commit still running when the
        timeout ends finishes on its own thread (the interpreter waits for it at exit).
        """
        self.flush(timeout)
        self._committer.shutdown(wait=False)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the checkpoint being committed, if any; False if ``timeout`` ran out."""
        pending = self._pending
        if pending is None:
            return True
        try:
            pending.result(timeout)
        except FutureTimeoutError:
            return False
        return True

    def restore(self, settings: EngineSettings) -> Engine | None:
        """The checkpointed engine, or ``None`` (no checkpoint, or one that cannot be used)."""
        self.flush()  # the file a save of this store is still committing
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
        """Write a checkpoint of ``engine`` (call it on the thread that owns the engine).

        Returns once the state is in a temporary file; the file becomes the checkpoint on
        the commit thread. A save first waits for the previous one's commit, so at most one
        temporary file exists and checkpoints replace one another in order.
        """
        self.flush()
        started = time.perf_counter()
        try:
            out, tmp = self._write(engine)
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop scoring
            self._failed(started, exc)
            return
        self._telemetry.checkpoint_pause(time.perf_counter() - started)
        try:
            self._pending = self._committer.submit(self._commit, out, tmp, started)
        except RuntimeError:  # shut down already (a pipeline that outlived its timeout)
            self._commit(out, tmp, started)

    def _write(self, engine: Engine) -> tuple[IO[bytes], str]:
        """Stream the checkpoint into a temporary file, flushed to the OS, still open."""
        handle, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=self.path.parent)
        out = os.fdopen(handle, "wb")
        try:
            checkpoint.dump(engine, out)
            out.flush()
        except BaseException:
            out.close()
            Path(tmp).unlink(missing_ok=True)
            raise
        return out, tmp

    def _commit(self, out: IO[bytes], tmp: str, started: float) -> None:
        """Make the written file durable, then rename it over the old checkpoint."""
        try:
            with out:
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(tmp, self.path)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the old one stays
            Path(tmp).unlink(missing_ok=True)
            self._failed(started, exc)
            return
        self._telemetry.checkpoint("ok", time.perf_counter() - started, size)

    def _failed(self, started: float, exc: Exception) -> None:
        self._telemetry.checkpoint("failed", time.perf_counter() - started, 0)
        logger.warning("state: checkpoint to %s failed: %s", self.path, exc)
