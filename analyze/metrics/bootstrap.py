"""Bootstrap confidence intervals over frames for AuPRC, AUROC and FPR95 (exact protocol).

Frames, not pixels, are resampled (pixels of one frame are not independent), and only the
frames that contribute a labelled pixel (a frame whose labels are all void would only
shrink the resamples). A resample is a multinomial weighting of those frames
(:func:`resample_counts`, shared with the smiyc protocol's intervals in
:mod:`analyze.metrics.smiyc_bootstrap`); each interval is the percentile interval of the
protocol's own estimator over the resamples (:func:`percentile_intervals`).

For the exact protocol each frame contributes a histogram of its anomaly and
in-distribution scores over shared bins (:func:`frame_histograms`), so 1000 resamples of a
100-frame dataset are one matrix product (seconds). The bins are cut at the quantiles of
the dataset's anomaly scores, each with a bin of its own for the scores tied with it
(:func:`edges_from_counts`): with fewer than 2048 distinct anomaly scores the binned
metrics of each resample are the exact ones (scikit-learn AP and AUROC, interpolated
FPR95; tested); with more, the curves follow the exact ones closely where the metrics are
decided and the intervals are approximate. The point estimates in the results are always
exact.
"""

from __future__ import annotations

import warnings

import numpy as np

from analyze.metrics import TPR_LEVEL


def frame_histograms(score: np.ndarray, label: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of anomaly (label 1) and in-distribution (label 0) pixels per score bin; void ignored.

    ``edges`` (B + 1,) strictly decreasing; bin ``b`` holds ``edges[b+1] <= score < edges[b]``,
    i.e. bins run from the highest threshold to the lowest. Scores at or above ``edges[0]`` go
    to bin 0 and scores below ``edges[B]`` to bin B - 1, so no pixel is lost. Returns
    ``(pos, neg)``, int64 arrays of length B.
    """
    e = np.asarray(edges, np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) < 0):
        raise ValueError("edges must be a 1-D strictly decreasing array of at least 2 values")
    s = np.asarray(score, np.float64).ravel()
    y = np.asarray(label).ravel()
    if s.shape != y.shape:
        raise ValueError(f"score has {s.size} pixels, label {y.size}")
    keep = (y == 0) | (y == 1)
    s, y = s[keep], y[keep]
    if np.isnan(s).any():
        raise ValueError("score map has NaN at labelled pixels")
    n_bins = e.size - 1
    asc = e[::-1]  # increasing: asc[i] = e[B - i]
    i = np.clip(np.searchsorted(asc, s, side="right") - 1, 0, n_bins - 1)
    b = n_bins - 1 - i
    pos = np.bincount(b[y == 1], minlength=n_bins).astype(np.int64)
    neg = np.bincount(b[y == 0], minlength=n_bins).astype(np.int64)
    return pos, neg


def sorted_histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the sorted NaN-free scores ``x`` per bin of :func:`frame_histograms` (same edges,
    same rules, int64 (B,)), by one binary search per edge instead of one per score.

    With ``asc = edges[::-1]`` (increasing) a score falls in ascending bin ``i`` when ``i`` edges
    after ``asc[0]`` lie at or below it (clipped to ``0 .. B - 1``), so ``#(x >= asc[k])`` for
    ``k = 1 .. B - 1`` are the bin counts' tail sums.
    """
    e = np.asarray(edges, np.float64)
    at_or_above = x.size - np.searchsorted(x, e[::-1][1:-1], side="left")  # #(x >= asc[k]), k = 1 .. B-1
    tails = np.concatenate(([x.size], at_or_above, [0]))  # k = 0 (every score, the clip) .. B (none)
    return (tails[:-1] - tails[1:])[::-1].astype(np.int64)  # ascending bin i -> bin B - 1 - i


def _metrics_from_cumulative(tp: np.ndarray, fp: np.ndarray, level: float = TPR_LEVEL) -> dict[str, np.ndarray]:
    """AP, AUROC, FPR95 for each row of cumulative counts ``tp``, ``fp`` (R, B) (decreasing thresholds).

    * ``auprc``: ``sum_b (R_b - R_{b-1}) P_b`` (scikit-learn's step-wise AP on the binned curve);
    * ``auroc``: trapezoid through (0, 0) and every (FPR_b, TPR_b);
    * ``fpr95``: ``np.interp(level, tpr, fpr)`` on those points (``ood_metrics.fpr_at_95_tpr``):
      at a flat stretch with TPR exactly ``level`` the largest FPR of the stretch.

    NaN where a row has no positive (or, for AUROC/FPR95, no negative).
    """
    tp = np.asarray(tp, np.float64)
    fp = np.asarray(fp, np.float64)
    r = tp.shape[0]
    P, N = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / P
        denom = tp + fp
        precision = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0.0)
        d_recall = np.diff(recall, axis=1, prepend=0.0)
        ap = np.sum(d_recall * precision, axis=1)
        tpr = np.concatenate([np.zeros((r, 1)), recall], axis=1)  # (R, B+1)
        fpr = np.concatenate([np.zeros((r, 1)), fp / N], axis=1)
        auroc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
        # last point with tpr <= level (tpr is nondecreasing and starts at 0)
        j = np.clip(np.sum(tpr <= level, axis=1) - 1, 0, tpr.shape[1] - 1)
        jn = np.minimum(j + 1, tpr.shape[1] - 1)
        rows = np.arange(r)
        t0, t1, f0, f1 = tpr[rows, j], tpr[rows, jn], fpr[rows, j], fpr[rows, jn]
        slope = np.where(t1 > t0, (f1 - f0) / np.where(t1 > t0, t1 - t0, 1), 0.0)
        fpr95 = f0 + (level - t0) * slope
    no_pos = P[:, 0] <= 0
    no_neg = N[:, 0] <= 0
    ap[no_pos] = np.nan
    auroc[no_pos | no_neg] = np.nan
    fpr95[no_pos | no_neg] = np.nan
    return {"auprc": ap, "auroc": auroc, "fpr95": fpr95}


