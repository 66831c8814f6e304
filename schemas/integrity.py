"""Integrity of a cache: every done frame has all its data chunks, and every chunk decodes.

zarr returns the fill value for a chunk that does not exist, without a word: a logits chunk
lost in a copy (rsync, an object-store sync) reads as all-zero logits, a labels chunk as an
all-void frame. The writer therefore stores every chunk of a frame, empty ones included,
before it sets ``done[i]`` (:func:`schemas.cache.write_chunk`), so that for a done frame a
missing chunk always means lost data. Two checks follow:

* :func:`missing_chunks` lists each data array's stored chunk keys (one listing per array,
  for local folders and fsspec stores alike; no value is read) and reports the done frames
  whose chunks are absent. ``analyze score``, ``analyze temperature --fit`` and ``analyze
  maps`` run it before reading any frame; ``extract run`` runs it to extract such frames again.
* :func:`static_problems` compares the small arrays written at creation (sizes, crop tables)
  with the values the attributes imply; a lost chunk there reads as zeros.
* :func:`corrupt_chunks` reads every stored chunk (crc32c, ``analyze inspect --verify``).

Each problem names the array and the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import zarr
from zarr.core.sync import sync

from schemas.cache import FLIP_ARRAYS, CacheSpec, done_mask, read_error_reason, static_values
from schemas.cache.store import array

#: per-frame data arrays of each cache kind and what their leading chunk index counts
DATA_ARRAYS: dict[str, tuple[tuple[str, str], ...]] = {
    "pixel": (("labels", "frame"), ("thumbnails", "frame"), ("logits", "frame")),
    "query": (("labels", "frame"), ("thumbnails", "frame"), ("class_logits", "crop"), ("mask_logits", "crop")),
}


def data_arrays(spec: CacheSpec) -> tuple[tuple[str, str], ...]:
    """The per-frame data arrays of ``spec``: :data:`DATA_ARRAYS` of its kind, and the flipped
    pass's arrays when it has one (``hflip``)."""
    base = DATA_ARRAYS[spec.kind]
    if not spec.hflip:
        return base
    return base + tuple((a.name, dict(base)[a.flip_of]) for a in FLIP_ARRAYS
                        if spec.kind in a.kinds and a.flip_of is not None)  # every flipped array has flip_of


@dataclass(frozen=True)
class ChunkProblem:
    """One missing, unreadable or altered chunk (``frame`` is None for the static arrays)."""

    array: str
    chunk: int
    frame: int | None
    frame_id: str | None
    problem: str

    def line(self) -> str:
        where = f"frame {self.frame_id} (index {self.frame})" if self.frame is not None else "whole array"
        return f"array {self.array!r}, {where}: {self.problem}"


def frame_chunks(spec: CacheSpec, array: str, frame: int) -> range:
    """Leading chunk indices of ``array`` that hold ``frame`` (one frame, or its crops)."""
    unit = dict(data_arrays(spec))[array]
    if unit == "frame":
        return range(frame, frame + 1)
    offsets = spec.crop_offsets()
    return range(int(offsets[frame]), int(offsets[frame + 1]))


def _chunk_frame(spec: CacheSpec, array: str) -> np.ndarray:
    """Frame index of each leading chunk index of a data array."""
    if dict(data_arrays(spec))[array] == "frame":
        return np.arange(spec.n_frames)
    return np.repeat(np.arange(spec.n_frames), np.diff(spec.crop_offsets()))


def _chunk_key(arr: zarr.Array, index: int) -> str:
    coords = (index,) + (0,) * (arr.ndim - 1)  # every per-frame array has one chunk along its other axes
    return f"{arr.store_path.path}/{arr.metadata.encode_chunk_key(coords)}"


