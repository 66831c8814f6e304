"""Where each EoMT crop lies in the resized frame, and the row runs of its upsampling taps.

Pure geometry of :class:`schemas.windows.FrameWindows` for :mod:`analyze.compose.queries`
and :mod:`analyze.compose.semantic`.
"""

from __future__ import annotations

import numpy as np
import torch

from schemas.windows import FrameWindows


def crop_region(geom: FrameWindows, j: int, r0: int, r1: int) -> tuple[slice, slice]:
    """Rows ``r0:r1`` of crop ``j`` as (row, column) slices of the resized frame."""
    w = geom.windows[j]
    if geom.portrait:
        return slice(w.start + r0, w.start + r1), slice(0, geom.tile[1])
    return slice(r0, r1), slice(w.start, w.end)


def crop_counts(geom: FrameWindows) -> torch.Tensor:
    """How many crops cover each pixel of the resized frame, shaped to broadcast on (K, Hr, Wr)."""
    long_side = max(geom.resized)
    counts = torch.zeros(long_side, dtype=torch.float32)
    for w in geom.windows:
        counts[w.start : w.end] += 1
    if (counts == 0).any():
        raise ValueError(f"windows {geom.windows} do not cover the resized frame {geom.resized}")
    return counts[:, None] if geom.portrait else counts[None, :]


def held_columns(geom: FrameWindows) -> list[int] | None:
    """Per crop of a landscape frame, how many of its leading columns the crops before it cover
    (they hold sums when it adds its own; its other columns are its alone so far); None where
    that part of a crop is not a prefix of it (no such windows are made, but then the sums start
    from zero, as :meth:`FrameComposer.resized_maps` always does)."""
    covered = np.zeros(geom.resized[1], bool)
    out = []
    for j in range(geom.n_crops):
        cols = crop_region(geom, j, 0, 1)[1]
        mine = covered[cols]
        held = int(mine.sum())
        if not mine[:held].all():
            return None
        out.append(held)
        covered[cols] = True
    return out


def shared_runs(counts: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of columns that more than one crop covers (``counts``:
    :func:`crop_counts` of a landscape frame); the other columns' sums are divided by 1."""
    more = np.concatenate([[False], counts.reshape(-1).cpu().numpy() > 1, [False]])
    edges = np.flatnonzero(np.diff(more.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def row_runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """``(start, stop, value)`` of each run of equal values of ``idx`` (1-D ints)."""
    cut = np.flatnonzero(np.diff(idx)) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [idx.size]])
    return [(int(a), int(b), int(idx[a])) for a, b in zip(starts, stops)]


def check_geometry(geom: FrameWindows) -> None:
    if min(geom.resized) != geom.crop:
        raise ValueError(f"resized frame {geom.resized}: short side is not the crop size {geom.crop}")
