"""Frame-bootstrap intervals for the ``smiyc`` protocol, computed with the SMIYC estimator itself.

An interval must come from the estimator its row reports. The smiyc protocol
(:class:`analyze.metrics.SmiycState`, after ``SegmentMeIfYouCan/road-anomaly-benchmark``)
bins each frame's float16 scores at that frame's own percentiles, pools the bins of all
frames sorted by threshold, and reads AP as ``sum(diff(recall) * precision[1:])``, AUROC as
the trapezoid and FPR95 at the first TPR >= 0.95 of that pooled curve. Resampling frames
keeps every frame's bins as they are: a resample that draws frame ``f`` ``w_f`` times pools
``w_f`` copies of its bins. So with ``u_1 > u_2 > ...`` the distinct bin lower edges of all
frames and ``I[f, k]`` frame f's counts in its bin whose lower edge is ``u_k`` (0 if it has
none there), the resample's curve is

    TP_k = sum_{j <= k} sum_f w_f I_pos[f, j],   FP_k likewise,

the same points as the benchmark's pooled curve of the resampled frames (a threshold that
only undrawn frames have repeats the previous point, which changes none of the three
metrics). ``W @ I`` is a sparse product, evaluated for a block of resamples at a time
(about :data:`BLOCK_BYTES` per curve array).

The resample counts are those of the exact protocol (:func:`analyze.metrics.bootstrap.resample_counts`,
same seed, same frames), and the interval is the same percentile interval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from analyze.metrics.bootstrap import percentile_intervals, resample_counts
from analyze.metrics import TPR_LEVEL

BLOCK_BYTES = 64 * 2**20

FrameBins = tuple[np.ndarray, np.ndarray, np.ndarray]  # (lower edges increasing, anomaly counts, ID counts)


def _increments(frame_bins: Sequence[FrameBins]) -> tuple[sp.csc_matrix, sp.csc_matrix]:
    """Sparse ``I_pos``, ``I_neg`` (K, F): counts of frame f's bin at the k-th highest distinct lower edge."""
    edges = np.concatenate([e for e, _, _ in frame_bins])
    frame = np.concatenate([np.full(e.size, f) for f, (e, _, _) in enumerate(frame_bins)])
    u, inv = np.unique(edges, return_inverse=True)
    row = u.size - 1 - inv  # row 0 = the highest threshold
    shape = (u.size, len(frame_bins))
    pos = sp.csc_matrix((np.concatenate([p for _, p, _ in frame_bins]).astype(np.float64), (row, frame)), shape)
    neg = sp.csc_matrix((np.concatenate([n for _, _, n in frame_bins]).astype(np.float64), (row, frame)), shape)
    return pos, neg


def _curve_metrics(tp: np.ndarray, fp: np.ndarray, level: float = TPR_LEVEL) -> dict[str, np.ndarray]:
    """SMIYC's AP, AUROC and FPR95 of each column of cumulative counts ``tp``, ``fp`` (K, R),
    thresholds decreasing down the rows (:meth:`analyze.metrics.SmiycState.compute`).

    The curve starts at (0, 0), where precision counts as 1; NaN where a column has no
    anomaly pixel (every metric) or no in-distribution pixel (AUROC, FPR95); FPR95 is 1 where
    TPR never reaches ``level`` (as in the benchmark).
    """
    zero = np.zeros((1, tp.shape[1]))
    tp = np.concatenate([zero, tp])  # (K + 1, R)
    fp = np.concatenate([zero, fp])
    n_pos, n_neg = tp[-1], fp[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / n_pos
        fpr = fp / n_neg
        n_pred = tp + fp
        precision = np.where(n_pred > 0, tp / np.where(n_pred > 0, n_pred, 1), 1.0)
        ap = np.sum(np.diff(tpr, axis=0) * precision[1:], axis=0)
        auroc = np.sum(np.diff(fpr, axis=0) * (tpr[1:] + tpr[:-1]) / 2, axis=0)
        reach = tpr >= level
        first = np.argmax(reach, axis=0)
        fpr95 = np.where(reach.any(axis=0), fpr[first, np.arange(tp.shape[1])], 1.0)
    ap[n_pos <= 0] = np.nan
    auroc[(n_pos <= 0) | (n_neg <= 0)] = np.nan
    fpr95[(n_pos <= 0) | (n_neg <= 0)] = np.nan
    return {"auprc": ap, "auroc": auroc, "fpr95": fpr95}


def smiyc_resample_metrics(frame_bins: Sequence[FrameBins], weights: np.ndarray) -> dict[str, np.ndarray]:
    """SMIYC AP, AUROC, FPR95 of each row of ``weights`` (R, F): frame f pooled ``weights[r, f]`` times.

    ``frame_bins`` are :meth:`analyze.metrics.SmiycState.frame_bins`. A row of ones gives the
    state's own metrics (tested)."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    if w.shape[1] != len(frame_bins):
        raise ValueError(f"weights have {w.shape[1]} frames, frame_bins {len(frame_bins)}")
    pos, neg = _increments(frame_bins)
    block = max(1, BLOCK_BYTES // (8 * max(1, pos.shape[0])))
    parts = []
    for a in range(0, w.shape[0], block):
        wt = w[a : a + block].T  # (F, b)
        tp = np.cumsum(np.asarray(pos @ wt), axis=0)  # (K, b)
        fp = np.cumsum(np.asarray(neg @ wt), axis=0)
        parts.append(_curve_metrics(tp, fp))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("auprc", "auroc", "fpr95")}


def smiyc_bootstrap_ci(frame_bins: Sequence[FrameBins], n_boot: int, seed: int,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the SMIYC ``auprc``, ``auroc``, ``fpr95`` over ``n_boot`` frame
    resamples (:func:`analyze.metrics.bootstrap.resample_counts` of the frames in ``frame_bins``)."""
    w = resample_counts(len(frame_bins), n_boot, seed)
    return percentile_intervals(smiyc_resample_metrics(frame_bins, w), level)
