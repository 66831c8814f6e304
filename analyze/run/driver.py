"""``analyze score`` on one cache: options -> a plan -> its execution -> rows.

:func:`score_cache` checks the options, opens the cache, picks the frames
(:mod:`analyze.plan.frame_selection`) and the scorers (:func:`analyze.compose.frame_scores.choose_scorers`),
asks :func:`analyze.plan.passes.plan_for` for the passes, runs them
(:func:`analyze.run.execute.execute`) and turns the merged states into rows
(:func:`analyze.run.rows.rows`). :func:`plan_cache` stops before running anything
(``analyze score --explain``). Before any task runs, the done frames' chunks are checked to
exist: a cache that lost data is never scored. Imports no command-line or report code.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from analyze import metrics as M
from analyze.compose.frame_scores import choose_scorers
from analyze.plan.frame_selection import ScoreError, scorable_frames
from analyze.plan.passes import Plan, PlanOptions, plan_for
from analyze.run.execute import execute
from analyze.run.rows import RowSettings, rows
from analyze.run.scheduler import LOCAL_SCHEDULERS, Scheduler, SchedulerLike
from analyze.run.spill import SpillPolicy
from analyze.run.tasks import ScoreJob
from analyze.scorers.id_stats import IdStats
from analyze.scorers.temperatures import check_temperature
from schemas import cache as C
from schemas.machine import usable_memory
from schemas.results import FRAMES, default_run, parse_run, results_frame

__all__ = ["LOCAL_SCHEDULERS", "Scheduler", "ScoreError", "score_cache", "plan_cache", "run_name"]


@dataclass(frozen=True)
class ScoreRequest:
    """The options of one :func:`score_cache` call, checked (:class:`ScoreError` names a bad one)."""

    scorers: str = "all"
    temperatures: tuple[float, ...] = (1.0,)
    temp_target: str = "query"
    frames: str = "all"  # schemas.results.FRAMES
    name: str | None = None  # the run; None: from the cache's checkpoint
    storage_options: Mapping[str, Any] | None = None
    allow_partial: bool = False
    id_stats: tuple[IdStats, ...] = ()
    device: str = "cpu"
    plan: PlanOptions = PlanOptions()
    curve_points: int = 200
    seed: int = 0
    spill: SpillPolicy = SpillPolicy()  # where a pass spills for the component metrics

    def __post_init__(self) -> None:
        if self.plan.protocol not in M.PROTOCOLS:
            raise ScoreError(f"unknown protocol {self.plan.protocol!r}; valid: {', '.join(M.PROTOCOLS)}")
        if self.frames not in FRAMES:
            raise ScoreError(f"unknown frames {self.frames!r}; valid: {', '.join(FRAMES)}")
        try:
            object.__setattr__(self, "temperatures", tuple(check_temperature(t) for t in self.temperatures))
            object.__setattr__(self, "name", parse_run(self.name) if self.name is not None else None)
        except ValueError as exc:
            raise ScoreError(str(exc)) from None
        object.__setattr__(self, "id_stats", tuple(self.id_stats))


def score_cache(
    cache: str | os.PathLike[str], scorers: str = "all", temperatures: Sequence[float] = (1.0,), *,
    temp_target: str = "query", protocol: str = "exact", scheduler: SchedulerLike = None,
    storage_options: Mapping[str, Any] | None = None, allow_partial: bool = False, spill: SpillPolicy = SpillPolicy(),
    max_memory: int | None = None, component_metrics: bool = False, curve_points: int = 200,
    bootstrap: int = 0, max_spill: int | None = None, seed: int = 0, warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None, name: str | None = None, frames: str = "all",
    id_stats: Sequence[IdStats] = (), recompose: bool = False, device: str = "cpu", frame_data: list | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score one cache with every scorer at every temperature, as ``analyze score`` does.

    Parameters
    ----------
    cache
        Cache path or fsspec URL (a ``.zarr`` folder written by ``extract run``).
    scorers
        As ``--scorers`` takes them: ``"all"``, or names with optional parameters,
        comma-separated (``"msp,gen:gamma=0.2"``; :data:`analyze.scorers.SCORERS`).
    temperatures
        Temperatures in [0.1, 1000] at which each scorer is applied.
    temp_target
        EoMT caches: ``"query"`` divides the query class logits by T (changes the
        segmentation), ``"pixel"`` the per-pixel class scores. ERFNet rows say ``logits``.
    protocol
        ``"exact"`` (scikit-learn AP/AUROC, ood-metrics FPR95) or ``"smiyc"`` (the
        SegmentMeIfYouCan benchmark's binned curves): :data:`analyze.metrics.PROTOCOLS`.
    scheduler, storage_options
        ``"threads"``, ``"processes"``, ``"sync"``, an address, a ``distributed.Client``, a
        :class:`analyze.run.scheduler.Scheduler`, or None: the active client, else Dask's
        configured scheduler, else threads (a client made here is closed before returning).
        fsspec options for a URL cache (e.g. ``{"anon": True}``).
    allow_partial
        Score the done frames of an unfinished cache, skipping done frames that lost chunks
        (with a warning), instead of refusing the cache.
    max_memory, component_metrics, bootstrap, recompose, max_spill, spill
        The plan's options (:class:`analyze.plan.passes.PlanOptions`): bytes of kept scores and running frame
        tasks before two passes (same numbers; None: :func:`analyze.plan.passes.auto_budget`); the SMIYC
        component metrics at each key's best-F1 threshold; frame-bootstrap resamples for ``ci_low`` /
        ``ci_high`` (0: NaN); whether later steps compose frames again instead of reading what an earlier
        pass kept (same numbers, slower); bytes a pass may spill for the component metrics (None: as
        the disk allows; 0: none) and where (:class:`analyze.run.spill.SpillPolicy`). See ``--explain``.
    curve_points, seed
        Points of each PR and ROC curve; the seed of the bootstrap resampling.
    warn, info
        Told each warning line (default :func:`warnings.warn`) and each note (default: dropped).
    name, frames
        The run of every row (default :func:`schemas.results.default_run` of the checkpoint).
        ``"all"`` pools every scorable frame, ``"with-anomaly"`` only frames with an anomaly
        pixel (:data:`schemas.results.FRAMES`).
    id_stats
        :class:`analyze.scorers.id_stats.IdStats` (:func:`analyze.run.fit.fit_id_stats` or
        ``IdStats.read``); the one fit on the cache's model and checkpoint serves KL matching and SML.
    device, frame_data
        ``"cpu"`` or ``"cuda"``: where composition and scorers run (metrics stay on the CPU). A
        list: with ``bootstrap``, what the intervals resampled is appended (``analyze compare``).

    Returns
    -------
    results, per_frame, curves
        One row per key of :data:`schemas.results.KEY` (the dtypes of ``results.parquet``); each
        frame's AP and pixel counts per scorer and T; PR and ROC points per scorer and T.
        :func:`schemas.results.save_results` writes all three as ``analyze score`` does.

    Raises
    ------
    ScoreError
        An option the cache cannot be scored with (unknown protocol or frames, bad T or name).
    schemas.errors.DataError
        The cache is unfinished, damaged or lacks what a scorer needs.
    """
    request = ScoreRequest(
        scorers, tuple(temperatures), temp_target, frames, name, storage_options, allow_partial, tuple(id_stats),
        device, PlanOptions(protocol, max_memory, component_metrics, bootstrap, recompose, max_spill), curve_points,
        seed, spill)
    sched, made_here = Scheduler.resolve(scheduler)
    try:
        return score_request(str(cache), request, sched, warn or _warn, info or _ignore, frame_data)
    finally:
        if made_here:
            sched.close()


