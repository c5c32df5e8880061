"""TLS, mTLS and bearer tokens on the receivers and on /metrics, with the real OpenTelemetry SDK.

Certificates (``helpers.tls_certs``) and tokens are made per test, servers listen on loopback
ports chosen at run time, and rotations are waited for with a timeout, never slept for.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from helpers import wait_for
from helpers.promtool import prometheus_running
from helpers.sidecars import http_get, loopback_config, running, sample_value, scrape
from helpers.tls_certs import Pki, make_pki
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.exporter.config import load_config
from otel_anomaly.exporter.errors import ConfigError, StartupError
from otel_anomaly.exporter.security import WatchedFiles

ROTATION_TIMEOUT_S = 10.0  # files are looked at about once a second
EMPTY_EXPORT = metrics_service_pb2.ExportMetricsServiceRequest().SerializeToString()
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(autouse=True)
def no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets these variables override the SDK's ``certificate_file`` (its session's
    ``verify``), and some machines set them to the system bundle."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", "first")


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_hex(16)


@pytest.fixture
def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path


def tls_keys(pki: Pki, *servers: str, mtls: bool = False) -> dict[str, object]:
    """Overrides that turn TLS on for ``servers`` (``receivers.grpc``, ``exposition``, ...)."""
    keys: dict[str, object] = {}
    for server in servers:
        keys[f"{server}.tls.cert_file"] = str(pki.server_cert)
        keys[f"{server}.tls.key_file"] = str(pki.server_key)
        if mtls:
            keys[f"{server}.tls.client_ca_file"] = str(pki.ca)
    return keys


def metrics_data() -> MetricsData:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader],
                             resource=Resource.create({"service.name": "tls-test"}))
    provider.get_meter("tls-test").create_gauge("tls_test_queue_depth").set(3.0)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def sdk_grpc_export(port: int | None, pki: Pki, token: str | None = None,
                    client_cert: bool = False) -> MetricExportResult:
    """Export through the SDK's OTLP/gRPC exporter over TLS trusting ``pki``'s CA."""
    credentials = grpc.ssl_channel_credentials(
        pki.read("ca"),
        pki.read("client_key") if client_cert else None,
        pki.read("client_cert") if client_cert else None,
    )
    headers = {"authorization": f"Bearer {token}"} if token else None
    exporter = GrpcMetrics(endpoint=f"https://127.0.0.1:{port}", credentials=credentials,
                           headers=headers, timeout=10)
    try:
        return exporter.export(metrics_data())
    finally:
        exporter.shutdown()


def sdk_http_export(port: int | None, pki: Pki, token: str | None = None,
                    client_cert: bool = False) -> MetricExportResult:
    """Export through the SDK's OTLP/HTTP exporter over HTTPS trusting ``pki``'s CA."""
    exporter = HttpMetrics(
        endpoint=f"https://127.0.0.1:{port}/v1/metrics",
        certificate_file=str(pki.ca),
        client_certificate_file=str(pki.client_cert) if client_cert else None,
        client_key_file=str(pki.client_key) if client_cert else None,
        headers={"authorization": f"Bearer {token}"} if token else None,
        timeout=10,
    )
    try:
        return exporter.export(metrics_data())
    finally:
        exporter.shutdown()


def grpc_export(port: int | None, credentials: grpc.ChannelCredentials | None = None,
                authorization: str | None = None) -> grpc.StatusCode:
    """One raw ``MetricsService/Export`` call; its status code."""
    target = f"127.0.0.1:{port}"
    channel = (grpc.secure_channel(target, credentials) if credentials
               else grpc.insecure_channel(target))
    metadata = (("authorization", authorization),) if authorization else None
    try:
        metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(
            metrics_service_pb2.ExportMetricsServiceRequest(), timeout=5, metadata=metadata)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return,attr-defined]  # a grpc.Call too
    finally:
        channel.close()
    return grpc.StatusCode.OK


def fetch(url: str, *, ca: Path | None = None, client: Pki | None = None,
          body: bytes | None = None, headers: Mapping[str, str] | None = None,
          context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET (or POST ``body``) over HTTP(S); returns status, headers, body (errors too)."""
    if url.startswith("https:") and context is None:
        context = ssl.create_default_context(cafile=str(ca))
        if client is not None:
            context.load_cert_chain(client.client_cert, client.client_key)
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}),
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def refused(call: Callable[[], object]) -> bool:
    """Whether ``call()`` failed at the connection (TLS refused), not with an HTTP status."""
    try:
        call()
    except (OSError, http.client.HTTPException):
        return True
    return False


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- TLS and mTLS --------------------------------------------------------------------------


