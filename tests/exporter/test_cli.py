"""The otel-anomaly command: exit codes and output of check-config and run."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import helpers.processes
import pytest
from helpers.processes import START_ATTEMPTS, free_port, running_cli, start_run, started_cli
from helpers.sidecars import answers, grpc_clients

from otel_anomaly.exporter.cli import main
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request

CONFIGS = Path(__file__).resolve().parents[1] / "testdata" / "config"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_ANOMALY_"):
            monkeypatch.delenv(name)


def test_check_config_ok_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(CONFIGS / "valid.yaml")
    assert main(["check-config", path]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"ok: {path}\n"
        "  receivers: grpc 127.0.0.1:14317\n"
        "  metrics:   localhost:9464 (all scored series per scrape)\n"
        "  events:    collector:4319\n"
        "  scores:    disabled (OTLP)\n"
        "  detectors: 2 rules (configured): latency, default\n"
        "  series:    at most 5000, ttl 1800s\n"
    )
    assert err == ""


def test_check_config_error_lists_every_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(CONFIGS / "several_errors.yaml")
    assert main(["check-config", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"invalid configuration in {path} (6 errors):\n")
    assert err.count("\n  ") == 6


def test_check_config_names_the_new_key_of_each_former_events_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", str(CONFIGS / "moved_events_keys.yaml")]) == 2
    err = capsys.readouterr().err
    assert "  events.endpoint: moved to outputs.otlp_events.endpoint\n" in err
    assert "  events.metrics_interval: moved to outputs.otlp_scores.interval" in err


def test_check_config_applies_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ANOMALY_GRPC_ENDPIONT", "x:1")
    assert main(["check-config", str(CONFIGS / "valid.yaml")]) == 2
    assert "did you mean OTEL_ANOMALY_GRPC_ENDPOINT?" in capsys.readouterr().err


def test_check_config_refuses_the_log_level_run_would_refuse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ANOMALY_LOG_LEVEL", "verbose")
    assert main(["check-config", str(CONFIGS / "valid.yaml")]) == 2
    assert "OTEL_ANOMALY_LOG_LEVEL: expected one of debug, info" in capsys.readouterr().err


def test_backtest_from_prometheus_needs_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--prometheus", "notaurl", "--query", "up"]) == 2
    assert ("--prometheus must be an http(s) URL such as http://prometheus:9090; got 'notaurl'"
            in capsys.readouterr().err)


def test_run_with_invalid_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(CONFIGS / "bad_range.yaml")]) == 2
    assert "detectors[0].params.alpha: must be in (0, 1]; got 1.5" in capsys.readouterr().err


def test_run_with_invalid_flag_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--grpc-endpoint", "nowhere"]) == 2
    assert "receivers.grpc.endpoint: expected HOST:PORT such as 'localhost:4317'; got " \
        "'nowhere' (from command line)" in capsys.readouterr().err


def test_run_serves_until_sigterm_then_exits_0() -> None:
    process, ports = started_cli()  # ready (on new ports if a picked one was taken)
    try:
        with grpc_clients(ports["grpc"]) as clients:
            clients.metrics.Export(metrics_request([gauge("cpu", [(SECOND, 0.5)])]), timeout=5)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out == ""
    assert err.count("otel-anomaly started: OTLP/gRPC 127.0.0.1:") == 1
    assert err.count("otel-anomaly stopped") == 1


def test_run_on_a_taken_port_exits_1_with_one_clear_line() -> None:
    expected = ("otel-anomaly: error: cannot start: OTLP/gRPC receiver "
                "(receivers.grpc.endpoint): cannot listen on '127.0.0.1:{}': "
                "Address already in use")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        grpc = blocker.getsockname()[1]
        last = ""
        # Only the blocked port is taken on purpose; another picked port may be taken by
        # chance before the sidecar binds it (then it names that one): new ports, again.
        for _ in range(START_ATTEMPTS):
            process = start_run(grpc=grpc, http=free_port(), metrics=free_port())
            _, err = process.communicate(timeout=30)
            assert process.returncode == 1, err
            last = err.splitlines()[-1]
            if "Address already in use" not in last or f":{grpc}'" in last:
                break
    assert last == expected.format(grpc)


def test_a_port_taken_before_the_sidecar_binds_it_is_tried_again_on_new_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ports are picked free, then bound by the sidecar: another process may take one in
    # between (a CI run failed so). The helper starts the sidecar again on new ports.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([free_port(), port, free_port()])
        monkeypatch.setattr(helpers.processes, "free_port",
                            lambda: next(picks, None) or free_port())
        with running_cli() as cli:
            assert port not in (cli.grpc_port, cli.http_port, cli.metrics_port)
            assert answers(cli.metrics_port)
