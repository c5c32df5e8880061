"""The compiled-kernel cache at start: seeded from a folder of compiled kernels, old versions pruned."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from otel_anomaly.exporter.cli import main
from otel_anomaly.exporter.kernel_cache import (
    STALE_AFTER_S,
    prune_other_versions,
    seed_from_environment,
    seed_kernel_cache,
)
from otel_anomaly.processors.compiled import cache_dir

FOLDER = "otel-anomaly-0123456789abcdef"  # a version's kernel folder (compiled.kernel_cache_dir)


def _seed(base: Path, files: dict[str, bytes]) -> Path:
    folder = base / FOLDER
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_files_the_cache_lacks_are_copied_and_its_own_are_kept(tmp_path: Path) -> None:
    _seed(tmp_path / "seed", {"a_1/f-1.py311.nbi": b"index", "a_1/f-1.py311.1.nbc": b"code",
                              "b_2/g-9.py311.nbi": b"seed's index"})
    cache = tmp_path / "volume" / FOLDER
    (cache / "b_2").mkdir(parents=True)
    (cache / "b_2" / "g-9.py311.nbi").write_bytes(b"compiled here")  # e.g. another CPU's
    assert seed_kernel_cache(str(tmp_path / "seed"), str(cache)) == 2
    assert _files(cache) == {"a_1/f-1.py311.nbi": b"index", "a_1/f-1.py311.1.nbc": b"code",
                             "b_2/g-9.py311.nbi": b"compiled here"}
    assert seed_kernel_cache(str(tmp_path / "seed"), str(cache)) == 0  # nothing left to copy


def test_a_seed_of_other_sources_or_none_copies_nothing(tmp_path: Path) -> None:
    other = tmp_path / "seed" / "otel-anomaly-0000000000000000"
    other.mkdir(parents=True)
    (other / "f.nbi").write_bytes(b"old release")
    cache = tmp_path / "volume" / FOLDER
    assert seed_kernel_cache(str(tmp_path / "seed"), str(cache)) is None
    assert seed_kernel_cache(str(tmp_path / "missing"), str(cache)) is None
    assert not cache.exists()


def test_a_seed_without_these_kernels_is_named_in_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_ANOMALY_KERNEL_SEED", str(tmp_path / "typo"))
    with caplog.at_level(logging.WARNING):
        seed_from_environment(str(tmp_path / "volume" / FOLDER))
    assert f"OTEL_ANOMALY_KERNEL_SEED={tmp_path / 'typo'} holds no compiled kernels" in caplog.text
    assert FOLDER in caplog.text


def test_the_seed_is_not_copied_onto_itself(tmp_path: Path) -> None:
    folder = _seed(tmp_path, {"a_1/f-1.py311.nbi": b"index"})
    assert seed_kernel_cache(str(tmp_path), str(folder)) == 0


def test_a_cache_that_cannot_be_written_is_a_warning_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    _seed(tmp_path / "seed", {"a_1/f-1.py311.nbi": b"index"})
    blocked = tmp_path / "file"
    blocked.write_bytes(b"")  # a file where the cache folder should be
    monkeypatch.setenv("OTEL_ANOMALY_KERNEL_SEED", str(tmp_path / "seed"))
    with caplog.at_level(logging.WARNING):
        seed_from_environment(str(blocked / FOLDER))
    assert "cannot copy the compiled kernels" in caplog.text
    assert str(tmp_path / "seed") in caplog.text


def test_compile_kernels_loads_every_kernel_and_says_where(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_ANOMALY_CONFIG", raising=False)
    assert main(["compile-kernels"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scoring kernels ready in ")
    assert out.rstrip().endswith(f"cached in {cache_dir()}")


def _aged(folder: Path, days: float, now: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "f.nbi").write_bytes(b"index")
    os.utime(folder, (now - days * 86_400, now - days * 86_400))
    return folder


def test_other_versions_unused_for_a_week_are_removed_and_this_one_marked_used(
    tmp_path: Path,
) -> None:
    now = time.time()
    current = _aged(tmp_path / FOLDER, 30, now)  # compiled long ago, in use now
    old = _aged(tmp_path / "otel-anomaly-00000000000000aa", 8, now)
    recent = _aged(tmp_path / "otel-anomaly-00000000000000bb", 6, now)  # a branch visited
    foreign = _aged(tmp_path / "otel-anomaly-notadigest", 90, now)  # not ours to remove
    other = _aged(tmp_path / "somebody-else", 90, now)
    assert prune_other_versions(str(current), now) == [old.name]
    assert not old.exists()
    assert recent.is_dir() and foreign.is_dir() and other.is_dir()
    assert now - current.stat().st_mtime < STALE_AFTER_S / 2
    # A week later, without a start of that branch, its folder goes too.
    assert prune_other_versions(str(current), now + 2 * 86_400) == [recent.name]


def test_a_cache_folder_not_named_by_a_digest_prunes_nothing(tmp_path: Path) -> None:
    now = time.time()
    old = _aged(tmp_path / "otel-anomaly-00000000000000aa", 30, now)
    assert prune_other_versions(str(tmp_path / "kernels"), now) == []
    assert prune_other_versions(str(tmp_path / FOLDER), now) == []  # missing
    assert old.is_dir()
