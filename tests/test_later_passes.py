"""Bootstrap intervals and component metrics read what an earlier pass kept (analyze.run.later_passes)
or spilled (analyze.run.spill) instead of composing every frame again: the same rows, bit for bit,
as the recomposing passes (`score_cache(..., recompose=True)`) and as the kept pixels alone (the
path before the spill), for both cache kinds, both protocols, both exact plans, and informative
and uninformative scores, with fewer passes over the frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze.plan import passes
from analyze.plan.passes import POSITIONS, PlanOptions, one_pass_positions, plan_for, second_pass_positions
from analyze.run import execute, intervals, smiyc_f16, tasks
from analyze.bench.caches import build_cache
from analyze.run.driver import score_cache
from analyze.run.spill import SpillPolicy
from analyze.scorers import get_scorers
from schemas import cache as C

TEMPS = (0.5, 1.0, 2.0)


def _scorers(kind: str) -> str:
    """Every scorer 'all' gives but no-object: on these frames its best-F1 threshold lies below the
    kept in-distribution scores, so its component metrics compose frames again (the path the
    few-pixels cases below test), which the one-pass case must not need."""
    return ",".join(s.name for s in get_scorers("all", kind, available=()) if s.name != "noobject")


PIXELS = 5 * 128 * 256  # the pixels of _cache's frames
NO_DISK = SpillPolicy(free=lambda folder: 0)  # a disk without room: the spill is not made


def _cache(tmp_path, kind: str, informative: bool = True):
    """Five 128x256 frames with blob anomalies (obstacle track: components of tens of pixels are
    kept); frame 1 has no anomaly pixel, frame 2 is all void, frame 4 has ties (a constant band).
    Uninformative: the anomalies' logits like the rest's (the best-F1 threshold sits low)."""
    path = tmp_path / f"{kind}{'' if informative else '_flat'}.zarr"
    root, spec = build_cache(path, kind, 5, scale=8, dataset="smiyc_ro21", seed=3, informative=informative)
    thumb = C.read_thumbnail(root, spec, 0)
    for i, edit in ((1, lambda y: np.where(y == 1, 0, y)), (2, lambda y: np.full_like(y, 255))):
        C.write_frame_common(root, spec, i, edit(C.read_label(root, spec, i)).astype(np.uint8), thumb)
    if kind == "pixel":  # a band of equal logits: tied scores across classes of pixels
        z = C.read_pixel_logits(root, spec, 4)
        z[:, 10:14] = 1.0
        C.write_frame_pixel(root, spec, 4, z)
    return str(path)


def _passes(monkeypatch) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []  # (pass, frames it composes)
    real = tasks.run_phase

    def record(sched, job, phase, aux=None):
        seen.append((phase, len(job.frames)))
        return real(sched, job, phase, aux)

    monkeypatch.setattr(execute, "run_phase", record)
    monkeypatch.setattr(intervals, "run_phase", record)  # the bootstrap pass (analyze.run.intervals)
    monkeypatch.setattr(smiyc_f16, "run_phase", record)  # the float16 ranges pass (analyze.run.smiyc_f16)
    return seen


def _task(kind: str) -> int:
    """The memory the plan counts for the sync scheduler's one frame task (128x256 frames)."""
    return passes.task_bytes(len(_scorers(kind).split(",")) * len(TEMPS), 128 * 256)


def _few_pixels_budget(kind: str, positions: float) -> int:
    """A budget that holds every score of the cache's keys, the pixels of ``positions`` of them
    and one frame task: one pass."""
    n = PIXELS * len(_scorers(kind).split(",")) * len(TEMPS)
    return int(n * (8 + 4 * positions)) + _task(kind) + 1


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("protocol,max_memory,frames,positions,spill", [
    ("exact", 2**30, "all", None, True), ("exact", 2**22, "all", None, True),  # one pass, two: both spill
    ("exact", 2**30, "all", None, False),  # one pass, no room on disk: every pixel kept
    ("exact", "few", "with-anomaly", 1e-6, True),  # one pass, room for few pixels: the spill serves
    ("exact", "few", "with-anomaly", 1e-6, False),  # one pass, no room on disk, few pixels kept: recompose some
    ("exact", 2**22, "all", 1e-6, False),  # two passes, no room on disk, few pixels kept: recompose some
    ("smiyc", 2**30, "all", None, True)])
