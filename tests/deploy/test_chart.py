"""The Helm chart renders with real Helm, and every manifest is valid Kubernetes.

Helm is the Go SDK itself, through helm-python-sdk (its wheel bundles libhelm_c; no helm
binary). Built-in kinds are validated with kubernetes-validate (strict: unknown fields are
errors). ServiceMonitor and PrometheusRule are not built-in: they are validated with
jsonschema against the monitoring.coreos.com/v1 schemas of cloudcoil-models-prometheus-operator
(pydantic models generated from prometheus-operator's CRD OpenAPI schemas), made strict the
same way.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers.promtool import promtool

from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.settings import DEFAULT_RULES

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "otel-anomaly"
EXAMPLES = ROOT / "examples"
RELEASE, NAMESPACE = "otel-anomaly", "observability"
# The oldest and newest Kubernetes kubernetes-validate knows; Chart.yaml allows >= 1.23.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "replicas-2": {"replicaCount": 2},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True, "annotations": {"grafana_folder": "Observability"}},
    },
    "no-persistence": {"persistence": {"enabled": False}},
}
KINDS = {
    "defaults": ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "replicas-2": ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "monitoring": ["ConfigMap", "ConfigMap", "PrometheusRule", "Service", "Service",
                   "ServiceAccount", "ServiceMonitor", "StatefulSet"],
    "no-persistence": ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"],
}


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Every manifest the chart renders with ``values`` (schema-checked first), and NOTES."""
    chart().validate_schema(dict(values))
    out = chart().render(dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = out.pop(f"{CHART.name}/templates/NOTES.txt", "")
    docs = [doc for text in out.values() for doc in yaml.safe_load_all(text) if doc]
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"])), notes


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}; got {len(found)}"
    return found[0]


