"""Security of the servers: TLS and bearer tokens, from files re-read when they change."""

from __future__ import annotations

from otel_anomaly.exporter.security.bearer_auth import (
    CHALLENGE,
    REFUSED_MESSAGE,
    BearerTokens,
    GrpcBearerInterceptor,
    http_middleware,
)
from otel_anomaly.exporter.security.tls import (
    ServerTls,
    grpc_credentials,
    listening_context,
    load_server_tls,
)
from otel_anomaly.exporter.security.watched_files import WatchedFiles

__all__ = [
    "CHALLENGE",
    "REFUSED_MESSAGE",
    "BearerTokens",
    "GrpcBearerInterceptor",
    "ServerTls",
    "WatchedFiles",
    "grpc_credentials",
    "http_middleware",
    "listening_context",
    "load_server_tls",
]