def test_grpc_and_http_over_tls_accept_the_sdk_that_trusts_the_ca(pki: Pki) -> None:
    config = loopback_config(tls_keys(pki, "receivers.grpc", "receivers.http"))
    with running(config) as sidecar:
        assert sdk_grpc_export(sidecar.grpc_port, pki) == MetricExportResult.SUCCESS
        assert sdk_http_export(sidecar.http_port, pki) == MetricExportResult.SUCCESS
        families = scrape(sidecar.metrics_port)
    for transport in ("grpc", "http"):
        assert sample_value(families, "otel_anomaly_requests_total", transport=transport,
                            signal="metrics", outcome="ok") == 1


def test_plaintext_clients_and_clients_that_trust_another_ca_are_refused(
    pki: Pki, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "stranger", "stranger")
    config = loopback_config(tls_keys(pki, "receivers.grpc", "receivers.http"))
    with running(config) as sidecar:
        grpc_port, http_port = sidecar.grpc_port, sidecar.http_port
        assert grpc_export(grpc_port) == grpc.StatusCode.UNAVAILABLE
        untrusting = grpc.ssl_channel_credentials(stranger.read("ca"))
        assert grpc_export(grpc_port, untrusting) == grpc.StatusCode.UNAVAILABLE
        url = f"127.0.0.1:{http_port}/v1/metrics"
        assert refused(lambda: fetch(f"http://{url}", body=EMPTY_EXPORT, headers=PROTOBUF))
        assert refused(lambda: fetch(f"https://{url}", ca=stranger.ca, body=EMPTY_EXPORT,
                                     headers=PROTOBUF))
        assert fetch(f"https://{url}", ca=pki.ca, body=EMPTY_EXPORT, headers=PROTOBUF)[0] == 200


def test_mtls_accepts_only_clients_with_a_certificate_from_the_client_ca(
    pki: Pki, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "stranger", "stranger")
    config = loopback_config(tls_keys(pki, "receivers.grpc", "receivers.http", mtls=True))
    with running(config) as sidecar:
        grpc_port, http_port = sidecar.grpc_port, sidecar.http_port
        assert sdk_grpc_export(grpc_port, pki, client_cert=True) == MetricExportResult.SUCCESS
        assert sdk_http_export(http_port, pki, client_cert=True) == MetricExportResult.SUCCESS

        no_certificate = grpc.ssl_channel_credentials(pki.read("ca"))
        assert grpc_export(grpc_port, no_certificate) == grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            pki.read("ca"), stranger.read("client_key"), stranger.read("client_cert"))
        assert grpc_export(grpc_port, foreign) == grpc.StatusCode.UNAVAILABLE

        url = f"https://127.0.0.1:{http_port}/v1/metrics"
        assert refused(lambda: fetch(url, ca=pki.ca, body=EMPTY_EXPORT, headers=PROTOBUF))
        foreign_context = ssl.create_default_context(cafile=str(pki.ca))
        foreign_context.load_cert_chain(stranger.client_cert, stranger.client_key)
        assert refused(lambda: fetch(url, context=foreign_context, body=EMPTY_EXPORT,
                                     headers=PROTOBUF))


def test_min_version_1_3_refuses_tls_1_2_clients(pki: Pki) -> None:
    config = loopback_config({**tls_keys(pki, "receivers.http", "exposition"),
                              "exposition.tls.min_version": 1.3})
    with running(config) as sidecar:
        url = f"https://127.0.0.1:{sidecar.metrics_port}/healthz"
        old_client = ssl.create_default_context(cafile=str(pki.ca))
        old_client.maximum_version = ssl.TLSVersion.TLSv1_2
        assert refused(lambda: fetch(url, context=old_client))
        assert fetch(url, ca=pki.ca)[0] == 200
        receiver = f"https://127.0.0.1:{sidecar.http_port}/v1/metrics"
        assert fetch(receiver, context=old_client, body=EMPTY_EXPORT, headers=PROTOBUF)[0] == 200


