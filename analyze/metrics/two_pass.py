"""The memory-bounded ``exact`` protocol: the same numbers in two passes over the frames.

The first pass keeps only the anomaly scores (:class:`PositiveState`); the second counts, per
frame, the in-distribution scores below and at every distinct anomaly score
(:class:`NegativeCountState`); :class:`CountedState` holds the joined counts. Memory: the
anomaly scores plus a few int64 arrays of their distinct count, instead of every score.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from analyze.metrics import ranks
from analyze.metrics.common import check_labels, check_same_type, split_frame
from analyze.metrics.counts import Counts, counts_from, exact_curve, exact_metrics
from analyze.metrics.exact import rank_histograms, split_exact, split_exact_fast


class AnomalyPixels(NamedTuple):
    """One frame's labels as the first pass reads them (:meth:`PositiveState.update_at`), made once
    per frame for every key: where its anomaly pixels are (flat, in raster order), how many
    in-distribution pixels it has, and its shape."""

    where: np.ndarray
    n_neg: int
    shape: tuple[int, ...]


def anomaly_pixels(y_true) -> AnomalyPixels:
    """:class:`AnomalyPixels` of a label map; ValueError on labels other than 0, 1 and void."""
    t = np.asarray(y_true)
    pos_mask, _, _, n_neg = check_labels(t.ravel())
    return AnomalyPixels(np.flatnonzero(pos_mask), n_neg, t.shape)


class PositiveState:
    """First pass of the memory-bounded ``exact`` protocol: keeps only the anomaly scores.

    Same numbers as :class:`ExactState` in two passes over the frames: this state keeps the
    positive scores (and counts the negatives); :meth:`distinct` gives the sorted distinct
    positive scores ``u`` for the second pass, :class:`NegativeCountState`, which counts per
    frame the negatives below and at every ``u_k``; :meth:`with_negatives` joins the two into
    a :class:`CountedState`. Memory: the positives plus two int64 arrays of ``len(u)`` per
    state, instead of every negative score.
    """

    protocol = "exact"

    def __init__(self) -> None:
        self._pos: list[np.ndarray] = []
        self.n_pos = 0
        self.n_neg = 0

    def update(self, y_score, y_true) -> "PositiveState":
        split = split_exact_fast(y_score, y_true, histogram=False, negatives=False)  # one compiled pass
        if split is None:
            pos, neg = split_frame(y_score, y_true, check_nan=False)
            split = (pos, None, None, neg.size)
        pos, _, _, n_neg = split
        self.n_pos += pos.size
        self.n_neg += n_neg
        if pos.size:
            self._pos.append(pos)
        return self

    def update_at(self, y_score, pixels: AnomalyPixels) -> "PositiveState":
        """:meth:`update` with the frame's labels read once (:func:`anomaly_pixels`): the scores at
        its anomaly pixels alone are read, the same values in the same order. NaN is looked for
        there only: the second pass reads every other score."""
        s = np.asarray(y_score)
        if s.shape != tuple(pixels.shape):
            raise ValueError(f"y_score shape {s.shape} != y_true shape {tuple(pixels.shape)}")
        pos = s.ravel()[pixels.where]
        if pos.dtype.kind != "f":
            pos = pos.astype(np.float64)
        if np.isnan(pos).any():
            raise ValueError("y_score contains NaN at non-void pixels")
        self.n_pos += pos.size
        self.n_neg += pixels.n_neg
        if pos.size:
            self._pos.append(pos)
        return self

    def merge(self, other: "PositiveState") -> "PositiveState":
        check_same_type(self, other)
        out = type(self)()
        out._pos = self._pos + other._pos
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out

    def distinct_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(u, multiplicity): the distinct anomaly scores, ascending, and how often each occurs."""
        pos = np.concatenate(self._pos) if self._pos else np.empty(0)
        return ranks.distinct_counts(pos)

    def distinct(self) -> np.ndarray:
        """The distinct anomaly scores, ascending."""
        return self.distinct_counts()[0]

    def with_negatives(self, negatives: "NegativeCountState") -> "CountedState":
        """The final state, from this pass and the negatives counted at :meth:`distinct`."""
        u, pos_count = self.distinct_counts()
        if not np.array_equal(negatives.u, u) or negatives.n_pos != self.n_pos or negatives.n_neg != self.n_neg:
            raise ValueError("the two passes saw different pixels (did the frames change between them?)")
        return CountedState(counts_from(u, pos_count, negatives.below, negatives.below_eq, self.n_pos, self.n_neg))


class NegativeCountState:
    """Second pass of the memory-bounded ``exact`` protocol (see :class:`PositiveState`).

    ``below[k]`` / ``below_eq[k]``: negatives scoring ``< u_k`` / ``<= u_k`` (int64, summed by
    ``merge``). Per frame the negatives are sorted (or histogrammed when they are
    float16-valued) and ``u`` is searched in them: ``O(n log n + len(u) log n)``.
    """

    def __init__(self, u: np.ndarray) -> None:
        self.u = np.asarray(u)
        self.below = np.zeros(self.u.size, np.int64)
        self.below_eq = np.zeros(self.u.size, np.int64)
        self.n_pos = 0
        self.n_neg = 0

    def update(self, y_score, y_true) -> "NegativeCountState":
        split = split_exact_fast(y_score, y_true)  # compiled split (float32/float64), else numpy's
        pos, neg, q, n_neg = split if split is not None else split_exact(y_score, y_true)
        if neg is not None:
            ranks.sort_in_place(neg)  # the split's own copy
            return self.add_sorted(neg, pos.size)
        self.n_pos += pos.size
        self.n_neg += n_neg
        if q is not None:
            b, be = rank_histograms([q], self.u)
            self.below = self.below + b
            self.below_eq = self.below_eq + be
        return self

    def add_sorted(self, neg: np.ndarray, n_pos: int) -> "NegativeCountState":
        """Add a frame given as its sorted in-distribution scores and its count of anomaly pixels."""
        self.n_pos += n_pos
        self.n_neg += neg.size
        if neg.size:
            b, be = ranks.rank_sorted(neg, self.u)
            self.below = self.below + b
            self.below_eq = self.below_eq + be
        return self

    def merge(self, other: "NegativeCountState") -> "NegativeCountState":
        check_same_type(self, other)
        if not np.array_equal(self.u, other.u):
            raise ValueError("cannot merge negative counts taken at different thresholds")
        out = type(self)(self.u)
        out.below = self.below + other.below
        out.below_eq = self.below_eq + other.below_eq
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out


class CountedState:
    """Final counts of the two-pass ``exact`` protocol: ``compute`` as :class:`ExactState`."""

    protocol = "exact"

    def __init__(self, counts: Counts) -> None:
        self._c = counts
        self.n_pos = counts.n_pos
        self.n_neg = counts.n_neg

    def compute(self, *, warn: bool = True) -> dict:
        return exact_metrics(self._c, warn)

    def threshold_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        c = self._c
        return c.thresholds.astype(np.float64), c.tp, c.fp_ge, c.n_pos

    def _curve(self) -> dict:
        return exact_curve(self._c)
