"""The Helm chart renders with real Helm, and every manifest is valid Kubernetes.

Helm is the Go SDK itself, through helm-python-sdk (its wheel bundles libhelm_c; no helm
binary). Built-in kinds are validated with kubernetes-validate (strict: unknown fields are
errors). ServiceMonitor and PrometheusRule are not built-in: they are validated with
jsonschema against the monitoring.coreos.com/v1 schemas of cloudcoil-models-prometheus-operator
(pydantic models generated from prometheus-operator's CRD OpenAPI schemas), made strict the
same way.

TLS and bearer tokens come from Secrets the chart mounts but does not create. The rendered
config names files inside those mounts, which load_config requires to be readable: the test
writes what the container would see (each Secret volume's keys under its mountPath) below
tmp_path, and loads the config with every path moved under that root, so a path that points
outside a mounted Secret, or at a key the Secret does not have, fails to load.
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
from helpers.tls_certs import make_pki

from otel_anomaly.exporter.config import load_config
from otel_anomaly.exporter.security.bearer_auth import BearerTokens
from otel_anomaly.exporter.security.tls import load_server_tls
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
    "tls-auth": {
        "tls": {"enabled": True, "secretName": "otel-anomaly-tls", "clientAuth": True},
        "auth": {"enabled": True, "secretName": "otel-anomaly-token"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    },
}
KINDS = {
    "defaults": ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "replicas-2": ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "monitoring": ["ConfigMap", "ConfigMap", "PrometheusRule", "Service", "Service",
                   "ServiceAccount", "ServiceMonitor", "StatefulSet"],
    "no-persistence": ["ConfigMap", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "tls-auth": ["ConfigMap", "Service", "Service", "ServiceAccount", "ServiceMonitor",
                 "StatefulSet"],
}
TLS_DIR, AUTH_DIR = "/var/run/secrets/otel-anomaly/tls", "/var/run/secrets/otel-anomaly/auth"


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


def test_every_validator_reads_the_tls_and_auth_fields() -> None:
    """The new ServiceMonitor fields are checked, not passed over: a typo in them fails."""
    docs, _ = render(COMBINATIONS["tls-auth"])
    for field, bad in (("tlsConfig", {"ca": {"secrets": {}}}),
                       ("authorization", {"type": "Bearer", "credential": {}})):
        monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
        monitor["spec"]["endpoints"][0][field] = bad
        assert list(validation_errors(monitor)), f"a bad {field} passed"


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
    env = {e["name"]: e["value"] for e in container["env"]}
    # The root filesystem is read-only: compiled kernels are cached on the state volume.
    assert Path(env["NUMBA_CACHE_DIR"]).parent == Path(mounts["state"])
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
                   {"replicaCount": "two"}, {"serviceMonitor": {"interval": "15 seconds"}},
                   {"tls": {"enabled": True}}, {"tls": {"enabled": True, "secretName": ""}},
                   {"tls": {"enabled": True, "secretName": "s", "mtls": True}},
                   {"auth": {"enabled": True}}, {"auth": {"enabled": True, "secretName": "s",
                                                          "key": "a/b"}}):
        with pytest.raises(helm.HelmError):
            chart().validate_schema(values)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_lint_is_clean(combination: str) -> None:
    report = helm.lint(CHART, COMBINATIONS[combination], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def _quantity_bytes(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    scale = {"": 1, "Mi": 2**20, "Gi": 2**30, "M": 1e6, "G": 1e9}[unit]
    return float(number) * scale


def test_memory_fits_the_series_cap() -> None:
    """values.yaml: RSS ~= 270 MB + 10 KiB per series (measured at 10000 series)."""
    values = chart().values
    needed = 270e6 + 10 * 1024 * values["config"]["series"]["max_series"]
    assert _quantity_bytes(values["resources"]["requests"]["memory"]) >= needed
    assert _quantity_bytes(values["resources"]["limits"]["memory"]) >= 1.25 * needed


def test_values_list_the_current_built_in_rules() -> None:
    text = (CHART / "values.yaml").read_text()
    listed = re.findall(r"^  #   - name: (\w+)", text, re.MULTILINE)
    assert listed == [rule.name for rule in DEFAULT_RULES]
    for rule in DEFAULT_RULES:
        assert f"match: {json.dumps(list(rule.match))}" in text, rule.name


def _secret_volumes(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Secret name -> where the container sees it, checking each is a read-only directory."""
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    mounts = {}
    for mount in container["volumeMounts"]:
        if mount["name"] in secrets:
            assert mount.get("readOnly") is True, mount
            # subPath would pin the file the pod started with: no rotation.
            assert "subPath" not in mount and "items" not in secrets[mount["name"]], mount
            mounts[secrets[mount["name"]]["secretName"]] = mount["mountPath"]
    return mounts


def _file_keys(node: Any, prefix: str = "") -> dict[str, str]:
    """Every ``*_file`` key of a config with a value, by dotted path."""
    found = {}
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if key.endswith("_file") and value:
                found[path] = value
            found.update(_file_keys(value, f"{path}."))
    return found


def _under_root(node: Any, root: Path) -> Any:
    if isinstance(node, dict):
        return {key: (str(root) + value if key.endswith("_file") and value
                      else _under_root(value, root)) for key, value in node.items()}
    return node


