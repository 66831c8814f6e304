"""The on-disk cache format: a versioned, frozen description, creation, validation, access.

A cache is one Zarr v3 group per (model, dataset). Its root attributes are described by the
JSON Schema ``schemas/cache_attrs.schema.json`` and mirrored by :class:`CacheSpec`; its
arrays by :data:`ARRAYS`. Everything that depends only on the dataset and the model
configuration (frame sizes, window geometry) is written when the cache is created; the
extractor then writes, per frame, only chunks that belong to that frame (one frame or one
crop per chunk), every one of them even when it equals the fill value, and flips
``done[i]`` last (so a done frame always has all its chunks: :mod:`schemas.integrity`). Several writers (shards) can therefore fill
one cache without touching each other's chunks.

Ragged frame sizes are padded to the largest frame; ``sizes``/``logit_sizes`` say how much
of each padded slot is real. Labels are padded with 255 (void).

``labelled`` says which frames have a label (a benchmark's test images have none): the label
of an unlabelled frame is void (255) everywhere and no metric ever sees the frame. Caches
written before the attribute existed have no ``labelled``: every frame is labelled.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from schemas.errors import DataError
from schemas.windows import FrameWindows, frame_windows

SCHEMA_VERSION = 1
KINDS = ("pixel", "query")
LABEL_KINDS = ("anomaly", "semantic")
THUMB_LONG_SIDE = 256
ATTRS_SCHEMA_PATH = Path(__file__).with_name("cache_attrs.schema.json")


class CacheError(DataError):
    """A cache is missing, malformed or incompatible (the message names the path)."""


@dataclass(frozen=True)
class ArraySpec:
    """One array of the format: dims, dtype, per-chunk extent (``None`` = whole axis)."""

    name: str
    kinds: tuple[str, ...]
    dims: tuple[str, ...]
    dtype: str
    chunk: tuple[int | None, ...]
    doc: str


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("labels", KINDS, ("frame", "y", "x"), "uint8", (1, None, None),
              "canonical labels at original resolution, padded with 255"),
    ArraySpec("sizes", KINDS, ("frame", "hw"), "int32", (None, None), "original (H, W) of each frame"),
    ArraySpec("done", KINDS, ("frame",), "bool", (1,), "frame completely written"),
    ArraySpec("thumbnails", KINDS, ("frame", "ty", "tx", "rgb"), "uint8", (1, None, None, None),
              f"RGB thumbnail, long side {THUMB_LONG_SIDE}, padded with 0"),
    ArraySpec("logits", ("pixel",), ("frame", "class", "y", "x"), "float16", (1, None, None, None),
              "per-pixel class logits at model resolution (void channel kept; see void_channel)"),
    ArraySpec("logit_sizes", ("pixel",), ("frame", "hw"), "int32", (None, None),
              "(h, w) of the valid part of logits[frame]"),
    ArraySpec("class_logits", ("query",), ("crop", "query", "class"), "float32", (1, None, None),
              "per-query class logits, K + 1 (last = no-object)"),
    ArraySpec("mask_logits", ("query",), ("crop", "query", "y", "x"), "float16", (1, None, None, None),
              "per-query mask logits at the mask resolution of a crop"),
    ArraySpec("crop_frame", ("query",), ("crop",), "int32", (None,), "frame index of each crop"),
    ArraySpec("crop_start", ("query",), ("crop",), "int32", (None,), "start along the long side of the resized frame"),
    ArraySpec("crop_end", ("query",), ("crop",), "int32", (None,), "end (exclusive) along the long side"),
    ArraySpec("resized_sizes", ("query",), ("frame", "hw"), "int32", (None, None),
              "(H, W) of the frame after scaling its short side to the crop size"),
    ArraySpec("frame_crop_offset", ("query",), ("frame1",), "int32", (None,),
              "crops of frame i are frame_crop_offset[i]:frame_crop_offset[i+1]"),
)


def arrays_for(kind: str) -> tuple[ArraySpec, ...]:
    return tuple(a for a in ARRAYS if kind in a.kinds)


#: Chunk compression presets (``extract run --compression``), each followed by a crc32c
#: checksum so that ``analyze inspect --verify`` detects corruption. Measured on the demo's
#: fp16 ERFNet logits, one thread (README "Cache format"): zstd3 1.43x at 91 MiB/s, zstd1
#: 1.37x at 186 MiB/s, lz4 1.25x at 588 MiB/s; byte shuffle beats bit shuffle and no shuffle.
COMPRESSION = {
    "zstd3": dict(cname="zstd", clevel=3, shuffle="shuffle"),
    "zstd1": dict(cname="zstd", clevel=1, shuffle="shuffle"),
    "lz4": dict(cname="lz4", clevel=5, shuffle="shuffle"),
    "none": None,
}
DEFAULT_COMPRESSION = "zstd3"


def default_compressors(compression: str = DEFAULT_COMPRESSION) -> list:
    """The codec chain of a preset of :data:`COMPRESSION` (Blosc + crc32c, or crc32c alone)."""
    if compression not in COMPRESSION:
        raise CacheError(f"unknown compression {compression!r}; valid: {', '.join(COMPRESSION)}")
    blosc = COMPRESSION[compression]
    return ([BloscCodec(**blosc)] if blosc else []) + [Crc32cCodec()]


def thumbnail_size(height: int, width: int, long_side: int = THUMB_LONG_SIDE) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class Provenance:
    """Where the numbers in a cache come from."""

    model: str
    model_config: Mapping[str, Any]
    checkpoint_sha256: str
    dataset: str
    manifest_digest: str
    preprocessing: Mapping[str, Any]
    versions: Mapping[str, str]
    device: str
    dtype: str
    created: str
    # the checkpoint's file name (caches written before it was recorded have None); names
    # the run in results (schemas.results.default_run), not part of the identity: renaming
    # the file neither blocks resuming nor changes the cache digest
    checkpoint_file: str | None = None

    def identity(self) -> dict:
        """The fields that must agree for a run to continue an existing cache."""
        return {
            "model": self.model,
            "model_config": dict(self.model_config),
            "checkpoint_sha256": self.checkpoint_sha256,
            "dataset": self.dataset,
            "manifest_digest": self.manifest_digest,
            "preprocessing": dict(self.preprocessing),
        }


@dataclass(frozen=True)
class CacheSpec:
    """Frozen description of one cache (the root attributes)."""

    kind: str
    label_kind: str
    frame_ids: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    provenance: Provenance
    n_classes: int  # K: semantic classes (void channel / no-object not counted)
    schema_version: int = SCHEMA_VERSION
    # pixel caches
    n_channels: int | None = None  # channels stored in logits (ERFNet: 20)
    void_channel: int | None = None
    logit_sizes: tuple[tuple[int, int], ...] | None = None
    # query caches
    crop_size: int | None = None
    n_queries: int | None = None
    mask_size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    labelled: tuple[bool, ...] | None = None  # per frame; None (absent in older caches): all labelled

    def __post_init__(self):
        parse_kind(self.kind)
        if self.label_kind not in LABEL_KINDS:
            raise CacheError(f"label_kind must be one of {LABEL_KINDS}, got {self.label_kind!r}")
        if len(self.frame_ids) != len(self.sizes):
            raise CacheError("frame_ids and sizes differ in length")
        if len(set(self.frame_ids)) != len(self.frame_ids):
            raise CacheError("frame ids are not unique")
        if self.labelled is not None and len(self.labelled) != len(self.frame_ids):
            raise CacheError("labelled and frame_ids differ in length")
        if self.kind == "pixel":
            if self.n_channels is None or self.logit_sizes is None or len(self.logit_sizes) != len(self.sizes):
                raise CacheError("pixel cache needs n_channels and one logit size per frame")
        else:
            if not (self.crop_size and self.n_queries and self.mask_size):
                raise CacheError("query cache needs crop_size, n_queries and mask_size")

    @property
    def n_frames(self) -> int:
        return len(self.frame_ids)

    @property
    def labelled_mask(self) -> np.ndarray:
        """(F,) bool: which frames have a label (all, when the cache does not say)."""
        if self.labelled is None:
            return np.ones(self.n_frames, dtype=bool)
        return np.asarray(self.labelled, dtype=bool).reshape(self.n_frames)

    @property
    def label_shape(self) -> tuple[int, int]:
        return max(h for h, _ in self.sizes), max(w for _, w in self.sizes)

    @property
    def thumb_shape(self) -> tuple[int, int]:
        ts = [thumbnail_size(h, w) for h, w in self.sizes]
        return max(t[0] for t in ts), max(t[1] for t in ts)

    @property
    def logit_shape(self) -> tuple[int, int]:
        return max(h for h, _ in self.logit_sizes), max(w for _, w in self.logit_sizes)

    def windows(self, i: int) -> FrameWindows:
        h, w = self.sizes[i]
        return frame_windows(h, w, self.crop_size)

    def crop_offsets(self) -> np.ndarray:
        """Crops of frame i are ``crop_offsets()[i]:crop_offsets()[i + 1]`` (F + 1 int32)."""
        return self._crop_offsets.copy()

    @cached_property
    def _crop_offsets(self) -> np.ndarray:  # computed once per spec: every frame read needs it
        counts = [self.windows(i).n_crops for i in range(self.n_frames)]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)

    @property
    def n_crops(self) -> int:
        return int(self.crop_offsets()[-1])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frame_ids"] = list(self.frame_ids)
        d["sizes"] = [list(s) for s in self.sizes]
        if self.logit_sizes is not None:
            d["logit_sizes"] = [list(s) for s in self.logit_sizes]
        d["provenance"] = json.loads(json.dumps(asdict(self.provenance)))
        d["extra"] = dict(self.extra)
        if self.labelled is None:
            del d["labelled"]  # the format of caches written before the attribute existed
        else:
            d["labelled"] = [bool(v) for v in self.labelled]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CacheSpec":
        d = dict(d)
        parse_schema_version(d.get("schema_version"))
        validate_attrs(d)
        prov = Provenance(**d.pop("provenance"))
        d["frame_ids"] = tuple(d["frame_ids"])
        d["sizes"] = tuple(tuple(int(v) for v in s) for s in d["sizes"])
        if d.get("logit_sizes") is not None:
            d["logit_sizes"] = tuple(tuple(int(v) for v in s) for s in d["logit_sizes"])
        if d.get("labelled") is not None:
            d["labelled"] = tuple(bool(v) for v in d["labelled"])
        return cls(provenance=prov, **d)


def parse_kind(kind: str) -> str:
    if kind not in KINDS:
        raise CacheError(f"cache kind must be one of {KINDS}, got {kind!r}")
    return kind


def parse_schema_version(version: Any) -> int:
    if version != SCHEMA_VERSION:
        raise CacheError(
            f"cache schema_version {version!r} is not supported (this tool reads version {SCHEMA_VERSION})"
        )
    return version


def validate_attrs(attrs: Mapping[str, Any]) -> None:
    """Validate root attributes against the JSON Schema (raises CacheError)."""
    import jsonschema

    schema = json.loads(ATTRS_SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(dict(attrs), schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise CacheError(f"cache attributes invalid at {where}: {exc.message}") from None


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
        shapes |= {"logits": (F, spec.n_channels, h, w), "logit_sizes": (F, 2)}
    else:
        C, Q, m = spec.n_crops, spec.n_queries, spec.mask_size
        shapes |= {
            "class_logits": (C, Q, spec.n_classes + 1),
            "mask_logits": (C, Q, m, m),
            "crop_frame": (C,),
            "crop_start": (C,),
            "crop_end": (C,),
            "resized_sizes": (F, 2),
            "frame_crop_offset": (F + 1,),
        }
    shape = shapes[a.name]
    chunks = tuple(max(1, s) if c is None else c for s, c in zip(shape, a.chunk))
    return shape, chunks


def _fill_value(a: ArraySpec):
    return {"labels": 255, "done": False}.get(a.name, 0)


def _open_store(path_or_url: str | Path, mode: str, storage_options: Mapping | None = None):
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
    for a in arrays_for(spec.kind):
        shape, chunks = _shape_and_chunks(spec, a)
        compressors = default_compressors(compression) if a.dtype != "bool" else [Crc32cCodec()]
        root.create_array(
            a.name, shape=shape, chunks=chunks, dtype=a.dtype, fill_value=_fill_value(a),
            compressors=compressors, dimension_names=a.dims,
        )
    for name, value in static_values(spec).items():
        root[name].with_config({"write_empty_chunks": True})[...] = value
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
    for a in arrays_for(spec.kind):
        if a.name not in present:
            raise CacheError(f"{where}: array {a.name!r} is missing")
        arr = root[a.name]
        shape, chunks = _shape_and_chunks(spec, a)
        if str(arr.dtype) != a.dtype:
            raise CacheError(f"{where}: array {a.name!r} has dtype {arr.dtype}, expected {a.dtype}")
        if tuple(arr.shape) != shape:
            raise CacheError(f"{where}: array {a.name!r} has shape {tuple(arr.shape)}, expected {shape}")
        if tuple(arr.chunks) != chunks:
            raise CacheError(f"{where}: array {a.name!r} has chunks {tuple(arr.chunks)}, expected {chunks}")
    return spec


def open_cache(path_or_url: str | Path, mode: str = "r", storage_options: Mapping | None = None,
               validate: bool = True) -> tuple[zarr.Group, CacheSpec]:
    """Open a cache by local path or fsspec URL and return (group, spec)."""
    if storage_options is None and "://" not in str(path_or_url) and not Path(path_or_url).exists():
        raise CacheError(f"{path_or_url}: no cache found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        root = _open_store(path_or_url, mode, storage_options)
    spec = validate_cache(root, str(path_or_url)) if validate else read_spec(root, str(path_or_url))
    return root, spec


def consolidate(path: str | Path) -> None:
    """Consolidate metadata (done last, after every writer has finished)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def done_mask(root: zarr.Group) -> np.ndarray:
    return np.asarray(root["done"][:], dtype=bool)


