"""The protocols (the results ``protocol`` column) and the functions over any state.

:data:`PROTOCOLS` is the one registry of pixel-metric protocols: a new protocol is a state
class with ``protocol``, ``definition``, ``update``, ``merge``, ``compute``, ``_curve`` and
``threshold_counts``, added here.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from numpy.typing import ArrayLike

from analyze.metrics.common import num_threads
from analyze.metrics.exact import ExactState
from analyze.metrics.smiyc import SmiycState

PROTOCOLS: dict[str, type] = {cls.protocol: cls for cls in (ExactState, SmiycState)}
"""Protocol name -> state class; ``cls.definition`` is its one-line definition."""




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


def pixel_metrics(y_score_maps: Iterable[ArrayLike], y_true_maps: Iterable[ArrayLike], protocol: str = "exact",
                  *, threads: int | None = None) -> dict[str, Any]:
    """Anomaly-segmentation metrics of per-frame maps, pixels pooled over all frames.

    Parameters
    ----------
    y_score_maps
        One anomaly map per frame (higher = more anomalous), any real dtype; frames may
        differ in size.
    y_true_maps
        One label map per frame, the shape of its score map: 0 in-distribution, 1 anomaly
        (the positive class), 255 void (ignored). As many as ``y_score_maps``.
    protocol
        ``"exact"`` (scikit-learn ``average_precision_score`` and ``roc_auc_score``,
        ood-metrics ``fpr_at_95_tpr``, ties exact) or ``"smiyc"`` (the SegmentMeIfYouCan
        benchmark's binned curves): :data:`PROTOCOLS`, defined in :mod:`analyze.metrics`.
    threads
        Threads the exact protocol sorts on (default :func:`num_threads`); the result does
        not depend on it.

    Maps passed in lists or tuples are read in place, not copied: they must not change while
    the call runs (as with any function reading its arguments). Maps from any other iterable
    are copied as they come, so a generator may reuse one buffer for every map.

    Returns
    -------
    dict
        ``auprc``, ``fpr95``, ``auroc`` (floats in [0, 1], NaN with an
        :class:`UndefinedMetricWarning` when undefined: no anomaly pixel, or no negative for
        AUROC and FPR95), ``n_pos`` and ``n_neg`` (the pooled non-void pixel counts); the
        ``smiyc`` protocol adds what its state computes.

    Raises
    ------
    ValueError
        An unknown protocol, a score map and label map of different shapes, or not as
        many score maps as label maps.

    >>> import numpy as np
    >>> m = pixel_metrics([np.array([[0.1, 0.9], [0.4, 0.7]])], [np.array([[0, 1], [0, 255]])])
    >>> m["auprc"], m["fpr95"], m["n_pos"]
    (1.0, 0.0, 1)
    """
    n = num_threads(threads)
    # maps given as lists or tuples exist before the call and nothing of the caller's runs during
    # it: the exact state reads their raw negatives where it sorts them, without a copy; maps
    # from an iterator (which may reuse a buffer from one map to the next) are copied
    state = new_state(protocol)
    if isinstance(state, ExactState):
        state.borrow = isinstance(y_score_maps, (list, tuple)) and isinstance(y_true_maps, (list, tuple))
    for y_score, y_true in zip(y_score_maps, y_true_maps, strict=True):
        state.update(y_score, y_true)  # in order on this thread: update threads saved little and fragmented the heap
    return state.compute(threads=n) if isinstance(state, ExactState) else state.compute()


def frame_ap(y_score, y_true, protocol: str = "exact") -> float:
    """AP of one frame under ``protocol`` (exact: sklearn ``average_precision_score``; smiyc: the
    benchmark's binned AP of that frame alone); NaN, silently, without anomaly."""
    return new_state(protocol).update(y_score, y_true).compute(warn=False)["auprc"]