def test_a_rotated_certificate_is_served_to_new_connections_without_restart(
    pki: Pki, tmp_path: Path
) -> None:
    successor = make_pki(tmp_path / "successor", "successor")
    config = loopback_config(tls_keys(pki, "receivers.grpc", "receivers.http", "exposition"))
    with running(config) as sidecar:
        health = f"https://127.0.0.1:{sidecar.metrics_port}/healthz"
        receiver = f"https://127.0.0.1:{sidecar.http_port}/v1/metrics"
        assert fetch(health, ca=pki.ca)[0] == 200
        # As cert-manager or a Secret's symlink swap would: a new file under the old name.
        os.replace(successor.server_key, pki.server_key)
        os.replace(successor.server_cert, pki.server_cert)

        def serves_successor() -> bool:
            new_ca = grpc.ssl_channel_credentials(successor.read("ca"))
            return (not refused(lambda: fetch(health, ca=successor.ca))
                    and not refused(lambda: fetch(receiver, ca=successor.ca, body=EMPTY_EXPORT,
                                                  headers=PROTOBUF))
                    and grpc_export(sidecar.grpc_port, new_ca) == grpc.StatusCode.OK)

        wait_for(serves_successor, ROTATION_TIMEOUT_S,
                 "the servers still present the first certificate")
        assert refused(lambda: fetch(health, ca=pki.ca))
        old_ca = grpc.ssl_channel_credentials(pki.read("ca"))
        assert grpc_export(sidecar.grpc_port, old_ca) == grpc.StatusCode.UNAVAILABLE


# --- Bearer tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("separate_process", [False, True],
                         ids=["grpc_in_process", "grpc_separate_process"])
def test_the_right_token_is_accepted_and_a_wrong_or_missing_one_refused(
    pki: Pki, token_file: Path, token: str, separate_process: bool
) -> None:
    config = loopback_config({**tls_keys(pki, "receivers.grpc", "receivers.http"),
                              "receivers.auth.bearer_token_file": str(token_file),
                              "receivers.grpc.separate_process": separate_process})
    with running(config) as sidecar:
        grpc_port, http_port = sidecar.grpc_port, sidecar.http_port
        assert sdk_grpc_export(grpc_port, pki, token) == MetricExportResult.SUCCESS
        assert sdk_http_export(http_port, pki, token) == MetricExportResult.SUCCESS
        assert sdk_grpc_export(grpc_port, pki, "wrong") == MetricExportResult.FAILURE
        assert sdk_http_export(http_port, pki, "wrong") == MetricExportResult.FAILURE

        credentials = grpc.ssl_channel_credentials(pki.read("ca"))
        for authorization in (None, "Bearer wrong", f"Basic {token}", f"Bearer {token}x"):
            code = grpc_export(grpc_port, credentials, authorization)
            assert code == grpc.StatusCode.UNAUTHENTICATED, authorization
        assert grpc_export(grpc_port, credentials, f"bearer {token}") == grpc.StatusCode.OK

        base = f"https://127.0.0.1:{http_port}"
        status, headers, body = fetch(f"{base}/v1/metrics", ca=pki.ca, body=EMPTY_EXPORT,
                                      headers=PROTOBUF)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert status_pb2.Status.FromString(body).code == code_pb2.UNAUTHENTICATED
        status, headers, body = fetch(f"{base}/api/v1/write", ca=pki.ca, body=b"x",
                                      headers={**PROTOBUF, **bearer("wrong")})
        assert (status, headers["WWW-Authenticate"][:6]) == (401, "Bearer")
        assert b"bearer token" in body

        def unauthenticated(transport: str, signal: str) -> float:
            return sample_value(scrape(sidecar.metrics_port), "otel_anomaly_requests_total",
                                transport=transport, signal=signal, outcome="unauthenticated")

        # The SDK's wrong token and four raw calls (a receiver process counts them in the
        # sidecar's telemetry as it forwards them: soon, not before its answer).
        wait_for(lambda: unauthenticated("grpc", "metrics") == 5, 5,
                 lambda: f"{unauthenticated('grpc', 'metrics')} of 5 gRPC calls counted")
        assert unauthenticated("http", "metrics") == 2
        assert unauthenticated("http", "prometheus") == 1


