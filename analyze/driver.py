"""``analyze score`` on one cache: the passes over its frames and the rows they give.

No metric math and no frame work here: :mod:`analyze.frame_selection` says which frames are
scored and pooled, :mod:`analyze.tasks` runs one Dask task per frame and pass and tree-merges
the mergeable metric states (:mod:`analyze.metrics`), which are computed once at the end into
results rows, per-frame rows and curves. Before any task runs, the done frames' chunks are
checked to exist: a cache that lost data is never scored. Schedulers, progress bars and task
threads: :mod:`analyze.scheduler`.

Memory: the ``exact`` protocol keeps every non-void score of every (scorer, T) when that
fits the ``max_memory`` budget (one pass). Otherwise it runs two passes over the frames:
the first keeps only the anomaly pixels' scores, the second counts the in-distribution
scores between consecutive distinct anomaly scores (:class:`analyze.metrics.PositiveState`,
:class:`analyze.metrics.NegativeCountState`); both give identical numbers.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from analyze import metrics as M
from analyze.best_f1 import best_f1_threshold
from analyze.compare.framedata import kept_frame_data
from analyze.components import ComponentState, track_for_dataset
from analyze.smiyc_f16 import f16_transforms, warn_f16_loss
from analyze.frame_selection import ScoreError, pooled_frames, scorable_frames
from analyze.scheduler import LOCAL_SCHEDULERS, Scheduler, SchedulerLike
from analyze.frame_scores import choose_scorers
from analyze.id_stats import IdStats
from analyze.intervals import bootstrap_intervals, key_edges
from analyze.scorers.pixel import SCORE_DTYPE
from analyze.scorers.temperatures import check_temperature
from analyze.later_passes import SecondPassInputs, framed_histograms, kept_components
from analyze.tasks import ScoreJob, run_phase
from schemas import cache as C
from schemas.results import FRAMES, SEMANTIC_SCORER, default_run, parse_run, results_frame

__all__ = ["LOCAL_SCHEDULERS", "Scheduler", "ScoreError", "score_cache", "run_name"]

DEFAULT_MAX_MEMORY = 4 * 2**30
SCORE_BYTES = SCORE_DTYPE.itemsize


POSITION_BYTES = 4  # the pixel of a kept score (uint32), when the component metrics read them
POSITIONS = 1 / 8  # the highest in-distribution scores kept with their pixels (analyze.later_passes)


def plan_passes(spec: C.CacheSpec, n_keys: int, protocol: str, max_memory: int, positions: float = 0.0,
                frames: Sequence[int] | None = None) -> str:
    """``one-pass`` when every score of every key of the ``frames`` scored (default: all) fits
    ``max_memory`` (float64, 8 B each, and 4 B for the pixel of the fraction ``positions`` of
    them). Unlabelled and not-done frames are never scored, so they take no room."""
    if protocol != "exact":
        return "one-pass"
    frames = range(spec.n_frames) if frames is None else frames
    pixels = sum(spec.sizes[i][0] * spec.sizes[i][1] for i in frames)
    per_score = SCORE_BYTES + POSITION_BYTES * positions
    return "one-pass" if pixels * n_keys * per_score <= max_memory else "two-pass"


def second_pass_positions(n_keys: int, n_pos: int, n_neg: int, max_memory: int) -> float:
    """The fraction of in-distribution scores the second pass keeps with their pixels for the
    component metrics: :data:`POSITIONS`, less when ``max_memory`` holds fewer. Per key, the
    first pass's anomaly scores (8 B each) and what the second keeps: every anomaly score
    again with its pixel and the kept in-distribution ones (12 B each)."""
    per = SCORE_BYTES + POSITION_BYTES
    room = max_memory / max(1, n_keys) - (SCORE_BYTES + per) * n_pos
    return max(0.0, min(POSITIONS, room / (per * max(1, n_neg))))


def score_cache(
    cache: str | os.PathLike[str],
    scorers: str = "all",
    temperatures: Sequence[float] = (1.0,),
    *,
    temp_target: str = "query",
    protocol: str = "exact",
    scheduler: SchedulerLike = None,
    storage_options: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
    component_metrics: bool = False,
    curve_points: int = 200,
    bootstrap: int = 0,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
    name: str | None = None,
    frames: str = "all",
    id_stats: Sequence[IdStats] = (),
    recompose: bool = False,
    device: str = "cpu",
    frame_data: list | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score one cache with every scorer at every temperature, as ``analyze score`` does.

    Parameters
    ----------
    cache
        Cache path or fsspec URL (a ``.zarr`` folder written by ``extract run``).
    scorers
        Scorer specs as ``--scorers`` takes them: ``"all"``, or names with optional
        parameters, comma-separated (``"msp,gen:gamma=0.2"``; :data:`analyze.scorers.SCORERS`).
    temperatures
        Temperatures in [0.1, 1000] at which each scorer is applied.
    temp_target
        EoMT caches: ``"query"`` divides the query class logits by T (changes the
        segmentation), ``"pixel"`` the per-pixel class scores. ERFNet rows say ``logits``.
    protocol
        ``"exact"`` (scikit-learn AP/AUROC, ood-metrics FPR95) or ``"smiyc"`` (the
        SegmentMeIfYouCan benchmark's binned curves): :data:`analyze.metrics.PROTOCOLS`.
    scheduler
        A name (``"threads"``, ``"processes"``, ``"sync"``), a distributed scheduler address,
        a ``distributed.Client``, an :class:`analyze.scheduler.Scheduler`, or None: the active
        Dask client, else Dask's configured scheduler (``dask.config.set(scheduler=...)``), else
        threads, as Dask libraries do. A client made here from an address is closed before
        returning. The caller's torch and BLAS thread settings are left as they were.
    storage_options
        fsspec options for a URL cache (e.g. ``{"anon": True}``).
    allow_partial
        Score the done frames of an unfinished cache and skip done frames that lost chunks
        (with a warning) instead of refusing the cache.
    max_memory
        Bytes the exact protocol may keep before it takes two passes over the frames
        (the numbers are identical either way).
    component_metrics
        Also compute the SMIYC component metrics (``siou``, ``ppv``, ``mean_f1``) at each
        scorer's best-F1 pixel threshold.
    curve_points
        Points of each precision-recall and ROC curve in the curve rows.
    bootstrap
        Frame-bootstrap resamples for ``ci_low`` / ``ci_high`` (0: no intervals, NaN).
    seed
        Seed of the bootstrap resampling.
    warn
        Called with each warning line (default: :func:`warnings.warn`).
    info
        Called with notes such as the number of unlabelled frames skipped (default: dropped).
    name
        The run name of every row (default :func:`schemas.results.default_run` of the
        cache's checkpoint: file stem and the first 8 hex digits of its sha256).
    frames
        ``"all"`` pools every scorable frame, ``"with-anomaly"`` only frames with an anomaly
        pixel (:data:`schemas.results.FRAMES`).
    id_stats
        :class:`analyze.id_stats.IdStats` (from :func:`analyze.fit.fit_id_stats` or
        ``IdStats.read``); the one fit on the cache's model and checkpoint gives KL matching
        and SML their statistics.
    recompose
        The bootstrap and component steps compose every frame again instead of reading what
        an earlier pass kept (:mod:`analyze.later_passes`; the same numbers, slower).
    device
        ``"cpu"`` or ``"cuda"``: where composition and scorers run (metrics stay on the CPU).
    frame_data
        A list: with ``bootstrap``, what the intervals resampled is appended (:mod:`analyze.compare.framedata`).

    Returns
    -------
    results, per_frame, curves
        ``results``: one row per key of :data:`schemas.results.KEY`, with the columns and
        dtypes of ``results.parquet`` as ``pandas.read_parquet`` returns them (categoricals
        where the file stores categoricals, ``selected_on`` included);
        :func:`schemas.results.save_results` writes all three tables the way ``analyze score``
        does. ``per_frame``: each frame's AP and pixel counts per scorer and T. ``curves``:
        precision-recall and ROC points per scorer and T.

    Raises
    ------
    ScoreError
        An option the cache cannot be scored with (unknown protocol or frames, bad T or name).
    schemas.errors.DataError
        The cache is unfinished, damaged or lacks what a scorer needs.
    """
    sched, made_here = Scheduler.resolve(scheduler)
    try:
        results, per_frame, curves = _score_cache(
            str(cache), scorers, temperatures, temp_target, protocol, sched, storage_options=storage_options,
            allow_partial=allow_partial, max_memory=max_memory, component_metrics=component_metrics,
            curve_points=curve_points, bootstrap=bootstrap, seed=seed,
            warn=warn if warn is not None else _warn, info=info if info is not None else _ignore, name=name,
            frames=frames, id_stats=id_stats, recompose=recompose, device=device,
            frame_data=frame_data)
    finally:
        if made_here:
            sched.close()
    return results_frame(results), per_frame, curves


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _ignore(message: str) -> None:
    return None


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
    warn: Callable[[str], None] = _warn,
    info: Callable[[str], None] = _ignore,
    name: str | None = None,
    frames: str = "all",
    id_stats: Sequence[IdStats] = (),
    recompose: bool = False,
    device: str = "cpu",
    frame_data: list | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score one cache (see :func:`score_cache`); ``info`` is told how many unlabelled frames were
    skipped. Every row carries ``run`` (``name``, default :func:`schemas.results.default_run` of
    the cache's checkpoint) and ``frames``: ``"all"`` pools every scorable frame with a labelled
    pixel, ``"with-anomaly"`` only those with an anomaly pixel (their in-distribution pixels go
    with them; semantic caches always pool every frame). ``n_frames`` counts the pooled frames
    only, and only they are resampled by ``bootstrap``; ``warn`` says how many were left out and why.
    ``device``: where frame tasks compose and score (``cpu`` or ``cuda``; the metrics stay on the CPU).
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
    if spec.label_kind == "anomaly":
        try:
            chosen, stats = choose_scorers(cache, spec, scorers, temps, temp_target, id_stats, warn, info)
        except ValueError as exc:
            raise ScoreError(str(exc)) from None
    else:
        chosen, stats = (), None  # a semantic cache gives mIoU rows only
    rule = frames if spec.label_kind == "anomaly" else "all"
    if rule != frames:
        warn(f"{cache}: --frames {frames} selects among anomaly frames; this {spec.provenance.dataset} cache "
             "has semantic labels, so its rows pool every frame (frames = all)")
    temps_sem: tuple[float, ...]
    if spec.kind == "pixel" or temp_target == "pixel":
        temps_sem = (1.0,)
    else:
        temps_sem = temps
    n_keys = len(chosen) * len(temps)
    want_boot, want_comp = bool(bootstrap and chosen and protocol == "exact"), bool(component_metrics and chosen)
    # the exact passes keep the pixels of the highest scores when the component metrics read them there
    positions = POSITIONS if want_comp and protocol == "exact" and not recompose else 0.0
    plan = plan_passes(spec, max(1, n_keys), protocol, max_memory, positions, done_frames) if chosen else "one-pass"
    job = ScoreJob(
        cache=str(cache), storage_options=dict(storage_options) if storage_options else None,
        scorers=tuple(s.name for s in chosen), temperatures=temps if chosen else temps_sem,
        temp_target=temp_target, protocol=protocol, frames=done_frames, label_kind=spec.label_kind,
        frame_rule=rule, id_stats=stats, positions=positions if plan == "one-pass" else 0.0, device=device,
    )
    boot_pass = want_boot and recompose  # smiyc intervals never need a pass of their own
    comp_pass = want_comp and not positions  # else only when the kept pixels do not reach a threshold
    fit_pass = protocol == "smiyc" and bool(chosen)
    sched.start_passes((2 if plan == "two-pass" else 1) + boot_pass + comp_pass + fit_pass)
    if fit_pass:  # the track's float16 transform per key, fitted as analyze export fits it
        job = ScoreJob(**{**job.__dict__, "f16": f16_transforms(sched, job, root)})
    result = run_phase(sched, job, "one-pass" if plan == "one-pass" else "positives")
    if fit_pass:
        warn_f16_loss(job, result.states, warn)
    pooled = pooled_frames(cache, spec, result.labels, rule, warn)
    job = ScoreJob(**{**job.__dict__, "frames": pooled})  # later passes read the pooled frames only
    histograms, kept = {}, {}  # what the intervals and the component metrics read, when a pass kept it
    if plan == "two-pass":
        edges = key_edges(result.states) if want_boot and not recompose else {}
        some = next(iter(result.states.values()), None)
        share = second_pass_positions(n_keys, some.n_pos, some.n_neg, max_memory) if positions and some else 0.0
        if positions and not share:
            sched.more_passes()  # no room for pixels: the component metrics compose every frame again
        aux = {k: SecondPassInputs(s.distinct(), edges.get(k), share) for k, s in result.states.items()}
        second = run_phase(sched, job, "negatives", aux=aux)
        result.states = {k: s.with_negatives(second.states[k].counts) for k, s in result.states.items()}
        result.rows = second.rows  # each frame's AP, from its sorted scores in this pass
        histograms = {k: second.states[k].histograms for k in edges}
        kept = {k: st.frames for k, st in second.states.items()} if share else {}
    else:
        if want_boot and not recompose:
            histograms = {k: framed_histograms(result.states[k], e) for k, e in key_edges(result.states).items()}
        kept = {k: st.frames for k, st in result.states.items()} if job.positions else {}

    base = dict(run=run, model=prov.model, dataset=prov.dataset, protocol=protocol, frames=rule,
                cache_digest=C.cache_digest(spec), n_frames=len(pooled))
    target = "logits" if spec.kind == "pixel" else temp_target
    cis = bootstrap_intervals(sched, job, result, bootstrap, seed, warn, histograms if not recompose else None
                     ) if bootstrap and chosen else {}
    if frame_data is not None and cis:  # for analyze compare
        frame_data.append(kept_frame_data(spec.frame_ids, job, result.states, histograms, base, target))
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
    if want_comp:
        rows += _component_rows(sched, job, result, base, target, spec, kept, warn)
    frame_rows = pd.DataFrame([{**base, "temp_target": target, **r} for r in result.rows])
    return pd.DataFrame(rows), frame_rows, pd.DataFrame(curve_rows)


def run_name(spec: C.CacheSpec, name: str | None = None) -> str:
    """The run of a cache's rows: ``name`` (checked), else :func:`schemas.results.default_run` of
    the cache's checkpoint (file stem and sha256)."""
    if name is not None:
        return parse_run(name)
    prov = spec.provenance
    return default_run(prov.model, prov.checkpoint_sha256, prov.checkpoint_file)


def _component_rows(sched, job: ScoreJob, result, base: dict, target: str, spec, kept: Mapping,
                    warn: Callable[[str], None]) -> list[dict]:
    """SMIYC component metrics per key at its best-F1 pixel threshold: from the pixels a pass kept
    (``kept``: each key's :class:`analyze.metrics.FrameSplit` per frame,
    :func:`analyze.later_passes.kept_components`), and for the frames and keys where they do not
    reach the threshold (or nothing was kept) from one more pass that composes those frames again.
    Undefined metrics are told to ``warn``, naming the cache, scorer and T."""
    thresholds = {}
    for (name, t), s in result.states.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            thresholds[(name, t)] = best_f1_threshold(s)
        for w in caught:
            warn(f"{job.cache}: {name} T={t}: {w.message}")
    track = track_for_dataset(spec.provenance.dataset)
    missing: dict[tuple[str, float], set[int]] | None
    if kept:
        states, lost = kept_components(job.cache, job.storage_options, kept, thresholds, track, M.num_threads())
        missing = {k: set(f) for k, f in lost.items() if f}
    else:
        states, missing = {}, None  # every frame of every key
    if missing is None or missing:
        if missing:
            sched.more_passes()  # frames whose kept pixels do not reach a key's threshold
        keys = set(thresholds) if missing is None else set(missing)
        frames = job.frames if missing is None else tuple(sorted(set().union(*missing.values())))
        cjob = ScoreJob(**{**job.__dict__, "frames": frames, "threshold": {k: thresholds[k] for k in keys},
                           "component_track": track, "scorers": tuple(n for n in job.scorers if any(k[0] == n for k in keys)),
                           "temperatures": tuple(t for t in job.temperatures if any(k[1] == t for k in keys))})
        extra = run_phase(sched, cjob, "components", aux=missing).states
        states = {k: _merged(states.get(k), extra.get(k)) for k in thresholds}
    # the non-void pixels of the frames pooled, as on the key's pixel-metric rows
    pooled = {k: int(s.n_pos + s.n_neg) for k, s in result.states.items()}
    rows = []
    for (name, t), state in sorted(states.items()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = state.compute()
        for w in caught:
            warn(f"{job.cache}: {name} T={t}: {w.message}")
        for metric in ("siou", "ppv", "mean_f1"):
            rows.append({**base, "scorer": name, "temperature": t, "temp_target": target, "metric": metric,
                         "value": values[metric], "n_pixels": pooled[(name, t)]})
    return rows


def _merged(a: ComponentState | None, b: ComponentState | None) -> ComponentState:
    """``a`` merged with ``b``, or whichever of them a pass made for a key."""
    if a is not None and b is not None:
        return a.merge(b)
    found = a if a is not None else b
    if found is None:
        raise ScoreError("a key without component state: no pass computed its component metrics")
    return found
