"""The protocols (the results ``protocol`` column) and the functions over any state.

:data:`PROTOCOLS` is the one registry of pixel-metric protocols: a new protocol is a state
class with ``protocol``, ``definition``, ``update``, ``merge``, ``compute``, ``_curve`` and
``threshold_counts``, added here.
"""

from __future__ import annotations

from typing import Iterable, Sequence

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
