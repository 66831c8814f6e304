"""A cache on a store: creation with its static arrays, opening and validation, sizes.

Everything that depends only on the dataset and the model configuration (frame sizes, window
geometry) is written when the cache is created (:func:`create_cache`, :func:`static_values`);
:func:`open_cache` opens a local folder or an fsspec URL and checks every array against the
attributes (:func:`validate_cache`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from schemas.cache.codecs import DEFAULT_COMPRESSION, default_compressors
from schemas.cache.spec import ArraySpec, CacheError, CacheSpec, arrays_for, read_error_reason, required

#: the modes a cache is opened in (zarr.open_group's)
OpenMode = Literal["r", "r+", "a", "w", "w-"]


def array(root: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a cache's group (KeyError when absent, CacheError when a group)."""
    node = root[name]
    if not isinstance(node, zarr.Array):
        raise CacheError(f"{name!r} is a group, not an array")
    return node


def _shape_and_chunks(spec: CacheSpec, a: ArraySpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    F = spec.n_frames
    H, W = spec.label_shape
    shapes: dict[str, tuple[int, ...]] = {
        "labels": (F, H, W),
        "sizes": (F, 2),
        "done": (F,),
        "thumbnails": (F, *spec.thumb_shape, 3),
    }
    if spec.kind == "pixel":
        h, w = spec.logit_shape
        shapes |= {"logits": (F, required(spec.n_channels, "n_channels"), h, w), "logit_sizes": (F, 2)}
    else:
        C, Q = spec.n_crops, required(spec.n_queries, "n_queries")
        shapes |= {
            "class_logits": (C, Q, spec.n_classes + 1),
            "mask_logits": (C, Q, *spec.mask_shape),
            "crop_frame": (C,),
            "crop_start": (C,),
            "crop_end": (C,),
            "resized_sizes": (F, 2),
            "frame_crop_offset": (F + 1,),
        }
    shape = shapes[a.flip_of or a.name]
    chunks = tuple(max(1, s) if c is None else c for s, c in zip(shape, a.chunk))
    return shape, chunks


def _fill_value(a: ArraySpec):
    return {"labels": 255, "done": False}.get(a.name, 0)


def _open_store(path_or_url: str | os.PathLike[str], mode: OpenMode, storage_options: Mapping | None = None) -> zarr.Group:
    try:
        if storage_options:
            return zarr.open_group(str(path_or_url), mode=mode, storage_options=dict(storage_options))
        return zarr.open_group(str(path_or_url), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise CacheError(f"{path_or_url}: no cache found") from None
    except PermissionError as exc:
        raise CacheError(f"{path_or_url}: permission denied ({exc.strerror or exc})") from None


def create_cache(path: str | Path, spec: CacheSpec, overwrite: bool = False,
                 compression: str = DEFAULT_COMPRESSION) -> zarr.Group:
    """Create the group, every array, and the static arrays (sizes, geometry)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CacheError(f"{path}: already exists")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(path), mode="w")
    except PermissionError as exc:
        raise CacheError(f"{path}: cannot create cache ({exc.strerror or exc})") from None
    except OSError as exc:
        raise CacheError(f"{path}: cannot create cache ({exc.strerror or exc})") from None
    for a in arrays_for(spec.kind, spec.hflip):
        shape, chunks = _shape_and_chunks(spec, a)
        compressors = default_compressors(compression) if a.dtype != "bool" else [Crc32cCodec()]
        root.create_array(
            a.name, shape=shape, chunks=chunks, dtype=a.dtype, fill_value=_fill_value(a),
            compressors=compressors, dimension_names=a.dims,
        )
    for name, value in static_values(spec).items():
        array(root, name).with_config({"write_empty_chunks": True})[...] = value
    root.attrs.update(spec.to_dict())
    return root


def static_values(spec: CacheSpec) -> dict[str, np.ndarray]:
    """The arrays written once at creation, all derived from the attributes (sizes, geometry)."""
    out = {"sizes": np.asarray(spec.sizes, dtype=np.int32).reshape(-1, 2)}
    if spec.kind == "pixel":
        out["logit_sizes"] = np.asarray(spec.logit_sizes, dtype=np.int32).reshape(-1, 2)
        return out
    frame_of, starts, ends, resized = [], [], [], []
    for i in range(spec.n_frames):
        geom = spec.windows(i)
        resized.append(geom.resized)
        for win in geom.windows:
            frame_of.append(i)
            starts.append(win.start)
            ends.append(win.end)
    return out | {
        "crop_frame": np.asarray(frame_of, dtype=np.int32),
        "crop_start": np.asarray(starts, dtype=np.int32),
        "crop_end": np.asarray(ends, dtype=np.int32),
        "resized_sizes": np.asarray(resized, dtype=np.int32).reshape(-1, 2),
        "frame_crop_offset": spec.crop_offsets(),
    }


def read_spec(root: zarr.Group, where: str = "cache") -> CacheSpec:
    attrs = root.attrs.asdict()
    if "schema_version" not in attrs:
        raise CacheError(f"{where}: not a cache (no schema_version attribute)")
    try:
        return CacheSpec.from_dict(attrs)
    except CacheError as exc:
        raise CacheError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise CacheError(f"{where}: cache attributes invalid ({exc})") from None


def validate_cache(root: zarr.Group, where: str = "cache") -> CacheSpec:
    """Check attributes, and every array's presence, dtype, shape and chunks."""
    spec = read_spec(root, where)
    present = set(root.array_keys())
    for a in arrays_for(spec.kind, spec.hflip):
        if a.name not in present:
            raise CacheError(f"{where}: array {a.name!r} is missing")
        arr = array(root, a.name)
        shape, chunks = _shape_and_chunks(spec, a)
        if str(arr.dtype) != a.dtype:
            raise CacheError(f"{where}: array {a.name!r} has dtype {arr.dtype}, expected {a.dtype}")
        if tuple(arr.shape) != shape:
            raise CacheError(f"{where}: array {a.name!r} has shape {tuple(arr.shape)}, expected {shape}")
        if tuple(arr.chunks) != chunks:
            raise CacheError(f"{where}: array {a.name!r} has chunks {tuple(arr.chunks)}, expected {chunks}")
    return spec


def open_cache(path_or_url: str | os.PathLike[str], mode: OpenMode = "r", storage_options: Mapping | None = None,
               validate: bool = True) -> tuple[zarr.Group, CacheSpec]:
    """Open a cache by local path or fsspec URL and return (group, spec)."""
    if storage_options is None and "://" not in str(path_or_url) and not Path(path_or_url).exists():
        raise CacheError(f"{path_or_url}: no cache found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            root = _open_store(path_or_url, mode, storage_options)
        spec = validate_cache(root, str(path_or_url)) if validate else read_spec(root, str(path_or_url))
    except (ValueError, TypeError, KeyError) as exc:  # zarr's JSONDecodeError etc. name no file: find it
        if isinstance(exc, CacheError):
            raise
        check_metadata(path_or_url, storage_options)
        raise
    return root, spec


def check_metadata(path_or_url, storage_options: Mapping | None = None, arrays=None) -> None:
    """CacheError naming the first damaged metadata file of the cache (``zarr.json`` of the group
    or of an array: :func:`schemas.cache.metadata.metadata_problems`); ``arrays`` default to
    every folder of the cache."""
    from schemas.cache.metadata import metadata_problems

    problems = metadata_problems(path_or_url, arrays, storage_options)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CacheError(f"{path_or_url}: metadata file {problems[0]}{more}; the cache is damaged (copy it again, "
                         "or start over with `extract run --overwrite`)")


def consolidate(path: str | Path) -> None:
    """Consolidate metadata (done last, after every writer has finished)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(path))
    except (ValueError, TypeError, KeyError):  # a damaged zarr.json: name it
        check_metadata(path)
        raise


def done_mask(root: zarr.Group, where: str | None = None) -> np.ndarray:
    """The ``done`` flag of every frame; CacheError naming the cache (``where``, default the
    store) and the array when its chunk does not decode."""
    try:
        return np.asarray(array(root, "done")[:], dtype=bool)
    except (ValueError, RuntimeError, OSError) as exc:
        raise CacheError(f"{where or root.store_path}: array 'done': cannot read its chunk ({read_error_reason(exc)}); "
                         "the cache is damaged (copy it again, or start over with `extract run --overwrite`)") from None


def raw_bytes(root: zarr.Group, spec: CacheSpec) -> int:
    """Bytes of every array of the cache uncompressed (shape x item size)."""
    return sum(int(np.prod(array(root, a.name).shape)) * np.dtype(a.dtype).itemsize
               for a in arrays_for(spec.kind, spec.hflip))


def disk_bytes(path: str | Path) -> int:
    """Bytes of the files under a local cache folder (0 for a URL or a missing folder)."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
