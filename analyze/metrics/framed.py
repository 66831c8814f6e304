"""The ``exact`` protocol's state with every frame kept apart and sorted: ``analyze score``'s one pass.

:class:`FramedExactState` gives the numbers of :class:`~analyze.metrics.exact.ExactState` (the
same integer counts, so the same bits) and keeps what later steps of ``analyze score`` read
instead of composing every frame again: each frame's anomaly and in-distribution scores,
sorted, under the frame's index (and, with ``positions=True``, the flat pixel index of each
score). Sorting a frame once serves three readers: the frame's own AP (returned by
:meth:`FramedExactState.add`), the pooled counts (a walk through each frame's sorted scores,
no sort at ``compute``) and the bootstrap's per-frame histograms (a binary search per bin
edge, :mod:`analyze.bootstrap`); the positions give the component metrics the pixels above
any threshold (:mod:`analyze.components`). Memory: 8 bytes per score (float64), 12 with
positions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from analyze.metrics import kernels as K
from analyze.metrics import ranks
from analyze.metrics.common import split_frame
from analyze.metrics.counts import counts_from, exact_metrics
from analyze.metrics.exact import ExactState


class FrameSplit(NamedTuple):
    """One frame's non-void scores, each class sorted ascending (float64), with flat pixel indices."""

    frame: int | None
    pos: np.ndarray  # anomaly scores, sorted
    neg: np.ndarray  # in-distribution scores, sorted
    pos_index: np.ndarray | None  # uint32 flat pixel index of each pos (positions=True)
    neg_index: np.ndarray | None


def distinct_sorted(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, return_counts=True)`` of sorted ``x`` (the boundary mask of
    :func:`analyze.metrics.ranks.distinct_counts`, without its sort)."""
    first = np.empty(x.size, bool)
    first[:1] = True
    np.not_equal(x[1:], x[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return x[starts], np.diff(starts, append=x.size)


def split_sorted(y_score, y_true, frame: int | None = None, positions: bool = False) -> FrameSplit:
    """The :class:`FrameSplit` of one frame: compiled split (:mod:`analyze.metrics.kernels`) of the
    scores as float64 (exact for float16/32), radix sort of each class, with its pixel
    indices when ``positions``. Labels other than 0, 1 and 255 and NaN scores at non-void
    pixels raise ValueError, as in :meth:`ExactState.update`."""
    s, t = np.asarray(y_score), np.asarray(y_true)
    if s.shape != t.shape or t.dtype != np.uint8 or s.dtype.kind != "f":
        split_frame(s, t, check_nan=True)  # raises on bad shapes, labels and NaN
        t = t.astype(np.uint8)
    s = np.ascontiguousarray(s, np.float64).ravel()
    t = np.ascontiguousarray(t).ravel()
    n_pos, n_neg, n_bad, n_nan, _ = K.scan_frame64(s, t)
    if n_bad:
        split_frame(s, t)  # names the labels
    if n_nan:
        raise ValueError("y_score contains NaN at non-void pixels")
    parts = []
    for label, n in ((1, n_pos), (0, n_neg)):
        if positions:
            x, idx = K.gather_indexed(s, t, label, n)
            K.sort_f64_indexed(x, idx, np.empty_like(x), np.empty_like(idx))
        else:
            x, idx = K.gather(s, t, label, n), None
            K.sort_f64(x, np.empty_like(x))
        parts += [x, idx]
    pos, pos_index, neg, neg_index = parts
    return FrameSplit(frame, pos, neg, pos_index, neg_index)


def split_ap(split: FrameSplit) -> float:
    """The AP of one frame alone (:func:`analyze.metrics.frame_ap` of its maps, exact protocol), from
    its sorted scores; NaN without anomaly pixel."""
    u, count = distinct_sorted(split.pos)
    below, below_eq = ranks.rank_sorted(split.neg, u)
    return exact_metrics(counts_from(u, count, below, below_eq, split.pos.size, split.neg.size), False)["auprc"]


class FramedExactState(ExactState):
    """:class:`ExactState` (same numbers, same ``compute``, ``threshold_counts`` and curves)
    whose scores are kept per frame, sorted: see the module docstring.

    ``add(y_score, y_true, frame)`` adds a frame and returns its AP; ``update`` is ``add``
    without a frame index. ``merge`` concatenates in order, so after the driver's in-order
    tree merge :attr:`frames` is in frame order. ``compute`` ranks the distinct anomaly
    scores by a walk through each frame's sorted in-distribution scores on ``threads``
    threads (:func:`analyze.metrics.ranks.rank_presorted`).
    """

    def __init__(self, positions: bool = False) -> None:
        super().__init__(histograms=False)
        self.positions = positions
        self.frames: list[FrameSplit] = []

    def add(self, y_score, y_true, frame: int | None = None) -> float:
        """Add one frame; returns its AP (:func:`split_ap`)."""
        split = split_sorted(y_score, y_true, frame, self.positions)
        self._c = None
        self.frames.append(split)
        self.n_pos += split.pos.size
        self.n_neg += split.neg.size
        if split.pos.size:
            self._pos.append(split.pos)
        if split.neg.size:
            self._neg.append(split.neg)
        return split_ap(split)

    def update(self, y_score, y_true) -> "FramedExactState":
        self.add(y_score, y_true)
        return self

    def merge(self, other: "FramedExactState") -> "FramedExactState":
        out = super().merge(other)
        out.positions = self.positions and other.positions
        out.frames = self.frames + other.frames
        return out

    def _rank_negatives(self, u: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        return ranks.rank_presorted(self._neg, u, threads)
