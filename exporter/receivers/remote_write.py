"""Prometheus remote-write 1.0 bodies: snappy-compressed ``WriteRequest`` protobufs.

The receiving side of Prometheus' ``remote_write``: the HTTP receiver serves it at
``REMOTE_WRITE_PATH`` and hands the decoded request to the same intake as OTLP, where the
``prometheus`` signal adapter (``processors.signals.remote_write``) turns it into points.
Replies follow the remote-write spec: 204 when the body was taken (rejected samples are
counted in self-metrics: remote-write 1.0 has no partial success, and a 4xx would make
Prometheus drop the accepted samples with it), 400 for a body that does not decode, 413
for one over the size limit, 503 with ``Retry-After`` when the queue is full.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cramjam
from google.protobuf.message import Message

from otel_anomaly.exporter.receivers.http_codec import HttpError
from otel_anomaly.processors.signals.adapter import Signal
from otel_anomaly.processors.signals.registry import ADAPTERS
from otel_anomaly.processors.signals.remote_write_proto import WriteRequest
from otel_anomaly.processors.types import IngestResult

REMOTE_WRITE_PATH = "/api/v1/write"


@dataclass(frozen=True, slots=True)
class RemoteWriteSpec:
    """What the intake needs of the ``prometheus`` signal: its name, count and reply."""

    signal: Signal = "prometheus"
    count: Callable[[Any], int] = field(default=ADAPTERS["prometheus"].count)

    def response(self, result: IngestResult | None = None) -> Message | None:  # noqa: ARG002
        """No reply body: the receiver answers 204."""
        return None


def decode_write_request(body: bytes, content_encoding: str, limit: int) -> Any:
    """A ``WriteRequest`` from a snappy (block format) body; ``HttpError`` says why not.

    Examples
    --------
    >>> request = WriteRequest()
    >>> _ = request.timeseries.add().labels.add(name="__name__", value="up")
    >>> body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
    >>> decode_write_request(body, "snappy", 1024).timeseries[0].labels[0].value
    'up'
    """
    coding = content_encoding.strip().lower()
    if coding not in ("", "snappy"):
        msg = f"unsupported Content-Encoding {content_encoding!r}: remote-write bodies are snappy"
        raise HttpError(415, msg)
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except Exception as exc:  # noqa: BLE001 - a body without a snappy header is the client's error
        msg = f"cannot decompress snappy body: {exc}"
        raise HttpError(400, msg) from exc
    if size > limit:
        msg = f"decompressed body of {size} bytes exceeds {limit} (max_request_body_size_mib)"
        raise HttpError(413, msg)
    try:
        data = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # noqa: BLE001 - corrupt or truncated snappy data
        msg = f"cannot decompress snappy body: {exc}"
        raise HttpError(400, msg) from exc
    request = WriteRequest()
    try:
        request.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - any decode failure is the client's error
        msg = f"cannot decode prometheus.WriteRequest: {exc}"
        raise HttpError(400, msg) from exc
    return request
