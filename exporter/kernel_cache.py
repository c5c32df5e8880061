"""The compiled-kernel cache at start: seeded from an image's kernels, old versions pruned.

A first start compiles the scoring kernels (about 50 s on 2 cores), and so does every start
on an empty volume (a new pod, an ``emptyDir``). The container image compiles them once at
build time (``otel-anomaly compile-kernels``) into a folder of its own, for a generic CPU of
its architecture (``NUMBA_CPU_NAME=generic``, so they load on any x86-64 or arm64 host), and
names that folder in ``OTEL_ANOMALY_KERNEL_SEED``. At start, the files of the seed that
numba's cache (``NUMBA_CACHE_DIR``, on the state volume) lacks are copied into it; numba then
loads them instead of compiling. Files already in the cache are kept: numba checks every
entry against the sources' stamps and the CPU, and recompiles what does not match.

Each version of the sources caches its kernels in a folder of its own (about 8 MiB), so
every upgrade would leave one more on the state volume. At start the folder in use is
marked used (its modification time) and the folders of other versions unused for
``STALE_AFTER_S`` are removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

from otel_anomaly.exporter.config import ENV_KERNEL_SEED

logger = logging.getLogger(__name__)
STALE_AFTER_S = 7 * 86_400.0
"""A cache folder of other sources unused this long is removed (a week: a checkout moving
between branches keeps the kernels of the ones it visits)."""
_VERSION_FOLDER = re.compile(r"otel-anomaly-[0-9a-f]{16}")


def seed_kernel_cache(seed_base: str, cache_dir: str) -> int | None:
    """Copy what ``cache_dir`` lacks of the seed under ``seed_base``; the number of files.

    ``seed_base`` is the ``NUMBA_CACHE_DIR`` the seed was compiled with: its kernels for
    these sources are in the folder named as ``cache_dir`` is (``otel-anomaly-<digest>``,
    ``compiled.kernel_cache_dir``). None when the seed has no such folder (other sources,
    or no seed at all).
    """
    seed = Path(seed_base) / Path(cache_dir).name
    if not seed.is_dir():
        return None
    if Path(cache_dir).resolve() == seed.resolve():  # compiling the seed itself
        return 0
    copied = 0
    for source in sorted(seed.rglob("*")):
        if not source.is_file():
            continue
        target = Path(cache_dir) / source.relative_to(seed)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.copyfile(source, partial)
        partial.replace(target)  # numba never reads a file half copied
        copied += 1
    return copied


def seed_from_environment(cache_dir: str | None) -> None:
    """``seed_kernel_cache`` from ``OTEL_ANOMALY_KERNEL_SEED`` into ``cache_dir``; logs it.

    Best effort: without a seed or a cache folder nothing happens, and a seed that cannot
    be read or copied only means the kernels compile, as without one.
    """
    seed_base = os.environ.get(ENV_KERNEL_SEED, "")
    if not seed_base or not cache_dir:
        return
    try:
        copied = seed_kernel_cache(seed_base, cache_dir)
    except OSError as exc:
        logger.warning("%s=%s: cannot copy the compiled kernels (%s); they compile instead",
                       ENV_KERNEL_SEED, seed_base, exc)
        return
    if copied is None:
        logger.warning("%s=%s holds no compiled kernels of these sources (no folder %s); "
                       "they compile instead", ENV_KERNEL_SEED, seed_base,
                       Path(cache_dir).name)
    elif copied:
        logger.info("copied %d compiled kernel files from %s into %s", copied, seed_base,
                    cache_dir)


def prune_other_versions(cache_dir: str, now: float,
                         stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Mark ``cache_dir`` used; remove its siblings of other sources unused for ``stale_after_s``.

    ``cache_dir`` is this process's kernel folder (``compiled.cache_dir()``); siblings are
    removed only when named as such a folder is (``otel-anomaly-`` and 16 hex digits) and
    not modified for ``stale_after_s`` seconds before ``now``. Returns their names.
    """
    current = Path(cache_dir)
    if not _VERSION_FOLDER.fullmatch(current.name) or not current.is_dir():
        return []
    os.utime(current)  # in use: a process of these sources started now
    removed = []
    for sibling in sorted(current.parent.iterdir()):
        if (sibling.name == current.name or not _VERSION_FOLDER.fullmatch(sibling.name)
                or sibling.is_symlink() or not sibling.is_dir()
                or now - sibling.stat().st_mtime < stale_after_s):
            continue
        shutil.rmtree(sibling)
        removed.append(sibling.name)
    return removed


def tidy_from_environment(cache_dir: str | None) -> None:
    """Seed ``cache_dir`` (``seed_from_environment``), then prune other versions; logs it.

    Best effort: a folder that cannot be removed is left, with a warning.
    """
    seed_from_environment(cache_dir)
    if not cache_dir:
        return
    try:
        removed = prune_other_versions(cache_dir, time.time())
    except OSError as exc:
        logger.warning("cannot remove old compiled kernels next to %s (%s)", cache_dir, exc)
        return
    if removed:
        logger.info("removed the compiled kernels of %d other versions unused for %d days "
                    "(%s)", len(removed), STALE_AFTER_S // 86_400, ", ".join(removed))
