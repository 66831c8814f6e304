"""The files of one export, frame by frame (:func:`analyze.export.submission.export_maps` orchestrates):
each frame's float64 map, the track's float16 transform fitted in one pass over every frame,
and each frame written as an HDF5 file atomically. Imports no CLI code.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analyze.metrics.f16_range import Float16Transform, LossCount, ScoreRange
from schemas import cache as C
from schemas.errors import DataError


class ExportError(DataError):
    """Bad cache content or output folder (the message names the file)."""


def write_hdf5(path: Path, value: np.ndarray, attrs: dict) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("value", data=value, compression="gzip", compression_opts=9)
        f.attrs.update(attrs)


def read_hdf5(path: Path) -> tuple[tuple, str, dict] | None:
    """(shape, dtype, attributes) of ``value`` in an HDF5 file; None when it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f["value"]
            return tuple(v.shape), str(v.dtype), {k: _python_value(a) for k, a in f.attrs.items()}
    except (OSError, KeyError):
        return None


def _python_value(a):
    """A numpy scalar read from an HDF5 attribute as the Python value it was written from."""
    return a.item() if isinstance(a, np.generic) else a


@dataclass(frozen=True)
class FrameMaps:
    """The float64 map of one scorer at one T, frame by frame (:func:`analyze.maps.write.frame_maps`)."""

    root: Any
    spec: C.CacheSpec
    chosen: Sequence[Any]
    t: float
    temp_target: str
    stats: Any
    name: str
    cache: Any

    def __call__(self, i: int) -> np.ndarray:
        from analyze.maps.write import frame_maps  # torch: imported when an export runs, not with the CLI

        value = frame_maps(self.root, self.spec, i, self.chosen, self.t, self.temp_target, self.stats)[self.name]
        if not np.isfinite(value).all():
            raise ExportError(f"{self.cache}: frame {self.spec.frame_ids[i]}: the map has NaN or Inf (check the cache "
                              "with `analyze inspect --verify`)")
        return value  # (H, W) float64


def fit_transform(maps: FrameMaps, label: str, progress: bool) -> tuple[Float16Transform, LossCount]:
    """The track's :class:`Float16Transform` (one pass over every frame) and what a plain cast loses."""
    from tqdm.auto import tqdm

    rng, plain = ScoreRange(), LossCount()
    for i in tqdm(range(maps.spec.n_frames), unit="frame", desc=f"{label} range", disable=not progress,
                  dynamic_ncols=True):
        value = maps(i)
        rng.update(value)
        with np.errstate(over="ignore"):
            plain.add(value, value.astype(np.float16))
    return rng.transform(), plain


def write_frames(maps: FrameMaps, paths: list[Path], complete: list[bool], transform: Float16Transform | None,
                  attrs: dict, label: str, progress: bool) -> tuple[int, LossCount]:
    """Write every frame not ``complete``, mapped by ``transform``: (files written, what float16 lost)."""
    from tqdm.auto import tqdm

    written, loss = 0, LossCount()
    if transform is None:  # every frame complete: nothing to write
        return written, loss
    with tqdm(total=len(paths), unit="frame", desc=label, disable=not progress, dynamic_ncols=True) as bar:
        bar.update(sum(complete))
        for i, fid in enumerate(maps.spec.frame_ids):
            if complete[i]:
                continue
            value = maps(i)
            v16 = to_float16(transform.apply(value), maps.cache, fid)
            loss.add(value, v16)
            write_atomic(paths[i], v16, attrs)
            written += 1
            bar.update(1)
    return written, loss


def to_float16(v16: np.ndarray, cache, fid: str) -> np.ndarray:
    """The float16 map (``Evaluation.save_output``); values outside float16 are an error (the
    transform keeps every score of the track inside, so this guards against a wrong fit)."""
    if not np.isfinite(v16).all():
        raise ExportError(f"{cache}: frame {fid}: scores beyond float16's range (|score| > 65504), which the "
                          "benchmark stores as float16")
    return v16


def write_atomic(path: Path, value: np.ndarray, attrs: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_hdf5(tmp, value, attrs)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