@dataclass(frozen=True)
class Prepared:
    """A cache opened and planned: what :func:`score_request` executes."""

    plan: Plan
    job: ScoreJob
    spec: C.CacheSpec
    root: Any
    rows: RowSettings


def score_request(cache: str, request: ScoreRequest, sched: Scheduler, warn: Callable[[str], None],
                  info: Callable[[str], None], frame_data: list | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Plan, execute and tabulate one cache (:func:`score_cache` without the scheduler's life). The
    plan counts the frame tasks ``sched`` runs at once in the memory budget."""
    request = on_this_machine(request, sched.tasks_at_once(), sched.worker_bytes())
    ready = prepare(cache, request, warn, info)
    plan = ready.plan
    if plan.tasks is not None and request.plan.tasks is not None and plan.tasks < request.plan.tasks:
        which = "--max-memory" if request.plan.max_memory is not None else "the automatic budget (half this machine's memory)"
        info(f"{cache}: {plan.tasks} of {request.plan.tasks} frame tasks at once, each about "
             f"{plan.task_memory / 2**30:.2f} GiB, to stay within {which}, {plan.budget / 2**30:.2f} GiB "
             "(raise --max-memory to run more)")
    ex = execute(ready.plan, sched, ready.job, ready.spec, ready.root, warn, request.spill, info)
    results, per_frame, curves = rows(ex, ready.rows, frame_data)
    return results_frame(results), per_frame, curves


def on_this_machine(request: ScoreRequest, tasks: int | None, worker_bytes: int = 0) -> ScoreRequest:
    """``request`` with what its plan counts of this machine: ``tasks`` frame tasks at once (the
    scheduler's, :func:`analyze.run.scheduler.tasks_at_once`), the memory each one's worker
    process holds beyond it (:func:`analyze.run.scheduler.worker_bytes`) and the memory the
    process may use."""
    return replace(request, plan=replace(request.plan, tasks=tasks, machine_memory=usable_memory(),
                                         worker_bytes=worker_bytes))


def plan_cache(cache: str, request: ScoreRequest, warn: Callable[[str], None] = lambda m: None,
               info: Callable[[str], None] = lambda m: None) -> Plan:
    """The passes :func:`score_cache` would run on ``cache``, without running them (``--explain``)."""
    return prepare(cache, request, warn, info).plan


def prepare(cache: str, request: ScoreRequest, warn: Callable[[str], None], info: Callable[[str], None]) -> Prepared:
    """Open the cache, check its frames, choose its scorers and plan its passes. Every row pools
    the frames of ``request.frames`` (semantic caches: every frame), ``n_frames`` counts them
    and only they are resampled; ``warn`` says how many were left out and why."""
    root, spec = C.open_cache(cache, mode="r", storage_options=request.storage_options)
    run = request.name or run_name(spec)
    done = scorable_frames(root, spec, cache, request.allow_partial, warn, info)
    chosen, stats = _chosen(cache, spec, request, warn, info)
    rule = request.frames if spec.label_kind == "anomaly" else "all"
    if rule != request.frames:
        warn(f"{cache}: --frames {request.frames} selects among anomaly frames; this {spec.provenance.dataset} cache "
             "has semantic labels, so its rows pool every frame (frames = all)")
    temps = request.temperatures
    temps_sem = (1.0,) if spec.kind == "pixel" or request.temp_target == "pixel" else temps
    plan = plan_for(spec, cache, [(s.name, t) for s in chosen for t in temps], temps_sem, done, request.plan)
    job = ScoreJob(
        cache=cache, storage_options=dict(request.storage_options) if request.storage_options else None,
        scorers=tuple(s.name for s in chosen), temperatures=temps if chosen else temps_sem,
        temp_target=request.temp_target, protocol=request.plan.protocol, frames=done, label_kind=spec.label_kind,
        frame_rule=rule, id_stats=stats, positions=plan.positions, device=request.device)
    target = "logits" if spec.kind == "pixel" else request.temp_target
    settings = RowSettings(run, rule, target, request.curve_points, request.plan.bootstrap, request.seed)
    return Prepared(plan, job, spec, root, settings)


def _chosen(cache: str, spec: C.CacheSpec, request: ScoreRequest, warn, info) -> tuple[tuple, Any]:
    """The scorers and their statistics for an anomaly cache; a semantic cache gives mIoU rows only."""
    if spec.label_kind != "anomaly":
        return (), None
    try:
        return choose_scorers(cache, spec, request.scorers, request.temperatures, request.temp_target,
                              request.id_stats, warn, info)
    except ValueError as exc:
        raise ScoreError(str(exc)) from None


def run_name(spec: C.CacheSpec, name: str | None = None) -> str:
    """The run of a cache's rows: ``name`` (checked), else :func:`schemas.results.default_run` of
    the cache's checkpoint (file stem and sha256)."""
    if name is not None:
        return parse_run(name)
    prov = spec.provenance
    return default_run(prov.model, prov.checkpoint_sha256, prov.checkpoint_file)


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _ignore(message: str) -> None:
    return None
