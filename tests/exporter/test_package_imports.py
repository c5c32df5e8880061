"""What importing the exporter loads: the CLI's offline commands go without the servers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_anomaly import exporter

SERVERS = ("grpc", "aiohttp", "opentelemetry.exporter.otlp.proto.grpc",
           "otel_anomaly.exporter.app")


def test_the_cli_module_imports_no_server() -> None:
    # ``backtest``, ``check-config`` and ``--version`` start in about 0.6 s instead of 0.9.
    probe = ("import sys, otel_anomaly.exporter.cli; "
             f"print(sorted(m for m in {SERVERS!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_public_names_are_the_lazily_loaded_ones() -> None:
    assert sorted(exporter.__all__) == sorted(exporter._HOMES)


@pytest.mark.parametrize("name", exporter.__all__)
def test_every_public_name_loads_from_its_module(name: str) -> None:
    value = getattr(exporter, name)
    assert value.__name__ == name
    assert value.__module__.startswith("otel_anomaly.exporter.")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Sidecars'"):
        _ = exporter.Sidecars  # type: ignore[attr-defined]
