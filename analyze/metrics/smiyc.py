"""The ``smiyc`` protocol: the SegmentMeIfYouCan benchmark's binned pixel metrics."""

from __future__ import annotations

import numpy as np

from analyze.metrics.f16_range import n_distinct
from analyze.metrics.common import VOID, TPR_LEVEL, check_same_type, split_frame, warn_no_negative, warn_no_positive
from analyze.metrics.float_keys import f16_table


def _f16_distinct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a float16 array (as float16) and their counts, in O(n).

    Raises ValueError on NaN or infinite values.
    """
    hist = np.bincount(x.view(np.uint16), minlength=1 << 16)
    order, values = f16_table()
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

    ``analyze score --protocol smiyc`` feeds it each (scorer, T)'s scores mapped by the track's
    affine transform (:mod:`analyze.metrics.f16_range`), as ``analyze export`` writes them. ``distinct``
    and ``lost`` count, summed over frames, the distinct non-void scores given and those that
    share a float16 value with another (what float16 flattens).

    Frames without a non-void pixel are skipped (the benchmark raises on them); scores that
    overflow float16 (``|score| > 65504``) raise ValueError (the benchmark's bins break). ``merge``
    concatenates the per-frame bins. The benchmark's other configuration
    (``PixBinaryClass-uniThr``, 4096 uniform bins on [-0.01, 1.01]) is not offered: it bins
    float16 data with float16 edges that repeat near 1, which numpy 2 refuses.
    """

    protocol = "smiyc"
    definition = (
        "SMIYC 2023 (road-anomaly-benchmark PixBinaryClass): float16 scores (after one affine map per "
        "track, as analyze export writes them), 768 per-frame "
        "percentile bins pooled by threshold; AuPRC = sum(diff(recall) * precision[1:]), "
        "FPR95 = FPR at the first TPR >= 0.95, AUROC = trapezoid on the binned ROC"
    )

    def __init__(self, num_bins: int = 768) -> None:
        self.num_bins = num_bins
        self._frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (lower edges, tp_rel, fp_rel)
        self.n_pos = 0
        self.n_neg = 0
        self.distinct = 0  # distinct non-void scores given, summed over frames
        self.lost = 0  # ... of them sharing a float16 value with another

    def update(self, y_score, y_true) -> "SmiycState":
        """Add one frame (``y_true`` 0/1/255); scores are cast to float16 first."""
        y = np.asarray(y_score)
        with np.errstate(over="ignore"):  # overflow is reported below, as a ValueError
            y16 = y.astype(np.float16)
        pos, neg = split_frame(y16, y_true, check_nan=False)
        if pos.size + neg.size == 0:
            return self
        classes = [_f16_distinct(x) for x in (pos, neg)]  # (sorted float16 values, counts)
        n16 = np.union1d(classes[0][0], classes[1][0]).size
        n_given = n16 if y.dtype == np.float16 else n_distinct(y[np.asarray(y_true) != VOID])
        self.distinct += n_given
        self.lost += max(0, n_given - n16)
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
        (what :mod:`analyze.metrics.smiyc_bootstrap` resamples)."""
        return list(self._frames)

    def merge(self, other: "SmiycState") -> "SmiycState":
        """A new state with both states' frames (inputs unchanged)."""
        check_same_type(self, other)
        if other.num_bins != self.num_bins:
            raise ValueError(f"cannot merge num_bins {self.num_bins} with {other.num_bins}")
        out = type(self)(self.num_bins)
        out._frames = self._frames + other._frames
        out.n_pos = self.n_pos + other.n_pos
        out.n_neg = self.n_neg + other.n_neg
        out.distinct = self.distinct + other.distinct
        out.lost = self.lost + other.lost
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
                warn_no_positive(self.n_neg)
            return out
        c = self._curve()
        out["auprc"] = float(np.sum(np.diff(c["recall"]) * c["precision"][1:]))
        if self.n_neg == 0:
            if warn:
                warn_no_negative()
            return out
        tpr, fpr = c["tpr"], c["fpr"]
        out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
        i = int(np.searchsorted(tpr, TPR_LEVEL))
        out["fpr95"] = float(fpr[i]) if i < tpr.size else 1.0
        return out