async def _list(store, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


def stored_chunks(arr: zarr.Array) -> np.ndarray:
    """Bool per leading chunk index: is that chunk's key in the store (one listing, no reads)."""
    keys = sync(_list(arr.store_path.store, arr.store_path.path + "/"))
    n = arr.cdata_shape[0]
    return np.fromiter((_chunk_key(arr, j) in keys for j in range(n)), dtype=bool, count=n)


def missing_chunks(root: zarr.Group, spec: CacheSpec, frames: Iterable[int]) -> list[ChunkProblem]:
    """The data chunks of ``frames`` (done frames) that are not in the store."""
    frames = np.fromiter((int(i) for i in frames), dtype=np.int64)
    out = []
    for name, _ in data_arrays(spec):
        present = stored_chunks(array(root, name))
        for i in frames:
            for j in frame_chunks(spec, name, int(i)):
                if not present[j]:
                    out.append(ChunkProblem(name, j, int(i), spec.frame_ids[i], "chunk missing although the frame "
                                            "is done (lost in a copy?)"))
    return sorted(out, key=lambda p: (p.frame, p.array, p.chunk))


def static_problems(root: zarr.Group, spec: CacheSpec) -> list[ChunkProblem]:
    """Static arrays whose stored values differ from what the attributes imply."""
    out = []
    for name, expected in static_values(spec).items():
        try:
            ok = np.array_equal(np.asarray(array(root, name)[...]), expected)
            problem = "differs from the cache attributes (chunk lost or altered)"
        except (ValueError, RuntimeError, OSError) as exc:
            ok, problem = False, f"cannot read its chunk ({read_error_reason(exc)})"
        if not ok:
            out.append(ChunkProblem(name, 0, None, None, problem))
    return out


def corrupt_chunks(root: zarr.Group, spec: CacheSpec) -> list[ChunkProblem]:
    """Read every stored chunk of every per-frame array; report those that do not decode."""
    out = []
    names = [name for name, _ in data_arrays(spec)] + ["done"]
    for name in names:
        arr = array(root, name)
        present = stored_chunks(arr)
        owner = _chunk_frame(spec, name) if name != "done" else np.arange(spec.n_frames)
        step = arr.chunks[0]
        for j in np.flatnonzero(present):
            try:
                arr[j * step : (j + 1) * step]
            except Exception as exc:  # any failure to decode a stored chunk is damage, whatever the codec says
                i = int(owner[j])
                out.append(ChunkProblem(name, int(j), i, spec.frame_ids[i],
                                        f"corrupt chunk ({read_error_reason(exc)})"))
    return out


def check_frames(root: zarr.Group, spec: CacheSpec, frames: Iterable[int]) -> list[ChunkProblem]:
    """Everything a reader of ``frames`` must know before reading them: static arrays that
    disagree with the attributes, and missing data chunks of these (done) frames."""
    return static_problems(root, spec) + missing_chunks(root, spec, frames)


def prepare_resume(root: zarr.Group, spec: CacheSpec, frames: Iterable[int]) -> tuple[np.ndarray, list[str]]:
    """Before an extraction run over ``frames``: rewrite the static arrays that lost their chunk
    (from the attributes), and clear ``done`` of the done frames among ``frames`` that lack a
    chunk so that the run extracts them again. Returns (done mask, one note per repair)."""
    notes = []
    for p in static_problems(root, spec):
        notes.append(f"{p.line()}; rewriting it from the cache attributes")
        array(root, p.array).with_config({"write_empty_chunks": True})[...] = static_values(spec)[p.array]
    done = done_mask(root)  # a corrupt chunk: CacheError naming the cache and the array
    # a missing chunk always names its frame (only static problems have none)
    lost = sorted({p.frame for p in missing_chunks(root, spec, [i for i in frames if done[i]]) if p.frame is not None})
    if lost:
        notes.append(f"{len(lost)} done frame(s) lack chunks (e.g. {', '.join(spec.frame_ids[i] for i in lost[:3])}); "
                     "extracting them again")
        for i in lost:
            array(root, "done")[i] = False  # before any chunk is rewritten: never done with a half-written frame
            done[i] = False
    return done, notes


def describe(problems: list[ChunkProblem], limit: int = 3) -> str:
    """The first ``limit`` problems on one line, and how many more there are."""
    text = "; ".join(p.line() for p in problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")
