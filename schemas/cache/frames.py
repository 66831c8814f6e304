"""Per-frame access, shared by the extractor's writers and the analysis.

The extractor writes, per frame, only chunks that belong to that frame (one frame or one crop
per chunk), every one of them even when it equals the fill value, and flips ``done[i]`` last
(:func:`mark_done`), so a done frame always has all its chunks (:mod:`schemas.integrity`) and
several writers (shards) never touch each other's chunks. Reads name the array and frame of a
chunk that does not decode.
"""

from __future__ import annotations

import numpy as np
import zarr

from schemas.cache.spec import HFLIP_SUFFIX, CacheError, CacheSpec, read_error_reason, required, thumbnail_size
from schemas.cache.store import array

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
    write_chunk(array(root, "labels"), i, padded)
    th, tw = spec.thumb_shape
    tpad = np.zeros((th, tw, 3), dtype=np.uint8)
    tpad[: thumbnail.shape[0], : thumbnail.shape[1]] = thumbnail
    write_chunk(array(root, "thumbnails"), i, tpad)


def _array(name: str, flip: bool, spec: CacheSpec) -> str:
    if flip and not spec.hflip:
        raise CacheError(f"the cache has no flipped pass (array {name}{HFLIP_SUFFIX}); it was made without --hflip")
    return name + HFLIP_SUFFIX if flip else name


def write_frame_pixel(root: zarr.Group, spec: CacheSpec, i: int, logits: np.ndarray, flip: bool = False) -> None:
    """``logits``: (C, h, w) at the frame's logit size (``flip``: of the flipped pass)."""
    h, w = required(spec.logit_sizes, "logit_sizes")[i]
    c = required(spec.n_channels, "n_channels")
    if logits.shape != (c, h, w):
        raise CacheError(f"frame {spec.frame_ids[i]}: logits shape {logits.shape} != {(c, h, w)}")
    H, W = spec.logit_shape
    if (h, w) != (H, W):
        padded = np.zeros((c, H, W), dtype=np.float16)
        padded[:, :h, :w] = logits
        logits = padded
    write_chunk(array(root, _array("logits", flip, spec)), i, logits)


def write_frame_query(root: zarr.Group, spec: CacheSpec, i: int, class_logits: np.ndarray, mask_logits: np.ndarray,
                      flip: bool = False) -> None:
    """``class_logits``: (n, Q, K+1); ``mask_logits``: (n, Q, m, m) for the n crops of frame i
    (``flip``: of the flipped pass)."""
    a, b = (int(v) for v in spec.crop_offsets()[i : i + 2])
    if class_logits.shape != (b - a, spec.n_queries, spec.n_classes + 1):
        raise CacheError(f"frame {spec.frame_ids[i]}: class_logits shape {class_logits.shape} unexpected")
    if mask_logits.shape != (b - a, spec.n_queries, *spec.mask_hw(i)):
        raise CacheError(f"frame {spec.frame_ids[i]}: mask_logits shape {mask_logits.shape} unexpected "
                         f"(expected {(b - a, spec.n_queries, *spec.mask_hw(i))})")
    if spec.mask_hw(i) != spec.mask_shape:  # masks of several sizes (Mask2Former): top-left of the stored shape
        padded = np.zeros((b - a, required(spec.n_queries, "n_queries"), *spec.mask_shape), dtype=np.float16)
        padded[:, :, : mask_logits.shape[2], : mask_logits.shape[3]] = mask_logits
        mask_logits = padded
    cls_name, mask_name = _array("class_logits", flip, spec), _array("mask_logits", flip, spec)
    for j in range(b - a):
        write_chunk(array(root, cls_name), a + j, class_logits[j])
        write_chunk(array(root, mask_name), a + j, mask_logits[j])


def mark_done(root: zarr.Group, i: int) -> None:
    array(root, "done")[i] = True


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
            if not (np.asarray(array(root, "labels")[int(i)]) == 255).all()]


def read_thumbnail(root: zarr.Group, spec: CacheSpec, i: int) -> np.ndarray:
    th, tw = thumbnail_size(*spec.sizes[i])
    return _read(root, spec, "thumbnails", i, (i, slice(0, th), slice(0, tw)))


def read_pixel_logits(root: zarr.Group, spec: CacheSpec, i: int, flip: bool = False) -> np.ndarray:
    """(C, h, w) logits of frame ``i`` (``flip``: of the flipped pass, in the mirrored image's coordinates)."""
    h, w = required(spec.logit_sizes, "logit_sizes")[i]
    return _read(root, spec, _array("logits", flip, spec), i, (i, slice(None), slice(0, h), slice(0, w)))


def read_query_outputs(root: zarr.Group, spec: CacheSpec, i: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(class logits, mask logits) of the crops of frame ``i`` (``flip``: of the flipped pass, whose
    crops are the windows of the mirrored image)."""
    a, b = (int(v) for v in spec.crop_offsets()[i : i + 2])
    h, w = spec.mask_hw(i)
    masks = (slice(a, b),) if (h, w) == spec.mask_shape else (slice(a, b), slice(None), slice(0, h), slice(0, w))
    return (_read(root, spec, _array("class_logits", flip, spec), i, slice(a, b)),
            _read(root, spec, _array("mask_logits", flip, spec), i, masks))