def test_a_rotated_token_file_takes_effect_without_restart(
    token_file: Path, token: str, tmp_path: Path
) -> None:
    config = loopback_config({"receivers.auth.bearer_token_file": str(token_file)})
    with running(config) as sidecar:
        url = f"http://127.0.0.1:{sidecar.http_port}/v1/metrics"

        def accepted(candidate: str) -> bool:
            over_grpc = grpc_export(sidecar.grpc_port, authorization=f"Bearer {candidate}")
            over_http = fetch(url, body=EMPTY_EXPORT, headers={**PROTOBUF, **bearer(candidate)})
            return over_grpc == grpc.StatusCode.OK and over_http[0] == 200

        assert accepted(token)
        second = "tok-" + secrets.token_hex(16)
        staged = tmp_path / "token.new"
        staged.write_text(second + "\n")
        os.replace(staged, token_file)  # atomic, as a Secret update
        wait_for(lambda: accepted(second), ROTATION_TIMEOUT_S, "the new token is still refused")
        assert not accepted(token)
        assert grpc_export(sidecar.grpc_port, authorization=f"Bearer {token}") == \
            grpc.StatusCode.UNAUTHENTICATED

        third = "tok-" + secrets.token_hex(16)
        token_file.write_text(f"{second}\n{third}\n")  # in place; both valid while clients move
        wait_for(lambda: accepted(third), ROTATION_TIMEOUT_S, "the third token is still refused")
        assert accepted(second)


def test_metrics_over_tls_needs_the_token_but_the_probes_do_not(
    pki: Pki, token_file: Path, token: str
) -> None:
    config = loopback_config({**tls_keys(pki, "exposition"),
                              "exposition.auth.bearer_token_file": str(token_file)})
    with running(config) as sidecar:
        base = f"https://127.0.0.1:{sidecar.metrics_port}"
        status, _, body = fetch(f"{base}/metrics", ca=pki.ca, headers=bearer(token))
        assert status == 200
        names = {family.name for family in text_string_to_metric_families(body.decode())}
        assert "otel_anomaly_requests" in names
        status, headers, _ = fetch(f"{base}/metrics", ca=pki.ca)
        assert (status, headers["WWW-Authenticate"][:6]) == (401, "Bearer")
        assert fetch(f"{base}/metrics", ca=pki.ca, headers=bearer("wrong"))[0] == 401
        assert fetch(f"{base}/healthz", ca=pki.ca)[0] == 200
        assert fetch(f"{base}/readyz", ca=pki.ca)[0] == 200
        assert refused(lambda: fetch(f"http://127.0.0.1:{sidecar.metrics_port}/healthz"))


def test_prometheus_scrapes_over_tls_with_a_credentials_file(
    pki: Pki, token_file: Path, tmp_path: Path
) -> None:
    config = loopback_config({**tls_keys(pki, "exposition"),
                              "exposition.auth.bearer_token_file": str(token_file)})
    with running(config) as sidecar:
        job = {"scheme": "https", "scrape_interval": "1s", "scrape_timeout": "1s",
               "tls_config": {"ca_file": str(pki.ca)},
               "static_configs": [{"targets": [f"127.0.0.1:{sidecar.metrics_port}"]}]}
        scrape_configs = [
            {**job, "job_name": "with-token",
             "authorization": {"credentials_file": str(token_file)}},
            {**job, "job_name": "without-token"},
        ]
        with prometheus_running(tmp_path, {"scrape_configs": scrape_configs}) as port:
            def up() -> dict[str, str]:
                status, _, body = http_get(port, "/api/v1/query?query=up")
                assert status == 200, body
                return {series["metric"]["job"]: series["value"][1]
                        for series in json.loads(body)["data"]["result"]}

            wait_for(lambda: up() == {"with-token": "1", "without-token": "0"}, 30,
                     lambda: f"up by job: {up()}")