# ---- per-frame access (shared by the extractor's writer and the analysis) ----------------

def write_chunk(arr: zarr.Array, i: int, value: np.ndarray) -> None:
    """``arr[i] = value`` for an array chunked one index at a time along axis 0, always stored.

    The chunk is stored even when it equals the fill value (an all-void label frame), which
    zarr would otherwise delete: every done frame then has every chunk, so a missing chunk
    always means lost data (:mod:`schemas.integrity`). Speed: zarr runs every ``arr[i] =
    value`` on its single event-loop thread, and there, per 20 MiB logits chunk, copies
    ``value`` into a new chunk (``value`` lacks the chunk's leading axis) and compares it with
    the fill value element by element: ~40 ms of serial work that capped all writer threads
    together at ~20 frames/s. Here ``value`` gets the chunk's shape in the calling thread and
    the emptiness test is skipped.
    """
    value = np.ascontiguousarray(value, dtype=arr.dtype)[None]
    arr.with_config({"write_empty_chunks": True})[i : i + 1] = value


def write_frame_common(root: zarr.Group, spec: CacheSpec, i: int, label: np.ndarray, thumbnail: np.ndarray) -> None:
    h, w = spec.sizes[i]
    if label.shape != (h, w):
        raise CacheError(f"frame {spec.frame_ids[i]}: label shape {label.shape} != size {(h, w)}")
    if not spec.labelled_mask[i] and not (label == 255).all():
        raise CacheError(f"frame {spec.frame_ids[i]}: is unlabelled but its label is not void (255) everywhere")
    H, W = spec.label_shape
    padded = np.full((H, W), 255, dtype=np.uint8)
    padded[:h, :w] = label
    write_chunk(root["labels"], i, padded)
    th, tw = spec.thumb_shape
    tpad = np.zeros((th, tw, 3), dtype=np.uint8)
    tpad[: thumbnail.shape[0], : thumbnail.shape[1]] = thumbnail
    write_chunk(root["thumbnails"], i, tpad)


