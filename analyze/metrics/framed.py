"""The ``exact`` protocol's state with every frame kept apart and sorted: ``analyze score``'s one pass.

:class:`FramedExactState` gives the numbers of :class:`~analyze.metrics.exact.ExactState` (the
same integer counts, so the same bits) and keeps what later steps of ``analyze score`` read
instead of composing every frame again: each frame's anomaly and in-distribution scores,
sorted, under the frame's index (and, with ``positions``, the flat pixel index of every
anomaly score and of the highest in-distribution ones). Sorting a frame once serves three
readers: the frame's own AP (returned by :meth:`FramedExactState.add`), the pooled counts (a
walk through each frame's sorted scores, no sort at ``compute``) and the bootstrap's per-frame
histograms (a binary search per bin edge, :mod:`analyze.metrics.bootstrap`); the positions give the
component metrics the pixels above any threshold down to the highest score kept without its
pixel (:meth:`FrameSplit.pixels_above`; :mod:`analyze.run.later_passes`). Memory: 8 bytes per
score (float64), plus 4 per score kept with its pixel.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np

from analyze.metrics import kernels as K
from analyze.metrics import ranks
from analyze.metrics.common import split_frame
from analyze.metrics.counts import counts_from, exact_metrics
from analyze.metrics.exact import ExactState
from analyze.metrics.radix64 import sort_f64, sort_f64_indexed
from analyze.metrics.scratch import thread_buffer


class FrameSplit(NamedTuple):
    """One frame's non-void scores, each class sorted ascending (float64), and where they lie:
    the flat pixel index of every anomaly score and of the highest in-distribution scores
    (``neg_index`` goes with ``neg[neg.size - neg_index.size:]``); ``neg_cut``, the highest
    in-distribution score without its pixel (``-inf`` when none), says which thresholds the
    kept pixels serve (:meth:`pixels_above`)."""

    frame: int | None
    pos: np.ndarray  # anomaly scores, sorted
    neg: np.ndarray  # in-distribution scores, sorted
    pos_index: np.ndarray | None = None  # uint32 flat pixel index of each pos
    neg_index: np.ndarray | None = None  # uint32 flat pixel index of the highest neg
    neg_cut: float = float("inf")  # the highest neg without an index (inf: no index at all)

    def pixels_above(self, threshold: float, inclusive: bool = False) -> np.ndarray | None:
        """Flat indices of the non-void pixels scoring ``> threshold`` (``>=`` when ``inclusive``),
        anomaly pixels first; None when some of them were not kept (``neg_cut`` is above the
        threshold, or at it and ``inclusive``). A NaN threshold selects nothing."""
        if math.isnan(threshold):
            return np.empty(0, np.int64)
        if self.pos_index is None or self.neg_index is None or self.neg_cut > threshold or (
                inclusive and self.neg_cut == threshold):
            return None
        side: Literal["left", "right"] = "left" if inclusive else "right"
        tail = self.neg[self.neg.size - self.neg_index.size:]
        return np.concatenate((self.pos_index[np.searchsorted(self.pos, threshold, side=side):],
                               self.neg_index[np.searchsorted(tail, threshold, side=side):])).astype(np.int64)

    def candidates(self) -> "FrameSplit":
        """The same frame with only the scores that have their pixel (what the component metrics read)."""
        if self.neg_index is None:
            raise ValueError("this frame kept no pixel of its in-distribution scores (positions = 0)")
        return self._replace(neg=self.neg[self.neg.size - self.neg_index.size:].copy())


def distinct_sorted(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, return_counts=True)`` of sorted ``x`` (the boundary mask of
    :func:`analyze.metrics.ranks.distinct_counts`, without its sort)."""
    first = np.empty(x.size, bool)
    first[:1] = True
    np.not_equal(x[1:], x[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return x[starts], np.diff(starts, append=x.size)


def split_sorted(y_score, y_true, frame: int | None = None, positions: float = 0.0, scratch: bool = False
                 ) -> FrameSplit:
    """The :class:`FrameSplit` of one frame: compiled split (:mod:`analyze.metrics.kernels`) of the
    scores as float64 (exact for float16/32), radix sort of each class (:mod:`analyze.metrics.radix64`). ``positions`` > 0:
    the pixel of every anomaly score and of the highest ``ceil(positions * n)`` of the ``n``
    in-distribution scores (and of every score equal to the lowest of them), found by one
    more pass over the map and sorted with their scores (``positions >= 1``: every pixel, one
    indexed sort of each class). Labels other than 0, 1 and 255 and
    NaN scores at non-void pixels raise ValueError, as in :meth:`ExactState.update`.
    ``scratch`` (with ``positions`` 0): the sorted scores are this thread's buffers, valid until
    its next such split (a pass that keeps counts, not scores: new arrays' pages cost as much
    system time as the sort itself takes)."""
    s, t = np.asarray(y_score), np.asarray(y_true)
    if s.shape != t.shape or t.dtype != np.uint8 or s.dtype.kind != "f":
        split_frame(s, t, check_nan=True)  # raises on bad shapes, labels and NaN
        t = t.astype(np.uint8)
    s = np.ascontiguousarray(s, np.float64).ravel()
    t = np.ascontiguousarray(t).ravel()
    n_pos, n_neg, n_bad, n_nan = K.count_frame(s, t)
    if n_bad:
        split_frame(s, t)  # names the labels
    if n_nan:
        raise ValueError("y_score contains NaN at non-void pixels")
    if positions <= 0:
        if scratch:
            neg = K.gather_into(s, t, 0, thread_buffer("in-distribution scores", s.dtype, n_neg))
            pos = K.gather_into(s, t, 1, thread_buffer("anomaly scores", s.dtype, n_pos))
        else:
            neg, pos = K.gather(s, t, 0, n_neg), K.gather(s, t, 1, n_pos)
        sort_f64(neg, thread_buffer("sort", neg.dtype, neg.size))
        sort_f64(pos, thread_buffer("sort", pos.dtype, pos.size))
        return FrameSplit(frame, pos, neg)
    pos, pos_index = _sorted_indexed(*K.gather_indexed(s, t, 1, n_pos))
    if positions >= 1:  # every pixel: one indexed sort (the same sorted scores as the sort above)
        neg, neg_index = _sorted_indexed(*K.gather_indexed(s, t, 0, n_neg))
        return FrameSplit(frame, pos, neg, pos_index, neg_index, -np.inf)
    neg = K.gather(s, t, 0, n_neg)
    sort_f64(neg, thread_buffer("sort", neg.dtype, neg.size))
    k = min(n_neg, math.ceil(positions * n_neg))
    start = int(np.searchsorted(neg, neg[n_neg - k], side="left")) if k else n_neg  # ties of the lowest kept, too
    low = neg[start] if start < n_neg else np.inf
    tail, neg_index = _sorted_indexed(*K.gather_indexed_at_least(s, t, 0, low, n_neg - start))
    cut = float(neg[start - 1]) if start else -np.inf
    return FrameSplit(frame, pos, neg, pos_index, neg_index, cut)


def _sorted_indexed(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sort_f64_indexed(x, idx, thread_buffer("sort", x.dtype, x.size), thread_buffer("sort index", idx.dtype, idx.size))
    return x, idx


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

    def __init__(self, positions: float = 0.0) -> None:
        super().__init__(histograms=False)
        self.positions = positions  # the fraction of in-distribution scores kept with their pixels
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
        out.positions = min(self.positions, other.positions)
        out.frames = self.frames + other.frames
        return out

    def _rank_negatives(self, u: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        return ranks.rank_presorted(self._neg, u, threads)