def test_tokens_never_reach_the_logs(
    token_file: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + secrets.token_hex(8)
    second = "tok-" + secrets.token_hex(16)
    config = loopback_config({"receivers.auth.bearer_token_file": str(token_file),
                              "exposition.auth.bearer_token_file": str(token_file)})
    with running(config) as sidecar:
        assert grpc_export(sidecar.grpc_port, authorization=f"Bearer {wrong}") == \
            grpc.StatusCode.UNAUTHENTICATED
        url = f"http://127.0.0.1:{sidecar.http_port}/v1/metrics"
        assert fetch(url, body=EMPTY_EXPORT, headers={**PROTOBUF, **bearer(wrong)})[0] == 401
        token_file.write_text("")  # a rewrite caught half-way: keeps the token, warns

        def warned() -> bool:  # the file is looked at when a request comes
            status = grpc_export(sidecar.grpc_port, authorization=f"Bearer {token}")
            assert status == grpc.StatusCode.OK
            return "holds no token" in caplog.text

        wait_for(warned, ROTATION_TIMEOUT_S, "no warning about the empty token file")
        token_file.write_text(second)
        wait_for(lambda: grpc_export(sidecar.grpc_port, authorization=f"Bearer {second}")
                 == grpc.StatusCode.OK, ROTATION_TIMEOUT_S, "the new token is still refused")
    assert "reloaded" in caplog.text
    for secret in (token, second, wrong):
        assert secret not in caplog.text


# --- Configuration and start-up ------------------------------------------------------------


def test_missing_files_are_config_errors_naming_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_config(None, {
            "receivers.grpc.tls.cert_file": str(missing),
            "receivers.grpc.tls.key_file": str(tmp_path),
            "receivers.http.tls.client_ca_file": str(missing),
            "receivers.auth.bearer_token_file": str(empty),
            "exposition.tls.min_version": "1.1",
        }, environ={})
    problems = caught.value.problems
    assert problems == [
        f"receivers.grpc.tls.cert_file: cannot read '{missing}': No such file or directory "
        "(from command line)",
        f"receivers.grpc.tls.key_file: cannot read '{tmp_path}': Is a directory "
        "(from command line)",
        f"receivers.http.tls.client_ca_file: cannot read '{missing}': No such file or "
        "directory (from command line)",
        f"receivers.auth: `bearer_token_file` '{empty}' holds no token (it is empty)",
        "exposition.tls.min_version: must be one of '1.2' or '1.3'; got '1.1' "
        "(from command line)",
    ]


def test_tls_settings_that_cannot_work_are_config_errors(pki: Pki) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {
            "receivers.grpc.tls.cert_file": str(pki.server_cert),
            "receivers.grpc.tls.key_file": str(pki.server_key),
            "receivers.grpc.tls.min_version": 1.3,
            "receivers.http.tls.cert_file": str(pki.server_cert),
            "exposition.tls.client_ca_file": str(pki.ca),
        }, environ={})
    assert caught.value.problems == [
        "receivers.grpc: `tls.min_version` must be 1.2 on the gRPC receiver: grpcio cannot "
        "refuse TLS 1.2 clients; got '1.3'",
        "receivers.http.tls: `key_file` must be set when `cert_file` is (TLS needs both)",
        "exposition.tls: `client_ca_file` (mutual TLS) needs `cert_file` and `key_file` too",
    ]


@pytest.mark.parametrize("server", ["receivers.grpc", "receivers.http", "exposition"])
def test_files_that_are_not_a_certificate_and_key_fail_start_up(
    pki: Pki, server: str, tmp_path: Path
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    config = loopback_config({**tls_keys(pki, server), f"{server}.tls.cert_file": str(not_pem)})
    with pytest.raises(StartupError) as caught, running(config):
        pass
    message = str(caught.value)
    assert f"({server}.tls): cannot load the TLS files: cert_file '{not_pem}'" in message
    assert "not a PEM certificate chain and its private key" in message


# --- WatchedFiles ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, FakeClock, WatchedFiles[str]]]:
    path = tmp_path / "secret"
    path.write_text("one")
    clock = FakeClock()

    def build(paths: object) -> str:
        text = path.read_text()
        if not text:
            msg = "empty"
            raise ValueError(msg)
        return text

    yield path, clock, WatchedFiles([str(path)], build, "test.secret", 1.0, clock)


def test_watched_files_look_at_most_once_per_interval(
    watched: tuple[Path, FakeClock, WatchedFiles[str]]
) -> None:
    path, clock, files = watched
    path.write_text("two")
    clock.now = 0.5
    assert files.current() == "one"  # not looked at yet
    clock.now = 1.0
    assert files.current() == "two"
    assert files.reloads == 1


def test_a_change_that_does_not_load_keeps_the_previous_value(
    watched: tuple[Path, FakeClock, WatchedFiles[str]], caplog: pytest.LogCaptureFixture
) -> None:
    path, clock, files = watched
    path.write_text("")
    clock.now = 1.0
    assert files.current() == "one"
    assert "test.secret: changed files do not load, keeping the previous ones: empty" in (
        caplog.text)
    path.write_text("three")
    clock.now = 2.0
    assert files.current() == "three"
