"""The ``otel-anomaly`` command: run, check-config, backtest, demo and compile-kernels.

The only module that sets up logging or decides the exit status: 0 ok, 1 startup failure,
2 invalid configuration (every problem listed) or unusable backtest input.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from otel_anomaly.exporter.allocator import keep_large_blocks_mapped
from otel_anomaly.exporter.commands.backtest import BacktestJob, PrometheusSource, run_backtest
from otel_anomaly.exporter.commands.backtest_input import BacktestInputError
from otel_anomaly.exporter.config import ENV_CONFIG_FILE, ENV_LOG_LEVEL, Config, load_config
from otel_anomaly.exporter.distribution import version
from otel_anomaly.exporter.errors import ConfigError, ExporterError
from otel_anomaly.exporter.kernel_cache import tidy_from_environment
from otel_anomaly.exporter.prometheus_history import HistoryError, parse_time
from otel_anomaly.processors.compiled import cache_dir, uncached
from otel_anomaly.processors.kernel_warm_up import warm_up

EXIT_OK, EXIT_STARTUP, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130
_LEVELS = ("debug", "info", "warning", "error")
_PROG = "otel-anomaly"


def _endpoint_flags(parser: argparse.ArgumentParser) -> None:
    for flag, key in (
        ("--grpc-endpoint", "receivers.grpc.endpoint"),
        ("--http-endpoint", "receivers.http.endpoint"),
        ("--metrics-endpoint", "exposition.endpoint"),
        ("--events-endpoint", "outputs.otlp_events.endpoint"),
    ):
        parser.add_argument(flag, metavar="HOST:PORT", help=f"sets {key}")
    parser.add_argument("--log-level", choices=_LEVELS, help=f"default ${ENV_LOG_LEVEL} or info")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="OpenTelemetry-native anomaly detection sidecar."
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {version()}",
                        help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the sidecar until SIGINT or SIGTERM")
    run.add_argument("--config", metavar="FILE", help="YAML config (default $OTEL_ANOMALY_CONFIG)")
    _endpoint_flags(run)
    run.add_argument(
        "--shutdown-timeout", type=float, default=20.0, metavar="SECONDS",
        help="time allowed to drain and flush on shutdown (default 20)",
    )
    check = commands.add_parser(
        "check-config", help="validate a config file (with OTEL_ANOMALY_* applied) and exit"
    )
    check.add_argument("file", metavar="FILE")
    _backtest_parser(commands)
    kernels = commands.add_parser(
        "compile-kernels",
        help="compile the scoring kernels into numba's cache and exit (an image's build step)",
        description="Compile (or load) every scoring kernel the config's rules use, as "
        "run does before it listens, so that later starts with the same cache load them. "
        "The container image runs this at build time (see OTEL_ANOMALY_KERNEL_SEED).",
    )
    kernels.add_argument(
        "--config", metavar="FILE", help="YAML config, as for run (default $OTEL_ANOMALY_CONFIG)"
    )
    kernels.add_argument("--log-level", choices=_LEVELS, help=f"default ${ENV_LOG_LEVEL} or info")
    demo = commands.add_parser("demo", help="run a sidecar and feed it simulated incidents")
    demo.add_argument("--duration", type=float, default=180.0, metavar="SECONDS")
    demo.add_argument("--seed", type=int, default=42)
    _endpoint_flags(demo)
    return parser


def _backtest_parser(commands: Any) -> None:  # argparse's subparsers type is private
    backtest = commands.add_parser(
        "backtest",
        help="replay CSV files (timestamp,value) through the live scoring path",
        description="Replay recorded series through exactly the live scoring path (same "
        "detectors, calibration, thresholds and hysteresis, points in time order) and "
        "report per row: timestamp,value,anomaly_score,expected,lower,upper,flag.",
    )
    backtest.add_argument(
        "input", metavar="INPUT", nargs="?",
        help="a CSV file with timestamp and value columns, or a folder of them (recursive; "
        "each file is one series, all replayed together); or use --prometheus",
    )
    history = backtest.add_argument_group(
        "from Prometheus", "backtest what a PromQL query returns instead of CSV files: one "
        "series per label set, scored as its __name__ (or --metric), one CSV/PNG per series")
    history.add_argument("--prometheus", metavar="URL",
                         help="base URL of a Prometheus-compatible query API")
    history.add_argument("--query", metavar="PROMQL", help="the PromQL query to replay")
    history.add_argument("--start", metavar="TIME",
                         help="RFC 3339 or Unix seconds (default: --end minus one day)")
    history.add_argument("--end", metavar="TIME", help="RFC 3339 or Unix seconds (default: now)")
    history.add_argument("--step", type=float, default=60.0, metavar="SECONDS",
                         help="seconds between points (default 60)")
    backtest.add_argument(
        "--output", metavar="OUT",
        help="CSV file to write (a directory for a folder INPUT: one CSV per input); "
        "without it, print a summary per file",
    )
    backtest.add_argument(
        "--plot", metavar="PNG",
        help="draw value, band, score and flags as a PNG (a directory for a folder INPUT)",
    )
    backtest.add_argument(
        "--config", metavar="FILE", help="YAML config, as for run (default $OTEL_ANOMALY_CONFIG)"
    )
    backtest.add_argument(
        "--metric", default="value", metavar="NAME",
        help="metric name the series are scored as; selects the detector rule (default value)",
    )
    backtest.add_argument(
        "--series-column", metavar="NAME",
        help="the column telling apart the series of a file that holds several (e.g. 'KPI "
        "ID'); each is scored as its own (default: found when most rows share timestamps)",
    )
    backtest.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    backtest.add_argument(
        "--strict", action="store_true",
        help="stop at the first bad cell (exit 2) instead of keeping its row unscored",
    )
    backtest.add_argument("--log-level", choices=_LEVELS, help=f"default ${ENV_LOG_LEVEL} or info")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "receivers.grpc.endpoint": args.grpc_endpoint,
        "receivers.http.endpoint": args.http_endpoint,
        "exposition.endpoint": args.metrics_endpoint,
        "outputs.otlp_events.endpoint": args.events_endpoint,
    }


def _log_level(level: str | None) -> str:
    name = (level or os.environ.get(ENV_LOG_LEVEL) or "info").lower()
    if name not in _LEVELS:
        msg = f"{ENV_LOG_LEVEL}: expected one of {', '.join(_LEVELS)}; got {name!r}"
        raise ConfigError(None, [msg])
    return name


def _setup_logging(level: str | None) -> None:
    name = _log_level(level)
    logging.basicConfig(
        level=name.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(stream: TextIO, message: str) -> None:
    stream.write(f"{_PROG}: error: {message}\n")


def _run(args: argparse.Namespace) -> int:
    # The servers load here, not at import: ``backtest`` and ``--version`` do without them.
    from otel_anomaly.exporter.app import Sidecar  # noqa: PLC0415

    config = load_config(args.config or os.environ.get(ENV_CONFIG_FILE), _overrides(args))
    stop = threading.Event()
    previous = _trap_signals(stop)
    try:
        try:
            sidecar = Sidecar(config)
            sidecar.start()
        except Exception as exc:  # noqa: BLE001 - one clear line, exit 1
            _fail(sys.stderr, f"cannot start: {exc}")
            return EXIT_STARTUP
        stop.wait()
        _restore_signals(previous)  # a second signal now stops the process at once
        sidecar.shutdown(args.shutdown_timeout)
    finally:
        _restore_signals(previous)
    return EXIT_OK


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_Handlers = dict[signal.Signals, Any]


def _trap_signals(stop: threading.Event) -> _Handlers:
    return {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}


def _restore_signals(previous: _Handlers) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    sys.stdout.write(f"ok: {args.file}\n{summary(config)}")
    return EXIT_OK


def summary(config: Config) -> str:
    """A few lines describing what a config does (for ``check-config``)."""
    receivers = config.receivers
    listen = [
        f"{name} {r.endpoint}"
        for name, r in (("grpc", receivers.grpc), ("http", receivers.http))
        if r.enabled
    ]
    rules = config.detector_rules()
    origin = "configured" if config.detectors else "built-in"
    exposition = config.exposition
    return (
        f"  receivers: {', '.join(listen) or 'none'}\n"
        f"  metrics:   {exposition.endpoint} "
        f"({_exported(exposition.max_exported_series)} series per scrape)\n"
        f"  events:    {config.outputs.otlp_events.endpoint or 'disabled'}\n"
        f"  scores:    {config.outputs.otlp_scores.endpoint or 'disabled'} (OTLP)\n"
        f"  detectors: {len(rules)} rules ({origin}): {', '.join(r.name for r in rules)}\n"
        f"  series:    at most {config.series.max_series}, ttl {config.series.ttl:g}s\n"
    )


def _backtest(args: argparse.Namespace) -> int:
    config = load_config(args.config or os.environ.get(ENV_CONFIG_FILE))
    progress = None if args.no_progress or not sys.stderr.isatty() else sys.stderr
    try:
        source = _prometheus_source(args)
    except (BacktestInputError, HistoryError) as exc:
        _fail(sys.stderr, str(exc))
        return EXIT_CONFIG
    job = BacktestJob(
        input=Path(args.input) if args.input else None,
        prometheus=source,
        output=Path(args.output) if args.output else None,
        plot=Path(args.plot) if args.plot else None,
        metric=args.metric,
        progress=progress,
        strict=args.strict,
        series_column=args.series_column,
    )
    try:
        run_backtest(config, job, sys.stdout, sys.stderr)
    except BacktestInputError as exc:
        _fail(sys.stderr, str(exc))
        return EXIT_CONFIG
    except KeyboardInterrupt:
        _fail(sys.stderr, "interrupted")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _prometheus_source(args: argparse.Namespace) -> PrometheusSource | None:
    """``--prometheus`` and its query, checked; None for a CSV backtest."""
    if args.prometheus is None:
        if args.query or args.start or args.end:
            msg = "--query, --start and --end need --prometheus URL"
            raise BacktestInputError(msg)
        return None
    if args.input:
        msg = "give either INPUT (CSV) or --prometheus, not both"
        raise BacktestInputError(msg)
    if not re.match(r"^https?://[^/]", args.prometheus):
        msg = ("--prometheus must be an http(s) URL such as http://prometheus:9090; "
               f"got {args.prometheus!r}")
        raise BacktestInputError(msg)
    if not args.query:
        msg = "--prometheus needs --query PROMQL"
        raise BacktestInputError(msg)
    end = parse_time(args.end) if args.end else time.time()
    start = parse_time(args.start) if args.start else end - 86400.0
    return PrometheusSource(args.prometheus, args.query, start, end, args.step)


def _demo(args: argparse.Namespace) -> int:
    from otel_anomaly.exporter.commands.demo import DemoOptions, run_demo  # noqa: PLC0415

    config = load_config(None, _overrides(args))
    stop = threading.Event()
    previous = _trap_signals(stop)
    try:
        options = DemoOptions(duration_s=args.duration, seed=args.seed)
        run_demo(config, options, sys.stdout, stop)
    except ExporterError as exc:
        _fail(sys.stderr, f"cannot start: {exc}")
        return EXIT_STARTUP
    finally:
        _restore_signals(previous)
    return EXIT_OK


def _compile_kernels(args: argparse.Namespace) -> int:
    config = load_config(args.config or os.environ.get(ENV_CONFIG_FILE))
    if not cache_dir():
        _fail(sys.stderr, "no writable kernel cache folder (set NUMBA_CACHE_DIR)")
        return EXIT_STARTUP
    seconds = warm_up(config.engine_settings())
    sys.stdout.write(f"scoring kernels ready in {seconds:.1f}s, cached in {cache_dir()}\n")
    return EXIT_OK


_COMMANDS = {
    "run": _run, "check-config": _check_config, "backtest": _backtest, "demo": _demo,
    "compile-kernels": _compile_kernels,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``otel-anomaly``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            _log_level(getattr(args, "log_level", None))  # what `run` would refuse
        else:
            # Before the engine allocates anything: freed state arrays must leave memory.
            keep_large_blocks_mapped()
            _setup_logging(args.log_level)
            if uncached():
                logging.getLogger(_PROG).warning(
                    "%d scoring kernels are not cached (no writable NUMBA_CACHE_DIR, package "
                    "folder or home): they are compiled at every start", len(uncached()))
            tidy_from_environment(cache_dir())
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_CONFIG


def _exported(limit: int) -> str:
    return f"at most {limit}" if limit else "all scored"


if __name__ == "__main__":
    sys.exit(main())
