"""The input seam: one adapter per kind of request, as small as the Collector's per-signal glue.

An adapter knows its request type, how many items a request holds, which resources sent
them, and how to turn them into observations. It owns counting: every item ``count``
reports is either accepted or rejected by ``extract`` (``IngestResult``), so a receiver's
"received" always equals "accepted + rejected". The engine holds one instance of each
adapter in ``registry.ADAPTERS`` and the exporter reads the same classes to decode and
route requests, so a new input (say Prometheus remote-write) is one adapter module, one
line in the registry, and one route in the exporter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_anomaly.processors.types import IngestResult, Observations

if TYPE_CHECKING:
    from otel_anomaly.processors.settings import EngineSettings
    from otel_anomaly.processors.signals.cumulative_streams import SourceTable
    from otel_anomaly.processors.signals.span_coverage import SpanCoverage

Signal = Literal["metrics", "traces", "logs", "prometheus"]
"""Kinds of request: the three OTLP signals, and Prometheus remote-write."""


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What the engine lends its adapters: settings, and the state adapters share.

    ``sources`` holds the previous point of every cumulative stream; ``span_coverage``
    which services send spans (their spanmetrics-connector metrics are not scored again).
    """

    settings: EngineSettings
    sources: SourceTable
    span_coverage: SpanCoverage


class SignalAdapter(Protocol):
    """One signal's requests in, observations out (see the module doc)."""

    signal: ClassVar[Signal]
    request_type: ClassVar[type[Any]]

    @classmethod
    def create(cls, context: AdapterContext) -> SignalAdapter:
        """The adapter an engine with these settings uses."""
        ...

    @staticmethod
    def count(request: Any) -> int:
        """Items (data points, spans, log records) in ``request``: what is accepted or not."""
        ...

    @staticmethod
    def resources(request: Any) -> Iterable[Resource]:
        """The resources that sent ``request``'s items (the services seen reporting)."""
        ...

    def extract(
        self, request: Any, out: Observations, result: IngestResult, now: float, latest: int,
    ) -> None:
        """Append the observations of ``request`` to ``out``; count every item in ``result``.

        ``now`` is the ingest clock (s); items stamped after ``latest`` (ns) are rejected.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """What the adapter learned and a checkpoint keeps (open windows...), as plain data.

        The shared ``AdapterContext`` state is saved by its owner, not here.
        """
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        ...

