"""``analyze fit``: in-distribution statistics of a cache's scorer input, one Dask task per frame.

Each task opens the cache itself, composes one frame exactly as ``analyze score`` does
(:func:`analyze.compose.frame_scores.iter_scorer_inputs`) at every temperature and returns an
:class:`analyze.scorers.id_stats.IdStatsState`; the states are tree-merged in frame order
(:func:`analyze.run.tasks.tree_reduce`), so the statistics do not depend on the scheduler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from analyze.compose.frame_scores import frame_inputs, iter_scorer_inputs
from analyze.plan.frame_selection import scorable_frames
from analyze.scorers.id_stats import IdStats, IdStatsState, StatsError
from analyze.run.scheduler import Scheduler, SchedulerLike, single_threaded_tasks
from analyze.scorers.temperatures import check_temperature
from analyze.run.tasks import tree_reduce
from schemas import cache as C
from schemas.errors import DataError
from schemas.results import default_run, parse_run


@dataclass(frozen=True)
class FitJob:
    """What a fit task needs; small and picklable."""

    cache: str
    storage_options: Mapping[str, Any] | None
    temperatures: tuple[float, ...]
    temp_target: str


def fit_frame_task(job: FitJob, i: int) -> IdStatsState:
    """The statistics state of frame ``i`` of ``job.cache`` at every temperature."""
    with single_threaded_tasks():
        root, spec = C.open_cache(job.cache, mode="r", storage_options=job.storage_options, validate=False)
        try:
            inputs = frame_inputs(root, spec, i)
        except C.CacheError as exc:
            raise StatsError(f"{job.cache}: {exc}") from None
        for name, arr in inputs.arrays().items():
            if not np.isfinite(arr).all():
                raise StatsError(f"{job.cache}: frame {spec.frame_ids[i]} (index {i}) has NaN or Inf in cached "
                                 f"{name.replace('_', ' ')}")
        state = IdStatsState(frames=1)
        for t, x, t_scorer in iter_scorer_inputs(inputs, job.temperatures, job.temp_target):
            state.update(t, x, t_scorer)
        return state


def fit_id_stats(
    cache: str | os.PathLike[str], temperatures: Sequence[float] = (1.0,), *, temp_target: str = "query",
    scheduler: SchedulerLike = None, storage_options: Mapping[str, Any] | None = None, allow_partial: bool = False,
    warn: Callable[[str], None] | None = None, info: Callable[[str], None] | None = None, name: str | None = None,
) -> IdStats:
    """In-distribution statistics of a cache's scorer input, as ``analyze fit`` computes them.

    KL matching and SML score a map against per-class statistics of the in-distribution
    data (:class:`analyze.scorers.id_stats.IdStats`); fit them on a cache of in-distribution frames
    (e.g. ``cityscapes_val``) of the same model and checkpoint as the caches scored.

    Parameters
    ----------
    cache
        Cache path or fsspec URL. Its done, labelled, complete frames are used.
    temperatures
        Temperatures in [0.1, 1000] (each one a set of statistics; scoring at a T needs it).
    temp_target
        EoMT caches: ``"query"`` or ``"pixel"``, as in :func:`analyze.run.driver.score_cache`
        (ERFNet statistics are of the ``logits``).
    scheduler
        As in :func:`analyze.run.driver.score_cache`; the statistics do not depend on it.
    storage_options
        fsspec options for a URL cache.
    allow_partial
        Use the done frames of an unfinished cache, skipping done frames that lost chunks
        (with a warning), instead of refusing it.
    warn
        Called with each warning line (default: dropped), e.g. for a cache of anomaly data.
    info
        Called with notes such as the number of unlabelled frames skipped (default: dropped).
    name
        The run recorded in the statistics (default from the checkpoint, as ``analyze score``).

    Returns
    -------
    analyze.scorers.id_stats.IdStats
        The statistics; ``.write(path)`` saves them as ``analyze fit --out`` does, and
        ``score_cache(id_stats=[...])`` takes them as they are.

    Raises
    ------
    schemas.errors.DataError
        A bad temperature or name, or a cache that cannot be fit (unfinished, damaged,
        non-finite outputs).
    """
    import dask

    warn = warn if warn is not None else _ignore
    info = info if info is not None else _ignore

    try:
        temps = tuple(sorted({check_temperature(t) for t in temperatures}))
        run = parse_run(name) if name is not None else None
    except ValueError as exc:
        raise DataError(str(exc)) from None
    root, spec = C.open_cache(cache, mode="r", storage_options=storage_options)
    prov = spec.provenance
    if spec.label_kind == "anomaly":
        warn(f"{cache}: {prov.dataset} holds anomalies; in-distribution statistics are meant to come from "
             "in-distribution data (cityscapes_val), and it cannot be scored with them")
    frames = scorable_frames(root, spec, str(cache), allow_partial, warn, info)
    target = "logits" if spec.kind == "pixel" else temp_target
    job = FitJob(str(cache), dict(storage_options) if storage_options else None, temps,
                 "query" if spec.kind == "pixel" else temp_target)
    sched, made_here = Scheduler.resolve(scheduler)
    try:
        sched.start_passes(1)
        task = dask.delayed(fit_frame_task, pure=True)
        state = sched.map_reduce([task(job, i) for i in frames], tree_reduce, "in-distribution statistics")
    finally:
        if made_here:
            sched.close()
    run = run or default_run(prov.model, prov.checkpoint_sha256, prov.checkpoint_file)
    return IdStats.from_state(state, spec, str(cache), run, target)


def _ignore(message: str) -> None:
    return None
