"""The compiled kernels score exactly as the same code run as plain Python (the reference)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers.compiled_reference import FIELDS, kernels_compiled, plain_reference, replay

from otel_anomaly.processors import compiled
from otel_anomaly.processors.compiled import kernel_cache_dir, source_digest


def test_compiled_kernels_score_the_incidents_as_their_plain_python_reference(
    tmp_path: Path,
) -> None:
    compiled = replay()
    assert kernels_compiled(), "the suite must run the compiled kernels"
    reference = plain_reference("helpers.compiled_reference", tmp_path / "reference.npz")
    assert compiled["flag"].any(), "the incidents must raise flags for the comparison to mean much"
    for field in FIELDS:
        # Bitwise equality is not promised: compiled pow, exp and log may differ from the C
        # library's in the last bit.
        np.testing.assert_allclose(compiled[field], reference[field], rtol=1e-9, atol=0,
                                   equal_nan=True, err_msg=field)
    np.testing.assert_array_equal(compiled["flag"], reference["flag"])


def test_the_kernel_cache_folder_changes_with_any_source_file(tmp_path: Path) -> None:
    # numba keys a cache entry on its own file's stamp only: a kernel calling a kernel of
    # another file must not keep that file's old code, so the folder follows every file.
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = source_digest(tmp_path)
    assert source_digest(tmp_path) == before
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert source_digest(tmp_path) != before
    assert kernel_cache_dir("/cache").startswith("/cache/otel-anomaly-")


def test_without_numba_cache_dir_kernels_still_cache_under_a_digest_of_the_sources(
    tmp_path: Path,
) -> None:
    # Beside its module, numba would key a kernel on its own file only, and keep a changed
    # kernel of another file it calls (an upgrade, a git pull): the default folder is
    # digest-named too.
    probe = "import numba, otel_anomaly.processors.compiled; print(numba.config.CACHE_DIR)"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["HOME"] = str(tmp_path)
    folder = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, check=True, timeout=120).stdout.strip()
    assert folder, "without NUMBA_CACHE_DIR the kernels must still get a cache folder"
    base = os.path.dirname(folder)
    assert folder == kernel_cache_dir(base), f"{folder} is not named after the sources"
    package = Path(compiled.__file__).parent
    assert base in (str(package / "__pycache__" / "kernels"),
                    str(tmp_path / ".cache" / "otel-anomaly"))
