"""What a pass that reads a few pixels of a frame composes (the anomaly pixels, for the first
pass of the two-pass exact plan, :mod:`analyze.plan.passes`).

Every scorer but SML scores a pixel from that pixel's class scores alone, so the fused passes of
:mod:`analyze.compose.frame_scores` compose and score only the tiles that hold a pixel read,
with the same bits there; SML's smoothing reads its neighbours, so the pixels read widen by its
reach (:func:`compose_mask`). A scorer plugin that reads the whole frame needs it whole.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from analyze.scorers import sml
from analyze.scorers.pixel import MapScorer
from analyze.scorers.registry import Scorer


def compose_mask(pixels: np.ndarray | None, scorers: Sequence[Scorer]) -> np.ndarray | None:
    """The pixels to compose so that ``pixels`` ((H, W) bool) score as in the whole frame:
    ``pixels`` widened by the reach of SML's smoothing (:func:`analyze.scorers.sml.reach`, the
    largest of the SML scorers, in rows and columns), whose score depends on its neighbours';
    None (the whole frame) for ``pixels`` None or a plugin that reads the whole frame. Every
    other scorer is pixelwise."""
    if pixels is None or any(s.plugin is not None and not s.plugin.pixelwise for s in scorers):
        return None
    out = np.asarray(pixels, bool)
    far = max((sml.reach(s.kwargs["width"], s.kwargs["iterations"], s.kwargs["dilation"])
               for s in scorers if s.base == "sml"), default=0)
    for axis in (0, 1) if far else ():
        n = out.shape[axis]
        ends = np.concatenate([np.zeros_like(out.take([0], axis), np.int64), np.cumsum(out, axis)], axis)
        i = np.arange(n)  # a wanted pixel within far along the axis: ends[i + far + 1] - ends[i - far] > 0
        out = ends.take(np.minimum(i + far + 1, n), axis) - ends.take(np.maximum(i - far, 0), axis) > 0
    return out


def read_cols(pixels: np.ndarray | None, rows: slice) -> slice | None:
    """The columns to score in ``rows``: from the first to the last that holds a pixel to compose
    (every column when ``pixels`` is None); None when no pixel of these rows is."""
    if pixels is None:
        return slice(None)
    at = np.flatnonzero(pixels[rows].any(axis=0))
    return slice(int(at[0]), int(at[-1]) + 1) if at.size else None


def blank_sides(m: MapScorer, rows: slice, cols: slice) -> None:
    """Blank the columns of ``rows`` left and right of ``cols`` (:meth:`MapScorer.blank`)."""
    if cols.start:
        m.blank(rows, slice(None, cols.start))
    if cols.stop is not None:
        m.blank(rows, slice(cols.stop, None))
