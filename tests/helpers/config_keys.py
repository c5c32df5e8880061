"""Every leaf key of a pydantic config model, dotted (``receivers.grpc.endpoint``)."""

from __future__ import annotations

from pydantic import BaseModel


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the model's non-model fields, nested models expanded."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
