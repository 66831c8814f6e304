"""The paired frame bootstrap of a difference between two cells, as pure functions.

Two cells scored on the same frames are resampled together: resample ``r`` draws the frames
with the counts ``W[r]`` (:func:`analyze.metrics.bootstrap.resample_counts`, the seed and frames of
``analyze score --bootstrap``) for both, and the difference of the two metrics on that
resample is ``d*_r = m_A(W[r]) - m_B(W[r])``. Each cell's ``m(W)`` is its protocol's own
estimator on what the scoring pass kept (:func:`cell_resamples`): the binned exact curves of
:func:`analyze.metrics.bootstrap.resample_metrics` or SMIYC's pooled per-frame bins of
:func:`analyze.metrics.smiyc_bootstrap.smiyc_resample_metrics`. A cell's resamples are computed once
and reused by every pair it is in, so comparing every pair of ``n`` cells costs ``n``
bootstraps, not ``n^2``.

* the difference reported is that of the two rows' values (``value_A - value_B``, the exact
  point estimates), never a bootstrap mean;
* the interval is the percentile interval of ``d*`` (Efron and Tibshirani, *An Introduction to
  the Bootstrap*, 1993, ch. 13), over the resamples where both metrics are defined;
* the two-sided p-value is ``min(1, 2 min(#(d* <= 0), #(d* >= 0)) / R)``: the smallest
  ``alpha`` at which the ``1 - alpha`` percentile interval just excludes 0 (ch. 16's
  achieved significance level of the percentile interval). A cell against itself has
  ``d* = 0`` everywhere: difference 0, interval [0, 0], p = 1;
* :func:`holm` is Holm's step-down correction (Holm, *A simple sequentially rejective
  multiple test procedure*, Scand. J. Statist. 6, 1979).
"""

from __future__ import annotations

import numpy as np

from analyze.metrics.bootstrap import resample_metrics
from analyze.metrics.smiyc_bootstrap import smiyc_resample_metrics

METRICS = ("auprc", "auroc", "fpr95")


def cell_resamples(protocol: str, offsets: np.ndarray, bins: np.ndarray, pos: np.ndarray, neg: np.ndarray,
                   weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of one cell on each resample (row of ``weights`` (R, F)), from what
    :mod:`analyze.compare.framedata` kept: frame f's counts are ``pos[offsets[f]:offsets[f+1]]``
    (and ``neg``); exact: every frame has the shared bins whose edges are ``bins`` (B + 1);
    smiyc: frame f's bin lower edges are ``bins[offsets[f]:offsets[f+1]]``."""
    n_frames = offsets.size - 1
    if protocol == "exact":
        n_bins = bins.size - 1
        return resample_metrics(pos.reshape(n_frames, n_bins), neg.reshape(n_frames, n_bins), weights)
    frame_bins = [(bins[a:b], pos[a:b], neg[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    return smiyc_resample_metrics(frame_bins, weights)


def paired_difference(a: np.ndarray, b: np.ndarray, value_a: float, value_b: float,
                      level: float = 0.95) -> dict[str, float]:
    """``{difference, ci_low, ci_high, p_value, n_resamples}`` of ``A - B`` from both cells'
    metric on the same resamples (``a``, ``b``: (R,)); see the module docstring. NaN interval and
    p-value where no resample has both metrics defined."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[np.isfinite(d)]
    out = {"difference": float(value_a) - float(value_b), "n_resamples": int(d.size)}
    if not d.size:
        return {**out, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    alpha = (1 - level) / 2
    lo, hi = np.percentile(d, [100 * alpha, 100 * (1 - alpha)])
    p = min(1.0, 2 * min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)) / d.size)
    return {**out, "ci_low": float(lo), "ci_high": float(hi), "p_value": float(p)}


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values of one family (NaN stays NaN and does not count): the ``i``-th
    smallest of ``m`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the
    adjusted value is below ``alpha`` is Holm's procedure at family-wise level ``alpha``."""
    p = np.asarray(p_values, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
