"""Human summary and integrity check of a cache (``analyze inspect``)."""

from __future__ import annotations

import numpy as np
import zarr

from schemas import integrity
from schemas.cache import CacheSpec, disk_bytes, done_mask, metadata_problems, raw_bytes


def summary(root: zarr.Group, spec: CacheSpec, path: str) -> list[str]:
    """Lines describing a validated cache."""
    prov = spec.provenance
    done = done_mask(root, path)
    lines = [
        f"cache      {path}",
        f"kind       {spec.kind} (schema v{spec.schema_version})",
        f"model      {prov.model}  config {dict(prov.model_config)}",
        f"checkpoint sha256 {prov.checkpoint_sha256[:16]}...",
        f"dataset    {prov.dataset} ({spec.label_kind}), manifest {prov.manifest_digest[:12]}",
        f"frames     {int(done.sum())}/{spec.n_frames} done" + _unlabelled(spec),
        f"sizes      {sorted(set(spec.sizes))[:4]}{' ...' if len(set(spec.sizes)) > 4 else ''}",
        f"classes    K={spec.n_classes}" + (f", void channel {spec.void_channel}" if spec.void_channel is not None else ""),
    ]
    if spec.kind == "query" and spec.semantic_inference is not None:  # Mask2Former: one crop per frame
        lines.append(f"inference  {spec.semantic_inference}, {spec.n_queries} queries, masks up to "
                     f"{spec.mask_shape[0]}x{spec.mask_shape[1]}")
    elif spec.kind == "query":
        lines.append(f"windows    crop {spec.crop_size}, {spec.n_crops} crops, {spec.n_queries} queries, masks {spec.mask_size}^2")
    if spec.hflip:
        lines.append("flip pass  stored (extract run --hflip): the flip-averaged scorers can be scored")
    lines += [
        f"device     {prov.device}, dtype {prov.dtype}, created {prov.created}",
        f"versions   {', '.join(f'{k} {v}' for k, v in prov.versions.items())}",
    ]
    size = disk_bytes(path)
    if size:
        raw = raw_bytes(root, spec)
        lines.append(f"disk       {size / 2**20:.1f} MiB (uncompressed {raw / 2**20:.1f} MiB, ratio {raw / size:.2f}x)")
    return lines


def _unlabelled(spec: CacheSpec) -> str:
    n = int((~spec.labelled_mask).sum())
    return f", {n} unlabelled (never scored)" if n else ""


def verify(root: zarr.Group, spec: CacheSpec, path: str | None = None) -> list[str]:
    """Check the whole cache (:mod:`schemas.integrity`): every metadata file (``zarr.json``)
    parses and agrees with its consolidated copy (when ``path`` is given), the static arrays
    agree with the attributes, every done frame has all its data chunks, and every stored
    chunk decodes (crc32c rejects any changed byte).

    Returns one problem line per damaged metadata file (naming it) and per missing or damaged
    chunk (naming the array and the frame); empty when the cache is intact.
    """
    lines = [f"metadata file {p}" for p in metadata_problems(path)] if path is not None else []
    done = np.flatnonzero(done_mask(root, path))
    problems = integrity.static_problems(root, spec) + integrity.missing_chunks(root, spec, done)
    problems += integrity.corrupt_chunks(root, spec)
    return lines + [p.line() for p in problems]


__all__ = ["summary", "verify"]
