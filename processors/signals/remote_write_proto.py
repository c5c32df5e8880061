"""The Prometheus remote-write 1.0 messages (``prometheus/prompb``), built from a descriptor.

Only the fields the sidecar reads are declared: a ``TimeSeries``' native histograms are
kept as opaque bytes (counted, not decoded), and fields not declared here are carried as
unknown fields by protobuf. Declaring the schema at run time avoids generated code that
must match the installed protobuf runtime.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_REPEATED, _OPTIONAL = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
_FIELDS: dict[str, list[tuple[str, int, int, int, str]]] = {
    # message: (field, number, label, type, message type name)
    "Label": [("name", 1, _OPTIONAL, _F.TYPE_STRING, ""),
              ("value", 2, _OPTIONAL, _F.TYPE_STRING, "")],
    "Sample": [("value", 1, _OPTIONAL, _F.TYPE_DOUBLE, ""),
               ("timestamp", 2, _OPTIONAL, _F.TYPE_INT64, "")],
    "TimeSeries": [("labels", 1, _REPEATED, _F.TYPE_MESSAGE, "Label"),
                   ("samples", 2, _REPEATED, _F.TYPE_MESSAGE, "Sample"),
                   ("histograms", 4, _REPEATED, _F.TYPE_BYTES, "")],
    "MetricMetadata": [("type", 1, _OPTIONAL, _F.TYPE_INT32, ""),
                       ("metric_family_name", 2, _OPTIONAL, _F.TYPE_STRING, ""),
                       ("help", 4, _OPTIONAL, _F.TYPE_STRING, ""),
                       ("unit", 5, _OPTIONAL, _F.TYPE_STRING, "")],
    "WriteRequest": [("timeseries", 1, _REPEATED, _F.TYPE_MESSAGE, "TimeSeries"),
                     ("metadata", 3, _REPEATED, _F.TYPE_MESSAGE, "MetricMetadata")],
}
COUNTER = 1
"""``MetricMetadata.type`` of a counter."""


def _message_classes() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="otel_anomaly/prometheus_remote_write.proto", package="prometheus",
        syntax="proto3")
    for message, fields in _FIELDS.items():
        described = proto.message_type.add(name=message)
        for name, number, label, kind, type_name in fields:
            field = described.field.add(name=name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = f".prometheus.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"prometheus.{name}")) for name in _FIELDS}


_CLASSES = _message_classes()
WriteRequest: Any = _CLASSES["WriteRequest"]
"""``prometheus.WriteRequest``: what a remote-write body decodes to."""
TimeSeries: Any = _CLASSES["TimeSeries"]
