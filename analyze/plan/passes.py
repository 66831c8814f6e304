"""The passes ``analyze score`` makes over a cache's frames, and why: the scoring plan as data.

:func:`plan_for` is a pure function of the cache's spec, the keys chosen (scorer x T), the
frames scored and the options (:class:`PlanOptions`). It returns a :class:`Plan`: the passes
in the order they run, each a :class:`Pass` that says which keys it scores, what each key
keeps and the memory it plans for. :mod:`analyze.run.execute` runs the list and
:mod:`analyze.run.rows` turns the merged states into rows; ``analyze score --explain`` prints
:meth:`Plan.lines` without reading a frame.

The rules (the numbers are identical whichever plan runs):

* ``exact`` keeps every non-void score of every key (float64) when that fits ``max_memory``:
  one pass. Otherwise two: the anomaly pixels' scores, then the in-distribution counts
  between them (:class:`analyze.metrics.PositiveState`, :class:`analyze.metrics.NegativeCountState`).
  The first composes only what the anomaly pixels need (EoMT: each crop's row tiles that
  cover one; ERFNet: the resize, then the scorers on the row tiles that hold one; widened by
  SML's smoothing where SML is scored: :func:`analyze.compose.partial.compose_mask`), so
  no frame is composed twice in whole.
* ``smiyc`` bins each frame (one pass), after a pass that fits each key's float16 transform
  on every done frame, labelled or not (the ``ranges`` pass, as ``analyze export`` fits it).
* ``--component-metrics`` (exact): the pass that sees every frame whole (one pass's, or the
  second of two) spills each frame's scores to local disk (:mod:`analyze.run.spill`) and the
  component step reads them back, composing nothing. Where ``max_spill`` caps the spill below
  the maps, or the disk has no room (checked before the pass), that pass keeps the pixels of
  the highest in-distribution scores instead: one pass as many as the budget holds beside
  every score, at least :data:`POSITIONS` of them and up to all (:func:`one_pass_positions`),
  two passes what the budget holds (:func:`second_pass_positions`); a pass then composes the
  frames where they do not reach a key's best-F1 threshold (never when every pixel is kept).
  With ``recompose``, or under ``smiyc``, a component pass composes every pooled frame.
* ``--bootstrap`` (exact): the per-frame histograms come from the kept scores; ``recompose``
  makes them in a pass of their own. ``smiyc`` resamples its per-frame bins: no pass.
* A semantic cache (mIoU) has no keys: one pass of confusion matrices.
* ``max_memory`` also holds the frame tasks that run at once on this machine (``tasks``, the
  local scheduler's threads or processes): each needs :func:`task_bytes` while it runs. One
  pass is planned when every kept score and ``tasks`` frame tasks fit; else two passes, whose
  frame tasks may take :func:`task_room`. Where that holds fewer than ``tasks`` (at least
  one), fewer frame tasks run at once (:attr:`Plan.tasks`). Under the processes scheduler each
  task runs in a worker process of its own, whose imports (``worker_bytes``) count with the
  task. A distributed cluster's workers hold their own memory: not counted (``tasks`` None).
  Without a ``max_memory`` (the default, None) the budget is :func:`auto_budget`:
  :data:`DEFAULT_MAX_MEMORY` of kept scores beside the tasks, within half the machine's usable
  memory.
* Every pass whose states read no void pixel (all but ``ranges``; ``positives`` reads fewer)
  composes only the row tiles that hold a labelled pixel (:class:`analyze.run.tasks.Phase`'s
  ``labelled_pixels``): Fishyscapes' and SMIYC Obstacle's void outside the road, Cityscapes'
  ego vehicle.

Imports nothing of Dask, torch or the composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from schemas import cache as C
from schemas.windows import scaled_size

Key = tuple[str, float]  # (scorer, temperature)

DEFAULT_MAX_MEMORY = 4 * 2**30
SCORE_BYTES = 8  # a kept score: float64 (analyze.scorers.pixel.SCORE_DTYPE)
POSITION_BYTES = 4  # the pixel of a kept score (uint32), when the component metrics read them
POSITIONS = 1 / 8  # the fewest of the highest in-distribution scores kept with their pixels (analyze.run.later_passes)
SPILL_BLOCK = 4096  # a spilled map file's header, and the unit its size is padded to (analyze.run.spill)
MAP_BYTES = 8  # a frame task's map of one key, per pixel at the label size: float64
TASK_PIXEL_BYTES = 128  # a frame task's composition and scorer buffers per pixel (task_pixels; measured: 40-134 B)


@dataclass(frozen=True)
class PlanOptions:
    """The options of ``analyze score`` that shape the passes (:func:`analyze.run.driver.score_cache`)."""

    protocol: str = "exact"
    max_memory: int | None = None  # bytes of the budget (None: auto_budget)
    component_metrics: bool = False
    bootstrap: int = 0
    recompose: bool = False
    max_spill: int | None = None  # bytes a pass may spill to local disk (None: no cap; 0: none)
    tasks: int | None = None  # frame tasks the scheduler runs at once in this machine's memory (None: not counted)
    machine_memory: int | None = None  # bytes this process may use (schemas.machine.usable_memory; None: unknown)
    worker_bytes: int = 0  # bytes each frame task's own worker process holds before the task (0: tasks share this process)


@dataclass(frozen=True)
class Pass:
    """One pass over frames: a phase of :data:`analyze.run.tasks.PHASES` and why it runs."""

    phase: str  # the key of analyze.run.tasks.PHASES it runs
    why: str  # what the pass is for
    frames: str  # which frames it composes
    keeps: str  # what each key keeps
    memory: int  # bytes planned for what it keeps (0: nothing that grows with the pixels)
    when: str = ""  # "" runs always; else the condition it runs under (known once earlier passes ran)
    disk: int = 0  # bytes it spills to local disk for a later pass (analyze.run.spill), where the disk has room
    bound: bool = False  # ``memory`` is a bound the data decides within (e.g. the anomaly pixels' share)


@dataclass(frozen=True)
class Plan:
    """The passes of one cache, in order, and what they share."""

    cache: str
    mode: str  # "one-pass" or "two-pass": how the exact protocol keeps its scores
    keys: tuple[Key, ...]  # every (scorer, T) scored; empty for a semantic cache
    semantic_temps: tuple[float, ...]  # the T of the mIoU rows
    frames: tuple[int, ...]  # the frames scored (labelled, done, complete)
    pixels: int  # their pixels
    positions: float  # the fraction of in-distribution scores one pass keeps with pixels where it does not spill
    options: PlanOptions = field(default_factory=PlanOptions)
    passes: tuple[Pass, ...] = ()
    kind: str = "query"  # the cache's kind (schemas.cache.KINDS): what the passes compose of a frame
    tasks: int | None = None  # frame tasks at once within the budget (None: as the scheduler runs them)
    budget: int = DEFAULT_MAX_MEMORY  # the memory budget in bytes: options.max_memory, or auto_budget's
    task_memory: int = 0  # bytes one running frame task needs (task_bytes, and options.worker_bytes)

    @property
    def keep_budget(self) -> int:
        """Bytes the passes may keep: the budget less what the frame tasks at once need."""
        return max(0, self.budget - (self.tasks or 0) * self.task_memory)

    @property
    def certain(self) -> int:
        """The passes that run whatever the data (the progress bars' ``pass i/n``)."""
        return sum(not p.when for p in self.passes)

    def has(self, phase: str) -> bool:
        return any(p.phase == phase for p in self.passes)

    def _auto(self) -> str:
        if self.options.max_memory is not None:
            return ""
        half = (f", at most half of this machine's {_bytes(self.options.machine_memory)}"
                if self.options.machine_memory else "")
        return f" (auto: {_bytes(DEFAULT_MAX_MEMORY)} of scores beside the frame tasks{half})"

    def lines(self) -> list[str]:
        """The plan as ``analyze score --explain`` prints it."""
        o = self.options
        what = (f"{len(self.keys)} keys ({_scorers(self.keys)} x T {_temps(sorted({t for _, t in self.keys}))})"
                if self.keys else f"mIoU at T {_temps(self.semantic_temps)}")
        out = [f"{self.cache}: {what}; {len(self.frames)} frames scored, {self.pixels:,} pixels; "
               f"protocol {o.protocol}; memory budget {_bytes(self.budget)}{self._auto()}"]
        for i, p in enumerate(self.passes, 1):
            cond = f" [only {p.when}]" if p.when else ""
            mem = (f"; plans {'at most ' if p.bound else ''}{_bytes(p.memory)}" if p.memory else "") + (
                f"; spills up to {_bytes(p.disk)} to local disk" if p.disk else "")
            out.append(f"  pass {i} {p.phase}: {p.why}{cond}")
            out.append(f"      composes {p.frames}; keeps {p.keeps}{mem}")
        if self.tasks is not None:
            fewer = (f" of the {o.tasks} the scheduler runs (raise --max-memory to run them all)"
                     if o.tasks is not None and self.tasks < o.tasks else "")
            fits = ("within the budget" if self.tasks * self.task_memory <= self.budget else
                    "beyond the budget: one frame task is the least that runs")
            worker = (f", and {_bytes(o.worker_bytes)} for its worker process's imports" if o.worker_bytes else "")
            out.append(f"  frame tasks: {self.tasks} at once{fewer}, each about {_bytes(self.task_memory)} "
                       f"while it runs (its maps and buffers{worker}), {fits}")
        return out


def plan_for(spec: C.CacheSpec, cache: str, keys: Sequence[Key], semantic_temps: Sequence[float],
             frames: Sequence[int], options: PlanOptions) -> Plan:
    """The :class:`Plan` of one cache: its spec, the keys chosen (none for a semantic cache), the
    T of its mIoU rows, the frames scored, and the options. Pure: reads no frame."""
    keys = tuple(keys)
    exact = options.protocol == "exact"
    want_comp = bool(options.component_metrics and keys)
    positions = POSITIONS if want_comp and exact and not options.recompose else 0.0
    pixels = sum(spec.sizes[i][0] * spec.sizes[i][1] for i in frames)
    task = task_bytes(len(keys), max((task_pixels(spec, i) for i in frames), default=0)) + options.worker_bytes
    budget = options.max_memory if options.max_memory is not None else auto_budget(task, options.tasks,
                                                                                   options.machine_memory)
    room = budget - task * (options.tasks or 0)  # what one pass may keep beside every task
    mode = one_or_two(pixels, len(keys), options.protocol, room, positions) if keys else "one-pass"
    kept = one_pass_positions(pixels, len(keys), room) if positions and mode == "one-pass" else 0.0
    tasks = tasks_within(task_room(budget, mode), task, options.tasks)
    plan = Plan(cache, mode, keys, tuple(semantic_temps), tuple(frames), pixels, kept, options, kind=spec.kind,
                tasks=tasks, task_memory=task, budget=budget)
    passes = _float16(plan) + _scoring(plan, positions) + _bootstrap(plan) + _components(plan, positions)
    return Plan(**{**plan.__dict__, "passes": passes})


def one_or_two(pixels: int, n_keys: int, protocol: str, max_memory: int, positions: float = 0.0) -> str:
    """``one-pass`` when every score of every key fits ``max_memory`` (float64, 8 B each, and 4 B
    for the pixel of the fraction ``positions`` of them), else ``two-pass``; ``smiyc`` bins as
    it goes (always one pass). Unlabelled and not-done frames are never scored: no room."""
    if protocol != "exact":
        return "one-pass"
    per_score = SCORE_BYTES + POSITION_BYTES * positions
    return "one-pass" if pixels * max(1, n_keys) * per_score <= max_memory else "two-pass"


def task_bytes(n_keys: int, frame_pixels: int) -> int:
    """The memory one running frame task needs beyond what the passes keep, for a frame of
    ``frame_pixels`` pixels (:func:`task_pixels`): a float64 map per key (the fused pass's, :data:`MAP_BYTES`) and
    the composition's and scorers' buffers (:data:`TASK_PIXEL_BYTES`). Measured on 1024x2048 frames
    as the growth of the peak resident set from one frame task to two: EoMT 0.48 GiB with 20 keys,
    1.01 GiB with 48, ERFNet 0.47 GiB with 16, semantic caches 0.08 (EoMT) and 0.23 GiB (ERFNet)."""
    return int(frame_pixels) * (MAP_BYTES * int(n_keys) + TASK_PIXEL_BYTES)


def auto_budget(task: int, tasks: int | None, machine_memory: int | None) -> int:
    """The budget without ``--max-memory``: :data:`DEFAULT_MAX_MEMORY` for the kept scores beside
    ``tasks`` frame tasks of ``task`` bytes, within half of ``machine_memory`` (what the process may
    use; None: no bound), and never below :data:`DEFAULT_MAX_MEMORY`. Every core runs a task where
    the machine has the memory; a machine with many cores and little memory runs fewer."""
    want = DEFAULT_MAX_MEMORY + (tasks or 0) * task
    if machine_memory:
        want = min(want, machine_memory // 2)
    return max(DEFAULT_MAX_MEMORY, want)


def task_pixels(spec: C.CacheSpec, i: int) -> int:
    """The pixels frame ``i``'s task holds per map: its label size's, or for EoMT its resized
    frame's where that is larger (a frame is composed there, then resized to the labels)."""
    h, w = spec.sizes[i]
    if spec.kind != "query" or not spec.crop_size:
        return h * w
    rh, rw = scaled_size(h, w, spec.crop_size)
    return max(h * w, rh * rw)


def task_room(budget: int, mode: str) -> int:
    """The bytes of ``budget`` the frame tasks may take: all of it where one pass is planned (it
    fits every kept score beside them), else what is left beside half the budget or 4 GiB,
    whichever is less (what two passes keep: the anomaly pixels' scores, the counts)."""
    return budget - min(budget // 2, DEFAULT_MAX_MEMORY) if mode == "two-pass" else budget


def tasks_within(budget: int, task: int, tasks: int | None) -> int | None:
    """How many of ``tasks`` frame tasks run at once within ``budget`` bytes, ``task`` each: at
    least one; None when ``tasks`` is None (not counted)."""
    if tasks is None:
        return None
    return max(1, min(int(tasks), int(budget // task) if task > 0 else int(tasks)))


def one_pass_positions(pixels: int, n_keys: int, max_memory: int) -> float:
    """The fraction of in-distribution scores one pass keeps with their pixels for the component
    metrics: as many as ``max_memory`` holds beside every score (8 B, and 4 B for a pixel), up to
    all of them (1.0: the component step then never composes a frame), and at least
    :data:`POSITIONS` (:func:`one_or_two` plans one pass only when those fit)."""
    room = max_memory / max(1, pixels * max(1, n_keys)) - SCORE_BYTES
    return max(POSITIONS, min(1.0, room / POSITION_BYTES))


def second_pass_positions(n_keys: int, n_pos: int, n_neg: int, max_memory: int) -> float:
    """The fraction of in-distribution scores the second pass keeps with their pixels for the
    component metrics: :data:`POSITIONS`, less when ``max_memory`` holds fewer. Per key, the
    first pass's anomaly scores (8 B each) and what the second keeps: every anomaly score
    again with its pixel and the kept in-distribution ones (12 B each)."""
    per = SCORE_BYTES + POSITION_BYTES
    room = max_memory / max(1, n_keys) - (SCORE_BYTES + per) * n_pos
    return max(0.0, min(POSITIONS, room / (per * max(1, n_neg))))


def _float16(plan: Plan) -> tuple[Pass, ...]:
    if plan.options.protocol != "smiyc" or not plan.keys:
        return ()
    return (Pass("ranges", "fit each key's float16 transform on its score range, as analyze export does",
                 "every done frame, labelled or not", "its lowest and highest score", 0),)


def _scoring(plan: Plan, positions: float) -> tuple[Pass, ...]:
    n = len(plan.keys)
    if not plan.keys:
        return (Pass("one-pass", "the semantic map at each T into a confusion matrix", "every frame scored",
                     "a confusion matrix per T", 0),)
    if plan.options.protocol != "exact":
        return (Pass("one-pass", f"{plan.options.protocol} states: each frame's scores binned", "every frame scored",
                     "each frame's bins per key", 0),)
    disk = spill_bytes(plan) if positions and spills(plan) else 0
    if plan.mode == "one-pass":
        pixels = ("" if not plan.positions else ", the pixel of each" if plan.positions >= 1
                  else f", the pixels of the top {plan.positions:.3g} in-distribution ones (and of every anomaly one)")
        kept = "every non-void score (float64)"
        if disk:
            kept += ("; spills each frame's scores to local disk for the component step (where the disk has room; "
                     f"else keeps{pixels.removeprefix(',')})")
        elif positions:  # the component metrics read pixels: --max-spill caps the spill
            kept += f"{pixels} (the spill, {_bytes(spill_bytes(plan))}, exceeds --max-spill)"
        per = SCORE_BYTES + POSITION_BYTES * plan.positions
        return (Pass("one-pass", "every key's scores, each frame sorted (exact metrics, per-frame AP)",
                     "every frame scored", kept, int(plan.pixels * n * per), disk=disk),)
    every = every_score_bytes(plan)
    return (Pass("positives", f"every score would exceed the budget ({_bytes(every)}): "
                 "the anomaly pixels' scores first", positive_rows(plan.keys, plan.kind),
                 "the anomaly pixels' scores (float64)", every, bound=True),
            Pass("negatives", "the in-distribution counts between consecutive anomaly scores, each frame's AP"
                 + (", the bootstrap histograms" if plan.options.bootstrap and not plan.options.recompose else ""),
                 "the pooled frames", "integer counts per key (4 bytes per distinct anomaly score in each frame "
                 "result until it is merged)" + (
                     "; spills each frame's scores to local disk for the component step (where the disk has room; "
                     "else keeps the pixels of the top in-distribution scores, as the budget allows)" if disk else
                     f"; keeps the pixels of the top in-distribution scores, as the budget allows (the spill, "
                     f"{_bytes(spill_bytes(plan))}, exceeds --max-spill)" if positions else ""),
                 plan.budget if positions else 0, disk=disk))


def every_score_bytes(plan: Plan) -> int:
    """Bytes of every score of every key (float64): what one pass keeps, what the spill writes."""
    return int(plan.pixels * len(plan.keys) * SCORE_BYTES)


def spill_bytes(plan: Plan) -> int:
    """Bytes of the spill of every map (:mod:`analyze.run.spill`): every score (float64), and per
    map of a frame and key a header block and the padding to a whole block."""
    return every_score_bytes(plan) + len(plan.frames) * len(plan.keys) * 2 * SPILL_BLOCK


def spills(plan: Plan) -> bool:
    """Whether the pass that sees every frame whole may spill every map for the component metrics:
    ``max_spill`` (None: no cap) holds them (:func:`spill_bytes`). The disk's room is
    checked when the pass runs (:meth:`analyze.run.spill.SpillPolicy.open`)."""
    cap = plan.options.max_spill
    return cap is None or spill_bytes(plan) <= cap


def positive_rows(keys: Sequence[Key], kind: str) -> str:
    """What the ``positives`` pass composes for a cache of ``kind`` (:func:`analyze.compose.partial.compose_mask`)."""
    smoothed = " or lie within SML's smoothing reach of one" if any(n.split(":")[0] == "sml" for n, _ in keys) else ""
    if kind == "pixel":
        return (f"each frame scored resized, its scorers on the row tiles that hold an anomaly pixel{smoothed} "
                "(whole frames with a whole-frame plugin)")
    return (f"the row tiles of each crop that hold an anomaly pixel{smoothed}, in every frame scored (whole frames "
            "off the fused pass: flip-averaged scorers, portrait frames, a label size other than the resized "
            "frame's, whole-frame plugins)")


def _bootstrap(plan: Plan) -> tuple[Pass, ...]:
    o = plan.options
    if not (o.bootstrap and plan.keys and o.protocol == "exact" and o.recompose):
        return ()
    return (Pass("bootstrap", f"per-frame histograms for {o.bootstrap} frame-bootstrap resamples (recompose)",
                 "the pooled frames", "each frame's histogram per key", 0),)


def _components(plan: Plan, positions: float) -> tuple[Pass, ...]:
    if not (plan.options.component_metrics and plan.keys):
        return ()
    why = "SMIYC component metrics at each key's best-F1 pixel threshold"
    keeps = "component counts per key"
    if not positions:
        reason = ("recompose" if plan.options.recompose else f"the {plan.options.protocol} protocol keeps no pixels")
        return (Pass("components", f"{why} ({reason})", "the pooled frames", keeps, 0),)
    when = "for the frames whose kept pixels do not reach a key's threshold"
    short = " (all of them when the budget leaves no room for pixels)" if plan.mode == "two-pass" else ""
    if spills(plan):
        every = plan.mode == "one-pass" and plan.positions >= 1
        return (Pass("components", f"{why}, from the spilled scores (composes nothing); without room on disk for "
                     "the spill, from the kept pixels" + (" (every pixel: composes nothing)" if every else
                                                           ", and this pass composes what they miss"),
                     "no frame" if every else "those frames", keeps, 0,
                     when="without room on disk for the spill, " + (
                         "for frames whose kept pixels miss a key's threshold: none, every pixel is kept" if every
                         else f"{when}{short}")),)
    if plan.mode == "two-pass":
        return (Pass("components", f"{why}, from the kept pixels (no spill: --max-spill); this pass composes what "
                     "they miss", "those frames", keeps, 0, when=f"{when}{short}"),)
    if plan.positions >= 1:
        return (Pass("components", f"{why}, from the kept pixels (every pixel is kept: composes nothing)",
                     "no frame", keeps, 0, when="for frames whose kept pixels miss a key's threshold: none, every pixel is kept"),)
    return (Pass("components", f"{why}, from the kept pixels; this pass composes what they miss",
                 "those frames", keeps, 0, when=when),)


def _scorers(keys: Sequence[Key]) -> str:
    names = list(dict.fromkeys(n for n, _ in keys))
    return ", ".join(names) if len(names) <= 6 else f"{len(names)} scorers"


def _temps(temps: Sequence[float]) -> str:
    return ",".join(f"{t:g}" for t in temps)


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
