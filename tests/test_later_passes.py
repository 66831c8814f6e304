"""Bootstrap intervals and component metrics read what an earlier pass kept (analyze.run.later_passes)
instead of composing every frame again: the same rows, bit for bit, as the recomposing passes
(`score_cache(..., recompose=True)`), for both cache kinds, both protocols and both exact plans,
with fewer passes over the frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze.plan import passes
from analyze.plan.passes import POSITIONS, PlanOptions, plan_for, second_pass_positions
from analyze.run import execute, intervals, smiyc_f16, tasks
from analyze.bench.caches import build_cache
from analyze.run.driver import score_cache
from analyze.scorers import get_scorers
from schemas import cache as C

TEMPS = (0.5, 1.0, 2.0)


def _scorers(kind: str) -> str:
    """Every scorer 'all' gives but no-object: on these frames its best-F1 threshold lies below the
    kept in-distribution scores, so its component metrics compose frames again (the path the
    few-pixels cases below test), which the one-pass case must not need."""
    return ",".join(s.name for s in get_scorers("all", kind, available=()) if s.name != "noobject")


def _cache(tmp_path, kind: str):
    """Five 128x256 frames with blob anomalies (obstacle track: components of tens of pixels are
    kept); frame 1 has no anomaly pixel, frame 2 is all void, frame 4 has ties (a constant band)."""
    path = tmp_path / f"{kind}.zarr"
    root, spec = build_cache(path, kind, 5, scale=8, dataset="smiyc_ro21", seed=3)
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


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("protocol,max_memory,frames,positions", [
    ("exact", 2**30, "all", None), ("exact", 2**22, "all", None),  # one pass; two passes (4 MiB)
    ("exact", 2**30, "with-anomaly", 1e-6), ("exact", 2**22, "all", 1e-6),  # few pixels kept: recompose some
    ("smiyc", 2**30, "all", None)])
def test_later_passes_equal_the_recomposing_passes_bit_for_bit(tmp_path, monkeypatch, kind, protocol, max_memory,
                                                               frames, positions):
    cache = _cache(tmp_path, kind)
    if positions:
        monkeypatch.setattr(passes, "POSITIONS", positions)
    opts = dict(protocol=protocol, scheduler="sync", bootstrap=40, seed=2, component_metrics=True,
                max_memory=max_memory, frames=frames, warn=lambda m: None)
    seen = _passes(monkeypatch)
    new = score_cache(cache, _scorers(kind), TEMPS, **opts)
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
    first = [("one-pass", 5)] if max_memory == 2**30 else [("positives", 5), ("negatives", n)]
    if protocol == "smiyc":  # the float16 fit first: every frame's score range (analyze.metrics.f16_range)
        first = [("ranges", 5)] + first
    assert seen == first + ([("bootstrap", n)] if protocol == "exact" else []) + [("components", n)]
    # the intervals never compose the frames again; the component metrics only the frames where the
    # pixels kept do not reach a key's threshold (all frames for smiyc, which keeps none)
    assert new_passes[:len(first)] == first and [p for p, _ in new_passes[len(first):]] in ([], ["components"])
    if protocol == "smiyc":
        assert new_passes[len(first):] == [("components", n)]
    elif positions:
        assert new_passes[len(first):] and new_passes[-1][1] <= n
    else:
        assert new_passes == first  # enough pixels kept on this data


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
