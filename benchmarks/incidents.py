"""Synthetic production incidents: detection rate, delay and false alarms of the live path.

Usage: .venv/bin/python benchmarks/incidents.py [--series 10] [--days 21] [--step 120]
                                                [--config FILE] [--intervals]

Every series (``processors.testing.incident_series``: daily and weekly seasonality, counter
rates, skewed latencies, error ratios, noise-only controls) goes through
``Engine.ingest_series`` with the default rules (or those of ``--config``, a sidecar config
file, as ``nab.py`` and ``msmon.py`` take), all series together as live traffic would. An
incident counts as detected when the ``flag`` is raised between its onset and its end plus
one hour; the delay is in points from the onset. ``opened`` counts the incidents for which
an anomaly opened in that window: a flag already up at the onset (a false anomaly held
since before it) is detected but not opened. False alarms are anomaly openings on the
control series after their first three days (warm-up), per series-day; the opens within
those three days are printed beside them (``in warm-up days``, with their rate per
series-day), since a sidecar's every series is young once.

Every series is its own service (resource ``service.name``). A ``deploy_step`` is a
release: its service reports ``service.version`` "1" from the start and "2" at the onset
(``Engine.observe_version``), so the step should raise no flag at all, neither during the
grace period nor after it; it is reported as the anomalies opened from the onset on.
``--intervals``: request rates carry their interval (``--step``), as a counter's rate does
on the live path, so they are judged as counts of events (``calibration_kernels``); without
it they are judged as the gauges a CSV backtest gives.

Seeded: the same arguments print the same table.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import (
    BASE_KINDS,
    DAY_S,
    INCIDENT_KINDS,
    INCIDENT_RAMPS,
    LASTING,
    Incident,
    base_of,
    incident_base,
    incident_cases,
    replay_incidents,
)

GRACE_S = 3600
WARMUP_DAYS = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=10, help="series per incident kind")
    parser.add_argument("--days", type=float, default=21.0)
    parser.add_argument("--step", type=float, default=120.0, help="seconds between points")
    parser.add_argument("--config", default=None, help="a sidecar config file (its rules)")
    parser.add_argument("--intervals", action="store_true",
                        help="request rates carry their interval (as a live counter's do)")
    args = parser.parse_args()
    cases = incident_cases(args.series, days=args.days, step_s=args.step)
    settings = (EngineSettings(clock=lambda: 0.0) if args.config is None
                else load_config(args.config).engine_settings(clock=lambda: 0.0))
    engine = Engine(settings)
    started = time.perf_counter()
    results = replay_incidents(engine, cases,
                               interval_s=args.step if args.intervals else None)
    elapsed = time.perf_counter() - started
    rows = sum(len(c.values) for c in cases)
    out = sys.stdout
    out.write(f"{len(cases)} series, {rows} points in {elapsed:.1f}s "
              f"({rows / elapsed:,.0f} points/s), one point per {args.step:g}s"
              f"{', request rates with their interval' if args.intervals else ''}\n\n")
    outcome = [(base_of(case), case, res.flag) for case, res in zip(cases, results, strict=True)]
    _detections(out, outcome, int(GRACE_S / args.step))
    _lasting(out, outcome, args.step)
    _deploys(out, outcome)
    _controls(out, outcome, args.step)
    return 0


Outcome = list[tuple[str, Incident, NDArray[np.bool_]]]


def _detections(out: TextIO, outcome: Outcome, grace: int) -> None:
    out.write(f"{'incident':20s} {'base':12s} {'detected':>9s} {'rate':>6s} "
              f"{'median delay (points)':>22s} {'opened':>9s}\n")
    for kind in INCIDENT_KINDS:
        if kind == "deploy_step":  # not an incident: reported on its own
            continue
        delays, opened = [], 0
        mine = [(case, flag) for _, case, flag in outcome if case.kind == kind]
        for case, flag in mine:
            window = flag[case.start : min(case.end + grace, len(flag))]
            hits = np.flatnonzero(window)
            if len(hits):
                delays.append(int(hits[0]))
            # A rising edge in the window; its first point counts only if the flag was down.
            was_up = case.start > 0 and bool(flag[case.start - 1])
            opened += _opens(window, count_first=not was_up) > 0
        delay = f"{np.median(delays):.0f}" if delays else "-"
        out.write(f"{kind:20s} {incident_base(kind):12s} {len(delays):>4d}/{len(mine):<4d} "
                  f"{len(delays) / len(mine):>6.0%} {delay:>22s} {opened:>4d}/{len(mine):<4d}\n")


def _lasting(out: TextIO, outcome: Outcome, step: float) -> None:
    # Incidents still going on hours later: is the flag still up 2 to 3 hours after onset?
    a, b = int(2 * 3600 / step), int(3 * 3600 / step)
    out.write(f"\n{'lasting incident':20s} {'base':12s} {'flag up 2-3 h after onset':>26s}\n")
    for kind in (*LASTING, *INCIDENT_RAMPS):
        shares = [float(flag[case.start + a : case.start + b].mean())
                  for _, case, flag in outcome if case.kind == kind]
        up = sum(share > 0.5 for share in shares)
        out.write(f"{kind:20s} {incident_base(kind):12s} {up:>4d}/{len(shares):<4d} series "
                  f"({np.mean(shares):.0%} of points)\n")
    # A leak must stay flagged while it grows: from its first flag to the end of its ramp.
    out.write(f"\n{'growing incident':20s} {'base':12s} {'kept the flag while it grew':>28s}\n")
    for kind, ramp_s in INCIDENT_RAMPS.items():
        ramp = int(ramp_s / step)
        kept = []
        for _, case, flag in outcome:
            if case.kind == kind:
                during = flag[case.start : case.start + ramp]
                if during.any():
                    kept.append(float(during[int(np.argmax(during)):].mean()))
        out.write(f"{kind:20s} {incident_base(kind):12s} {sum(k >= 0.95 for k in kept):>4d}/"
                  f"{len(kept):<4d} flagged series ({np.mean(kept) if kept else 0:.0%} of "
                  "points from the first flag)\n")


def _deploys(out: TextIO, outcome: Outcome) -> None:
    # Anomalies opened from the onset to the end (a flag already up before it is not one).
    after = [_opens(flag[case.start - 1 :], count_first=False)
             for _, case, flag in outcome if case.kind == "deploy_step"]
    out.write(f"\n{'deploy':20s} {'base':12s} {'flags after the deploy (should be 0)':>37s}\n")
    out.write(f"{'deploy_step':20s} {incident_base('deploy_step'):12s} {sum(after):>15d} in "
              f"{sum(a > 0 for a in after)}/{len(after)} series\n")


def _controls(out: TextIO, outcome: Outcome, step: float) -> None:
    out.write(f"\n{'control':20s} {'opens':>6s} {'series-days':>12s} {'false/series-day':>17s}"
              f" {'in warm-up days':>16s}\n")
    skip = int(WARMUP_DAYS * DAY_S / step)
    for base in BASE_KINDS:
        opens, days, young, young_days = 0, 0.0, 0, 0.0
        for b, case, flag in outcome:
            if case.start < 0 and b == base:
                opens += _opens(flag[skip:])
                days += len(flag[skip:]) * step / DAY_S
                # A young series' false alarms, apart: not in the figure, but not hidden.
                young += _opens(flag[:skip], count_first=False)
                young_days += len(flag[:skip]) * step / DAY_S
        out.write(f"{base:20s} {opens:>6d} {days:>12.0f} {opens / days:>17.3f} "
                  f"{young:>6d} ({young / max(young_days, 1e-9):.3f})\n")


def _opens(flag: NDArray[np.bool_], *, count_first: bool = True) -> int:
    """Anomalies opened in ``flag``: its rising edges, and its first point if it is up."""
    up = flag.astype(np.int8)
    if not len(up):
        return 0
    return int((np.diff(up) == 1).sum()) + (int(up[0]) if count_first else 0)


if __name__ == "__main__":
    raise SystemExit(main())
