"""The README documents every config key and every exported metric, and opens with the two
commands CI and new users run."""

from __future__ import annotations

import re
from pathlib import Path

from helpers.config_keys import leaf_keys
from prometheus_client import CollectorRegistry

from otel_anomaly.exporter.config import AlertConfig, Config
from otel_anomaly.exporter.outputs import SCORE_GAUGES
from otel_anomaly.exporter.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_first_commands_are_make_demo_and_make_test() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block is not None, "README has no sh code block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_config_key_is_documented() -> None:
    missing = [key for key in leaf_keys(Config) if f"`{key}`" not in README]
    missing += [f"alert.{key}" for key in AlertConfig.model_fields if f"| `{key}` |" not in README]
    assert not missing, f"config keys missing from README.md: {missing}"


def test_every_exported_metric_is_documented() -> None:
    registry = CollectorRegistry()
    Telemetry(registry)
    names = {metric.name for metric in registry.collect()} | {name for name, _, _ in SCORE_GAUGES}
    missing = sorted(name for name in names if not re.search(rf"`{name}(_total)?`", README))
    assert not missing, f"metrics missing from README.md: {missing}"