class FrameHistograms:
    """Mergeable per-frame histograms over fixed ``edges`` (:func:`frame_histograms`), in frame order:
    the states of the exact protocol's bootstrap pass. ``merge`` concatenates."""

    def __init__(self, edges: np.ndarray) -> None:
        self.edges = edges
        self.frames: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, y_score, y_true) -> "FrameHistograms":
        self.frames.append(frame_histograms(y_score, y_true, self.edges))
        return self

    def add_sorted(self, pos: np.ndarray, neg: np.ndarray) -> "FrameHistograms":
        """Add a frame from its sorted anomaly and in-distribution scores (:func:`sorted_histogram`:
        the counts :meth:`update` gives on the frame's maps)."""
        self.frames.append((sorted_histogram(pos, self.edges), sorted_histogram(neg, self.edges)))
        return self

    def merge(self, other: "FrameHistograms") -> "FrameHistograms":
        out = FrameHistograms(self.edges)
        out.frames = self.frames + other.frames
        return out

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """``(pos_hist, neg_hist)``, each (F, B): the input of :func:`bootstrap_ci`."""
        pos, neg = (np.stack(h) for h in zip(*self.frames))
        return pos, neg


def resample_counts(n_frames: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_frames) float64: how often each frame is drawn in each resample,
    ``Multinomial(n_frames, 1 / n_frames)`` from ``numpy.random.default_rng(seed)``."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if n_frames < 1:
        raise ValueError("no frame to resample")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_frames, np.full(n_frames, 1.0 / n_frames), size=n_boot).astype(np.float64)