def write_frame_pixel(root: zarr.Group, spec: CacheSpec, i: int, logits: np.ndarray) -> None:
    """``logits``: (C, h, w) at the frame's logit size."""
    h, w = spec.logit_sizes[i]
    if logits.shape != (spec.n_channels, h, w):
        raise CacheError(f"frame {spec.frame_ids[i]}: logits shape {logits.shape} != {(spec.n_channels, h, w)}")
    H, W = spec.logit_shape
    if (h, w) != (H, W):
        padded = np.zeros((spec.n_channels, H, W), dtype=np.float16)
        padded[:, :h, :w] = logits
        logits = padded
    write_chunk(root["logits"], i, logits)


def write_frame_query(root: zarr.Group, spec: CacheSpec, i: int, class_logits: np.ndarray, mask_logits: np.ndarray) -> None:
    """``class_logits``: (n, Q, K+1); ``mask_logits``: (n, Q, m, m) for the n crops of frame i."""
    a, b = (int(v) for v in spec.crop_offsets()[i : i + 2])
    if class_logits.shape != (b - a, spec.n_queries, spec.n_classes + 1):
        raise CacheError(f"frame {spec.frame_ids[i]}: class_logits shape {class_logits.shape} unexpected")
    if mask_logits.shape != (b - a, spec.n_queries, spec.mask_size, spec.mask_size):
        raise CacheError(f"frame {spec.frame_ids[i]}: mask_logits shape {mask_logits.shape} unexpected")
    for j in range(b - a):
        write_chunk(root["class_logits"], a + j, class_logits[j])
        write_chunk(root["mask_logits"], a + j, mask_logits[j])


