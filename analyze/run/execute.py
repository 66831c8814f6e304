"""Runs a :class:`analyze.plan.passes.Plan`: each pass in order, on one Dask scheduler.

:func:`execute` walks ``plan.passes`` and hands each to the step of its phase (:data:`STEPS`);
a step runs its pass (:func:`analyze.run.tasks.run_phase`) and records what it produced on
the :class:`Execution`: the merged states, the pooled frames, what later steps read (the
bootstrap histograms, the kept pixels, the component states). No metric is computed here:
:mod:`analyze.run.rows` turns an execution into rows. Imports no command-line or report code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from analyze import metrics as M
from analyze.metrics.best_f1 import best_f1_threshold
from analyze.metrics.common import told
from analyze.metrics.components import ComponentState, track_for_dataset
from analyze.plan.frame_selection import ScoreError, pooled_frames
from analyze.plan.passes import Key, Pass, Plan, second_pass_positions
from analyze.run.intervals import bootstrap_histograms, key_edges
from analyze.run.later_passes import SecondPassInputs, framed_histograms, kept_components, spilled_components
from analyze.run.scheduler import Scheduler
from analyze.run.spill import Spill, SpillPolicy
from analyze.run.smiyc_f16 import f16_transforms, warn_f16_loss
from analyze.run.tasks import FrameResult, ScoreJob, run_phase
from schemas import cache as C


@dataclass
class Execution:
    """What the passes of one cache have produced so far."""

    plan: Plan
    sched: Scheduler
    spec: C.CacheSpec
    root: object  # the open cache (zarr group)
    job: ScoreJob
    warn: Callable[[str], None]
    result: FrameResult = field(default_factory=FrameResult)  # merged states, per-frame rows, label counts
    pooled: tuple[int, ...] = ()  # the frames the rows pool
    histograms: dict = field(default_factory=dict)  # key -> FrameHistograms (exact intervals)
    kept: dict = field(default_factory=dict)  # key -> each frame's FrameSplit kept with pixels
    components: dict = field(default_factory=dict)  # key -> ComponentState
    spill_policy: SpillPolicy = SpillPolicy()  # where a pass may spill (analyze.run.spill)
    spill: Spill | None = None  # the maps a pass spilled, until the component step read them
    info: Callable[[str], None] = lambda m: None  # told what a pass puts where the user should know


def execute(plan: Plan, sched: Scheduler, job: ScoreJob, spec: C.CacheSpec, root, warn: Callable[[str], None],
            spill: SpillPolicy = SpillPolicy(), info: Callable[[str], None] = lambda m: None) -> Execution:
    """Run every pass of ``plan`` in order; the progress bars count its certain passes. A spill
    folder the passes made is removed at the end, also when a pass fails (``info`` is told where it is)."""
    run = Execution(plan, sched, spec, root, job, warn, spill_policy=spill, info=info)
    sched.start_passes(plan.certain, plan.tasks)
    try:
        for p in plan.passes:
            STEPS[p.phase](run, p)
    finally:
        if run.spill is not None:
            run.spill.close()
    return run


def _ranges(run: Execution, p: Pass) -> None:
    """smiyc: each key's float16 transform, fitted on every done frame, applied by the later passes."""
    run.job = replace(run.job, f16=f16_transforms(run.sched, run.job, run.root))


def _scored(run: Execution, p: Pass) -> None:
    """The scoring pass (``one-pass`` or ``positives``): the states, then the frames they pool.
    Where the plan spills for the component metrics and the disk has room, one pass writes every
    map there (:mod:`analyze.run.spill`) and keeps no pixel; else it keeps the plan's share."""
    job = run.job
    if p.disk:
        run.spill = _open_spill(run, p)
        if run.spill is not None:
            job = replace(job, positions=0.0, spill=run.spill.prefixes())
    run.result = run_phase(run.sched, job, p.phase)
    run.job = replace(job, spill=None)
    if run.job.f16 is not None:
        warn_f16_loss(run.job, run.result.states, run.warn)
    rule = run.job.frame_rule
    run.pooled = pooled_frames(run.job.cache, run.spec, run.result.labels, rule, run.warn)
    run.job = replace(run.job, frames=run.pooled)  # later passes read the pooled frames only
    if p.phase != "one-pass":
        return
    o = run.plan.options
    if o.bootstrap and o.protocol == "exact" and not o.recompose and run.plan.keys:
        run.histograms = {k: framed_histograms(run.result.states[k], e) for k, e in key_edges(run.result.states).items()}
    if run.job.positions:
        run.kept = {k: st.frames for k, st in run.result.states.items()}


