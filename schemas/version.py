"""The tool's name and version, as recorded in caches, results tables and exported files."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGE = "anomaly-seg-cache"


def tool_version() -> str:
    """The installed package's version; ``0+unknown`` when it runs from a source tree that was never installed."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "0+unknown"