def test_later_passes_equal_the_recomposing_passes_bit_for_bit(tmp_path, monkeypatch, kind, protocol, max_memory,
                                                               frames, positions, spill):
    cache = _cache(tmp_path, kind)
    if positions:
        monkeypatch.setattr(passes, "POSITIONS", positions)
    if max_memory == "few":
        max_memory = _few_pixels_budget(kind, positions)
        assert one_pass_positions(PIXELS, len(_scorers(kind).split(",")) * len(TEMPS), max_memory - _task(kind)) < 2e-6
    opts = dict(protocol=protocol, scheduler="sync", bootstrap=40, seed=2, component_metrics=True,
                max_memory=max_memory, frames=frames, warn=lambda m: None)
    seen = _passes(monkeypatch)
    new = score_cache(cache, _scorers(kind), TEMPS, **opts, **({} if spill else {"spill": NO_DISK}))
    new_passes, seen[:] = list(seen), []
    old = score_cache(cache, _scorers(kind), TEMPS, recompose=True, **opts)
    for a, b in zip(new, old):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    rows = new[0]
    assert {"siou", "ppv", "mean_f1"} <= set(rows.metric)
    assert (rows.query("metric in ('siou', 'ppv', 'mean_f1')").value > 0).mean() > 0.75  # components found
    if protocol == "exact":
        assert rows.query("metric == 'auprc'").ci_low.notna().all()
    assert len(new[1]) == len(old[1]) > 0  # per-frame rows
    n = 4 if frames == "all" else 3  # frame 2 is all void; frame 1 has no anomaly
    first = [("one-pass", 5)] if max_memory != 2**22 else [("positives", 5), ("negatives", n)]
    if protocol == "smiyc":  # the float16 fit first: every frame's score range (analyze.metrics.f16_range)
        first = [("ranges", 5)] + first
    assert seen == first + ([("bootstrap", n)] if protocol == "exact" else []) + [("components", n)]
    # the intervals never compose the frames again; the component metrics only the frames where the
    # pixels kept do not reach a key's threshold (all frames for smiyc, which keeps none)
    assert new_passes[:len(first)] == first and [p for p, _ in new_passes[len(first):]] in ([], ["components"])
    if protocol == "smiyc":
        assert new_passes[len(first):] == [("components", n)]
    elif positions and not spill:
        assert new_passes[len(first):] and new_passes[-1][1] <= n
    else:
        assert new_passes == first  # every map spilled, or every pixel kept: nothing composed again


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("max_memory", [2**30, 2**22])
def test_uninformative_scores_compose_no_frame_again(tmp_path, monkeypatch, kind, max_memory):
    """Weak scores put the best-F1 threshold low, below the highest 1/8 of in-distribution scores the
    pass kept before: there one pass and two passes read the spill. The rows equal the recomposing
    passes' and those of the kept pixels alone (the path before the spill, here composing every
    frame again), bit for bit."""
    cache = _cache(tmp_path, kind, informative=False)
    opts = dict(scheduler="sync", bootstrap=40, seed=2, component_metrics=True, max_memory=max_memory,
                warn=lambda m: None)
    seen = _passes(monkeypatch)
    new = score_cache(cache, _scorers(kind), TEMPS, **opts)
    assert "components" not in [p for p, _ in seen]
    seen[:] = []
    with monkeypatch.context() as m:  # the path before: the top 1/8 kept in one pass, no spill in two
        m.setattr(passes, "one_pass_positions", lambda *a: POSITIONS)
        before = score_cache(cache, _scorers(kind), TEMPS, spill=NO_DISK, **opts)
    assert seen[-1] == ("components", 4)  # the kept top pixels miss the low thresholds: frames composed again
    old = score_cache(cache, _scorers(kind), TEMPS, recompose=True, **opts)
    for a, b, c in zip(new, before, old):
        pd.testing.assert_frame_equal(a, c, check_exact=True)
        pd.testing.assert_frame_equal(b, c, check_exact=True)
    siou = new[0].query("metric == 'siou'")
    assert (siou.value > 0).any() and new[0].query("metric == 'auprc'").value.max() < 0.2  # weak, not empty


@pytest.mark.parametrize("max_memory", [2**30, 2**22])  # one pass, two passes
def test_spill_is_removed_after_use_and_on_error(tmp_path, monkeypatch, max_memory):
    """The pass that sees every frame whole writes each pooled frame's map of each key under the
    policy's folder; the folder is gone afterwards, also when the component step fails."""
    cache = _cache(tmp_path, "pixel", informative=False)
    where = tmp_path / "spill"
    where.mkdir()
    opts = dict(scheduler="sync", component_metrics=True, max_memory=max_memory, warn=lambda m: None,
                spill=SpillPolicy(folder=str(where)))
    score_cache(cache, "msp,energy", TEMPS, **opts)
    assert list(where.iterdir()) == []
    found = []

    def fail(cache, storage_options, spill, frames, *args):
        found.extend(p.name for p in where.glob("analyze-spill-*/*.map"))
        raise RuntimeError("the component step failed")

    monkeypatch.setattr(execute, "spilled_components", fail)
    with pytest.raises(RuntimeError, match="component step failed"):
        score_cache(cache, "msp,energy", TEMPS, **opts)
    assert len(found) == 4 * 2 * len(TEMPS)  # pooled frames x keys
    assert list(where.iterdir()) == []


