"""Dask orchestration of ``analyze score``: one task per frame, tree-merged metric states.

No metric math here: a task opens the cache itself (so it runs on any worker, local or
remote), composes and scores one frame for every (scorer, T) with
:func:`analyze.compose.iter_frame_scores`, and updates one mergeable state per key
(:mod:`analyze.metrics`). States are merged in a tree (``fan_in`` at a time) and computed
once at the end. Integer counts and exact sorting make the result independent of the
scheduler and of the merge order. Before any task runs, the done frames' chunks are checked
to exist (:func:`scorable_frames`, :mod:`schemas.integrity`): a cache that lost data is
never scored. Schedulers, progress bars and task threads: :mod:`analyze.scheduler`.

Memory: the ``exact`` protocol keeps every non-void score of every (scorer, T) when that
fits the ``max_memory`` budget (one pass). Otherwise it runs two passes over the frames:
the first keeps only the anomaly pixels' scores, the second counts the in-distribution
scores between consecutive distinct anomaly scores (:class:`analyze.metrics.PositiveState`,
:class:`analyze.metrics.NegativeCountState`); both give identical numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from analyze import metrics as M
from analyze.bootstrap import bootstrap_ci, edges_from_counts, frame_histograms
from analyze.compose import iter_frame_scores
from analyze.scheduler import LOCAL_SCHEDULERS, Scheduler, single_threaded_tasks
from analyze.scorers import SCORE_DTYPE, check_temperature, get_scorers
from schemas import cache as C
from schemas import integrity
from schemas.errors import DataError
from schemas.results import FRAMES, SEMANTIC_SCORER, default_run, parse_run

__all__ = ["LOCAL_SCHEDULERS", "Scheduler", "ScoreError", "score_cache", "frame_task"]

Key = tuple[str, float]  # (scorer, temperature)


class ScoreError(DataError):
    """Bad cache content or arguments for scoring (the message names the cache and frame)."""


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
    kind: str
    threshold: Mapping[Key, float] | None = None  # component metrics: best-F1 threshold per key
    component_track: str | None = None
    frame_rule: str = "all"  # schemas.results.FRAMES: which frames are pooled


@dataclass
class FrameResult:
    """Mergeable per-(scorer, T) states plus per-frame rows."""

    states: dict = field(default_factory=dict)  # Key -> metric state
    confusion: dict = field(default_factory=dict)  # T -> ConfusionState
    rows: list = field(default_factory=list)  # per-frame drill-down rows
    hists: dict = field(default_factory=dict)  # Key -> list of per-frame (pos, neg) histograms
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
        out.hists = {k: self.hists.get(k, []) + other.hists.get(k, []) for k in {*self.hists, *other.hists}}
        return out


def _open(job: ScoreJob):
    return C.open_cache(job.cache, mode="r", storage_options=job.storage_options, validate=False)


def _check_finite(arr: np.ndarray, what: str, job: ScoreJob, spec: C.CacheSpec, i: int) -> None:
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        raise ScoreError(f"{job.cache}: frame {spec.frame_ids[i]} (index {i}) has {bad} in cached {what}")


def _frame_inputs(root, spec: C.CacheSpec, i: int, job: ScoreJob) -> dict:
    if spec.kind == "pixel":
        logits = C.read_pixel_logits(root, spec, i)
        _check_finite(logits, "logits", job, spec, i)
        return dict(logits=logits, void_channel=spec.void_channel, out_size=spec.sizes[i])
    class_logits, mask_logits = C.read_query_outputs(root, spec, i)
    _check_finite(class_logits, "class logits", job, spec, i)
    _check_finite(mask_logits, "mask logits", job, spec, i)
    return dict(class_logits=class_logits, mask_logits=mask_logits, geom=spec.windows(i), out_size=spec.sizes[i])


def frame_task(job: ScoreJob, i: int, phase: str, aux: Mapping[Key, np.ndarray] | None = None) -> FrameResult:
    """Score frame ``i`` of ``job.cache`` and return its states.

    ``phase``: ``"one-pass"`` (states of ``job.protocol``), ``"positives"`` / ``"negatives"``
    (the two passes of the memory-bounded exact protocol; ``aux`` maps each key to the
    sorted distinct anomaly scores), ``"components"`` (component-level metrics),
    ``"bootstrap"`` (per-frame score histograms over the bin edges ``aux[key]``).
    Runs with torch and BLAS on one thread (:func:`analyze.scheduler.single_threaded_tasks`).
    """
    with single_threaded_tasks():
        return _frame_task(job, i, phase, aux)


def _frame_task(job: ScoreJob, i: int, phase: str, aux) -> FrameResult:
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
        n_pos, n_valid = 0, int(np.count_nonzero(label != M.VOID))
    out.labels[i] = (n_pos, n_valid)
    if not contributes(n_pos, n_valid, job.frame_rule, job.label_kind):
        return out  # pools nothing: not scored, not counted, not resampled
    try:
        inputs = _frame_inputs(root, spec, i, job)
    except C.CacheError as exc:
        raise ScoreError(f"{job.cache}: {exc}") from None
    scorers = get_scorers(",".join(job.scorers), spec.kind) if job.scorers else ()
    temps = job.temperatures
    for ts in iter_frame_scores(spec.kind, scorers=scorers, temperatures=temps, temp_target=job.temp_target,
                                **inputs):
        t = ts.temperature
        if job.label_kind == "semantic":
            if phase in ("one-pass", "positives"):
                out.confusion[t] = M.ConfusionState(num_classes=spec.n_classes).update(ts.semantic, label)
            continue
        for name, score in ts.scores.items():
            key = (name, t)
            if phase == "one-pass":
                out.states[key] = M.new_state(job.protocol).update(score, label)
                out.rows.append(_frame_row(spec, i, name, t, score, label, job.protocol))
            elif phase == "positives":
                out.states[key] = M.PositiveState().update(score, label)
                out.rows.append(_frame_row(spec, i, name, t, score, label, job.protocol))
            elif phase == "negatives":
                out.states[key] = M.NegativeCountState(aux[key]).update(score, label)
            elif phase == "bootstrap" and key in aux:
                out.hists[key] = [frame_histograms(score, label, aux[key])]
            elif phase == "components":
                from analyze.components import ComponentState

                out.states[key] = ComponentState(job.component_track, job.threshold[key]).update(score, label)
    return out


def contributes(n_pos: int, n_valid: int, frame_rule: str, label_kind: str = "anomaly") -> bool:
    """Whether a frame with ``n_pos`` anomaly pixels among ``n_valid`` labelled ones is pooled:
    it needs a labelled pixel, and under ``frames = "with-anomaly"`` an anomaly pixel (the rule
    selects among anomaly frames; a semantic cache pools every frame with a labelled pixel)."""
    if frame_rule not in FRAMES:
        raise ValueError(f"frames must be one of {', '.join(FRAMES)}; got {frame_rule!r}")
    if frame_rule == "with-anomaly" and label_kind == "anomaly":
        return n_pos > 0
    return n_valid > 0


def _frame_row(spec: C.CacheSpec, i: int, scorer: str, t: float, score: np.ndarray, label: np.ndarray,
               protocol: str) -> dict:
    return {
        "frame": spec.frame_ids[i],
        "scorer": scorer,
        "temperature": t,
        "ap": M.frame_ap(score, label, protocol),  # the AP of this frame alone, as the row's protocol defines it
        "n_pos": int((label == 1).sum()),
        "n_neg": int((label == 0).sum()),
    }


def _merge(*results: FrameResult) -> FrameResult:
    out = results[0]
    for r in results[1:]:
        out = out.merge(r)
    return out


def tree_reduce(items: list, fan_in: int = 8):
    """Dask delayed tree reduction of FrameResults (``fan_in`` per merge node)."""
    import dask

    merge = dask.delayed(_merge, pure=True)
    level = list(items)
    while len(level) > 1:
        level = [merge(*level[j : j + fan_in]) for j in range(0, len(level), fan_in)]
    return level[0]


# ---- one cache ---------------------------------------------------------------------------

DEFAULT_MAX_MEMORY = 4 * 2**30
SCORE_BYTES = SCORE_DTYPE.itemsize


def plan_passes(spec: C.CacheSpec, n_keys: int, protocol: str, max_memory: int) -> str:
    """``one-pass`` when every non-void score of every key fits ``max_memory`` (float64, 8 B each)."""
    if protocol != "exact":
        return "one-pass"
    pixels = sum(h * w for h, w in spec.sizes)
    return "one-pass" if pixels * n_keys * SCORE_BYTES <= max_memory else "two-pass"


def score_cache(cache: str, scorers: str = "all", temperatures: Sequence[float] = (1.0,), temp_target: str = "query",
                protocol: str = "exact", scheduler=None, **options) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score one cache; returns (results rows, per-frame rows, curve rows).

    ``scheduler``: a name (``threads``, ``processes``, ``sync``), a distributed scheduler
    address, a ``distributed.Client``, an :class:`analyze.scheduler.Scheduler`, or None: the
    active Dask client, else Dask's configured scheduler (``dask.config.set(scheduler=...)``),
    else threads, as Dask libraries do. A client made here from an address is closed before
    returning. The caller's torch and BLAS thread settings are left as they were.

    ``options``: ``storage_options`` (fsspec, for URL caches), ``allow_partial`` (score the
    done frames of an unfinished cache, skip done frames that lost chunks; with a warning),
    ``max_memory`` (bytes before the exact protocol takes two passes), ``component_metrics``,
    ``curve_points``, ``bootstrap`` (resamples) and ``seed``, ``warn`` (called with each
    warning line; default ``warnings.warn``), ``info`` (called with notes such as the number of
    unlabelled frames skipped), ``name`` (the run name of every row; default
    :func:`schemas.results.default_run` of the cache's checkpoint) and ``frames`` (``"all"`` or
    ``"with-anomaly"``: which frames are pooled).
    """
    sched, made_here = Scheduler.resolve(scheduler)
    try:
        return _score_cache(cache, scorers, temperatures, temp_target, protocol, sched, **options)
    finally:
        if made_here:
            sched.close()