def mark_done(root: zarr.Group, i: int) -> None:
    root["done"][i] = True


def read_error_reason(exc: BaseException) -> str:
    """Why a chunk could not be read, in a few words (the crc32c codec's message is long)."""
    text = str(exc)
    if isinstance(exc, ValueError) and "checksum" in text:
        return "crc32c checksum mismatch: the chunk's bytes changed on disk"
    return f"{type(exc).__name__}: {text}"


def _read(root: zarr.Group, spec: CacheSpec, name: str, i: int, selection) -> np.ndarray:
    """``root[name][selection]`` for frame ``i``; a chunk that cannot be decoded (crc32c
    mismatch, truncated file, storage error) raises CacheError naming the array and frame."""
    try:
        return np.asarray(root[name][selection])
    except (ValueError, RuntimeError, OSError) as exc:
        raise CacheError(f"array {name!r}, frame {spec.frame_ids[i]} (index {i}): cannot read its chunk "
                         f"({read_error_reason(exc)}); `analyze inspect --verify` lists every damaged chunk") from None


def read_label(root: zarr.Group, spec: CacheSpec, i: int) -> np.ndarray:
    h, w = spec.sizes[i]
    return _read(root, spec, "labels", i, (i, slice(0, h), slice(0, w)))


def unlabelled_not_void(root: zarr.Group, spec: CacheSpec) -> list[str]:
    """Ids of unlabelled frames whose stored label is not void (255) everywhere (should be none)."""
    return [spec.frame_ids[i] for i in np.flatnonzero(~spec.labelled_mask)
            if not (np.asarray(root["labels"][i]) == 255).all()]