def test_no_room_on_disk_falls_back_to_the_kept_pixels(tmp_path, monkeypatch):
    """The disk check runs before the second pass: without room beyond the spill and the reserve the
    second pass keeps the top pixels and says so; with room it spills."""
    cache = _cache(tmp_path, "query", informative=False)
    asked, notes = [], []

    def free(folder):
        asked.append(folder)
        return needed + SpillPolicy().reserve - 1  # one byte short

    plan = plan_for(*_spec_of(cache), [(n, t) for n in ("msp", "energy") for t in TEMPS], (1.0,), range(5),
                    PlanOptions("exact", 2**22, True))
    needed = next(p.disk for p in plan.passes if p.phase == "negatives")
    assert needed == PIXELS * 2 * len(TEMPS) * 8 + 5 * 2 * len(TEMPS) * 2 * passes.SPILL_BLOCK  # maps, headers, padding
    seen = _passes(monkeypatch)
    score_cache(cache, "msp,energy", TEMPS, scheduler="sync", component_metrics=True, max_memory=2**22,
                warn=notes.append, spill=SpillPolicy(folder=str(tmp_path), free=free))
    assert asked == [str(tmp_path)] and seen[-1][0] == "components"
    assert any("no room on local disk" in m for m in notes)
    seen[:] = []
    score_cache(cache, "msp,energy", TEMPS, scheduler="sync", component_metrics=True, max_memory=2**22,
                warn=notes.append, spill=SpillPolicy(folder=str(tmp_path), free=lambda f: needed + SpillPolicy().reserve))
    assert [p for p, _ in seen] == ["positives", "negatives"]


def _spec_of(cache: str):
    _, spec = C.open_cache(cache, mode="r")
    return spec, cache


def test_component_positions_count_in_the_memory_plan(tmp_path):
    _, spec = build_cache(tmp_path / "c.zarr", "pixel", 2, scale=16)
    pixels = 2 * 64 * 128
    budget = pixels * 3 * 8  # three keys of float64 scores fit ...
    keys = [("msp", 1.0), ("msp", 2.0), ("energy", 1.0)]

    def mode(max_memory, component_metrics=False):
        return plan_for(spec, "c.zarr", keys, (1.0,), (0, 1), PlanOptions("exact", max_memory, component_metrics)).mode

    assert mode(budget) == "one-pass"
    assert mode(budget, component_metrics=True) == "two-pass"  # ... not with their pixels
    assert mode(budget * 3 // 2, component_metrics=True) == "one-pass"


def test_second_pass_keeps_what_the_budget_holds():
    full = POSITIONS
    assert second_pass_positions(20, 1000, 10**6, 2**40) == full  # plenty of room: the default share
    assert second_pass_positions(20, 1000, 10**6, 20 * 20 * 1000) == 0.0  # the anomaly scores fill it
    share = second_pass_positions(2, 100, 10**6, 2 * (20 * 100 + 12 * 1000))
    assert share == pytest.approx(1000 / 10**6)  # room for 1000 in-distribution scores per key


def test_max_spill_below_the_maps_spills_nothing_and_gives_the_same_rows(tmp_path, monkeypatch):
    """--max-spill caps the disk two passes fill: below the maps' size the plan keeps the top pixels
    instead (no folder is made, whatever the disk's room) and the component pass composes the frames
    they miss; the rows are those of the spilled run."""
    cache = _cache(tmp_path, "query", informative=False)
    needed = PIXELS * 2 * len(TEMPS) * 8 + 5 * 2 * len(TEMPS) * 2 * passes.SPILL_BLOCK  # maps, headers, padding
    where = tmp_path / "spill"
    where.mkdir()
    roomy = SpillPolicy(folder=str(where), free=lambda f: 10**15)
    opts = dict(scheduler="sync", component_metrics=True, max_memory=2**22, warn=lambda m: None, spill=roomy)
    for cap, spilled in ((needed - 1, False), (0, False), (needed, True), (None, True)):
        plan = plan_for(*_spec_of(cache), [(n, t) for n in ("msp", "energy") for t in TEMPS], (1.0,), range(5),
                        PlanOptions("exact", 2**22, True, max_spill=cap))
        second = next(p for p in plan.passes if p.phase == "negatives")
        assert second.disk == (needed if spilled else 0)
        assert ("exceeds --max-spill" in second.keeps) != spilled
    seen = _passes(monkeypatch)
    made = []
    real_open = SpillPolicy.open
    monkeypatch.setattr(SpillPolicy, "open", lambda self, n, keys: made.append(n) or real_open(self, n, keys))
    capped = score_cache(cache, "msp,energy", TEMPS, max_spill=needed - 1, **opts)
    assert made == [] and [p for p, _ in seen][:2] == ["positives", "negatives"] and seen[-1][0] == "components"
    seen[:] = []
    notes: list[str] = []
    spilled = score_cache(cache, "msp,energy", TEMPS, max_spill=needed, info=notes.append, **opts)
    assert made == [needed] and [p for p, _ in seen] == ["positives", "negatives"]  # the spill served
    assert any("spill takes up to" in m and str(where) in m and "--max-spill" in m for m in notes)
    for a, b in zip(capped, spilled):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(where.iterdir()) == []
