"""The frame tasks of ``analyze score``: one Dask task per frame and pass, tree-merged.

A task opens the cache itself (so it runs on any worker, local or remote), composes and scores
one frame for every (scorer, T) (:func:`analyze.compose.frame_scores.iter_frame_scores`) and updates one
mergeable state per key. What a pass keeps is a :class:`Phase` of the registry :data:`PHASES`
(the states of the protocol, the two passes of the memory-bounded exact protocol, the
bootstrap histograms, the component metrics); a new kind of pass is one entry there. The
results are merged in a tree (``fan_in`` at a time, in frame order), so integer counts and
order-preserving merges make the result independent of the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from analyze import metrics as M
from analyze.metrics.bootstrap import FrameHistograms
from analyze.metrics.components import ComponentState
from analyze.metrics.f16_range import ScoreRange
from analyze.compose.frame_scores import FrameInputs, Scoring, frame_inputs, iter_frame_scores
from analyze.plan.frame_selection import ScoreError, contributes
from analyze.run.later_passes import SecondPassState
from analyze.run.scheduler import Scheduler, single_threaded_tasks
from analyze.run.spill import write_map
from analyze.scorers import get_scorers
from analyze.scorers.kept_maps import kept_maps
from schemas import cache as C
from schemas.manifest import VOID

Key = tuple[str, float]  # (scorer, temperature)


@dataclass(frozen=True)
class ScoreJob:
    """Everything a frame task needs; small and picklable (sent to every worker)."""

    cache: str
    storage_options: Mapping[str, Any] | None
    scorers: tuple[str, ...]
    temperatures: tuple[float, ...]
    temp_target: str
    protocol: str
    frames: tuple[int, ...]
    label_kind: str
    threshold: Mapping[Key, float] | None = None  # component metrics: best-F1 threshold per key
    component_track: str | None = None
    frame_rule: str = "all"  # schemas.results.FRAMES: which frames are pooled
    id_stats: Mapping[float, Any] | None = None  # T -> analyze.scorers.ClassStats (KL matching, SML)
    positions: float = 0.0  # fraction of in-distribution scores the one pass keeps with their pixels
    device: str = "cpu"  # where composition and scorers run (analyze score --device)
    f16: Mapping[Key, Any] | None = None  # smiyc: each key's analyze.metrics.f16_range.Float16Transform, applied first
    spill: Mapping[Key, str] | None = None  # each key's spill prefix (analyze.run.spill): a spilling pass writes its maps


@dataclass
class FrameResult:
    """Mergeable per-(scorer, T) states plus per-frame rows."""

    states: dict = field(default_factory=dict)  # Key -> metric state
    confusion: dict = field(default_factory=dict)  # T -> ConfusionState
    rows: list = field(default_factory=list)  # per-frame drill-down rows
    labels: dict = field(default_factory=dict)  # frame index -> (anomaly pixels, labelled pixels)

    def merge(self, other: "FrameResult") -> "FrameResult":
        out = FrameResult()
        for name in ("states", "confusion"):
            a, b = getattr(self, name), getattr(other, name)
            merged = dict(a)
            for k, v in b.items():
                merged[k] = merged[k].merge(v) if k in merged else v
            setattr(out, name, merged)
        out.rows = self.rows + other.rows
        out.labels = {**self.labels, **other.labels}
        return out


def _update(state, score: np.ndarray, label: np.ndarray, frame: int) -> None:
    state.update(score, label)


def _update_with_ap(state, score: np.ndarray, label: np.ndarray, frame: int) -> float:
    state.update(score, label)
    return M.frame_ap(score, label, "smiyc")  # the AP of this frame alone, as the smiyc protocol defines it


def _first_state(job: ScoreJob, key: Key, aux, frame: int):
    """The one pass's state: exact keeps each frame's sorted scores (and the pixels of the
    highest when the component step reads them), :class:`analyze.metrics.FramedExactState`."""
    return M.FramedExactState(positions=job.positions) if job.protocol == "exact" else M.new_state(job.protocol)


@dataclass(frozen=True)
class Phase:
    """One pass over the frames: what a frame task keeps per (scorer, T) key."""

    label: str  # what the pass computes (its progress bar)
    new_state: Callable[[ScoreJob, Key, Any, int], Any]  # (job, key, aux, frame) -> empty state; None: skip
    semantic: bool = False  # a semantic cache updates its confusion matrix in this pass
    rows: bool = False  # per-frame drill-down rows: ``add`` returns the frame's AP
    add: Callable[[Any, np.ndarray, np.ndarray, int], Any] = _update  # (state, score, label, frame) -> AP or None
    every_frame: bool = False  # also the frames that pool nothing (unlabelled, no anomaly pixel)
    anomaly_pixels: bool = False  # its states read the anomaly pixels only: compose just what they need
    labelled_pixels: bool = False  # its states read no void pixel (every metric leaves void out): compose the rest
    labels: Callable[[np.ndarray], Any] | None = None  # the frame's labels as ``add`` reads them (once per frame)
    spills: bool = False  # writes each key's map, as scored, where ``job.spill`` names the key (the component step reads it)


PHASES: dict[str, Phase] = {
    "one-pass": Phase("scores and metric states", _first_state, semantic=True, rows=True, labelled_pixels=True,
                      spills=True, add=lambda st, s, y, i: st.add(s, y, i) if isinstance(st, M.FramedExactState)
                      else _update_with_ap(st, s, y, i)),
    # the memory-bounded exact protocol: anomaly scores, then in-distribution counts at them
    # (aux: SecondPassInputs), with the frame's AP and, for the intervals, its histograms
    "positives": Phase("anomaly-pixel scores", lambda job, key, aux, i: M.PositiveState(), semantic=True,
                       add=lambda st, s, px, i: st.update_at(s, px), anomaly_pixels=True, labels=M.anomaly_pixels),
    "negatives": Phase("in-distribution counts", lambda job, key, aux, i: SecondPassState(aux[key]), rows=True,
                       add=lambda st, s, y, i: st.add(s, y, i), labelled_pixels=True, spills=True),
    # recomposing passes: the exact intervals' per-frame histograms over each key's bin edges (aux)
    # and the component metrics (of the frames in aux[key] when aux is given), where no pass before
    # kept what they read (analyze.run.driver)
    "bootstrap": Phase("bootstrap histograms",
                       lambda job, key, aux, i: FrameHistograms(aux[key]) if key in aux else None, labelled_pixels=True),
    # the smiyc protocol's float16 fit: each key's score range over every frame, labelled or not,
    # as analyze export fits it (analyze.metrics.f16_range)
    "ranges": Phase("score ranges (float16 fit)", lambda job, key, aux, i: ScoreRange(), every_frame=True),
    "components": Phase("component metrics",
                        lambda job, key, aux, i: ComponentState(job.component_track, job.threshold[key],
                                                                float16=job.protocol == "smiyc")
                        if key in job.threshold and (aux is None or i in aux.get(key, ())) else None,
                        labelled_pixels=True),  # a prediction is cut to the labelled pixels before its components
}
"""Pass name -> :class:`Phase` (``aux`` is the pass's per-key input, e.g. the distinct anomaly scores)."""


def _open(job: ScoreJob):
    return C.open_cache(job.cache, mode="r", storage_options=job.storage_options, validate=False)


def all_finite(arr: np.ndarray) -> bool:
    """``np.isfinite(arr).all()``; float16 (what caches hold) by its exponent bits, 4-5x faster
    than numpy's float16 ``isfinite`` (50-70 ms of a 1024x2048 frame's cached logits)."""
    if arr.dtype == np.float16:
        return not np.any(np.bitwise_and(arr.view(np.uint16), 0x7C00) == 0x7C00)  # exponent all ones: inf, NaN
    return bool(np.isfinite(arr).all())


def _check_finite(arr: np.ndarray, what: str, job: ScoreJob, spec: C.CacheSpec, i: int) -> None:
    if not all_finite(arr):
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        raise ScoreError(f"{job.cache}: frame {spec.frame_ids[i]} (index {i}) has {bad} in cached {what}")


def _frame_inputs(root, spec: C.CacheSpec, i: int, job: ScoreJob, flip: bool) -> FrameInputs:
    inputs = frame_inputs(root, spec, i, flip=flip)
    for where, arrays in (("", inputs.arrays()), (" of the flipped pass", inputs.flip or {})):
        for name, arr in arrays.items():
            _check_finite(arr, name.replace("_", " ") + where, job, spec, i)
    return inputs


def frame_task(job: ScoreJob, i: int, phase: str, aux: Mapping[Key, np.ndarray] | None = None) -> FrameResult:
    """Score frame ``i`` of ``job.cache`` and return its states for the pass ``phase`` (a key of
    :data:`PHASES`; ``aux`` is that pass's per-key input, e.g. the sorted distinct anomaly scores
    of the ``negatives`` pass or the bin edges of the ``bootstrap`` pass).

    Runs with torch and BLAS on one thread (:func:`analyze.run.scheduler.single_threaded_tasks`).
    """
    with single_threaded_tasks(), kept_maps():  # the maps of this thread's last frame, reused
        return _frame_task(job, i, phase, aux)


def _frame_task(job: ScoreJob, i: int, phase_name: str, aux) -> FrameResult:
    phase = PHASES[phase_name]
    root, spec = _open(job)
    try:
        label = C.read_label(root, spec, i)
    except C.CacheError as exc:  # a chunk that does not decode: name the cache too
        raise ScoreError(f"{job.cache}: {exc}") from None
    out = FrameResult()
    if job.label_kind == "anomaly":
        n_pos = int(np.count_nonzero(label == 1))
        n_valid = n_pos + int(np.count_nonzero(label == 0))
    else:
        n_pos, n_valid = 0, int(np.count_nonzero(label != VOID))
    out.labels[i] = (n_pos, n_valid)
    if not phase.every_frame and not contributes(n_pos, n_valid, job.frame_rule, job.label_kind):
        return out  # pools nothing: not scored, not counted, not resampled
    scorers = get_scorers(",".join(job.scorers), spec.kind) if job.scorers else ()
    try:
        inputs = _frame_inputs(root, spec, i, job, flip=any(s.needs_flip for s in scorers))
    except C.CacheError as exc:
        raise ScoreError(f"{job.cache}: {exc}") from None
    scoring = Scoring(scorers, job.temperatures, job.temp_target, job.id_stats, device=job.device)
    read = None  # (H, W): the pixels this pass reads, where they are not all
    if phase.anomaly_pixels and job.label_kind == "anomaly":
        read = label == 1
    elif phase.labelled_pixels:  # void: in no metric (mIoU's neither)
        labelled = label != VOID
        read = None if labelled.all() else labelled
    digested = phase.labels(label) if phase.labels is not None and job.label_kind == "anomaly" else label
    for ts in iter_frame_scores(inputs, scoring, read):
        t = ts.temperature
        if job.label_kind == "semantic":
            if phase.semantic:
                out.confusion[t] = M.ConfusionState(num_classes=spec.n_classes).update(ts.semantic, label)
            continue
        for name, score in ts.scores.items():
            key = (name, t)
            state = phase.new_state(job, key, aux, i)
            if state is None:
                continue
            if job.f16 is not None:  # the map analyze export writes, before its float16 cast
                score = job.f16[key].mapped(score)
            if phase.spills and job.spill is not None:
                write_map(job.spill[key], i, score)
            ap = phase.add(state, score, digested, i)
            out.states[key] = state
            if phase.rows:  # the AP of this frame alone, as the row's protocol defines it
                out.rows.append({"frame": spec.frame_ids[i], "scorer": name, "temperature": t, "ap": ap,
                                 "n_pos": n_pos, "n_neg": n_valid - n_pos})
    return out


def _merge(*results: FrameResult) -> FrameResult:
    return M.merge_states(results)  # the states' own in-order tree merge


def tree_reduce(items: list, fan_in: int = 2):
    """Dask delayed tree reduction of FrameResults (``fan_in`` per merge node). Pairs: a merge runs
    as soon as two neighbours are done, so few frame results wait at once (the second pass's
    count arrays are as long as a key's distinct anomaly scores: an ERFNet cache of 40 frames
    at 1024x2048 peaked at 8.1 GiB with 8 per node, 4.8 GiB with 2). Every merge concatenates
    in frame order or adds integers, so the tree's shape changes no number."""
    import dask

    merge = dask.delayed(_merge, pure=True)
    level = list(items)
    while len(level) > 1:
        level = [merge(*level[j : j + fan_in]) for j in range(0, len(level), fan_in)]
    return level[0]


def run_phase(sched: Scheduler, job: ScoreJob, phase: str, aux=None) -> FrameResult:
    """One pass (a key of :data:`PHASES`) over ``job.frames``: every frame task, tree-merged."""
    import dask

    task = dask.delayed(frame_task, pure=True)
    parts = [task(job, i, phase, aux) for i in job.frames]
    return sched.map_reduce(parts, tree_reduce, PHASES[phase].label)