def _strict(node: Any) -> Any:
    """Forbid unknown fields in every object schema, as ``kubectl --validate=strict`` does."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@cache
def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    from cloudcoil.models.prometheus_operator import v1  # 4 s to import: only when needed
    schema = _strict(getattr(v1, kind).model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def validation_errors(doc: dict[str, Any]) -> Iterator[str]:
    """What is wrong with ``doc`` for each Kubernetes version (nothing when valid)."""
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        for error in crd_validator(doc["kind"]).iter_errors(doc):
            yield f"{name}: {'.'.join(map(str, error.path))}: {error.message[:300]}"
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            yield f"{name} (k8s {version}): {'.'.join(map(str, error.path))}: {error.message}"


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_manifest_is_valid(combination: str) -> None:
    docs, _ = render(COMBINATIONS[combination])
    assert [d["kind"] for d in docs] == KINDS[combination]
    errors = [error for doc in docs for error in validation_errors(doc)]
    assert not errors, "\n".join(errors)


def test_the_validators_reject_unknown_and_malformed_fields() -> None:
    docs, _ = render(COMBINATIONS["monitoring"])
    statefulset = copy.deepcopy(one(docs, "StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["startupProbes"] = {}
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    rule = copy.deepcopy(one(docs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rule"] = []
    for doc in (statefulset, monitor, rule):
        assert list(validation_errors(doc)), f"{doc['kind']} with a bad field passed"


def test_defaults_keep_state_on_a_claim_per_replica() -> None:
    docs, notes = render({})
    statefulset = one(docs, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["serviceName"] == one(docs, "Service", f"{RELEASE}-headless")["metadata"]["name"]
    assert one(docs, "Service", f"{RELEASE}-headless")["spec"]["clusterIP"] == "None"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = spec["template"]["spec"]
    assert "state" not in {v["name"] for v in pod["volumes"]}, "the claim, not a pod volume"
    [container] = pod["containers"]
    config = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == str(Path(config["state"]["path"]).parent)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "restore time"
    assert "state-otel-anomaly-<ordinal>" in notes


def test_replicas_each_get_their_own_claim() -> None:
    docs, notes = render(COMBINATIONS["replicas-2"])
    spec = one(docs, "StatefulSet")["spec"]
    assert spec["replicas"] == 2
    assert [c["metadata"]["name"] for c in spec["volumeClaimTemplates"]] == ["state"]
    assert f"{RELEASE}-headless.{NAMESPACE}.svc.cluster.local" in notes


def test_without_persistence_state_is_an_empty_dir() -> None:
    docs, notes = render(COMBINATIONS["no-persistence"])
    spec = one(docs, "StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in spec
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["state"]["emptyDir"]["sizeLimit"] == "2Gi"
    assert "lost when a pod" in notes


def test_prometheus_rule_carries_the_example_alerts() -> None:
    docs, _ = render(COMBINATIONS["monitoring"])
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    example = yaml.safe_load((EXAMPLES / "alert-rules.yml").read_text())
    assert rule["spec"]["groups"] == example["groups"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    docs, _ = render(COMBINATIONS["monitoring"])
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": one(docs, "PrometheusRule")["spec"]["groups"]}))
    check = subprocess.run([promtool(), "check", "rules", str(rules)],
                           check=False, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_rule_follows_a_name_override() -> None:
    docs, _ = render({"nameOverride": "anomalies", "prometheusRule": {"enabled": True}})
    text = json.dumps(one(docs, "PrometheusRule")["spec"])
    assert 'job=\\"anomalies\\"' in text
    assert 'job=\\"otel-anomaly\\"' not in text


def test_dashboard_config_map_is_the_example_dashboard() -> None:
    docs, _ = render(COMBINATIONS["monitoring"])
    dashboard = one(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Observability"}
    example = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["otel-anomaly.json"]) == example


@pytest.mark.parametrize("name", ["alert-rules.yml", "grafana-dashboard.json"])
def test_chart_copies_match_the_examples(name: str) -> None:
    assert (CHART / "files" / name).read_bytes() == (EXAMPLES / name).read_bytes(), (
        f"charts/otel-anomaly/files/{name} differs from examples/{name}: copy it again")


def test_image_is_the_documented_one() -> None:
    docs, _ = render({})
    [container] = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    image = f"otel-anomaly:{PROJECT_VERSION}"
    assert container["image"] == image
    assert f"docker build -t {image} ." in (ROOT / "README.md").read_text()
    assert f"docker build -t {image} ." in (ROOT / "Dockerfile").read_text()


def test_rendered_config_is_a_valid_sidecar_config(tmp_path: Path) -> None:
    docs, _ = render(COMBINATIONS["monitoring"])
    path = tmp_path / "config.yaml"
    path.write_text(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    config = load_config(str(path), environ={})
    assert config.state.path == "/var/lib/otel-anomaly/state.ckpt"


def test_schema_rejects_unknown_and_mistyped_values() -> None:
    for values in ({"persistance": {"enabled": False}}, {"persistence": {"existingClaim": "x"}},
                   {"replicaCount": "two"}, {"serviceMonitor": {"interval": "15 seconds"}}):
        with pytest.raises(helm.HelmError):
            chart().validate_schema(values)


def test_lint_is_clean() -> None:
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def _quantity_bytes(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    scale = {"": 1, "Mi": 2**20, "Gi": 2**30, "M": 1e6, "G": 1e9}[unit]
    return float(number) * scale


def test_memory_fits_the_series_cap() -> None:
    """values.yaml: RSS ~= 150 MB + 10 KiB per series (measured at 10000 series)."""
    values = chart().values
    needed = 150e6 + 10 * 1024 * values["config"]["series"]["max_series"]
    assert _quantity_bytes(values["resources"]["requests"]["memory"]) >= needed
    assert _quantity_bytes(values["resources"]["limits"]["memory"]) >= 1.25 * needed


def test_values_list_the_current_built_in_rules() -> None:
    text = (CHART / "values.yaml").read_text()
    listed = re.findall(r"^  #   - name: (\w+)", text, re.MULTILINE)
    assert listed == [rule.name for rule in DEFAULT_RULES]
    for rule in DEFAULT_RULES:
        assert f"match: {json.dumps(list(rule.match))}" in text, rule.name
