"""What a cache is: the versioned, frozen description of its attributes and arrays.

:class:`CacheSpec` mirrors the root attributes (JSON Schema ``schemas/cache_attrs.schema.json``,
checked by :func:`validate_attrs`), :data:`ARRAYS` the arrays of each cache kind, and
:class:`Provenance` where the numbers come from (its identity decides whether a run may
continue a cache; :func:`cache_digest` names the cache in results rows).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, TypeVar

import numpy as np

from schemas.errors import DataError
from schemas.manifest import LABEL_KINDS
from schemas.inference import inference_windows, parse_inference
from schemas.windows import FrameWindows, frame_windows

SCHEMA_VERSION = 1
#: cache kinds: per-pixel logits (pixel models: ERFNet) or per-query class and mask logits
#: (mask models: EoMT); the label kinds (:data:`LABEL_KINDS`) are the datasets'
CACHE_KINDS = ("pixel", "query")
THUMB_LONG_SIDE = 256
ATTRS_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "cache_attrs.schema.json"


class CacheError(DataError):
    """A cache is missing, malformed or incompatible (the message names the path)."""


def read_error_reason(exc: BaseException) -> str:
    """Why a chunk could not be read, in a few words (the crc32c codec's message is long)."""
    text = str(exc)
    if isinstance(exc, ValueError) and "checksum" in text:
        return "crc32c checksum mismatch: the chunk's bytes changed on disk"
    return f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class ArraySpec:
    """One array of the format: dims, dtype, per-chunk extent (``None`` = whole axis)."""

    name: str
    kinds: tuple[str, ...]
    dims: tuple[str, ...]
    dtype: str
    chunk: tuple[int | None, ...]
    doc: str
    flip_of: str | None = None  # the array of the normal pass this one mirrors (caches with ``hflip``)


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("labels", CACHE_KINDS, ("frame", "y", "x"), "uint8", (1, None, None),
              "canonical labels at original resolution, padded with 255"),
    ArraySpec("sizes", CACHE_KINDS, ("frame", "hw"), "int32", (None, None), "original (H, W) of each frame"),
    ArraySpec("done", CACHE_KINDS, ("frame",), "bool", (1,), "frame completely written"),
    ArraySpec("thumbnails", CACHE_KINDS, ("frame", "ty", "tx", "rgb"), "uint8", (1, None, None, None),
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
#: the outputs of the horizontally flipped pass (``extract run --hflip``): the same arrays as the
#: normal pass, as the model gave them for the mirrored image (not flipped back)
HFLIP_SUFFIX = "_hflip"
FLIP_ARRAYS: tuple[ArraySpec, ...] = tuple(
    ArraySpec(a.name + HFLIP_SUFFIX, a.kinds, a.dims, a.dtype, a.chunk,
              f"{a.doc}, of the horizontally flipped image", flip_of=a.name)
    for a in ARRAYS if a.name in ("logits", "class_logits", "mask_logits")
)


def arrays_for(kind: str, hflip: bool = False) -> tuple[ArraySpec, ...]:
    """The arrays of a cache of ``kind``, with those of the flipped pass when ``hflip``."""
    return tuple(a for a in ARRAYS + (FLIP_ARRAYS if hflip else ()) if kind in a.kinds)


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


_T = TypeVar("_T")


def required(value: _T | None, field_name: str) -> _T:
    """``value`` of a field only one cache kind has (pixel: ``n_channels``, ``logit_sizes``;
    query: ``crop_size``, ``n_queries``, ``mask_size``: :meth:`CacheSpec.__post_init__` checks
    them); CacheError when it is absent."""
    if value is None:
        raise CacheError(f"the cache has no {field_name} (a field of the other cache kind)")
    return value


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
    # a flipped second pass is stored beside the outputs (``extract run --hflip``); absent = False
    hflip: bool = False
    # query caches of a model other than EoMT (Mask2Former): the semantic inference that composes
    # them (schemas.inference), each frame's model input size (H, W) and its mask logits' (h, w);
    # absent (None): EoMT's windows of crop_size and square masks of mask_size
    semantic_inference: str | None = None
    input_sizes: tuple[tuple[int, int], ...] | None = None
    mask_sizes: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self):
        try:
            parse_kind(self.kind)
        except ValueError as exc:
            raise CacheError(str(exc)) from None
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
            if not (self.n_queries and self.mask_size and (self.crop_size or self.semantic_inference)):
                raise CacheError("query cache needs crop_size (or a semantic_inference), n_queries and mask_size")
        self._check_inference()

    def _check_inference(self) -> None:
        if self.semantic_inference is None:
            if self.input_sizes is not None or self.mask_sizes is not None:
                raise CacheError("input_sizes and mask_sizes belong to a cache with a semantic_inference")
            return
        try:
            parse_inference(self.semantic_inference)
        except ValueError as exc:
            raise CacheError(str(exc)) from None
        if self.kind != "query":
            raise CacheError("semantic_inference belongs to a query cache")
        for name, sizes in (("input_sizes", self.input_sizes), ("mask_sizes", self.mask_sizes)):
            if sizes is None or len(sizes) != len(self.sizes):
                raise CacheError(f"a cache with semantic_inference needs one of {name} per frame")
        if max(max(hw) for hw in self.mask_sizes or ((0, 0),)) > (self.mask_size or 0):
            raise CacheError("mask_size must be at least the largest side of mask_sizes")

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
        sizes = required(self.logit_sizes, "logit_sizes")
        return max(h for h, _ in sizes), max(w for _, w in sizes)

    def windows(self, i: int) -> FrameWindows:
        h, w = self.sizes[i]
        if self.semantic_inference is not None:
            return inference_windows(self.semantic_inference, (h, w), required(self.input_sizes, "input_sizes")[i])
        return frame_windows(h, w, required(self.crop_size, "crop_size"))

    def mask_hw(self, i: int) -> tuple[int, int]:
        """(h, w) of the mask logits of frame ``i``'s crops."""
        if self.mask_sizes is not None:
            return self.mask_sizes[i]
        m = required(self.mask_size, "mask_size")
        return m, m

    @property
    def mask_shape(self) -> tuple[int, int]:
        """(h, w) of the stored mask logits: every frame's masks padded to the largest (EoMT: square)."""
        if self.mask_sizes is not None:
            return max(h for h, _ in self.mask_sizes), max(w for _, w in self.mask_sizes)
        m = required(self.mask_size, "mask_size")
        return m, m

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
        if not self.hflip:
            del d["hflip"]  # caches without a flipped pass keep the format they always had
        if self.labelled is None:
            del d["labelled"]  # the format of caches written before the attribute existed
        else:
            d["labelled"] = [bool(v) for v in self.labelled]
        if self.semantic_inference is None:  # EoMT caches keep the format they always had
            for k in ("semantic_inference", "input_sizes", "mask_sizes"):
                del d[k]
        else:
            d["input_sizes"] = [list(s) for s in self.input_sizes or ()]
            d["mask_sizes"] = [list(s) for s in self.mask_sizes or ()]
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
        for k in ("input_sizes", "mask_sizes"):
            if d.get(k) is not None:
                d[k] = tuple(tuple(int(v) for v in s) for s in d[k])
        return cls(provenance=prov, **d)


def parse_kind(kind: str) -> str:
    """``kind`` when it is a cache kind (:data:`CACHE_KINDS`), else ``ValueError``."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache kind must be one of {', '.join(CACHE_KINDS)}; got {kind!r}")
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


def output_settings(spec: CacheSpec) -> dict[str, Any]:
    """Every setting of an extraction that changes the stored outputs, besides the provenance's
    identity (model config, checkpoint, dataset content, preprocessing with the input size):
    the autocast precision (``dtype``), the flipped pass, and the stored output geometry (label
    sizes, logit sizes, crops, queries, mask size), and which frames are labelled."""
    return {"dtype": spec.provenance.dtype, "hflip": bool(spec.hflip), "sizes": [list(s) for s in spec.sizes],
            "logit_sizes": None if spec.logit_sizes is None else [list(s) for s in spec.logit_sizes],
            "crop_size": spec.crop_size, "n_queries": spec.n_queries, "mask_size": spec.mask_size,
            "n_channels": spec.n_channels, "labelled": [bool(v) for v in spec.labelled_mask]
            } | _inference_settings(spec)


def _inference_settings(spec: CacheSpec) -> dict[str, Any]:
    """The semantic inference and its sizes; nothing for EoMT and pixel caches (whose digests stay)."""
    if spec.semantic_inference is None:
        return {}
    return {"semantic_inference": spec.semantic_inference,
            "input_sizes": [list(s) for s in spec.input_sizes or ()],
            "mask_sizes": [list(s) for s in spec.mask_sizes or ()]}


def cache_digest(spec: CacheSpec) -> str:
    """Short digest of what a cache's outputs are (provenance identity, frames, and every
    setting that changes the stored outputs: :func:`output_settings`), stored in results rows,
    statistics and exported files. Two caches of one digest hold the same numbers (up to the
    device and library versions); a re-extraction with other settings has another digest, so
    its rows never pass for those of the old cache.

    Up to version 0.2.0 the digest left out :func:`output_settings`: rows and exports made then
    carry digests that no cache has now, and are refused beside new ones until made again."""
    payload = json.dumps({"prov": spec.provenance.identity(), "ids": list(spec.frame_ids),
                          "outputs": output_settings(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
