"""Receivers: OTLP over gRPC and HTTP, Prometheus remote-write; decoding, the shared intake."""
