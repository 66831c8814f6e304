"""The metadata files of a cache: every ``zarr.json`` must be present, parse and agree.

A Zarr v3 cache has one ``zarr.json`` for the group (with, once the extraction has finished,
a consolidated copy of every array's metadata) and one per array. Readers of a consolidated
cache use the copy and never read an array's own file, so a truncated ``labels/zarr.json``
goes unnoticed until a writer (``extract run``) opens the array and fails with a bare JSON
error. :func:`metadata_problems` reads each file itself and names the one that is damaged.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

GROUP_FILE = "zarr.json"


def _read_json(fs, path: str) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, why it cannot be read)."""
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"is not valid JSON (truncated or damaged: {exc})"
    if not isinstance(value, dict) or "node_type" not in value:
        return None, "is not Zarr metadata (no node_type)"
    return value, None


def metadata_problems(path_or_url, arrays=None, storage_options: Mapping | None = None) -> list[str]:
    """One line per damaged metadata file of the cache at ``path_or_url`` among the group's
    ``zarr.json`` and ``<array>/zarr.json`` of each of ``arrays`` (names; default: every folder
    of the cache, each an array of a valid cache): missing, unreadable,
    not JSON, or (consolidated cache) different from its consolidated copy in the group file.
    Each line starts with the file's path inside the cache (``labels/zarr.json: ...``)."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(str(path_or_url), **dict(storage_options or {}))
    root = root.rstrip("/")
    group, why = _read_json(fs, f"{root}/{GROUP_FILE}")
    if why:
        return [f"{GROUP_FILE}: {why}"]
    consolidated = ((group.get("consolidated_metadata") or {}).get("metadata") or {})
    if arrays is None:
        arrays = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=True)
                        if e["type"] == "directory")
    out = []
    for name in arrays:
        meta, why = _read_json(fs, f"{root}/{name}/{GROUP_FILE}")
        if why:
            out.append(f"{name}/{GROUP_FILE}: {why}")
        elif name in consolidated and _comparable(consolidated[name]) != _comparable(meta):
            out.append(f"{name}/{GROUP_FILE}: differs from its consolidated copy in {GROUP_FILE} (altered after the "
                       "extraction finished?)")
    return out


def _comparable(meta: Mapping) -> Mapping:
    return {k: v for k, v in meta.items() if k != "consolidated_metadata"}
