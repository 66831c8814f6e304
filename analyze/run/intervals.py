"""Frame-bootstrap intervals of ``analyze score`` (``--bootstrap``): each key's bin edges and the
resampling of its pooled frames, with the estimator of the run's protocol.

exact: per-frame histograms on bins at the quantiles of each key's anomaly scores
(:mod:`analyze.bootstrap`), from an earlier pass (:mod:`analyze.later_passes`) or one pass of
their own; smiyc: the states' own per-frame bins (:mod:`analyze.smiyc_bootstrap`).
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np

from analyze import metrics as M
from analyze.bootstrap import bootstrap_ci, edges_from_counts
from analyze.frame_selection import ScoreError
from analyze.tasks import ScoreJob, run_phase


def key_edges(states: Mapping) -> dict:
    """Each key's bootstrap bin edges (:func:`analyze.bootstrap.edges_from_counts`), from its anomaly
    scores alone; keys without an anomaly pixel have none (and no interval)."""
    edges = {}
    for key, state in states.items():
        thresholds, tp, n_pos = positive_counts(state)
        if n_pos:
            edges[key] = edges_from_counts(thresholds, tp)
    return edges


def positive_counts(state) -> tuple[np.ndarray, np.ndarray, int]:
    """(thresholds decreasing, TP at each, n_pos): the distinct anomaly scores and their cumulative
    counts (a :class:`analyze.metrics.PositiveState` before its second pass, or any exact state)."""
    if isinstance(state, M.PositiveState):
        u, count = state.distinct_counts()
        return u[::-1].astype(np.float64), np.cumsum(count[::-1], dtype=np.int64), state.n_pos
    thresholds, tp, _, n_pos = state.threshold_counts()
    return thresholds, tp, n_pos


def bootstrap_intervals(sched, job: ScoreJob, result, n_boot: int, seed: int, warn, histograms: Mapping | None) -> dict:
    """Frame-bootstrap intervals per key with the estimator of the job's protocol, over the
    pooled frames (``job.frames``). exact: per-frame histograms on bins at the quantiles of
    each key's anomaly scores (:mod:`analyze.bootstrap`): ``histograms`` when an earlier pass
    made them (:mod:`analyze.later_passes`), else one more pass over the frames (None);
    smiyc: the states' own per-frame bins are resampled (:mod:`analyze.smiyc_bootstrap`)."""
    out = {}
    if job.protocol == "smiyc":
        from analyze.smiyc_bootstrap import smiyc_bootstrap_ci

        for key, state in result.states.items():
            bins = state.frame_bins()
            if len(bins) != len(job.frames):  # the state skips exactly the frames that pool nothing
                raise ScoreError(f"{job.cache}: {key[0]} T={key[1]}: {len(bins)} frames binned, {len(job.frames)} pooled")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out[key] = smiyc_bootstrap_ci(bins, n_boot, seed)
            for w in caught:
                warn(f"{job.cache}: {key[0]} T={key[1]}: {w.message}")
        return out
    if histograms is None:
        edges = key_edges(result.states)
        if not edges:
            return {}
        bjob = ScoreJob(**{**job.__dict__, "scorers": tuple(sorted({k[0] for k in edges}))})
        histograms = run_phase(sched, bjob, "bootstrap", aux=edges).states
    for key, hist in sorted(histograms.items()):
        if len(hist.frames) != len(job.frames):
            raise ScoreError(f"{job.cache}: {key[0]} T={key[1]}: {len(hist.frames)} frames binned, "
                             f"{len(job.frames)} pooled")
        pos, neg = hist.stacked()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[key] = bootstrap_ci(pos, neg, n_boot, seed)
        for w in caught:
            warn(f"{job.cache}: {key[0]} T={key[1]}: {w.message}")
    return out
