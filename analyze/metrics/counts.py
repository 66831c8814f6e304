"""The exact metrics from integer counts: TP and FP at every distinct anomaly score.

:class:`Counts` is what every ``exact`` state reduces to (:class:`analyze.metrics.exact.ExactState`,
and the two-pass states of :mod:`analyze.metrics.two_pass`); the three numbers and the curves
follow from it with the definitions of scikit-learn and ``ood_metrics`` (see
:mod:`analyze.metrics`), all from int64 counts, so no grouping or thread count changes a result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyze.metrics.common import TPR_LEVEL, warn_no_negative, warn_no_positive


@dataclass(frozen=True)
class Counts:
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


def counts_from(u, pos_count, below, below_eq, n_pos: int, n_neg: int) -> Counts:
    """``Counts`` from ascending distinct positive scores ``u``, their multiplicities and the
    number of negatives ``< u`` (``below``) and ``<= u`` (``below_eq``)."""
    return Counts(
        thresholds=u[::-1],
        tp=np.cumsum(pos_count[::-1], dtype=np.int64),
        fp_ge=n_neg - below[::-1],
        fp_gt=n_neg - below_eq[::-1],
        n_pos=n_pos,
        n_neg=n_neg,
    )


def exact_metrics(c: Counts, warn: bool) -> dict:
    out = {"auprc": np.nan, "auroc": np.nan, "fpr95": np.nan, "n_pos": c.n_pos, "n_neg": c.n_neg}
    if c.n_pos == 0:
        if warn:
            warn_no_positive(c.n_neg)
        return out
    out["auprc"] = _average_precision(c)
    if c.n_neg == 0:
        if warn:
            warn_no_negative()
        return out
    out["auroc"] = _roc_auc(c)
    out["fpr95"] = _fpr_at_tpr(c)
    return out


def exact_curve(c: Counts) -> dict:
    fp, tp = _roc_points(c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "recall": np.concatenate(([0.0], c.tp / c.n_pos)),
            "precision": np.concatenate(([1.0], c.tp / (c.tp + c.fp_ge))),
            "fpr": fp / c.n_neg,
            "tpr": tp / c.n_pos,
        }


def _average_precision(c: Counts) -> float:
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


def _roc_points(c: Counts) -> tuple[np.ndarray, np.ndarray]:
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


def _roc_point(c: Counts, i: int) -> tuple[int, int]:
    """Corner point ``i`` of :func:`_roc_points`, (FP, TP), without building the others."""
    m = c.tp.size
    if i == 0 or i == 2 * m + 1:
        return (0, 0) if i == 0 else (c.n_neg, c.n_pos)
    k = (i - 1) // 2
    if i % 2:
        return int(c.fp_gt[k]), int(c.tp[k - 1]) if k else 0
    return int(c.fp_ge[k]), int(c.tp[k])


_BLOCK = 1 << 20  # values per step of the integer AUROC sum


def _roc_auc(c: Counts) -> float:
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


def _fpr_at_tpr(c: Counts, level: float = TPR_LEVEL) -> float:
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