def _negatives(run: Execution, p: Pass) -> None:
    """The two-pass exact protocol's second pass: in-distribution counts at the anomaly scores,
    each frame's AP, and what the intervals and the component metrics read."""
    o, states = run.plan.options, run.result.states
    edges = key_edges(states) if o.bootstrap and not o.recompose else {}
    some = next(iter(states.values()), None)
    share = 0.0
    if run.plan.has("components") and not o.recompose and some is not None:
        run.spill = _open_spill(run, p) if p.disk else None  # no disk planned: over --max-spill
        share = 0.0 if run.spill else second_pass_positions(len(run.plan.keys), some.n_pos, some.n_neg, run.plan.keep_budget)
        if not run.spill and not share:
            run.sched.more_passes()  # no room for pixels: the component metrics compose every frame again
    aux = {k: SecondPassInputs(s.distinct(), edges.get(k), share) for k, s in states.items()}
    job = replace(run.job, spill=run.spill.prefixes() if run.spill else None)
    second = run_phase(run.sched, job, "negatives", aux=aux)  # aux's u: the states' own arrays, not copies
    run.result.states = {}
    for k in list(states):  # one key at a time, each key's pass states dropped as its counts are made
        run.result.states[k] = states.pop(k).with_negatives(second.states[k].counts)
        second.states[k].counts = None
    run.result.rows = second.rows  # each frame's AP, from its sorted scores in this pass
    run.histograms = {k: second.states[k].histograms for k in edges}
    run.kept = {k: st.frames for k, st in second.states.items()} if share else {}


def _open_spill(run: Execution, p: Pass) -> Spill | None:
    """The spill folder of pass ``p`` (:mod:`analyze.run.spill`): on a local scheduler, where the
    disk has room for ``p.disk`` bytes; else None (the kept pixels and a recomposing pass)."""
    if run.sched.client is not None:  # a distributed worker's disk is not ours
        return None
    spill = run.spill_policy.open(p.disk, run.plan.keys)
    if spill is not None:
        run.info(f"{run.job.cache}: the component metrics' spill takes up to {p.disk / 2**30:.1f} GiB in {spill.folder} "
                 "until they are computed (--max-spill caps it, --spill-dir moves it)")
    else:
        run.warn(f"{run.job.cache}: no room on local disk for the component metrics' spill ({p.disk:,} bytes and "
                 f"{run.spill_policy.reserve:,} to spare): they compose the frames their kept pixels miss again")
    return spill


def _bootstrap(run: Execution, p: Pass) -> None:
    """``recompose``: the exact intervals' per-frame histograms from a pass of their own."""
    run.histograms = bootstrap_histograms(run.sched, run.job, run.result.states)


def _components(run: Execution, p: Pass) -> None:
    """SMIYC component metrics per key at its best-F1 pixel threshold: from the pixels a pass kept
    (:func:`analyze.run.later_passes.kept_components`), and for the frames and keys where they
    do not reach the threshold (or nothing was kept) from a pass that composes those frames."""
    job, cache = run.job, run.job.cache
    thresholds = {k: told(lambda s=s: best_f1_threshold(s), f"{cache}: {k[0]} T={k[1]}", run.warn)
                  for k, s in run.result.states.items()}
    track = track_for_dataset(run.spec.provenance.dataset)
    missing: dict[Key, set[int]] | None = None  # None: every frame of every key
    states: dict[Key, ComponentState] = {}
    if run.spill is not None:  # the maps a pass spilled: nothing to compose
        states = spilled_components(cache, job.storage_options, run.spill, job.frames, thresholds, track,
                                    M.num_threads())
        run.spill.close()
        run.spill, missing = None, {}
    elif run.kept:
        states, lost = kept_components(cache, job.storage_options, run.kept, thresholds, track, M.num_threads())
        missing = {k: set(f) for k, f in lost.items() if f}
    if missing is None or missing:
        if missing:
            run.sched.more_passes()  # frames whose kept pixels do not reach a key's threshold
        extra = run_phase(run.sched, _component_job(job, thresholds, track, missing), "components", aux=missing).states
        states = {k: _merged(states.get(k), extra.get(k)) for k in thresholds}
    run.components = states


def _component_job(job: ScoreJob, thresholds: Mapping[Key, float], track: str,
                   missing: Mapping[Key, set[int]] | None) -> ScoreJob:
    """The component pass's job: the keys and frames it must compose (all when ``missing`` is None)."""
    keys = set(thresholds) if missing is None else set(missing)
    frames = job.frames if missing is None else tuple(sorted(set().union(*missing.values())))
    return replace(job, frames=frames, threshold={k: thresholds[k] for k in keys}, component_track=track,
                   scorers=tuple(n for n in job.scorers if any(k[0] == n for k in keys)),
                   temperatures=tuple(t for t in job.temperatures if any(k[1] == t for k in keys)))


def _merged(a: ComponentState | None, b: ComponentState | None) -> ComponentState:
    """``a`` merged with ``b``, or whichever of them a pass made for a key."""
    if a is not None and b is not None:
        return a.merge(b)
    found = a if a is not None else b
    if found is None:
        raise ScoreError("a key without component state: no pass computed its component metrics")
    return found


STEPS: dict[str, Callable[[Execution, Pass], None]] = {
    "ranges": _ranges,
    "one-pass": _scored,
    "positives": _scored,
    "negatives": _negatives,
    "bootstrap": _bootstrap,
    "components": _components,
}
"""Phase of a :class:`analyze.plan.passes.Pass` -> the step that runs it."""
