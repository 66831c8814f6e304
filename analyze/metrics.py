"""Pixel metrics as mergeable states: ``update`` per frame, ``merge`` (a Dask tree-reduce), pure ``compute``.

Vocabulary follows scikit-learn: ``y_true`` is a label map (0 in-distribution, 1 anomaly =
the positive class, 255 void, ignored), ``y_score`` an anomaly map (higher = more
anomalous). Pixels are pooled over the whole dataset, never averaged per frame.

Protocols (:data:`PROTOCOLS`, the value of the results ``protocol`` column)
------------------------------------------------------------------------------

``exact`` (:class:`ExactState`)
    Exact, with ties, on the scores as given (no rounding):

    * ``auprc`` = scikit-learn ``average_precision_score`` (``sklearn/metrics/_ranking.py``):
      the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds, not the
      trapezoid;
    * ``auroc`` = ``roc_auc_score``: trapezoid on the ROC curve, a tie between positive and
      negative scores being a diagonal segment;
    * ``fpr95`` = ``ood_metrics.fpr_at_95_tpr`` (``ood-metrics`` 0.2.9 to 1.1.2, same code):
      ``np.interp(0.95, tpr, fpr)`` on ``sklearn.metrics.roc_curve``, with its two edge rules
      (0 when every TPR < 0.95, the smallest FPR among TPR >= 0.95 when every TPR >= 0.95;
      neither can fire once the curve starts at (0, 0) and has a positive). Where the curve
      has a flat stretch at TPR exactly 0.95, ``np.interp`` returns the FPR at its right end,
      i.e. the largest FPR of the stretch.

    The state keeps every non-void score, split into positives and negatives: it computes
    TP and FP at every distinct positive score and derives all three numbers from these
    integer counts (thresholds that only negatives reach change neither recall nor the ROC
    area, and lie on straight ROC segments). Counts are int64, so the result does not depend
    on how frames were grouped or merged.

``smiyc`` (:class:`SmiycState`)
    The SegmentMeIfYouCan benchmark as of its 2023 code (``SegmentMeIfYouCan/
    road-anomaly-benchmark``, ``road_anomaly_benchmark/metrics/pixel_classification.py`` and
    ``pixel_classification_curves.py``; ``evaluation.py`` stores every map as float16). See
    :class:`SmiycState` for the procedure and the two places where a choice was needed.

When every score of a dataset does not fit in memory, :class:`PositiveState` and
:class:`NegativeCountState` give the ``exact`` numbers in two passes over the frames.

mIoU (:class:`ConfusionState`) is the Cityscapes definition on a dataset-level confusion
matrix.

Undefined values are NaN plus a :class:`UndefinedMetricWarning` (never an exception): no
anomaly pixel in the whole dataset, or no negative pixel for AUROC/FPR95.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from analyze import kernels as K
from analyze import ranks

VOID = 255
TPR_LEVEL = 0.95
MAX_THREADS = 8


def num_threads(threads: int | None = None) -> int:
    """Threads for the sorts of :meth:`ExactState.compute` (and so of :func:`pixel_metrics`).

    ``threads`` if given, else the environment variable ``ANALYZE_THREADS``, else the CPUs this
    process may use (at most :data:`MAX_THREADS`). The numbers never depend on it: the
    threads only produce integer counts that are summed.
    """
    if threads is None:
        env = os.environ.get("ANALYZE_THREADS", "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"ANALYZE_THREADS must be a positive integer, got {env!r}") from None
        else:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            threads = min(MAX_THREADS, cpus or 1)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined on this data (no anomaly pixel, no negative pixel) and is NaN."""


# --------------------------------------------------------------------------------------
# input handling


