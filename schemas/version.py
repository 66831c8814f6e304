"""The tool's name and version, as recorded in caches, results tables and exported files.

``__version__`` is the one place the version lives (pyproject.toml reads it at build time,
``extract --version`` and ``analyze --version`` print it). Bump it whenever the cache or results
format, or a default that changes numbers, changes, and record the change in CHANGELOG.md.
"""

from __future__ import annotations

PACKAGE = "anomaly-seg-cache"
__version__ = "0.3.0"


def tool_version() -> str:
    """The version of the running code (:data:`__version__`), installed or from a source tree."""
    return __version__