def test_tls_and_auth_config_loads_with_the_secrets_mounted(tmp_path: Path) -> None:
    docs, _ = render(COMBINATIONS["tls-auth"])
    text = one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"]
    rendered = yaml.safe_load(text)
    assert _file_keys(rendered) == {
        "receivers.grpc.tls.cert_file": f"{TLS_DIR}/tls.crt",
        "receivers.grpc.tls.key_file": f"{TLS_DIR}/tls.key",
        "receivers.grpc.tls.client_ca_file": f"{TLS_DIR}/ca.crt",
        "receivers.http.tls.cert_file": f"{TLS_DIR}/tls.crt",
        "receivers.http.tls.key_file": f"{TLS_DIR}/tls.key",
        "receivers.http.tls.client_ca_file": f"{TLS_DIR}/ca.crt",
        "receivers.auth.bearer_token_file": f"{AUTH_DIR}/token",
        "exposition.tls.cert_file": f"{TLS_DIR}/tls.crt",
        "exposition.tls.key_file": f"{TLS_DIR}/tls.key",
        "exposition.auth.bearer_token_file": f"{AUTH_DIR}/token",
    }
    # What the container sees: each Secret's keys as files under its mountPath, here below
    # `root` (a kubernetes.io/tls Secret has tls.crt and tls.key, cert-manager adds ca.crt).
    pki = make_pki(tmp_path / "pki", "chart")
    contents = {
        "otel-anomaly-tls": {"tls.crt": pki.read("server_cert"), "tls.key": pki.read("server_key"),
                             "ca.crt": pki.read("ca")},
        "otel-anomaly-token": {"token": b"s3cret-token\n"},
    }
    root = tmp_path / "pod"
    mounts = _secret_volumes(docs)
    assert mounts == {"otel-anomaly-tls": TLS_DIR, "otel-anomaly-token": AUTH_DIR}
    for secret, mount_path in mounts.items():
        directory = root / mount_path.lstrip("/")
        directory.mkdir(parents=True)
        for key, data in contents[secret].items():
            (directory / key).write_bytes(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_under_root(rendered, root)))
    config = load_config(str(path), environ={})
    assert config.receivers.grpc.tls.enabled and config.receivers.http.tls.enabled
    assert config.receivers.http.tls.client_ca_file == f"{root}{TLS_DIR}/ca.crt"
    assert config.exposition.tls.enabled and not config.exposition.tls.client_ca_file
    # The mounted files make a server certificate and tokens the sidecar accepts.
    for tls, what in ((config.receivers.grpc.tls, "grpc"), (config.exposition.tls, "metrics")):
        load_server_tls(tls, what).current()
    for auth in (config.receivers.auth, config.exposition.auth):
        assert BearerTokens(auth, "test").accepts("Bearer s3cret-token")


def test_tls_probes_use_https_and_the_service_monitor_sends_the_token() -> None:
    docs, notes = render(COMBINATIONS["tls-auth"])
    [container] = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["scheme"] == "HTTPS" and get["port"] == "metrics", probe
        assert "httpHeaders" not in get, "/healthz and /readyz need no token"
    [endpoint] = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "otel-anomaly-tls", "key": "ca.crt"}},
        "serverName": f"{RELEASE}.{NAMESPACE}.svc",
    }
    assert endpoint["authorization"] == {
        "type": "Bearer", "credentials": {"name": "otel-anomaly-token", "key": "token"}}
    ports = {p["name"]: p["appProtocol"] for p in one(docs, "Service", RELEASE)["spec"]["ports"]}
    assert ports == {"otlp-grpc": "grpc", "otlp-http": "https", "metrics": "https"}
    assert f"https://{RELEASE}.{NAMESPACE}.svc:9464/metrics" in notes
    assert "authenticator: bearertokenauth/anomaly" in notes
    assert "insecure: true" not in notes


def test_tls_and_auth_apply_to_the_servers_asked_for(tmp_path: Path) -> None:
    """Receivers only: plain /metrics and probes; /metrics token only: no TLS anywhere."""
    docs, notes = render({"tls": {"enabled": True, "secretName": "t", "metrics": False},
                          "auth": {"enabled": True, "secretName": "a", "receivers": False,
                                   "key": "scrape"},
                          "serviceMonitor": {"enabled": True}})
    config = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert "client_ca_file" not in config["receivers"]["grpc"]["tls"], "clientAuth is off"
    assert "tls" not in config["exposition"] and "auth" not in config["receivers"]
    assert config["exposition"]["auth"]["bearer_token_file"] == f"{AUTH_DIR}/scrape"
    [container] = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert "scheme" not in container["readinessProbe"]["httpGet"]
    [endpoint] = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "http" and "tlsConfig" not in endpoint
    assert endpoint["authorization"]["credentials"] == {"name": "a", "key": "scrape"}
    assert "WARNING: /metrics requires a bearer token but speaks plaintext" in notes
    # An override of the ServiceMonitor's tlsConfig, for a Secret without ca.crt.
    docs, _ = render({"tls": {"enabled": True, "secretName": "t"},
                      "serviceMonitor": {"enabled": True,
                                         "tlsConfig": {"insecureSkipVerify": True}}})
    [endpoint] = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True} and "authorization" not in endpoint
    assert not [error for doc in docs for error in validation_errors(doc)]


def test_tls_keeps_the_min_version_config_sets() -> None:
    docs, _ = render({"tls": {"enabled": True, "secretName": "t"},
                      "config": {"exposition": {"tls": {"min_version": "1.3"}}}})
    config = yaml.safe_load(one(docs, "ConfigMap", RELEASE)["data"]["config.yaml"])
    assert config["exposition"]["tls"] == {"min_version": "1.3",
                                           "cert_file": f"{TLS_DIR}/tls.crt",
                                           "key_file": f"{TLS_DIR}/tls.key"}