def percentile_intervals(values: dict[str, np.ndarray], level: float = 0.95) -> dict[str, tuple[float, float]]:
    """``{metric: (low, high)}``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles
    (``np.percentile``, linear) of each metric over the resamples where it is defined; a
    warning says in how many it was not (a resample without anomaly pixels has no AP)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1 - level) / 2
    out = {}
    for name, v in values.items():
        ok = np.isfinite(v)
        if not ok.any():
            out[name] = (float("nan"), float("nan"))
            continue
        if (~ok).sum():
            warnings.warn(f"bootstrap: {name} undefined in {(~ok).sum()} of {v.size} resamples "
                          "(no anomaly or no in-distribution pixel drawn); they are left out", RuntimeWarning,
                          stacklevel=3)
        lo, hi = np.percentile(v[ok], [100 * alpha, 100 * (1 - alpha)])
        out[name] = (float(lo), float(hi))
    return out


def bootstrap_ci(pos_hist: np.ndarray, neg_hist: np.ndarray, n_boot: int, seed: int,
                 level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of ``auprc``, ``auroc``, ``fpr95`` over frames.

    ``pos_hist``/``neg_hist`` (F, B): frame f's anomaly / in-distribution pixel counts per score
    bin, bins by decreasing threshold (:func:`frame_histograms`). A resample draws F frames
    with replacement: the counts matrix ``W`` (n_boot, F) of :func:`resample_counts`; its
    curves are ``TP = cumsum(W @ pos_hist)`` and ``FP = cumsum(W @ neg_hist)`` along the bins,
    and the metrics follow :func:`_metrics_from_cumulative` for all resamples at once.
    Returns :func:`percentile_intervals` of those metrics.
    """
    pos = np.asarray(pos_hist, np.float64)
    neg = np.asarray(neg_hist, np.float64)
    if pos.ndim != 2 or pos.shape != neg.shape:
        raise ValueError(f"pos_hist and neg_hist must both be (F, B); got {pos.shape} and {neg.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    w = resample_counts(pos.shape[0], n_boot, seed)  # (n_boot, F)
    return percentile_intervals(resample_metrics(pos, neg, w), level)


def resample_metrics(pos_hist: np.ndarray, neg_hist: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The binned ``auprc``, ``auroc``, ``fpr95`` of each resample: row r of ``weights`` (R, F)
    pools frame f ``weights[r, f]`` times (:func:`resample_counts`); ``pos_hist``/``neg_hist`` (F, B)
    as in :func:`bootstrap_ci`. Each metric is an array (R,)."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    tp = np.cumsum(w @ np.asarray(pos_hist, np.float64), axis=1)  # (R, B)
    fp = np.cumsum(w @ np.asarray(neg_hist, np.float64), axis=1)
    return _metrics_from_cumulative(tp, fp)


def edges_from_counts(thresholds: np.ndarray, tp: np.ndarray, n_bins: int = 2048) -> np.ndarray:
    """Decreasing bin edges at the quantiles of the anomaly scores, with open ends.

    ``thresholds`` (decreasing) and cumulative ``tp`` are a state's ``threshold_counts()``:
    a threshold ``u`` is chosen where TP first reaches ``k / n_bins`` of the anomaly pixels
    (every distinct anomaly score when there are at most ``n_bins - 1``). Each chosen ``u``
    gives two edges, ``u`` and the next float above it, so that the scores equal to ``u``
    have a bin of their own: the binned curve then passes through the exact ROC and PR
    points at ``u`` (TP and FP at ``score >= u``) and just above it (``score > u``), and
    between two chosen thresholds it is exact as well when no other anomaly score lies
    there (the exact curve is a horizontal ROC segment there).
    """
    thresholds = np.asarray(thresholds, np.float64)
    tp = np.asarray(tp)
    if thresholds.size == 0:
        return np.array([np.inf, -np.inf])
    targets = np.linspace(0, tp[-1], n_bins + 1)[1:-1]
    idx = np.searchsorted(tp, targets, side="left")
    chosen = np.unique(thresholds[np.clip(idx, 0, thresholds.size - 1)])
    inner = np.unique(np.concatenate((chosen, np.nextafter(chosen, np.inf))))[::-1]
    inner = inner[np.isfinite(inner)]
    return np.concatenate(([np.inf], inner, [-np.inf]))
