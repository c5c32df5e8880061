"""The shipped examples stay valid: alert rules, scrape config, dashboard, chart values."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from helpers.promtool import promtool

from otel_anomaly.exporter.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(EXAMPLES / "alert-rules.yml")],
                           check=False, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([tool, "test", "rules", "alert-rules.test.yml"], cwd=EXAMPLES,
                          check=False, capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


RUNBOOK = "https://github.com/otel-anomaly/otel-anomaly/blob/main/README.md#"


def _alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((EXAMPLES / "alert-rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _readme_anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_links_its_runbook_section_in_the_readme() -> None:
    anchors = _readme_anchors()
    for rule in _alert_rules():
        url = rule["annotations"]["runbook_url"]  # type: ignore[index]
        assert url == RUNBOOK + str(rule["alert"]).lower(), rule["alert"]
        assert url.removeprefix(RUNBOOK) in anchors, f"README has no section for {url}"


def test_anomaly_alerts_page_on_the_debounced_flag_and_the_open_anomaly() -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    for name in ("OtelAnomalyDetected", "OtelAnomalySevere"):
        expr = str(rules[name]["expr"])
        assert "otel_anomaly_flag == 1" in expr and "otel_anomaly_open_info" in expr, name
        assert "group_left (anomaly_id)" in expr, name
        assert rules[name].get("for"), f"{name} has no for:"


def test_prometheus_scrape_config_is_valid_and_honours_labels() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "config", "--syntax-only",
                            str(EXAMPLES / "prometheus.yml")], check=False, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    jobs = [j for j in config["scrape_configs"] if j.get("honor_labels")]
    assert jobs, "the sidecar's scrape job needs honor_labels: true to keep job/instance"


def test_grafana_dashboard_queries_the_exported_gauges() -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = json.dumps(dashboard)
    for name in ("otel_anomaly_value", "otel_anomaly_expected", "otel_anomaly_lower",
                 "otel_anomaly_upper", "otel_anomaly_score", "otel_anomaly_flag"):
        assert name in exprs, f"dashboard never queries {name}"
    ids = [p["id"] for p in dashboard["panels"] if "id" in p]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_collector_config_tees_every_signal_to_the_sidecar() -> None:
    config = yaml.safe_load((EXAMPLES / "collector.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    for signal in ("metrics", "traces", "logs"):
        exporters = next(p["exporters"] for name, p in pipelines.items()
                         if name.split("/")[0] == signal)
        assert "otlp/anomaly" in exporters, f"{signal} pipeline does not tee to the sidecar"


def test_chart_default_values_are_a_valid_sidecar_config(tmp_path: Path) -> None:
    values = yaml.safe_load((ROOT / "charts" / "otel-anomaly" / "values.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values["config"]))
    config = load_config(str(path), environ={})
    assert config.receivers.grpc.endpoint == "0.0.0.0:4317"
    assert config.state.path.startswith("/var/lib/otel-anomaly/")  # the chart's state volume
