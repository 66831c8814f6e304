"""What every metric family shares: the label vocabulary, undefined values, one frame's split, threads."""

from __future__ import annotations

import os
import warnings

import numpy as np

from schemas.machine import usable_cpus
from schemas.labels import VOID  # labels: 0 in-distribution, 1 anomaly, VOID ignored

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
            threads = min(MAX_THREADS, usable_cpus())
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined on this data (no anomaly pixel, no negative pixel) and is NaN."""


def told(compute, where: str, tell):
    """``compute()``, with each warning it raises told to ``tell`` as one line prefixed by ``where``
    (e.g. ``"cache.zarr: msp T=1"``) instead of going to :mod:`warnings`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = compute()
    for w in caught:
        tell(f"{where}: {w.message}")
    return value


def check_same_type(a, b) -> None:
    """``TypeError`` unless two states are of one class (``merge`` of two protocols means nothing)."""
    if type(a) is not type(b):
        raise TypeError(f"cannot merge {type(a).__name__} with {type(b).__name__}")


def warn_no_negative() -> None:
    """The :class:`UndefinedMetricWarning` of AUROC and FPR95 without in-distribution pixels."""
    msg = "no negative (in-distribution) pixel: auroc and fpr95 are NaN"
    warnings.warn(msg, UndefinedMetricWarning, stacklevel=3)


def warn_no_positive(n_neg: int) -> None:
    """The :class:`UndefinedMetricWarning` of every metric without anomaly pixels."""
    warnings.warn(
        f"no anomaly pixel among {n_neg} non-void pixels: auprc, auroc and fpr95 are NaN",
        UndefinedMetricWarning,
        stacklevel=3,
    )


def check_labels(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(anomaly mask, in-distribution mask, their counts) of flat labels ``t``; ValueError on
    labels other than 0, 1 and :data:`VOID`."""
    pos_mask = t == 1
    neg_mask = t == 0
    n_pos = int(np.count_nonzero(pos_mask))
    n_neg = int(np.count_nonzero(neg_mask))
    if n_pos + n_neg != t.size:
        n_void = int(np.count_nonzero(t == VOID))
        if n_pos + n_neg + n_void != t.size:
            bad = np.unique(t[~(pos_mask | neg_mask | (t == VOID))])[:10]
            raise ValueError(f"y_true may hold only 0, 1 and {VOID} (void); found {bad.tolist()}")
    return pos_mask, neg_mask, n_pos, n_neg


def split_frame(y_score, y_true, check_nan: bool = True) -> tuple[np.ndarray, np.ndarray]:
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
    pos_mask, neg_mask, n_pos, n_neg = check_labels(t)
    pos = s[pos_mask] if n_pos < t.size else s.copy()
    neg = s[neg_mask] if n_neg < t.size else s.copy()
    if np.isnan(pos).any() or (check_nan and np.isnan(neg).any()):
        raise ValueError("y_score contains NaN at non-void pixels")
    return pos, neg
