"""The pixel threshold of the component metrics: the best-F1 point of a pixel-metric state's curve.

After ``SegmentMeIfYouCan/road-anomaly-benchmark`` (2023, commit 1c7804e),
``MetricSegment.get_thresh_p_from_curve`` and ``pixel_classification_curves.py``
(``curves_from_cmats``): the threshold of the best pixel F1 on the pixel PR curve, the one
:mod:`analyze.metrics.components` predicts with.
"""

from __future__ import annotations

import warnings

import numpy as np

from analyze.metrics.common import UndefinedMetricWarning


def best_f1_threshold_from_counts(thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_pos: int) -> float:
    """The pixel threshold of the best pixel F1 (``curves_from_cmats``: ``best_f1_threshold``).

    ``thresholds`` (m,) strictly decreasing; ``tp[k]``, ``fp[k]``: positive and negative
    pixels with score ``>= thresholds[k]``; ``n_pos``: all positive pixels.
    ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k) = 2PR / (P + R)``, with ``FN_k = n_pos - TP_k``;
    the first maximum (``np.nanargmax``) wins, i.e. the highest threshold among ties. The
    benchmark's curve starts with a (0, 0) point at ``max + 1`` when the first count is not
    empty, which is only chosen when every F1 is 0; that rule is kept.

    The best-F1 pixel set is ``score >= threshold``, whereas the benchmark's component step
    predicts ``score > threshold``: pixels tied at the threshold drop out there. That is the
    benchmark's behaviour (``ComponentState(..., inclusive=True)`` keeps them).

    Returns NaN with an :class:`~analyze.metrics.UndefinedMetricWarning` when ``n_pos == 0``.
    """
    thresholds = np.asarray(thresholds, np.float64)
    tp = np.asarray(tp)
    fp = np.asarray(fp)
    if thresholds.ndim != 1 or tp.shape != thresholds.shape or fp.shape != thresholds.shape:
        raise ValueError(f"thresholds, tp, fp must be 1-D of one length; got {thresholds.shape}, {tp.shape}, {fp.shape}")
    if thresholds.size > 1 and not np.all(thresholds[1:] < thresholds[:-1]):
        raise ValueError("thresholds must be strictly decreasing")
    if n_pos <= 0 or thresholds.size == 0:
        warnings.warn("no anomaly pixel: the best-F1 threshold is NaN", UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    if np.any(tp > n_pos) or np.any(tp < 0) or np.any(fp < 0):
        raise ValueError(f"counts out of range: tp must lie in [0, n_pos={n_pos}], fp >= 0")
    # float64 division of exact integers: equal fractions give equal floats, so ties are exact
    tpf = tp.astype(np.float64)
    f1 = 2.0 * tpf / (tpf + fp.astype(np.float64) + float(n_pos))
    k = int(np.argmax(f1))
    if f1[k] == 0.0 and (tp[0] != 0 or fp[0] != 0):
        return float(thresholds[0]) + 1.0
    return float(thresholds[k])


def best_f1_threshold(state) -> float:
    """The pixel threshold of the best pixel F1 on a pixel-metric state's curve
    (:func:`best_f1_threshold_from_counts` of ``state.threshold_counts()``: every distinct
    anomaly score for ``exact``, the pooled bin edges for ``smiyc``)."""
    return best_f1_threshold_from_counts(*state.threshold_counts())
