"""PR and ROC curves of a state, thinned for plots (``results_curves.parquet``)."""

from __future__ import annotations

import numpy as np


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