def _split_frame(y_score, y_true, check_nan: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(positive scores, negative scores) of one frame: 1-D copies in the input float dtype.

    Raises ValueError on shape mismatch, labels other than 0/1/255, or NaN scores (among the
    negatives only when ``check_nan``; the caller then checks them more cheaply itself).
    """
    y_score = np.asarray(y_score)
    y_true = np.asarray(y_true)
    if y_score.shape != y_true.shape:
        raise ValueError(f"y_score shape {y_score.shape} != y_true shape {y_true.shape}")
    if y_score.dtype.kind not in "f":
        y_score = y_score.astype(np.float64)
    s = y_score.ravel()
    t = y_true.ravel()
    pos_mask = t == 1
    neg_mask = t == 0
    n_pos = int(np.count_nonzero(pos_mask))
    n_neg = int(np.count_nonzero(neg_mask))
    if n_pos + n_neg != t.size:
        n_void = int(np.count_nonzero(t == VOID))
        if n_pos + n_neg + n_void != t.size:
            bad = np.unique(t[~(pos_mask | neg_mask | (t == VOID))])[:10]
            raise ValueError(f"y_true may hold only 0, 1 and {VOID} (void); found {bad.tolist()}")
    pos = s[pos_mask] if n_pos < t.size else s.copy()
    neg = s[neg_mask] if n_neg < t.size else s.copy()
    if np.isnan(pos).any() or (check_nan and np.isnan(neg).any()):
        raise ValueError("y_score contains NaN at non-void pixels")
    return pos, neg


# --------------------------------------------------------------------------------------
# exact protocol


_Q_SHIFT = 13  # float32 mantissa bits below float16 precision
_Q_BINS = 1 << (32 - _Q_SHIFT)


def _value_order(inf_key: int, sign_key: int) -> np.ndarray:
    """Bit patterns of an IEEE float format in increasing value order, NaNs left out.

    Non-negative patterns ``0 .. inf_key`` increase with the pattern; negative ones
    (``sign_key + k``) decrease with ``k``. ``-0.0`` and ``+0.0`` are adjacent (equal values).
    """
    return np.concatenate((sign_key + np.arange(inf_key, -1, -1), np.arange(inf_key + 1)))


@functools.cache
def _q_table() -> tuple[np.ndarray, np.ndarray]:
    """(order, values): the short-mantissa float32 keys (top 19 bits) sorted by value, no NaN."""
    order = _value_order(0xFF << 10, 1 << 18)
    return order, (order.astype(np.uint32) << _Q_SHIFT).view(np.float32)


@functools.cache
def _q_nan_keys() -> np.ndarray:
    """Keys of NaN: exponent all ones, mantissa not zero, either sign."""
    nan = (0xFF << 10) + np.arange(1, 1 << 10)
    return np.concatenate((nan, (1 << 18) + nan))


def _short_mantissa_histogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Sparse histogram ``(keys, counts)`` of float16/float32 scores whose float32 mantissa has
    at most 10 significant bits (every float16 value has), keyed by the top 19 bits of the
    float32 pattern; None when some score has more bits (then the scores are kept as given).

    Lossless: such a value is determined by its key. Rejects cheaply on the first 4096 values.
    """
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    elif x.dtype != np.float32:
        return None
    bits = x.view(np.uint32)
    low = np.uint32((1 << _Q_SHIFT) - 1)
    if np.any(bits[:4096] & low) or np.any(bits & low):
        return None
    hist = np.bincount(bits >> _Q_SHIFT, minlength=_Q_BINS)
    if hist[_q_nan_keys()].any():
        raise ValueError("y_score contains NaN at non-void pixels")
    keys = np.flatnonzero(hist).astype(np.uint32)
    return keys, hist[keys]


def _split_exact(y_score, y_true) -> tuple[np.ndarray, np.ndarray | None, tuple | None, int]:
    """(positives, raw negatives or None, negatives' sparse histogram or None, #negatives) of one frame."""
    pos, neg = _split_frame(y_score, y_true, check_nan=False)
    if not neg.size:
        return pos, None, None, 0
    q = _short_mantissa_histogram(neg)
    if q is None:
        if np.isnan(neg).any():
            raise ValueError("y_score contains NaN at non-void pixels")
        return pos, neg, None, neg.size
    return pos, None, q, neg.size


def _split_exact_fast(y_score, y_true) -> tuple[np.ndarray, np.ndarray | None, tuple | None, int] | None:
    """:func:`_split_exact` in two compiled passes for float32 scores and uint8 labels (the
    maps the driver makes); None for other types or invalid labels (then the numpy path
    runs and raises its own error). Same arrays as :func:`_split_exact` (tested)."""
    s, t = np.asarray(y_score), np.asarray(y_true)
    if s.shape != t.shape:
        raise ValueError(f"y_score shape {s.shape} != y_true shape {t.shape}")
    if s.dtype != np.float32 or t.dtype != np.uint8:
        return None
    s, t = np.ascontiguousarray(s).ravel(), np.ascontiguousarray(t).ravel()
    n_pos, n_neg, n_bad, n_nan, low = K.scan_frame(s, t)
    if n_bad:
        return None
    if n_nan:
        raise ValueError("y_score contains NaN at non-void pixels")
    pos = K.gather(s, t, 1, n_pos)
    if not n_neg:
        return pos, None, None, 0
    if low:  # some negative has more than float16 precision: keep them as they are
        return pos, K.gather(s, t, 0, n_neg), None, n_neg
    hist = K.negative_key_histogram(s, t, _Q_BINS)
    keys = np.flatnonzero(hist).astype(np.uint32)
    return pos, None, (keys, hist[keys]), n_neg


@dataclass(frozen=True)
class _Counts:
    """TP and FP at the distinct positive scores, in decreasing score order.

    ``tp[k]`` positives and ``fp_ge[k]`` negatives score ``>= u_k``; ``fp_gt[k]`` negatives
    score ``> u_k`` (the negatives tied with ``u_k`` are ``fp_ge - fp_gt``).
    """

    thresholds: np.ndarray  # (m,) the distinct positive scores u_k, decreasing
    tp: np.ndarray  # (m,) int64
    fp_ge: np.ndarray  # (m,) int64
    fp_gt: np.ndarray  # (m,) int64
    n_pos: int
    n_neg: int


def _counts_from(u, pos_count, below, below_eq, n_pos: int, n_neg: int) -> _Counts:
    """``_Counts`` from ascending distinct positive scores ``u``, their multiplicities and the
    number of negatives ``< u`` (``below``) and ``<= u`` (``below_eq``)."""
    return _Counts(
        thresholds=u[::-1],
        tp=np.cumsum(pos_count[::-1], dtype=np.int64),
        fp_ge=n_neg - below[::-1],
        fp_gt=n_neg - below_eq[::-1],
        n_pos=n_pos,
        n_neg=n_neg,
    )


def _rank_histograms(hists: list[tuple[np.ndarray, np.ndarray]], u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for negatives given as sparse short-mantissa histograms."""
    keys = np.concatenate([k for k, _ in hists])
    counts = np.concatenate([c for _, c in hists])
    # float64 sums of integer counts are exact below 2**53 pixels
    hist = np.bincount(keys, weights=counts, minlength=_Q_BINS).astype(np.int64)
    order, values = _q_table()
    cum = np.concatenate(([0], np.cumsum(hist[order])))
    left = np.searchsorted(values, u, side="left")
    # the table holds each value once, except 0 (as -0.0 and +0.0)
    eq = values[np.minimum(left, values.size - 1)] == u
    eq2 = eq & (left + 1 < values.size) & (values[np.minimum(left + 1, values.size - 1)] == u)
    return cum[left], cum[left + eq + eq2]


def _exact_metrics(c: _Counts, warn: bool) -> dict:
    out = {"auprc": np.nan, "auroc": np.nan, "fpr95": np.nan, "n_pos": c.n_pos, "n_neg": c.n_neg}
    if c.n_pos == 0:
        if warn:
            _warn_no_positive(c.n_neg)
        return out
    out["auprc"] = _average_precision(c)
    if c.n_neg == 0:
        if warn:
            _warn_no_negative()
        return out
    out["auroc"] = _roc_auc(c)
    out["fpr95"] = _fpr_at_tpr(c)
    return out


def _exact_curve(c: _Counts) -> dict:
    fp, tp = _roc_points(c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "recall": np.concatenate(([0.0], c.tp / c.n_pos)),
            "precision": np.concatenate(([1.0], c.tp / (c.tp + c.fp_ge))),
            "fpr": fp / c.n_neg,
            "tpr": tp / c.n_pos,
        }


def _average_precision(c: _Counts) -> float:
    """sklearn ``average_precision_score``: ``sum_k (R_k - R_{k-1}) P_k``, ``R_{-1} = 0``.

    The products ``np.diff(recall, prepend=0.0) * precision`` summed by ``np.sum``, formed
    with two temporary arrays fewer."""
    recall = c.tp / c.n_pos
    terms = np.empty_like(recall)
    terms[:1] = recall[:1]
    np.subtract(recall[1:], recall[:-1], out=terms[1:])
    del recall
    terms *= c.tp / (c.tp + c.fp_ge)
    return float(max(0.0, np.sum(terms)))


def _roc_points(c: _Counts) -> tuple[np.ndarray, np.ndarray]:
    """Corner points (FP, TP) of the ROC: (0, 0), then per distinct positive score the end of
    the horizontal stretch before it (FP_gt, TP_prev) and the point after its ties
    (FP_ge, TP), then (N, P). Interior points of straight segments are left out."""
    m = c.tp.size
    fp = np.empty(2 * m + 2, np.int64)
    tp = np.empty(2 * m + 2, np.int64)
    fp[0] = tp[0] = 0
    fp[1:-1:2] = c.fp_gt
    fp[2:-1:2] = c.fp_ge
    tp[1:-1:2] = np.concatenate(([0], c.tp[:-1]))
    tp[2:-1:2] = c.tp
    fp[-1], tp[-1] = c.n_neg, c.n_pos
    return fp, tp


def _roc_point(c: _Counts, i: int) -> tuple[int, int]:
    """Corner point ``i`` of :func:`_roc_points`, (FP, TP), without building the others."""
    m = c.tp.size
    if i == 0 or i == 2 * m + 1:
        return (0, 0) if i == 0 else (c.n_neg, c.n_pos)
    k = (i - 1) // 2
    if i % 2:
        return int(c.fp_gt[k]), int(c.tp[k - 1]) if k else 0
    return int(c.fp_ge[k]), int(c.tp[k])


_BLOCK = 1 << 20  # values per step of the integer AUROC sum


def _roc_auc(c: _Counts) -> float:
    """sklearn ``roc_auc_score``: trapezoid rule on the ROC (:func:`_roc_points`), in integers.

    ``2 P N AUROC = sum over segments (TP_a + TP_b)(FP_b - FP_a)``: per distinct positive score
    ``u_k`` its tie segment ``(TP_{k-1} + TP_k)(FP_ge_k - FP_gt_k)`` and the stretch after it,
    ``2 TP_k (FP_gt_{k+1} - FP_ge_k)`` (to (N, P) for the last, where ``TP = P``). Summed in
    int64 blocks, exact while ``2 P N < 2**63`` (up to ~4e9 pixels; no partial sum exceeds the
    total), float64 on the corner points beyond.
    """
    n_pos, n_neg = c.n_pos, c.n_neg
    if 2 * n_pos * n_neg >= 2**63:
        fp, tp = (a.astype(np.float64) for a in _roc_points(c))
        return float(np.sum((tp[1:] + tp[:-1]) * np.diff(fp)) / (2.0 * n_pos * n_neg))
    tp, ge, gt = c.tp, c.fp_ge, c.fp_gt
    m = tp.size
    twice_area = 2 * n_pos * (n_neg - int(ge[-1]))
    for a in range(0, m, _BLOCK):
        b = min(a + _BLOCK, m)
        prev = tp[a - 1 : b - 1] if a else np.concatenate(([0], tp[: b - 1]))
        twice_area += int(np.dot(prev + tp[a:b], ge[a:b] - gt[a:b]))
        e = min(b, m - 1)
        twice_area += int(np.dot(2 * tp[a:e], gt[a + 1 : e + 1] - ge[a:e]))
    return twice_area / (2 * n_pos * n_neg)  # Python ints: correctly rounded


def _fpr_at_tpr(c: _Counts, level: float = TPR_LEVEL) -> float:
    """``ood_metrics.fpr_at_95_tpr``: ``np.interp(level, tpr, fpr)`` on the ROC with its edge rules.

    ``tpr = TP / P`` and ``fpr = FP / N`` are formed exactly as in ``sklearn.metrics.roc_curve``,
    at the corner points of :func:`_roc_points`: leaving out collinear interior points (as
    ``drop_intermediate`` also does) does not change the interpolant, and the right end of a
    flat stretch is always kept. The curve runs from (0, 0) to (1, 1), so the edge rules
    (0 when every TPR < level, the smallest FPR among TPR >= level when every TPR >= level)
    only fire for a level outside (0, 1]. ``np.interp`` reads two points: the last one ``j``
    with ``tpr <= level`` and the next; only these are formed.
    """
    if level > 1.0 or level <= 0.0:
        return 0.0
    m = c.tp.size
    q = int(np.searchsorted(c.tp / c.n_pos, level, side="right"))  # points (FP_ge, TP) with tpr <= level
    j = 1 + min(q, m - 1) + q + (level >= 1.0)  # + (0, 0) and the (FP_gt, TP_prev) points, - 1
    fp, tp = (np.array(v, np.int64) for v in zip(*(_roc_point(c, i) for i in range(j, min(j + 2, 2 * m + 2)))))
    return float(np.interp(level, tp / c.n_pos, fp / c.n_neg))


class ExactState:
    """Exact pooled AuPRC / AUROC / FPR95 with ties (protocol ``exact``; see the module docstring).

    Storage: positive scores as given (float16/32/64, never rounded); negative scores as
    given, except frames whose negatives all have at most 10 significant mantissa bits
    (float16 maps, or float32 maps made from float16 values), which are kept losslessly as
    a sparse histogram over those values (a few hundred kB instead of 4 bytes a pixel).
    ``merge`` concatenates the lists.

    ``update`` splits a frame in one compiled pass (:mod:`analyze.kernels`; numpy for
    other dtypes). ``compute`` sorts the distinct positive scores ``u``, sorts copies of the
    raw negatives in groups (:func:`analyze.ranks.rank_raw`, on :func:`num_threads` threads;
    the state's arrays are not changed) and counts, for every ``u_k``, the negatives below
    and at it with a walk per group; TP and FP at every threshold follow from cumulative
    sums (all int64, so neither the grouping nor the threads ever change a result). The
    counts are kept until the next ``update``. Memory beyond the stored scores: a few int64
    arrays of ``len(u)`` and two sort buffers of :data:`analyze.ranks.SORT_GROUP` scores
    per thread.
    """

    protocol = "exact"
    definition = (
        "pooled non-void pixels, exact with ties: AuPRC = sklearn average_precision_score "
        "(step-wise), AUROC = sklearn roc_auc_score, FPR95 = ood_metrics.fpr_at_95_tpr "
        "(np.interp at TPR 0.95 on sklearn roc_curve)"
    )

    def __init__(self) -> None:
        self._pos: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        self._neg_q: list[tuple[np.ndarray, np.ndarray]] = []  # sparse short-mantissa histograms
        self.n_pos = 0
        self.n_neg = 0
        self._c: _Counts | None = None  # counts of the last compute, until the next update

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_c": None}  # the counts are recomputed, not shipped

    def update(self, y_score, y_true) -> "ExactState":
        """Add one frame (any shape; ``y_true`` 0/1/255). Returns ``self``."""
        self._c = None
        split = _split_exact_fast(y_score, y_true)
        if split is None:
            split = _split_exact(y_score, y_true)
        pos, neg, q, n_neg = split
        self.n_pos += pos.size
        self.n_neg += n_neg
        if pos.size:
            self._pos.append(pos)
        if neg is not None:
            self._neg.append(neg)
        if q is not None:
            self._neg_q.append(q)
        return self

    def merge(self, other: "ExactState") -> "ExactState":
        """A new state holding the pixels of both (inputs unchanged)."""
        _check_same_type(self, other)
        out = type(self)()
        out._pos = self._pos + other._pos
        out._neg = self._neg + other._neg
        out._neg_q = self._neg_q + other._neg_q
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out

    def _counts(self, threads: int | None = None) -> _Counts:
        """TP/FP counts at every distinct positive score; kept until the next ``update`` (the
        driver asks for metrics, curves and thresholds of the same state)."""
        if self._c is not None:
            return self._c
        pos = np.concatenate(self._pos) if self._pos else np.empty(0)
        u, pos_count = ranks.distinct_counts(pos)  # ascending; pos is a copy
        below = below_eq = None  # negatives < u and <= u
        if self._neg and u.size:
            below, below_eq = ranks.rank_raw(self._neg, u, num_threads(threads))
        if self._neg_q and u.size:
            b, be = _rank_histograms(self._neg_q, u)
            if below is None:
                below, below_eq = b, be
            else:
                below += b
                below_eq += be
        if below is None:
            below = below_eq = np.zeros(u.size, np.int64)
        self._c = _counts_from(u, pos_count, below, below_eq, self.n_pos, self.n_neg)
        return self._c

    def compute(self, *, warn: bool = True, threads: int | None = None) -> dict:
        """``auprc``, ``auroc``, ``fpr95`` (floats, NaN when undefined), ``n_pos``, ``n_neg``.

        The negatives are sorted on ``threads`` threads (default :func:`num_threads`).
        """
        return _exact_metrics(self._counts(threads), warn)

    def threshold_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(thresholds decreasing, TP, FP at ``score >= threshold``, n_pos) at the distinct anomaly scores."""
        c = self._counts()
        return c.thresholds.astype(np.float64), c.tp, c.fp_ge, c.n_pos

    def _curve(self) -> dict:
        return _exact_curve(self._counts())


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
        pos, neg = _split_frame(y_score, y_true, check_nan=False)
        self.n_pos += pos.size
        self.n_neg += neg.size
        if pos.size:
            self._pos.append(pos)
        return self

    def merge(self, other: "PositiveState") -> "PositiveState":
        _check_same_type(self, other)
        out = type(self)()
        out._pos = self._pos + other._pos
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out

    def _unique(self) -> tuple[np.ndarray, np.ndarray]:
        pos = np.concatenate(self._pos) if self._pos else np.empty(0)
        return ranks.distinct_counts(pos)

    def distinct(self) -> np.ndarray:
        """The distinct anomaly scores, ascending."""
        return self._unique()[0]

    def with_negatives(self, negatives: "NegativeCountState") -> "CountedState":
        """The final state, from this pass and the negatives counted at :meth:`distinct`."""
        u, pos_count = self._unique()
        if not np.array_equal(negatives.u, u) or negatives.n_pos != self.n_pos or negatives.n_neg != self.n_neg:
            raise ValueError("the two passes saw different pixels (did the frames change between them?)")
        return CountedState(_counts_from(u, pos_count, negatives.below, negatives.below_eq, self.n_pos, self.n_neg))


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
        pos, neg = _split_frame(y_score, y_true, check_nan=False)
        self.n_pos += pos.size
        self.n_neg += neg.size
        if neg.size:
            q = _short_mantissa_histogram(neg)
            if q is None:
                if np.isnan(neg).any():
                    raise ValueError("y_score contains NaN at non-void pixels")
                ranks.sort_in_place(neg)
                b, be = ranks.rank_sorted(neg, self.u)
            else:
                b, be = _rank_histograms([q], self.u)
            self.below = self.below + b
            self.below_eq = self.below_eq + be
        return self

    def merge(self, other: "NegativeCountState") -> "NegativeCountState":
        _check_same_type(self, other)
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

    def __init__(self, counts: _Counts) -> None:
        self._c = counts
        self.n_pos = counts.n_pos
        self.n_neg = counts.n_neg

    def compute(self, *, warn: bool = True) -> dict:
        return _exact_metrics(self._c, warn)

    def threshold_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        c = self._c
        return c.thresholds.astype(np.float64), c.tp, c.fp_ge, c.n_pos

    def _curve(self) -> dict:
        return _exact_curve(self._c)


# --------------------------------------------------------------------------------------
# SMIYC protocol


@functools.cache
def _f16_table() -> tuple[np.ndarray, np.ndarray]:
    """(order, values): the float16 bit patterns sorted by value (NaN patterns left out)."""
    order = _value_order(0x7C00, 0x8000)
    return order, order.astype(np.uint16).view(np.float16)


def _f16_distinct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a float16 array (as float16) and their counts, in O(n).

    Raises ValueError on NaN or infinite values.
    """
    hist = np.bincount(x.view(np.uint16), minlength=1 << 16)
    order, values = _f16_table()
    counts = hist[order]
    nz = np.flatnonzero(counts)
    values, counts = values[nz], counts[nz]
    if counts.sum() != x.size:
        raise ValueError("y_score contains NaN at non-void pixels")
    if values.size and (np.isinf(values[0]) or np.isinf(values[-1])):
        raise ValueError("y_score is infinite in float16 (|score| > 65504); the smiyc protocol casts to float16")
    return values, counts


def _quantile_linear(values: np.ndarray, counts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(a, q)`` (method "linear") of the array ``a`` holding ``values`` (sorted)
    ``counts`` times, without building it: numpy's order statistics and its ``_lerp``
    (``numpy/lib/_function_base_impl.py``: ``b - a`` in the input dtype, then
    ``a + diff * g``, or ``b - diff * (1 - g)`` where ``g >= 0.5``)."""
    n = int(counts.sum())
    virtual = (n - 1) * q  # float64
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = -1
    nxt[above] = -1
    gamma = virtual - prev
    ends = np.cumsum(counts)
    a = values[np.searchsorted(ends, np.where(prev < 0, n - 1, prev), side="right")]
    b = values[np.searchsorted(ends, np.where(nxt < 0, n - 1, nxt), side="right")]
    diff = b - a  # in the input dtype (float16), as numpy does
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


class SmiycState:
    """The SMIYC 2023 pixel metrics (``road-anomaly-benchmark``, protocol ``smiyc``).

    Per frame (``pixel_classification.py``, ``binary_confusion_matrix``, config
    ``PixBinaryClass``): scores of the non-void pixels cast to float16 (``evaluation.py``
    saves maps as float16); bin edges = sorted unique union of ``[vmin - eps, vmax + eps]``
    (``eps = max(0.01 * (vmax - vmin), 0.01)``) and ``np.quantile`` of the positive and of
    the negative scores at ``linspace(0, 1, min(num_bins // 2, n))`` each; positive and
    negative counts per bin with ``np.histogram`` (bins ``[e_i, e_{i+1})``, last closed).
    Each lower edge ``e_i`` is a threshold whose increment is the count of bin ``i``. (Both
    are computed from the frame's float16 histogram in O(n), with the same values as
    ``np.quantile`` and ``np.histogram``; a test checks this against numpy.)

    Pooling (``aggregate_dynamic_bins``, ``curves_from_cmats``): all frames' thresholds
    sorted in decreasing order, increments cumulated (float64) into TP/FP; repeated
    thresholds collapsed to their last occurrence (see below for the first); (TP, FP) =
    (0, 0) and (P, N) appended where missing; precision 1 where nothing is predicted.
    ``auprc = sum(diff(recall) * precision[1:])``, ``auroc`` = trapezoid of TPR over FPR
    (``np.trapz``), ``fpr95`` = FPR at the first TPR >= 0.95 (``np.searchsorted``).

    Choices where the benchmark is not defined by its code alone:

    * the first curve point: the benchmark keeps the first sorted entry even when the top
      threshold repeats across frames (several frames share their maximum score, common
      once MSP saturates at float16 1.0). That entry then carries one frame's partial count,
      chosen by ``np.argsort(t)[::-1]`` (an unstable sort, whose tie order differs between
      numpy versions) over frames that arrive in ``imap_unordered`` order: the number is not
      defined (on such data the benchmark's own AP moves by ~1e-4 between numpy 1.23 and
      2.4, the latter with ``np.trapz``, removed in numpy 2.4, put back). Here the first
      point is the complete count of the top threshold, like every other point; the result
      then depends on no order and equals the benchmark's bit for bit whenever the top
      threshold is unique.
    * ``eps`` and the two range edges are computed as under the numpy 1.23 the benchmark
      pins (float64); under numpy 2 its code computes them in float16, which changes the
      bins only when ``eps`` is below half a float16 step at ``vmax``. The quantiles are
      ``np.quantile`` of the float16 scores as in the benchmark.

    Frames without a non-void pixel are skipped (the benchmark raises on them); scores that
    overflow float16 (``|score| > 65504``) raise ValueError (the benchmark's bins break). ``merge``
    concatenates the per-frame bins. The benchmark's other configuration
    (``PixBinaryClass-uniThr``, 4096 uniform bins on [-0.01, 1.01]) is not offered: it bins
    float16 data with float16 edges that repeat near 1, which numpy 2 refuses.
    """

    protocol = "smiyc"
    definition = (
        "SMIYC 2023 (road-anomaly-benchmark PixBinaryClass): float16 scores, 768 per-frame "
        "percentile bins pooled by threshold; AuPRC = sum(diff(recall) * precision[1:]), "
        "FPR95 = FPR at the first TPR >= 0.95, AUROC = trapezoid on the binned ROC"
    )

    def __init__(self, num_bins: int = 768) -> None:
        self.num_bins = num_bins
        self._frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (lower edges, tp_rel, fp_rel)
        self.n_pos = 0
        self.n_neg = 0

    def update(self, y_score, y_true) -> "SmiycState":
        """Add one frame (``y_true`` 0/1/255); scores are cast to float16 first."""
        with np.errstate(over="ignore"):  # overflow is reported below, as a ValueError
            y16 = np.asarray(y_score).astype(np.float16)
        pos, neg = _split_frame(y16, y_true, check_nan=False)
        if pos.size + neg.size == 0:
            return self
        classes = [_f16_distinct(x) for x in (pos, neg)]  # (sorted float16 values, counts)
        vmin = min(v[0] for v, _ in classes if v.size)
        vmax = max(v[-1] for v, _ in classes if v.size)
        vrange = float(vmax - vmin)  # a float16 subtraction, as in the benchmark
        eps = max(vrange * 1e-2, 1e-2)  # float64, as under numpy 1.23 (python-float promotion)
        parts = [np.array([float(vmin) - eps, float(vmax) + eps])]
        for v, c in classes:
            n = int(c.sum())
            if n:
                parts.append(_quantile_linear(v, c, np.linspace(0, 1, min(self.num_bins // 2, n))))
        edges = np.unique(np.concatenate(parts))
        # np.histogram's bins: [e_i, e_{i+1}), the last one closed
        rel = []
        for v, c in classes:
            idx = np.minimum(np.searchsorted(edges, v.astype(np.float64), side="right") - 1, edges.size - 2)
            rel.append(np.bincount(idx, weights=c, minlength=edges.size - 1).astype(np.int64))
        self._frames.append((edges[:-1], rel[0], rel[1]))
        self.n_pos += pos.size
        self.n_neg += neg.size
        return self

    def frame_bins(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame that had a non-void pixel, in update/merge order: (bin lower edges
        increasing, anomaly counts, in-distribution counts) of its own percentile bins
        (what :mod:`analyze.smiyc_bootstrap` resamples)."""
        return list(self._frames)

    def merge(self, other: "SmiycState") -> "SmiycState":
        """A new state with both states' frames (inputs unchanged)."""
        _check_same_type(self, other)
        if other.num_bins != self.num_bins:
            raise ValueError(f"cannot merge num_bins {self.num_bins} with {other.num_bins}")
        out = type(self)(self.num_bins)
        out._frames = self._frames + other._frames
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        return out

    def _pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thresholds (decreasing) and cumulative TP, FP (float64), one entry per frame bin.

        The order among equal thresholds is irrelevant: only the last entry of each run is used.
        """
        thr = np.concatenate([e for e, _, _ in self._frames])
        tp_rel = np.concatenate([t for _, t, _ in self._frames])
        fp_rel = np.concatenate([f for _, _, f in self._frames])
        order = np.argsort(thr, kind="stable")[::-1]
        tp = np.cumsum(tp_rel[order].astype(np.float64))
        fp = np.cumsum(fp_rel[order].astype(np.float64))
        return thr[order], tp, fp

    def _curve(self) -> dict:
        thr, tp, fp = self._pooled()
        ends = np.flatnonzero(thr[:-1] != thr[1:])  # last entry of each run of equal thresholds
        first = ends[0] if ends.size else thr.size - 1  # the benchmark has 0 here
        keep = np.concatenate(([first], ends, [thr.size - 1]))
        tp, fp = tp[keep], fp[keep]
        n_pos, n_neg = float(self.n_pos), float(self.n_neg)
        if tp[0] != 0 or fp[0] != 0:
            tp, fp = np.concatenate(([0.0], tp)), np.concatenate(([0.0], fp))
        if tp[-1] != n_pos or fp[-1] != n_neg:
            tp, fp = np.concatenate((tp, [n_pos])), np.concatenate((fp, [n_neg]))
        n_pred = tp + fp
        precision = np.ones(tp.size)
        np.divide(tp, n_pred, out=precision, where=n_pred > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"recall": tp / n_pos, "precision": precision, "fpr": fp / n_neg, "tpr": tp / n_pos}

    def threshold_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(thresholds decreasing, TP, FP at ``score >= threshold``, n_pos): the pooled bins with
        repeated thresholds collapsed, before the curve's end points are added."""
        if not self._frames:
            return np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), self.n_pos
        thr, tp, fp = self._pooled()
        keep = np.r_[np.flatnonzero(thr[:-1] != thr[1:]), thr.size - 1]
        return thr[keep], tp[keep].astype(np.int64), fp[keep].astype(np.int64), self.n_pos

    def compute(self, *, warn: bool = True) -> dict:
        """``auprc``, ``auroc``, ``fpr95`` as the benchmark computes them, ``n_pos``, ``n_neg``."""
        out = {"auprc": np.nan, "auroc": np.nan, "fpr95": np.nan, "n_pos": self.n_pos, "n_neg": self.n_neg}
        if self.n_pos == 0:
            if warn:
                _warn_no_positive(self.n_neg)
            return out
        c = self._curve()
        out["auprc"] = float(np.sum(np.diff(c["recall"]) * c["precision"][1:]))
        if self.n_neg == 0:
            if warn:
                _warn_no_negative()
            return out
        tpr, fpr = c["tpr"], c["fpr"]
        out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
        i = int(np.searchsorted(tpr, TPR_LEVEL))
        out["fpr95"] = float(fpr[i]) if i < tpr.size else 1.0
        return out


# --------------------------------------------------------------------------------------
# mIoU


class ConfusionState:
    """Dataset-level confusion matrix for mIoU (Cityscapes ``evalPixelLevelSemanticLabeling``).

    ``confusion[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p`` (int64);
    pixels whose ground truth is ``ignore_index`` are skipped. ``merge`` adds matrices.
    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; a class with ``TP + FP + FN = 0`` (absent from
    both ground truth and prediction) has IoU NaN and is left out of the mean, as in the
    Cityscapes script; ``miou`` is the mean over the remaining classes (19 on Cityscapes).
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = VOID) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, y_pred, y_true) -> "ConfusionState":
        """Add one frame of predicted and ground-truth class ids (same shape)."""
        y_pred = np.asarray(y_pred).ravel()
        y_true = np.asarray(y_true).ravel()
        if y_pred.shape != y_true.shape:
            raise ValueError(f"y_pred has {y_pred.size} pixels, y_true {y_true.size}")
        keep = y_true != self.ignore_index
        t = y_true[keep].astype(np.int64)
        p = y_pred[keep].astype(np.int64)
        k = self.num_classes
        if t.size and (t.min() < 0 or t.max() >= k):
            raise ValueError(f"y_true holds ids outside [0, {k}) other than {self.ignore_index}")
        if p.size and (p.min() < 0 or p.max() >= k):
            raise ValueError(f"y_pred holds ids outside [0, {k}) at non-ignored pixels")
        self.confusion += np.bincount(t * k + p, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other: "ConfusionState") -> "ConfusionState":
        _check_same_type(self, other)
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError("cannot merge confusion states with different classes")
        out = type(self)(self.num_classes, self.ignore_index)
        out.confusion = self.confusion + other.confusion
        return out

    def compute(self, *, warn: bool = True) -> dict:
        """``miou`` (float) and ``iou`` (per-class float64 array, NaN for absent classes)."""
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - np.diag(self.confusion)
        iou = np.full(self.num_classes, np.nan)
        np.divide(tp, denom, out=iou, where=denom > 0)
        if not np.any(denom > 0):
            if warn:
                warnings.warn("no labelled pixel: miou is NaN", UndefinedMetricWarning, stacklevel=2)
            return {"miou": np.nan, "iou": iou}
        return {"miou": float(np.nanmean(iou)), "iou": iou}


# --------------------------------------------------------------------------------------
# public API


PROTOCOLS: dict[str, type] = {cls.protocol: cls for cls in (ExactState, SmiycState)}
"""Protocol name -> state class; ``cls.definition`` is its one-line definition."""


def _check_same_type(a, b) -> None:
    if type(a) is not type(b):
        raise TypeError(f"cannot merge {type(a).__name__} with {type(b).__name__}")


def _warn_no_negative() -> None:
    msg = "no negative (in-distribution) pixel: auroc and fpr95 are NaN"
    warnings.warn(msg, UndefinedMetricWarning, stacklevel=3)


def _warn_no_positive(n_neg: int) -> None:
    warnings.warn(
        f"no anomaly pixel among {n_neg} non-void pixels: auprc, auroc and fpr95 are NaN",
        UndefinedMetricWarning,
        stacklevel=3,
    )


def new_state(protocol: str = "exact"):
    """An empty state for ``protocol`` (a key of :data:`PROTOCOLS`)."""
    try:
        return PROTOCOLS[protocol]()
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {sorted(PROTOCOLS)}") from None


def merge_states(states: Sequence):
    """Merge a non-empty sequence of states of one kind, in order (a balanced tree)."""
    states = list(states)
    if not states:
        raise ValueError("merge_states needs at least one state")
    while len(states) > 1:
        merged = [a.merge(b) for a, b in zip(states[::2], states[1::2])]
        states = merged + ([states[-1]] if len(states) % 2 else [])
    return states[0]


def pixel_metrics(y_score_maps: Iterable, y_true_maps: Iterable, protocol: str = "exact",
                  threads: int | None = None) -> dict:
    """Pooled ``auprc``, ``fpr95``, ``auroc``, ``n_pos``, ``n_neg`` over per-frame maps.

    ``y_score_maps`` and ``y_true_maps`` are iterables of arrays of matching shapes (frames
    may differ in size); labels are 0, 1 (anomaly) or 255 (void). The exact protocol sorts
    on ``threads`` threads (default :func:`num_threads`); the result does not depend on it.

    >>> import numpy as np
    >>> m = pixel_metrics([np.array([[0.1, 0.9], [0.4, 0.7]])], [np.array([[0, 1], [0, 255]])])
    >>> m["auprc"], m["fpr95"], m["n_pos"]
    (1.0, 0.0, 1)
    """
    n = num_threads(threads)
    state = new_state(protocol)
    for y_score, y_true in zip(y_score_maps, y_true_maps, strict=True):
        state.update(y_score, y_true)  # in order on this thread: update threads saved little and fragmented the heap
    return state.compute(threads=n) if isinstance(state, ExactState) else state.compute()


def frame_ap(y_score, y_true, protocol: str = "exact") -> float:
    """AP of one frame under ``protocol`` (exact: sklearn ``average_precision_score``; smiyc: the
    benchmark's binned AP of that frame alone); NaN, silently, without anomaly."""
    return new_state(protocol).update(y_score, y_true).compute(warn=False)["auprc"]


def curves(state, n_points: int = 200) -> dict:
    """PR and ROC curves of a state, thinned to at most ``n_points`` points each, for plots.

    Returns float64 arrays ``precision``/``recall`` (same length, recall increasing) and
    ``fpr``/``tpr`` (same length). Points are chosen evenly along the x axis and evenly by
    index, so steep parts keep their shape; the end points are always kept.
    """
    if state.n_pos == 0:
        raise ValueError("no anomaly pixel: the curves are undefined")
    full = state._curve()
    pr = _thin(full["recall"], n_points)
    roc = _thin(full["fpr"] + full["tpr"], n_points)
    return {
        "precision": full["precision"][pr],
        "recall": full["recall"][pr],
        "fpr": full["fpr"][roc],
        "tpr": full["tpr"][roc],
    }


def best_f1_threshold(state) -> float:
    """The pixel threshold of the best pixel F1 on a state's curve (for component metrics).

    The rule (first maximum of ``2 TP / (2 TP + FP + FN)``, i.e. the highest threshold among
    ties; NaN with a warning without anomaly pixels) is
    :func:`analyze.components.best_f1_threshold_from_counts`; this takes the counts from the
    state: every distinct anomaly score for ``exact``, the pooled bin edges for ``smiyc``.
    """
    from analyze.components import best_f1_threshold_from_counts  # components imports this module

    return best_f1_threshold_from_counts(*state.threshold_counts())


def _thin(x: np.ndarray, n_points: int) -> np.ndarray:
    """Indices into nondecreasing ``x``: about half evenly in value, half evenly in index."""
    if x.size <= n_points:
        return np.arange(x.size)
    half = max(n_points // 2 - 1, 1)
    x = np.nan_to_num(x)
    by_value = np.searchsorted(x, np.linspace(x[0], x[-1], half))
    by_index = np.linspace(0, x.size - 1, half).round().astype(np.int64)
    idx = np.unique(np.concatenate((by_value, by_index, [0, x.size - 1])))
    return idx[idx < x.size][:n_points]
