"""Compiled kernels copied from a seed folder into numba's cache (``kernel_seed``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from otel_anomaly.exporter.cli import main
from otel_anomaly.exporter.kernel_seed import seed_from_environment, seed_kernel_cache
from otel_anomaly.processors.compiled import cache_dir, cache_folder_name


def _seed(base: Path, files: dict[str, bytes]) -> Path:
    folder = base / cache_folder_name()
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_files_the_cache_lacks_are_copied_and_its_own_are_kept(tmp_path: Path) -> None:
    _seed(tmp_path / "seed", {"a_1/f-1.py311.nbi": b"index", "a_1/f-1.py311.1.nbc": b"code",
                              "b_2/g-9.py311.nbi": b"seed's index"})
    cache = tmp_path / "volume" / cache_folder_name()
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
    cache = tmp_path / "volume" / cache_folder_name()
    assert seed_kernel_cache(str(tmp_path / "seed"), str(cache)) == 0
    assert seed_kernel_cache(str(tmp_path / "missing"), str(cache)) == 0
    assert not cache.exists()


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
        seed_from_environment(str(blocked / "kernels"))
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
