"""The installed distribution's name and version, without importing the sidecar."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "otel-anomaly"


def version() -> str:
    """The installed distribution's version (``pyproject.toml``), or ``0+unknown``."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
