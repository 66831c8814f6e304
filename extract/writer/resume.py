"""Creating a cache atomically, or reopening one that a run may continue.

A run may continue a cache only when it was made with the same checkpoint, model
configuration, preprocessing, dataset content, dtype and frame list (:func:`open_or_create`
says which of them differ); shards racing to create one cache all end up with the same one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from schemas import cache as C


def _identity_mismatch(old: C.CacheSpec, new: C.CacheSpec) -> list[str]:
    diffs = []
    a, b = old.provenance.identity(), new.provenance.identity()
    a["dtype"], b["dtype"] = old.provenance.dtype, new.provenance.dtype
    for k in a:
        if a[k] != b[k]:
            diffs.append(k)
    for k in ("kind", "frame_ids", "sizes", "n_classes", "crop_size", "n_queries", "mask_size", "logit_sizes", "hflip",
              "semantic_inference", "input_sizes", "mask_sizes"):
        if getattr(old, k) != getattr(new, k):
            diffs.append(k)
    if not np.array_equal(old.labelled_mask, new.labelled_mask):  # a cache without the record: all labelled
        diffs.append("labelled frames")
    return diffs


def _older_limit_hint(old: C.CacheSpec, new: C.CacheSpec) -> str:
    n = old.n_frames
    if n < new.n_frames and old.frame_ids == new.frame_ids[:n]:
        return (f"; it holds only the first {n} of these {new.n_frames} frames (made with --limit by a version "
                "whose caches could not grow, or the dataset gained frames)")
    return ""


def open_or_create(path: Path, spec: C.CacheSpec, overwrite: bool, compression: str = C.DEFAULT_COMPRESSION):
    """Create the cache atomically (temporary folder + rename) or reopen a compatible one."""
    path = Path(path)
    if overwrite and path.exists():
        if not (path / "zarr.json").is_file():
            raise C.CacheError(f"{path}: exists and is not a cache; refusing to overwrite it")
        shutil.rmtree(path)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            C.create_cache(tmp, spec, compression=compression)
            os.rename(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not path.exists():
                raise C.CacheError(f"{path}: cannot create cache ({exc.strerror or exc})") from None
            # another shard created it first: fall through and check compatibility
    try:
        root, old = C.open_cache(path, mode="r+")
        C.check_metadata(path)  # a consolidated cache reads the copies: a damaged file shows only when written
    except C.CacheError as exc:
        raise C.CacheError(f"{exc}; use --overwrite to start over") from None
    diffs = _identity_mismatch(old, spec)
    if diffs:
        raise C.CacheError(
            f"{path}: was made with a different {', '.join(diffs)} "
            f"(cache: {old.provenance.model}/{old.provenance.dataset}){_older_limit_hint(old, spec)}; "
            "refusing to continue it (use another --cache or --overwrite)"
        )
    return root, old
