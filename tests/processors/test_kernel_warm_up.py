"""The start-up warm-up loads every kernel live data reaches first, the receivers' too."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
from otel_anomaly.processors.kernel_warm_up import warm_up
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals import metrics_wire_count
warm_up(EngineSettings(clock=lambda: 0.0))
print(len(metrics_wire_count._count_request.signatures))
"""


def test_warm_up_loads_the_kernel_that_counts_a_metrics_request() -> None:
    # The receivers count a request's points from its bytes on the event loop, before
    # queueing it: compiled at the first export instead, it held the loop for 0.76 s (an
    # empty cache). A fresh process, so no earlier test has called it.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=300)
    assert int(out.stdout.split()[-1]) >= 1, "warm_up must compile or load _count_request"