def _score_cache(
    cache: str,
    scorers: str,
    temperatures: Sequence[float],
    temp_target: str,
    protocol: str,
    sched: Scheduler,
    storage_options: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
    component_metrics: bool = False,
    curve_points: int = 200,
    bootstrap: int = 0,
    seed: int = 0,
    warn: Callable[[str], None] = lambda m: warnings.warn(m, stacklevel=2),
    info: Callable[[str], None] = lambda m: None,
    name: str | None = None,
    frames: str = "all",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score one cache (see :func:`score_cache`); ``info`` is told how many unlabelled frames were
    skipped. Every row carries ``run`` (``name``, default :func:`schemas.results.default_run` of
    the cache's checkpoint) and ``frames``: ``"all"`` pools every scorable frame with a labelled
    pixel, ``"with-anomaly"`` only those with an anomaly pixel (their in-distribution pixels go
    with them; semantic caches always pool every frame). ``n_frames`` counts the pooled frames
    only, and only they are resampled by ``bootstrap``; ``warn`` says how many were left out and why.
    """
    if protocol not in M.PROTOCOLS:
        raise ScoreError(f"unknown protocol {protocol!r}; valid: {', '.join(M.PROTOCOLS)}")
    if frames not in FRAMES:
        raise ScoreError(f"unknown frames {frames!r}; valid: {', '.join(FRAMES)}")
    try:
        temps = tuple(check_temperature(t) for t in temperatures)
        run = parse_run(name) if name is not None else None
    except ValueError as exc:
        raise ScoreError(str(exc)) from None
    root, spec = C.open_cache(cache, mode="r", storage_options=storage_options)
    prov = spec.provenance
    run = run or run_name(spec)
    done_frames = scorable_frames(root, spec, str(cache), allow_partial, warn, info)
    try:
        chosen = get_scorers(scorers, spec.kind) if spec.label_kind == "anomaly" else ()
    except ValueError as exc:
        raise ScoreError(str(exc)) from None
    rule = frames if spec.label_kind == "anomaly" else "all"
    if rule != frames:
        warn(f"{cache}: --frames {frames} selects among anomaly frames; this {spec.provenance.dataset} cache "
             "has semantic labels, so its rows pool every frame (frames = all)")
    if spec.kind == "pixel" or temp_target == "pixel":
        temps_sem = (1.0,)
    else:
        temps_sem = temps
    job = ScoreJob(
        cache=str(cache), storage_options=dict(storage_options) if storage_options else None,
        scorers=tuple(s.name for s in chosen), temperatures=temps if chosen else temps_sem,
        temp_target=temp_target, protocol=protocol, frames=done_frames, label_kind=spec.label_kind, kind=spec.kind,
        frame_rule=rule,
    )
    n_keys = len(chosen) * len(temps)
    plan = plan_passes(spec, max(1, n_keys), protocol, max_memory) if chosen else "one-pass"
    sched.start_passes((2 if plan == "two-pass" else 1) + bool(bootstrap and chosen and protocol == "exact")
                       + bool(component_metrics and chosen))  # smiyc intervals need no pass of their own
    result = _run_phase(sched, job, "one-pass" if plan == "one-pass" else "positives")
    pooled = _pooled_frames(cache, spec, result.labels, rule, warn)
    job = ScoreJob(**{**job.__dict__, "frames": pooled})  # later passes read the pooled frames only
    if plan == "two-pass":
        positives = {k: s.distinct() for k, s in result.states.items()}
        counts = _run_phase(sched, job, "negatives", aux=positives)
        result.states = {k: s.with_negatives(counts.states[k]) for k, s in result.states.items()}

    base = dict(run=run, model=prov.model, dataset=prov.dataset, protocol=protocol, frames=rule,
                cache_digest=C.cache_digest(spec), n_frames=len(pooled))
    target = "logits" if spec.kind == "pixel" else temp_target
    cis = _bootstrap(sched, job, result, bootstrap, seed, warn) if bootstrap and chosen else {}
    rows, curve_rows = [], []
    for (name_, t), state in sorted(result.states.items()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = state.compute()
        for w in caught:
            warn(f"{cache}: {name_} T={t}: {w.message}")
        n_pixels = int(values["n_pos"] + values["n_neg"])
        for metric in ("auprc", "fpr95", "auroc"):
            lo, hi = cis.get((name_, t), {}).get(metric, (np.nan, np.nan))
            rows.append({**base, "scorer": name_, "temperature": t, "temp_target": target, "metric": metric,
                         "value": values[metric], "n_pixels": n_pixels, "ci_low": lo, "ci_high": hi})
        if values["n_pos"] and values["n_neg"]:
            cv = M.curves(state, curve_points)
            curve_rows.append({**base, "scorer": name_, "temperature": t, "temp_target": target,
                               "recall": cv["recall"].tolist(), "precision": cv["precision"].tolist(),
                               "fpr": cv["fpr"].tolist(), "tpr": cv["tpr"].tolist()})
    for t, conf in sorted(result.confusion.items()):
        if t not in temps_sem:
            continue
        values = conf.compute()
        rows.append({**base, "scorer": SEMANTIC_SCORER, "temperature": t, "temp_target": target, "metric": "miou",
                     "value": values["miou"], "n_pixels": int(conf.confusion.sum())})
    if component_metrics and chosen:
        rows += _component_rows(sched, job, result, base, target, spec)
    frame_rows = pd.DataFrame([{**base, "temp_target": target, **r} for r in result.rows])
    return pd.DataFrame(rows), frame_rows, pd.DataFrame(curve_rows)


def run_name(spec: C.CacheSpec, name: str | None = None) -> str:
    """The run of a cache's rows: ``name`` (checked), else :func:`schemas.results.default_run` of
    the cache's checkpoint (file stem and sha256)."""
    if name is not None:
        return parse_run(name)
    prov = spec.provenance
    return default_run(prov.model, prov.checkpoint_sha256, prov.checkpoint_file)


def _pooled_frames(cache: str, spec: C.CacheSpec, labels: Mapping[int, tuple[int, int]], rule: str,
                   warn: Callable[[str], None]) -> tuple[int, ...]:
    """The frames (indices) that ``rule`` pools, from each frame's (anomaly, labelled) pixel
    counts; warns with the count and the first ids of the frames left out, ScoreError if none is left."""
    empty = [i for i, (_, n_valid) in sorted(labels.items()) if n_valid == 0]
    no_anomaly = [i for i, (n_pos, n_valid) in sorted(labels.items()) if n_valid and not n_pos]
    pooled = tuple(i for i, (n_pos, n_valid) in sorted(labels.items())
                   if contributes(n_pos, n_valid, rule, spec.label_kind))

    def ids(idx):
        return ", ".join(spec.frame_ids[i] for i in idx[:3]) + (", ..." if len(idx) > 3 else "")

    if len(empty) == 1:
        warn(f"{cache}: frame {ids(empty)} is done but its labels are all void (255): it adds no pixel to any "
             "metric and is left out of n_frames and of the bootstrap")
    elif empty:
        warn(f"{cache}: {len(empty)} of {len(labels)} frames are done but their labels are all void (255): they add "
             f"no pixel to any metric and are left out of n_frames and of the bootstrap ({ids(empty)})")
    if rule == "with-anomaly" and no_anomaly:
        warn(f"{cache}: --frames with-anomaly leaves out {len(no_anomaly)} of {len(labels)} frames without an "
             f"anomaly pixel, with their in-distribution pixels ({ids(no_anomaly)})")
    if not pooled:
        why = "has an anomaly pixel" if rule == "with-anomaly" and spec.label_kind == "anomaly" else "has a labelled pixel"
        raise ScoreError(f"{cache}: no done frame {why}; nothing to score")
    return pooled


#: what each pass over the frames computes (progress bar labels)
PHASE_LABELS = {
    "one-pass": "scores and metric states",
    "positives": "anomaly-pixel scores",
    "negatives": "in-distribution counts",
    "bootstrap": "bootstrap histograms",
    "components": "component metrics",
}


def scorable_frames(root, spec: C.CacheSpec, cache: str, allow_partial: bool, warn,
                    info: Callable[[str], None] = lambda m: None) -> tuple[int, ...]:
    """Indices of the labelled done frames that have every chunk (:mod:`schemas.integrity`).

    Unlabelled frames (a benchmark's test images, ``CacheSpec.labelled``) are never scored;
    ``info`` is told how many were skipped. Frames not done, or done but missing a chunk
    (lost in a copy), are refused with one line naming the cache (and the array and frame),
    or skipped with a warning when ``allow_partial``. The static arrays must agree with the
    attributes in any case.
    """
    labelled = spec.labelled_mask
    n_unlabelled = int((~labelled).sum())
    if n_unlabelled:
        info(f"{cache}: skipped {n_unlabelled} unlabelled frame(s); scoring the {int(labelled.sum())} labelled ones")
    if not labelled.any():
        raise ScoreError(f"{cache}: no labelled frame to score ({n_unlabelled} unlabelled frames; "
                         "`analyze export` writes their maps)")
    done = C.done_mask(root)
    frames = [int(i) for i in np.flatnonzero(done & labelled)]
    n_labelled = int(labelled.sum())
    if len(frames) < n_labelled:
        missing = [spec.frame_ids[i] for i in np.flatnonzero(~done & labelled)]
        msg = (f"{cache}: {len(missing)} of {n_labelled} {'labelled ' if n_unlabelled else ''}frames are not done "
               f"(e.g. {', '.join(missing[:3])}); finish `extract run` first")
        if not allow_partial:
            raise ScoreError(msg + " or pass --allow-partial to score the done frames only")
        warn(msg + "; scoring the done frames only")
    problems = integrity.check_frames(root, spec, frames)
    static = [p for p in problems if p.frame is None]
    if static:
        raise ScoreError(f"{cache}: {integrity.describe(static)}; the cache is damaged (copy it again)")
    if problems:
        lost = {p.frame for p in problems}
        msg = (f"{cache}: {len(lost)} done frame(s) lack data chunks: {integrity.describe(problems)}; "
               "rerun `extract run` to extract them again, or copy the cache again")
        if not allow_partial:
            raise ScoreError(msg + "; --allow-partial skips them")
        warn(msg + f"; skipping these {len(lost)} frame(s)")
        frames = [i for i in frames if i not in lost]
    if not frames:
        raise ScoreError(f"{cache}: no frame is done" + (" and complete" if problems else ""))
    return tuple(frames)


def _run_phase(sched: Scheduler, job: ScoreJob, phase: str, aux=None) -> FrameResult:
    import dask

    task = dask.delayed(frame_task, pure=True)
    parts = [task(job, i, phase, aux) for i in job.frames]
    return sched.map_reduce(parts, tree_reduce, PHASE_LABELS[phase])


def _bootstrap(sched, job: ScoreJob, result: FrameResult, n_boot: int, seed: int, warn) -> dict:
    """Frame-bootstrap intervals per key with the estimator of the job's protocol, over the
    pooled frames (``job.frames``). exact: one more pass over the frames builds per-frame
    histograms on bins at the quantiles of each key's anomaly scores (:mod:`analyze.bootstrap`);
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
    edges = {}
    for key, state in result.states.items():
        thresholds, tp, _, n_pos = state.threshold_counts()
        if n_pos:
            edges[key] = edges_from_counts(thresholds, tp)
    if not edges:
        return {}
    bjob = ScoreJob(**{**job.__dict__, "scorers": tuple(sorted({k[0] for k in edges}))})
    hists = _run_phase(sched, bjob, "bootstrap", aux=edges).hists
    for key in edges:
        pos, neg = (np.stack(h) for h in zip(*hists[key]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[key] = bootstrap_ci(pos, neg, n_boot, seed)
        for w in caught:
            warn(f"{job.cache}: {key[0]} T={key[1]}: {w.message}")
    return out


def _component_rows(sched, job: ScoreJob, result: FrameResult, base: dict, target: str, spec) -> list[dict]:
    from analyze.components import track_for_dataset

    thresholds = {k: M.best_f1_threshold(s) for k, s in result.states.items()}
    cjob = ScoreJob(**{**job.__dict__, "threshold": thresholds, "component_track": track_for_dataset(spec.provenance.dataset)})
    comp = _run_phase(sched, cjob, "components")
    rows = []
    for (name, t), state in sorted(comp.states.items()):
        values = state.compute()
        for metric in ("siou", "ppv", "mean_f1"):
            rows.append({**base, "scorer": name, "temperature": t, "temp_target": target, "metric": metric,
                         "value": values[metric], "n_pixels": 0})
    return rows


def parse_storage_options(items: Sequence[str]) -> dict[str, Any]:
    """``["anon=true", "key=abc"]`` -> dict (true/false/ints parsed)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--storage-option must be key=value, got {item!r}")
        k, v = item.split("=", 1)
        low = v.lower()
        out[k] = True if low == "true" else False if low == "false" else int(v) if v.isdigit() else v
    return out

