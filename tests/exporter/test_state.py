"""Restarts: the learned state is checkpointed and restored, and a bad checkpoint is survivable."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import wait_for
from helpers.sidecars import grpc_clients, loopback_config, running, sample_value, scrape
from prometheus_client import CollectorRegistry

from otel_anomaly.exporter.app import Sidecar
from otel_anomaly.exporter.checkpoint_file import StateStore
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import SECOND, FakeClock, gauge, metrics_request

RESOURCE = {"service.name": "shop"}


def points(start: int, values: list[float]):  # noqa: ANN201 - a metrics request
    return metrics_request(
        [gauge("queue.depth", [((1_000 + 10 * (start + i)) * SECOND, v)
                               for i, v in enumerate(values)])], RESOURCE)


STEADY = [50.0 + (i % 5) * 0.5 for i in range(80)]


def spike_score(port: int | None) -> float:
    return sample_value(scrape(port), "otel_anomaly_score", metric="queue_depth")


def test_a_restarted_sidecar_resumes_without_a_second_warm_up(tmp_path: Path) -> None:
    state = tmp_path / "state.ckpt"
    config = loopback_config({"state.path": str(state)})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(points(0, STEADY), timeout=5)
    assert state.stat().st_size > 0
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        assert sample_value(scrape(sidecar.metrics_port), "otel_anomaly_series_restored") == 1
        clients.metrics.Export(points(len(STEADY), [90.0]), timeout=5)
        assert spike_score(sidecar.metrics_port) > 1.0
        assert sample_value(scrape(sidecar.metrics_port), "otel_anomaly_flag",
                            metric="queue_depth") == 1.0
    # Without the checkpoint the same point meets a detector that knows nothing yet.
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(points(len(STEADY), [90.0]), timeout=5)
        assert spike_score(sidecar.metrics_port) == 0.0


def test_checkpoints_are_written_periodically_while_running(tmp_path: Path) -> None:
    state = tmp_path / "state.ckpt"
    config = loopback_config({"state.path": str(state), "state.interval": "100ms"})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(points(0, STEADY[:5]), timeout=5)
        wait_for(lambda: sample_value(scrape(sidecar.metrics_port),
                                      "otel_anomaly_checkpoints_total", outcome="ok") >= 1,
                 10, "no periodic checkpoint was written")
        assert state.exists()
        assert sample_value(scrape(sidecar.metrics_port),
                            "otel_anomaly_checkpoint_size_bytes") == state.stat().st_size


@pytest.mark.parametrize("content", [b"", b"garbage", b"otel-anomaly-checkpoint\n" + b"x" * 64])
def test_a_bad_checkpoint_is_logged_and_the_sidecar_starts_fresh(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    state = tmp_path / "state.ckpt"
    state.write_bytes(content)
    config = loopback_config({"state.path": str(state)})
    with caplog.at_level(logging.WARNING), running(config) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(points(0, STEADY[:3]), timeout=5)
        assert sample_value(scrape(sidecar.metrics_port), "otel_anomaly_series_restored") == 0
    assert any("starting fresh" in r.getMessage() for r in caplog.records), caplog.text
    assert state.read_bytes().startswith(b"PK\x03\x04")  # replaced at shutdown
    [aside] = tmp_path.glob("state.ckpt.rejected-*")
    assert aside.read_bytes() == content  # kept for the operator, out of the way


@pytest.mark.parametrize(("where", "problem"), [
    ("missing/state.ckpt", "state.path: the folder '{tmp}/missing' does not exist"),
    ("", "state.path: '{tmp}' is a folder; give the checkpoint file's path in it"),
])
def test_a_state_path_that_could_never_be_written_fails_the_start(
    tmp_path: Path, where: str, problem: str,
) -> None:
    # It used to start, warn at every save and keep nothing; `check-config` still accepts
    # it (configs are checked where the volume is not mounted: CI, an image build).
    path = str(tmp_path / where) if where else str(tmp_path)
    with pytest.raises(StartupError) as caught:
        Sidecar(loopback_config({"state.path": path}))
    assert str(caught.value) == problem.format(tmp=tmp_path)


def test_a_state_folder_lost_while_running_is_counted_not_fatal(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    config = loopback_config({"state.path": str(volume / "state.ckpt"),
                              "state.interval": "100ms"})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        shutil.rmtree(volume)  # the volume goes away under a running sidecar
        wait_for(lambda: sample_value(scrape(sidecar.metrics_port),
                                      "otel_anomaly_checkpoints_total", outcome="failed") >= 1,
                 10, "the failed checkpoint was not counted")
        clients.metrics.Export(points(0, STEADY[:3]), timeout=5)
        assert sidecar.ready


class _Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _future(data: bytes) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    header = json.loads(members["header"].tobytes()) | {"version": checkpoint.FORMAT + 1}
    members["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **members)
    return out.getvalue()


def _flipped(data: bytes) -> bytes:
    at = len(data) // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda data, marker: data[: len(data) // 3], "truncated or corrupt"),
    (lambda data, marker: _flipped(data), "truncated or corrupt"),
    (lambda data, marker: _future(data), "newer"),
    (lambda data, marker: pickle.dumps(_Payload(marker)), "not an otel-anomaly checkpoint"),
    (lambda data, marker: b"otel-anomaly-checkpoint\n" + pickle.dumps(_Payload(marker)),
     "pickle-based"),
], ids=["truncated", "flipped", "future", "pickle", "old-pickle-format"])
def test_an_unusable_checkpoint_is_set_aside_and_the_engine_starts_cold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes, Path], bytes], reason: str,
) -> None:
    path, marker = tmp_path / "state.ckpt", tmp_path / "pwned"
    store = StateStore(str(path), Telemetry(CollectorRegistry()))
    settings = EngineSettings(clock=FakeClock())
    engine = Engine(settings)
    for i, value in enumerate(STEADY):
        engine.ingest("metrics", points(i, [value]))
    store.save(engine)
    assert store.flush(timeout=60), "the checkpoint was not committed"
    damaged = damage(path.read_bytes(), marker)
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        assert store.restore(settings) is None
    assert not marker.exists()  # nothing in the file ran
    assert not path.exists()
    [aside] = tmp_path.glob("state.ckpt.rejected-*")
    assert aside.read_bytes() == damaged
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning and reason in warning and str(aside) in warning, warning
    # The sidecar carries on cold, and its next checkpoint is a good one.
    store.save(Engine(settings))
    restored = store.restore(settings)
    assert restored is not None and restored.stats().series_active == 0


def _steady_engine(settings: EngineSettings) -> Engine:
    engine = Engine(settings)
    for i, value in enumerate(STEADY):
        engine.ingest("metrics", points(i, [value]))
    return engine


def _committed(path: Path, engine: Engine) -> tuple[StateStore, CollectorRegistry, bytes]:
    """A store at ``path`` that has committed a checkpoint of ``engine``, and its bytes."""
    registry = CollectorRegistry()
    store = StateStore(str(path), Telemetry(registry))
    store.save(engine)
    assert store.flush(timeout=60), "the first checkpoint was not committed"
    return store, registry, path.read_bytes()


def test_a_save_waits_for_the_write_not_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Scoring pauses while the state goes into the file; the fsync (a slow disk here) and
    # the rename happen on the store's thread, and the old checkpoint stays until then.
    path, settings = tmp_path / "state.ckpt", EngineSettings(clock=FakeClock())
    store, registry, empty = _committed(path, Engine(settings))
    saver, disk, syncing = threading.current_thread(), threading.Event(), threading.Event()
    syncers: list[threading.Thread] = []
    real_fsync = os.fsync

    def slow_disk(fd: int) -> None:
        syncers.append(threading.current_thread())
        syncing.set()
        if syncers[-1] is not saver:  # never block the test's own thread
            assert disk.wait(60), "test: the disk was never released"
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_disk)
    store.save(_steady_engine(settings))
    assert syncing.wait(60), "the commit never reached the fsync"
    assert saver not in syncers, "the fsync ran on the saving thread"
    assert registry.get_sample_value("otel_anomaly_checkpoint_pause_seconds") is not None
    assert path.read_bytes() == empty, "renamed before it was on disk"
    assert not store.flush(timeout=0.05), "the commit did not wait for the disk"
    disk.set()
    assert store.flush(timeout=60), "the commit did not finish"
    restored = store.restore(settings)
    assert restored is not None and restored.stats().series_active == 1
    assert registry.get_sample_value("otel_anomaly_checkpoints_total", {"outcome": "ok"}) == 2
    store.shutdown(timeout=5)


def test_a_failed_fsync_is_counted_and_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, settings = tmp_path / "state.ckpt", EngineSettings(clock=FakeClock())
    store, registry, good = _committed(path, _steady_engine(settings))

    def broken_disk(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_disk)
    store.save(Engine(settings))
    assert store.flush(timeout=60), "the failing commit did not finish"
    assert path.read_bytes() == good
    assert list(tmp_path.iterdir()) == [path], "the temporary file was left behind"
    assert registry.get_sample_value("otel_anomaly_checkpoints_total", {"outcome": "failed"}) == 1
    store.shutdown(timeout=5)
