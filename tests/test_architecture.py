"""processors stays pure: importing it loads no I/O, threading or exporter modules."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("grpc", "prometheus_client", "opentelemetry.sdk", "threading_extras",
             "socket", "aiohttp", "otel_anomaly.exporter", "logging.config", "yaml")


def _loaded_by(imports: str) -> set[str]:
    code = f"import sys, json\n{imports}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def _forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_processors_import_is_pure() -> None:
    loaded = _loaded_by("import otel_anomaly.processors, otel_anomaly.processors.engine, "
                        "otel_anomaly.processors.testing")
    # numba reads its optional YAML config and imports socket itself; what it loads is not
    # the processors' doing (their own imports are checked in the source below).
    bad = _forbidden(loaded - _loaded_by("import numba"))
    assert not bad, f"processors loaded forbidden modules: {bad}"


def test_processors_source_imports_no_io_module() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "processors"
    pattern = re.compile(r"^\s*(?:import|from)\s+([\w.]+)", re.MULTILINE)
    offenders = [f"{path.name}: {module}" for path in root.rglob("*.py")
                 for module in pattern.findall(path.read_text())
                 if _forbidden({module})]
    assert not offenders, offenders


def test_processors_source_never_reads_wall_clock_or_env() -> None:
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "processors"
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("time.time(", "datetime.now(", "os.environ", "threading.", "import logging"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert not offenders, offenders


def test_every_package_is_in_the_wheel() -> None:
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {folder: name for name, folder in setuptools["package-dir"].items()}
    for top in ("exporter", "processors"):
        for init in (root / top).rglob("__init__.py"):
            folder = init.parent.relative_to(root).as_posix()
            assert folder in mapped, f"{folder} is missing from [tool.setuptools] package-dir"
            assert mapped[folder] in setuptools["packages"], f"{mapped[folder]} not in packages"


def test_architecture_md_names_every_module_and_only_modules_that_exist() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:exporter|processors)/[\w/]*?(?:\.py|/))`", text))
    missing = sorted(n for n in named if not (root / n).exists())
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"
    modules = {p.relative_to(root).as_posix() for top in ("exporter", "processors")
               for p in (root / top).rglob("*.py") if p.name != "__init__.py"}
    unlisted = sorted(modules - named)
    assert not unlisted, f"modules missing from ARCHITECTURE.md's module map: {unlisted}"
