"""The ``exact`` protocol's state: every non-void score, exact AuPRC / AUROC / FPR95 with ties."""

from __future__ import annotations

from typing import Literal, Self, overload

import numpy as np

from analyze.metrics import kernels as K
from analyze.metrics import ranks
from analyze.metrics.common import check_same_type, num_threads, split_frame
from analyze.metrics.counts import Counts, counts_from, exact_curve, exact_metrics
from analyze.metrics.float_keys import Q_BINS, Q_SHIFT, q_nan_keys, q_table


def short_mantissa_histogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Sparse histogram ``(keys, counts)`` of float16/float32 scores whose float32 mantissa has
    at most 10 significant bits (every float16 value has), keyed by the top 19 bits of the
    float32 pattern; None when some score has more bits (then the scores are kept as given).

    float64 scores qualify when every one is such a float32 value (``float32(x) == x``).
    Lossless: such a value is determined by its key. Rejects cheaply on the first 4096 values.
    """
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    elif x.dtype == np.float64:
        head = x[:4096]
        if not np.array_equal(head.astype(np.float32), head):
            return None
        x32 = x.astype(np.float32)
        if not np.array_equal(x32, x):  # NaN too: it is never equal, and the caller checks for it
            return None
        x = x32
    elif x.dtype != np.float32:
        return None
    bits = x.view(np.uint32)
    low = np.uint32((1 << Q_SHIFT) - 1)
    if np.any(bits[:4096] & low) or np.any(bits & low):
        return None
    hist = np.bincount(bits >> Q_SHIFT, minlength=Q_BINS)
    if hist[q_nan_keys()].any():
        raise ValueError("y_score contains NaN at non-void pixels")
    keys = np.flatnonzero(hist).astype(np.uint32)
    return keys, hist[keys]


def split_exact(y_score, y_true, histogram: bool = True) -> tuple[np.ndarray, np.ndarray | None, tuple | None, int]:
    """(positives, raw negatives or None, negatives' sparse histogram or None, #negatives) of one
    frame; ``histogram=False``: never the histogram."""
    pos, neg = split_frame(y_score, y_true, check_nan=False)
    if not neg.size:
        return pos, None, None, 0
    q = short_mantissa_histogram(neg) if histogram else None
    if q is None:
        if np.isnan(neg).any():
            raise ValueError("y_score contains NaN at non-void pixels")
        return pos, neg, None, neg.size
    return pos, None, q, neg.size


_SCAN = {np.dtype(np.float32): K.scan_frame, np.dtype(np.float64): K.scan_frame64}


Split = tuple[np.ndarray, np.ndarray | None, tuple | None, int]
BorrowingSplit = tuple[np.ndarray, np.ndarray | ranks.FrameScores | None, tuple | None, int]


@overload
def split_exact_fast(y_score, y_true, histogram: bool = ..., negatives: bool = ..., *,
                     borrow: Literal[False] = ...) -> Split | None: ...
@overload
def split_exact_fast(y_score, y_true, histogram: bool = ..., negatives: bool = ..., *,
                     borrow: bool) -> BorrowingSplit | None: ...
def split_exact_fast(y_score, y_true, histogram: bool = True, negatives: bool = True, *, borrow: bool = False
                     ) -> BorrowingSplit | None:
    """:func:`split_exact` in two compiled passes for float32 or float64 scores and uint8
    labels (the maps the driver makes); None for other types or invalid labels (then the
    numpy path runs and raises its own error). Same arrays as :func:`split_exact` (tested).
    ``histogram=False`` keeps the negatives as they are even when they could be a histogram
    (in pixel order, like the positives); ``negatives=False`` leaves them out (None, None),
    only counted; ``borrow=True`` gives kept negatives as a :class:`analyze.metrics.ranks.FrameScores`
    of the maps (read when ranked) rather than a copy."""
    s, t = np.asarray(y_score), np.asarray(y_true)
    if s.shape != t.shape:
        raise ValueError(f"y_score shape {s.shape} != y_true shape {t.shape}")
    if s.dtype not in _SCAN or t.dtype != np.uint8:
        return None
    s, t = np.ascontiguousarray(s).ravel(), np.ascontiguousarray(t).ravel()
    n_pos, n_neg, n_bad, n_nan, low = _SCAN[s.dtype](s, t)
    if n_bad:
        return None
    if n_nan:
        raise ValueError("y_score contains NaN at non-void pixels")
    pos = K.gather(s, t, 1, n_pos)
    if not n_neg or not negatives:
        return pos, None, None, n_neg
    if low or not histogram:  # some negative has more than float16 precision: keep them as they are
        return pos, ranks.FrameScores(s, t, 0, n_neg) if borrow else K.gather(s, t, 0, n_neg), None, n_neg
    if s.dtype == np.float32:
        hist = K.negative_key_histogram(s, t, Q_BINS)
    else:  # float64 scores that are all short-mantissa float32 values (rare): their float32 keys
        hist = np.bincount(K.gather(s, t, 0, n_neg).astype(np.float32).view(np.uint32) >> Q_SHIFT, minlength=Q_BINS)
    keys = np.flatnonzero(hist).astype(np.uint32)
    return pos, None, (keys, hist[keys]), n_neg


def rank_histograms(hists: list[tuple[np.ndarray, np.ndarray]], u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for negatives given as sparse short-mantissa histograms."""
    keys = np.concatenate([k for k, _ in hists])
    counts = np.concatenate([c for _, c in hists])
    # float64 sums of integer counts are exact below 2**53 pixels
    hist = np.bincount(keys, weights=counts, minlength=Q_BINS).astype(np.int64)
    order, values = q_table()
    cum = np.concatenate(([0], np.cumsum(hist[order])))
    left = np.searchsorted(values, u, side="left")
    # the table holds each value once, except 0 (as -0.0 and +0.0)
    eq = values[np.minimum(left, values.size - 1)] == u
    eq2 = eq & (left + 1 < values.size) & (values[np.minimum(left + 1, values.size - 1)] == u)
    return cum[left], cum[left + eq + eq2]


class ExactState:
    """Exact pooled AuPRC / AUROC / FPR95 with ties (protocol ``exact``; see the module docstring).

    Storage: positive scores as given (float16/32/64, never rounded); negative scores as
    given, except frames whose negatives all have at most 10 significant mantissa bits
    (float16 maps, or float32/float64 maps made from float16 values), which are kept
    losslessly as a sparse histogram over those values (a few hundred kB instead of 4 or 8
    bytes a pixel) unless ``histograms=False``. ``merge`` concatenates the lists.
    ``borrow=True`` (what :func:`analyze.metrics.pixel_metrics` does with its arguments) keeps
    a frame's raw negatives as a reference to its maps (:class:`analyze.metrics.ranks.FrameScores`),
    gathered only into the sort buffers of ``compute``: no copy of every negative, which at
    100 M pixels is hundreds of MB of new memory. The maps must then stay unchanged until the
    last ``compute``; pickling the state copies what it borrows.

    ``update`` splits a frame in one compiled pass (:mod:`analyze.metrics.kernels`; numpy for
    other dtypes). ``compute`` sorts the distinct positive scores ``u``, sorts copies of the
    raw negatives in groups (:func:`analyze.metrics.ranks.rank_raw`, on :func:`num_threads` threads;
    the state's arrays are not changed) and counts, for every ``u_k``, the negatives below
    and at it with a walk per group; TP and FP at every threshold follow from cumulative
    sums (all int64, so neither the grouping nor the threads ever change a result). The
    counts are kept until the next ``update``. Memory beyond the stored scores: a few int64
    arrays of ``len(u)`` and two sort buffers of :data:`analyze.metrics.ranks.SORT_GROUP` scores
    per thread.
    """

    protocol = "exact"
    definition = (
        "pooled non-void pixels, exact with ties: AuPRC = sklearn average_precision_score "
        "(step-wise), AUROC = sklearn roc_auc_score, FPR95 = ood_metrics.fpr_at_95_tpr "
        "(np.interp at TPR 0.95 on sklearn roc_curve)"
    )

    def __init__(self, histograms: bool = True, borrow: bool = False) -> None:
        self.histograms = histograms  # False: negatives always kept as given, in pixel order
        self.borrow = borrow  # True: raw negatives read from the maps at compute, not copied
        self._pos: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        self._borrowed: list[ranks.FrameScores] = []  # raw negatives read from the maps (borrow=True)
        self._neg_q: list[tuple[np.ndarray, np.ndarray]] = []  # sparse short-mantissa histograms
        self.n_pos = 0
        self.n_neg = 0
        self._c: Counts | None = None  # counts of the last compute, until the next update

    def __getstate__(self) -> dict:
        neg = self._neg + [b.copy() for b in self._borrowed]  # copies, not the maps
        return {**self.__dict__, "_c": None, "_neg": neg, "_borrowed": []}  # the counts are recomputed, not shipped

    def update(self, y_score, y_true) -> "ExactState":
        """Add one frame (any shape; ``y_true`` 0/1/255). Returns ``self``."""
        self._c = None
        split = split_exact_fast(y_score, y_true, self.histograms, borrow=self.borrow)
        if split is None:
            split = split_exact(y_score, y_true, self.histograms)
        pos, neg, q, n_neg = split
        self.n_pos += pos.size
        self.n_neg += n_neg
        if pos.size:
            self._pos.append(pos)
        if isinstance(neg, ranks.FrameScores):
            self._borrowed.append(neg)
        elif neg is not None:
            self._neg.append(neg)
        if q is not None:
            self._neg_q.append(q)
        return self

    def merge(self, other: Self) -> Self:
        """A new state holding the pixels of both (inputs unchanged)."""
        check_same_type(self, other)
        out = type(self)(self.histograms and other.histograms)
        out.borrow = self.borrow and other.borrow
        out._pos = self._pos + other._pos
        out._neg = self._neg + other._neg
        out._borrowed = self._borrowed + other._borrowed
        out._neg_q = self._neg_q + other._neg_q
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out

    def _counts(self, threads: int | None = None) -> Counts:
        """TP/FP counts at every distinct positive score; kept until the next ``update`` (the
        driver asks for metrics, curves and thresholds of the same state)."""
        if self._c is not None:
            return self._c
        u, pos_count = self._distinct_positives()  # ascending
        below = below_eq = None  # negatives < u and <= u
        if (self._neg or self._borrowed) and u.size:
            below, below_eq = self._rank_negatives(u, num_threads(threads))
        if self._neg_q and u.size:
            b, be = rank_histograms(self._neg_q, u)
            if below is None:
                below, below_eq = b, be
            else:
                below += b
                below_eq += be
        if below is None:
            below = below_eq = np.zeros(u.size, np.int64)
        self._c = counts_from(u, pos_count, below, below_eq, self.n_pos, self.n_neg)
        return self._c

    def _distinct_positives(self) -> tuple[np.ndarray, np.ndarray]:
        """(u, multiplicity): the distinct anomaly scores, ascending."""
        return ranks.distinct_counts(np.concatenate(self._pos) if self._pos else np.empty(0))  # a copy

    def _rank_negatives(self, u: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """(#neg < u, #neg <= u) over the raw negatives (:func:`analyze.metrics.ranks.rank_raw`)."""
        return ranks.rank_raw([*self._neg, *self._borrowed], u, threads)

    def compute(self, *, warn: bool = True, threads: int | None = None) -> dict:
        """``auprc``, ``auroc``, ``fpr95`` (floats, NaN when undefined), ``n_pos``, ``n_neg``.

        The negatives are sorted on ``threads`` threads (default :func:`num_threads`).
        """
        return exact_metrics(self._counts(threads), warn)

    def threshold_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(thresholds decreasing, TP, FP at ``score >= threshold``, n_pos) at the distinct anomaly scores."""
        c = self._counts()
        return c.thresholds.astype(np.float64), c.tp, c.fp_ge, c.n_pos

    def _curve(self) -> dict:
        return exact_curve(self._counts())
