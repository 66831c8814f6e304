"""The memory-bounded ``exact`` protocol: the same numbers in two passes over the frames.

The first pass keeps only the anomaly scores (:class:`PositiveState`); the second counts, per
frame, the in-distribution scores below and at every distinct anomaly score
(:class:`NegativeCountState`); :class:`CountedState` holds the joined counts. Memory: the
anomaly scores plus a few integer arrays of their distinct count, instead of every score.
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
    a :class:`CountedState`. Memory: the positives plus an int32 array of ``len(u)`` per
    state (two where negatives equal anomaly scores), instead of every negative score.
    """

    protocol = "exact"

    def __init__(self) -> None:
        self._pos: list[np.ndarray] = []
        self._distinct: tuple[np.ndarray, np.ndarray] | None = None  # once asked: (u, multiplicity)
        self.n_pos = 0
        self.n_neg = 0

    def _open(self) -> None:
        if self._distinct is not None:
            raise ValueError("this PositiveState has given its distinct scores: it takes no more frames")

    def update(self, y_score, y_true) -> "PositiveState":
        self._open()
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
        self._open()
        other._open()
        out = type(self)()
        out._pos = self._pos + other._pos
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out

    def distinct_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(u, multiplicity): the distinct anomaly scores, ascending, and how often each occurs
        (int32 while there are fewer than 2**31 anomaly scores). Formed once: they replace the
        scores kept (the second pass, the intervals' bins and :meth:`with_negatives` read the
        same arrays, sorted once), so the state takes no more frames afterwards."""
        if self._distinct is None:
            pos = np.concatenate(self._pos) if len(self._pos) != 1 else self._pos[0]  # a lone array: the state's own
            self._pos = []
            u, count = ranks.distinct_counts(pos)
            self._distinct = u, count.astype(_count_dtype(self.n_pos))
        return self._distinct

    def distinct(self) -> np.ndarray:
        """The distinct anomaly scores, ascending."""
        return self.distinct_counts()[0]

    def with_negatives(self, negatives: "NegativeCountState") -> "CountedState":
        """The final state, from this pass and the negatives counted at :meth:`distinct`."""
        u, pos_count = self.distinct_counts()
        same_u = negatives.u is u or np.array_equal(negatives.u, u)
        if not same_u or negatives.n_pos != self.n_pos or negatives.n_neg != self.n_neg:
            raise ValueError("the two passes saw different pixels (did the frames change between them?)")
        below, below_eq = negatives.counts_below()
        return CountedState(counts_from(u, pos_count, below, below_eq, self.n_pos, self.n_neg))


class NegativeCountState:
    """Second pass of the memory-bounded ``exact`` protocol (see :class:`PositiveState`).

    Per frame the negatives are sorted (or histogrammed when they are float16-valued) and ``u``
    is searched in them: ``O(n log n + len(u) log n)``. The state keeps what a frame adds, not
    its running sums: ``hist[j]``, the negatives with exactly ``j`` values of ``u`` below them
    (``len(u) + 1`` entries), and ``ties[k]``, those equal to ``u_k`` (None while there is
    none), in int32 while the state's negatives number fewer than 2**31 (int64 beyond).
    A frame adds them as runs (:func:`analyze.metrics.ranks.rank_runs`: the slots its negatives
    reach and their counts, 8 bytes a run, at most one per negative), kept as runs until they
    would take more memory than the arrays (4 bytes per anomaly score each): at a study's scale
    ``u`` may hold millions of scores (every frame's anomaly pixels) while a frame reaches a
    fraction of them, and arrays of all of them, zeroed, walked and held for every key of every
    frame waiting for its merge, cost more than the frame's sort. :attr:`below` /
    :attr:`below_eq` (#negatives ``< u_k`` / ``<= u_k``) are formed once, from the merged state.
    ``merge`` adds integers: any merge order and any mix of runs and arrays give the same counts.
    """

    def __init__(self, u: np.ndarray) -> None:
        self.u = np.asarray(u)
        self.hist: np.ndarray | None = None  # None: no negative yet (beside the runs)
        self.ties: np.ndarray | None = None  # None: no negative equals an anomaly score (beside the runs)
        self.runs: list[ranks.Runs] = []  # frames' counts not yet added to hist and ties
        self.n_pos = 0
        self.n_neg = 0

    def update(self, y_score, y_true) -> "NegativeCountState":
        split = split_exact_fast(y_score, y_true)  # compiled split (float32/float64), else numpy's
        pos, neg, q, n_neg = split if split is not None else split_exact(y_score, y_true)
        if neg is not None:
            ranks.sort_in_place(neg)  # the split's own copy
            return self.add_sorted(neg, pos.size)
        self.n_pos += pos.size
        if q is not None:
            below, below_eq = rank_histograms([q], self.u)
            hist = np.diff(below_eq, prepend=0, append=n_neg)  # the cumulative counts, per slot again
            self._add(hist, below_eq - below, n_neg)
        else:
            self.n_neg += n_neg
        return self

    def add_sorted(self, neg: np.ndarray, n_pos: int) -> "NegativeCountState":
        """Add a frame given as its sorted in-distribution scores and its count of anomaly pixels."""
        self.n_pos += n_pos
        if not neg.size:
            return self
        self.n_neg += neg.size
        self.runs.append(ranks.rank_runs(neg, self.u))
        self._bound()
        return self

    def _bound(self) -> None:
        """Add the runs to the arrays once they take more memory than the arrays would."""
        if sum(r.nbytes for r in self.runs) > 8 * (self.u.size + 1):
            self._add_runs()

    def _add_runs(self) -> None:
        if not self.runs:
            return
        dtype = _count_dtype(self.n_neg)
        hist = np.zeros(self.u.size + 1, dtype) if self.hist is None else self.hist.astype(dtype)  # a copy
        ties = None if self.ties is None else self.ties.astype(dtype)
        for r in self.runs:
            hist[r.slots] += r.counts  # distinct slots within a run
            if r.tie_slots.size:
                ties = np.zeros(self.u.size, dtype) if ties is None else ties
                ties[r.tie_slots] += r.tie_counts
        self.hist, self.ties, self.runs = hist, ties, []

    def _add(self, hist: np.ndarray, ties: np.ndarray, n_neg: int) -> None:
        dtype = _count_dtype(n_neg)
        hist, ties = hist.astype(dtype, copy=False), ties.astype(dtype, copy=False)
        self.n_neg += n_neg
        self.hist = _plus(self.hist, hist, self.n_neg)
        self.ties = _plus(self.ties, ties if ties.any() else None, self.n_neg)

    def merge(self, other: "NegativeCountState") -> "NegativeCountState":
        check_same_type(self, other)
        if self.u is not other.u and not np.array_equal(self.u, other.u):  # the same array: a local scheduler's
            raise ValueError("cannot merge negative counts taken at different thresholds")
        out = type(self)(self.u)
        out.n_pos, out.n_neg = self.n_pos + other.n_pos, self.n_neg + other.n_neg
        out.hist, out.ties = _plus(self.hist, other.hist, out.n_neg), _plus(self.ties, other.ties, out.n_neg)
        out.runs = self.runs + other.runs
        out._bound()
        return out

    def counts_below(self) -> tuple[np.ndarray, np.ndarray]:
        """(#negatives ``< u_k``, #negatives ``<= u_k``), int64, from the state's counts
        (:func:`analyze.metrics.ranks.below_counts` on int64 copies)."""
        self._add_runs()
        if self.hist is None:
            zero = np.zeros(self.u.size, np.int64)
            return zero, zero
        return ranks.below_counts(self.hist.astype(np.int64), None if self.ties is None else self.ties.astype(np.int64))

    @property
    def below_eq(self) -> np.ndarray:
        """#negatives ``<= u_k`` (int64)."""
        return self.counts_below()[1]

    @property
    def below(self) -> np.ndarray:
        """#negatives ``< u_k`` (int64)."""
        return self.counts_below()[0]


def _count_dtype(n: int) -> type[np.signedinteger]:
    """The integer type of counts that never exceed ``n``."""
    return np.int32 if n < 2**31 else np.int64


def _plus(x: np.ndarray | None, y: np.ndarray | None, n: int) -> np.ndarray | None:
    """``x + y`` in :func:`_count_dtype` of ``n`` (the sum's largest possible count); either one
    as it is where the other is None."""
    if x is None or y is None:
        return y if x is None else x
    return np.add(x, y, dtype=_count_dtype(n))


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
