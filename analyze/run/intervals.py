"""Frame-bootstrap intervals of ``analyze score`` (``--bootstrap``): each key's bin edges and the
resampling of its pooled frames, with the estimator of the run's protocol.

exact: per-frame histograms on bins at the quantiles of each key's anomaly scores
(:mod:`analyze.metrics.bootstrap`), from an earlier pass (:mod:`analyze.run.later_passes`) or one pass of
their own; smiyc: the states' own per-frame bins (:mod:`analyze.metrics.smiyc_bootstrap`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from analyze import metrics as M
from analyze.metrics.bootstrap import bootstrap_ci, edges_from_counts
from analyze.metrics.common import told
from analyze.plan.frame_selection import ScoreError
from analyze.run.tasks import ScoreJob, run_phase


def key_edges(states: Mapping) -> dict:
    """Each key's bootstrap bin edges (:func:`analyze.metrics.bootstrap.edges_from_counts`), from its anomaly
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


def bootstrap_histograms(sched, job: ScoreJob, states: Mapping) -> dict:
    """The exact intervals' per-frame histograms of each key with an anomaly pixel, from a pass
    that composes the pooled frames again (``recompose``; the ``bootstrap`` phase)."""
    edges = key_edges(states)
    if not edges:
        return {}
    bjob = ScoreJob(**{**job.__dict__, "scorers": tuple(sorted({k[0] for k in edges}))})
    return run_phase(sched, bjob, "bootstrap", aux=edges).states


def bootstrap_intervals(job: ScoreJob, states: Mapping, n_boot: int, seed: int, warn, histograms: Mapping) -> dict:
    """Frame-bootstrap intervals per key with the estimator of the job's protocol, over the
    pooled frames (``job.frames``). exact: per-frame histograms on bins at the quantiles of
    each key's anomaly scores (:mod:`analyze.metrics.bootstrap`), ``histograms``, made by a pass
    (:mod:`analyze.run.later_passes` or :func:`bootstrap_histograms`); smiyc: the states' own
    per-frame bins are resampled (:mod:`analyze.metrics.smiyc_bootstrap`)."""
    if job.protocol == "smiyc":
        from analyze.metrics.smiyc_bootstrap import smiyc_bootstrap_ci

        return {key: told(lambda b=_frame_bins(job, key, state): smiyc_bootstrap_ci(b, n_boot, seed),
                      f"{job.cache}: {key[0]} T={key[1]}", warn)
                for key, state in states.items()}
    out = {}
    for key, hist in sorted(histograms.items()):
        if len(hist.frames) != len(job.frames):
            raise ScoreError(f"{job.cache}: {key[0]} T={key[1]}: {len(hist.frames)} frames binned, "
                             f"{len(job.frames)} pooled")
        pos, neg = hist.stacked()
        out[key] = told(lambda p=pos, n=neg: bootstrap_ci(p, n, n_boot, seed), f"{job.cache}: {key[0]} T={key[1]}", warn)
    return out


def _frame_bins(job: ScoreJob, key, state) -> list:
    bins = state.frame_bins()
    if len(bins) != len(job.frames):  # the state skips exactly the frames that pool nothing
        raise ScoreError(f"{job.cache}: {key[0]} T={key[1]}: {len(bins)} frames binned, {len(job.frames)} pooled")
    return bins