def read_thumbnail(root: zarr.Group, spec: CacheSpec, i: int) -> np.ndarray:
    th, tw = thumbnail_size(*spec.sizes[i])
    return _read(root, spec, "thumbnails", i, (i, slice(0, th), slice(0, tw)))


def read_pixel_logits(root: zarr.Group, spec: CacheSpec, i: int) -> np.ndarray:
    h, w = spec.logit_sizes[i]
    return _read(root, spec, "logits", i, (i, slice(None), slice(0, h), slice(0, w)))


def read_query_outputs(root: zarr.Group, spec: CacheSpec, i: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = (int(v) for v in spec.crop_offsets()[i : i + 2])
    return (_read(root, spec, "class_logits", i, slice(a, b)), _read(root, spec, "mask_logits", i, slice(a, b)))


def cache_digest(spec: CacheSpec) -> str:
    """Short digest of a cache's identity (provenance + frames), stored in results rows."""
    import hashlib

    payload = json.dumps({"prov": spec.provenance.identity(), "ids": list(spec.frame_ids)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def mask_size_for(crop: int, patch: int) -> int:
    """Mask-logit side: token grid times 2**num_upscale, num_upscale = max(1, log2(patch) - 2)."""
    n_up = max(1, int(math.log2(patch)) - 2)
    return (crop // patch) * 2**n_up
