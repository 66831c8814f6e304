"""The scoring plan as data (analyze/plan/passes.py): the passes each case needs and why, what they
keep and the memory they plan for; the executor runs exactly the certain passes the plan lists
(recorded at run_phase), and `analyze score --explain` prints the plan without scoring or writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.plan.passes import POSITION_BYTES, POSITIONS, SCORE_BYTES, SPILL_BLOCK, PlanOptions
from schemas import cache as C
from analyze.run import execute, intervals, smiyc_f16, tasks
from analyze.run.driver import ScoreRequest, plan_cache, score_cache
from tests.factories import pixel_cache, query_cache

SIZES = [(16, 24), (16, 24), (20, 30)]
PIXELS = sum(h * w for h, w in SIZES)
TEMPS = (0.5, 1.0)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    rng = np.random.default_rng(4)
    pixel_cache(tmp / "p.zarr", SIZES, rng)
    query_cache(tmp / "q.zarr", SIZES, rng)
    pixel_cache(tmp / "sem.zarr", SIZES, rng, label_kind="semantic", dataset="cityscapes_val")
    root, _ = pixel_cache(tmp / "partial.zarr", SIZES, rng)
    root["done"][1] = False
    return tmp


def _plan(cache, scorers="msp,energy", **options):
    req = {k: options.pop(k) for k in ("allow_partial",) if k in options}
    return plan_cache(str(cache), ScoreRequest(scorers, TEMPS, plan=PlanOptions(**options), **req))


def _phases(plan):
    return [(p.phase, bool(p.when)) for p in plan.passes]


def test_one_pass_keeps_every_score_when_the_budget_holds_them(caches):
    plan = _plan(caches / "p.zarr")
    assert plan.mode == "one-pass" and _phases(plan) == [("one-pass", False)]
    assert plan.keys == (("msp", 0.5), ("msp", 1.0), ("energy", 0.5), ("energy", 1.0))
    assert plan.pixels == PIXELS and plan.frames == (0, 1, 2) and plan.certain == 1
    assert plan.passes[0].memory == PIXELS * 4 * SCORE_BYTES and plan.positions == 0.0


def test_two_passes_when_the_scores_exceed_the_budget(caches):
    budget = PIXELS * 4 * SCORE_BYTES - 1  # one byte short of every score of the four keys
    plan = _plan(caches / "p.zarr", max_memory=budget)
    assert plan.mode == "two-pass" and _phases(plan) == [("positives", False), ("negatives", False)]
    assert "exceed the budget" in plan.passes[0].why and plan.certain == 2


@pytest.mark.parametrize("budget_factor,mode,positions", [
    (100.0, "one-pass", 1.0), (1.25, "one-pass", 0.5), (1.0 + 0.5 * POSITIONS, "one-pass", POSITIONS),
    (1.05, "two-pass", 0.0)])
def test_component_metrics_keep_pixels_in_the_pass_that_has_room(caches, budget_factor, mode, positions):
    """Pixels of as many of the top in-distribution scores as the budget holds ride with the scores
    (at least POSITIONS of them, up to all: the component pass then runs only for frames they
    miss, never when all are kept); the budget counts them. Two passes spill to disk instead."""
    budget = int(PIXELS * 4 * SCORE_BYTES * budget_factor)
    plan = _plan(caches / "q.zarr", component_metrics=True, max_memory=budget)
    assert plan.mode == mode and plan.positions == pytest.approx(positions, rel=1e-6)
    assert plan.passes[-1].phase == "components" and plan.passes[-1].when  # runs only when needed
    assert plan.certain == len(plan.passes) - 1
    if mode == "one-pass":
        assert plan.passes[0].memory == int(PIXELS * 4 * (SCORE_BYTES + POSITION_BYTES * plan.positions))
        assert plan.passes[0].memory <= budget and plan.passes[-1].when.endswith("every pixel is kept") == (positions == 1.0)
    else:
        maps = len(plan.frames) * len(plan.keys)  # each with a header block and the padding to a whole block
        assert plan.passes[1].disk == PIXELS * 4 * SCORE_BYTES + maps * 2 * SPILL_BLOCK and "spill" in plan.passes[1].keeps
        assert "without room on disk" in plan.passes[-1].when


@pytest.mark.parametrize("why,options", [("recompose", dict(recompose=True)), ("smiyc", dict(protocol="smiyc"))])
def test_component_metrics_without_kept_pixels_compose_every_pooled_frame(caches, why, options):
    plan = _plan(caches / "p.zarr", component_metrics=True, **options)
    comp = plan.passes[-1]
    assert comp.phase == "components" and not comp.when and why in comp.why and plan.positions == 0.0


@pytest.mark.parametrize("protocol,recompose,phases", [
    ("exact", False, [("one-pass", False)]),  # the histograms come from the kept, sorted scores
    ("exact", True, [("one-pass", False), ("bootstrap", False)]),  # a pass of their own
    ("smiyc", False, [("ranges", False), ("one-pass", False)]),  # its own per-frame bins: no pass
])
def test_bootstrap_passes_by_protocol(caches, protocol, recompose, phases):
    plan = _plan(caches / "p.zarr", protocol=protocol, bootstrap=50, recompose=recompose)
    assert _phases(plan) == phases


def test_semantic_cache_plans_one_confusion_pass(caches):
    plan = _plan(caches / "sem.zarr", component_metrics=True, bootstrap=10, protocol="smiyc")
    assert plan.keys == () and plan.semantic_temps == (1.0,)  # ERFNet's argmax does not move with T
    assert _phases(plan) == [("one-pass", False)] and "confusion" in plan.passes[0].keeps


def test_partial_cache_plans_the_done_frames_only(caches):
    plan = _plan(caches / "partial.zarr", allow_partial=True)
    assert plan.frames == (0, 2) and plan.pixels == PIXELS - 16 * 24


@pytest.mark.parametrize("options", [
    dict(), dict(max_memory=2_000), dict(component_metrics=True, bootstrap=20),
    dict(component_metrics=True, bootstrap=20, max_memory=2_000), dict(protocol="smiyc", bootstrap=20),
    dict(component_metrics=True, bootstrap=20, recompose=True)])
def test_the_executor_runs_the_plan(caches, monkeypatch, options):
    """Every certain pass of the plan runs, in order, and nothing else but its conditional ones."""
    seen = []
    real = tasks.run_phase

    def record(sched, job, phase, aux=None):
        seen.append(phase)
        return real(sched, job, phase, aux)

    for module in (execute, intervals, smiyc_f16):
        monkeypatch.setattr(module, "run_phase", record)
    plan = _plan(caches / "q.zarr", **options)
    score_cache(str(caches / "q.zarr"), "msp,energy", TEMPS, scheduler="sync", warn=lambda m: None,
                **{k: v for k, v in options.items()})
    certain = [p.phase for p in plan.passes if not p.when]
    optional = {p.phase for p in plan.passes if p.when}
    assert [s for s in seen if s not in optional] == certain
    assert set(seen) <= set(certain) | optional


def test_explain_prints_the_plan_and_writes_nothing(caches, tmp_path):
    out = tmp_path / "results.parquet"
    res = CliRunner().invoke(analyze_main, [
        "score", "--cache", str(caches / "q.zarr"), "--cache", str(caches / "sem.zarr"), "--scorers", "msp",
        "--temps", "0.5", "--component-metrics", "--bootstrap", "100", "--max-memory", "2KiB", "--explain",
        "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "pass 1 positives" in res.output and "pass 2 negatives" in res.output
    assert "pass 3 components" in res.output and "[only without room on disk for the spill" in res.output
    assert "spills up to" in res.output and "to local disk" in res.output
    assert "mIoU at T" in res.output and "nothing was scored or written" in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["lots", "-1GiB"])
def test_bad_max_spill_is_a_one_line_usage_error(caches, value):
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(caches / "q.zarr"), "--max-spill", value, "--explain"])
    assert res.exit_code == 2 and "--max-spill" in res.output and value in res.output


@pytest.mark.parametrize("max_memory", [PIXELS * 4 * SCORE_BYTES * 100, PIXELS * 4 * SCORE_BYTES // 2])
@pytest.mark.parametrize("max_spill", [None, 0])
def test_the_pass_that_sees_every_frame_whole_spills_unless_capped(caches, max_memory, max_spill):
    """One pass (room for every score) and the second of two spill every map for the component step,
    which then composes nothing; --max-spill below the maps keeps pixels instead (and says so)."""
    plan = _plan(caches / "q.zarr", component_metrics=True, max_memory=max_memory, max_spill=max_spill)
    whole = next(p for p in plan.passes if p.phase in ("one-pass", "negatives"))
    assert plan.mode == ("one-pass" if whole.phase == "one-pass" else "two-pass")
    assert (plan.mode == "one-pass") == (max_memory > PIXELS * 4 * SCORE_BYTES)
    maps = len(plan.frames) * len(plan.keys)
    assert whole.disk == (0 if max_spill == 0 else PIXELS * 4 * SCORE_BYTES + maps * 2 * SPILL_BLOCK)
    assert ("spills each frame's scores" in whole.keeps) == (max_spill is None)
    assert ("exceeds --max-spill" in whole.keeps) == (max_spill == 0)
    comp = plan.passes[-1]
    assert comp.phase == "components" and comp.when.startswith("without room on disk") == (max_spill is None)
    assert [p.phase for p in plan.passes if p.disk] == ([] if max_spill == 0 else [whole.phase])


def test_max_spill_zero_shows_in_the_plan(caches):
    res = CliRunner().invoke(analyze_main, [
        "score", "--cache", str(caches / "q.zarr"), "--scorers", "msp", "--component-metrics", "--max-memory", "2KiB",
        "--max-spill", "0", "--explain"])
    assert res.exit_code == 0, res.output
    assert "exceeds --max-spill" in res.output and "spills up to" not in res.output
    assert "from the kept pixels (no spill: --max-spill)" in res.output


# ---- the frame tasks at once count in the budget ----------------------------------------------

def test_frame_tasks_at_once_count_in_the_budget(caches):
    from analyze.plan.passes import task_bytes

    task = task_bytes(4, 20 * 30)  # four keys' maps and the buffers of the largest frame
    assert task == 20 * 30 * (4 * 8 + 128)
    every = PIXELS * 4 * SCORE_BYTES
    plan = _plan(caches / "p.zarr", max_memory=every + 2 * task, tasks=2)  # every score and both tasks fit
    assert plan.mode == "one-pass" and plan.tasks == 2 and plan.task_memory == task
    assert plan.keep_budget == every and "frame tasks: 2 at once, each about" in "\n".join(plan.lines())
    plan = _plan(caches / "p.zarr", max_memory=every + 2 * task - 1, tasks=2)  # not beside two tasks
    assert plan.mode == "two-pass" and plan.tasks == 1  # two passes: the tasks take half the budget at most
    assert "1 at once of the 2 the scheduler runs (raise --max-memory" in "\n".join(plan.lines())
    plan = _plan(caches / "p.zarr", max_memory=every, tasks=None)  # a cluster: its workers' memory is not ours
    assert plan.mode == "one-pass" and plan.tasks is None and "frame tasks" not in "\n".join(plan.lines())
    plan = _plan(caches / "p.zarr", max_memory=100, tasks=8)  # less than one task: one at a time
    assert plan.tasks == 1 and plan.keep_budget == 0
    assert "beyond the budget: one frame task is the least that runs" in "\n".join(plan.lines())
    sem = _plan(caches / "sem.zarr", max_memory=3 * task_bytes(0, 20 * 30), tasks=8)  # mIoU: no kept scores
    assert sem.mode == "one-pass" and sem.tasks == 3
    from schemas.windows import scaled_size

    q = _plan(caches / "q.zarr", tasks=2)  # EoMT composes at the resized frame's size where that is larger
    crop = C.open_cache(str(caches / "q.zarr"))[1].crop_size
    resized = max(h * w for h, w in (scaled_size(h, w, crop) for h, w in SIZES))
    assert resized > 20 * 30 and q.task_memory == task_bytes(4, resized)


def test_tasks_at_once_follow_the_scheduler(monkeypatch):
    from dask.system import CPU_COUNT

    from analyze.run.scheduler import Scheduler, tasks_at_once

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert tasks_at_once("sync") == 1 and tasks_at_once("threads", workers=3) == 3
    assert tasks_at_once(None) == tasks_at_once("processes") == CPU_COUNT
    assert tasks_at_once("tcp://10.0.0.1:8786") is None and tasks_at_once(None, "sched.json") is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    assert tasks_at_once(None) is None and tasks_at_once("threads", workers=2) == 2
    assert Scheduler("threads", workers=5, progress=False).tasks_at_once() == 5


def test_a_worker_process_s_imports_count_with_its_frame_task(caches):
    """Under the processes scheduler each frame task at once holds a process of its own."""
    from analyze.plan.passes import task_bytes

    task, worker = task_bytes(4, 20 * 30), 10_000
    every = PIXELS * 4 * SCORE_BYTES
    threads = _plan(caches / "p.zarr", max_memory=every + 2 * task, tasks=2)
    assert threads.tasks == 2 and threads.task_memory == task and "worker process" not in "\n".join(threads.lines())
    procs = _plan(caches / "p.zarr", max_memory=every + 2 * task, tasks=2, worker_bytes=worker)
    assert procs.task_memory == task + worker and procs.tasks == 1  # both tasks' processes no longer fit
    assert procs.mode == "two-pass"
    assert "for its worker process's imports" in "\n".join(procs.lines())
    fits = _plan(caches / "p.zarr", max_memory=every + 2 * (task + worker), tasks=2, worker_bytes=worker)
    assert fits.mode == "one-pass" and fits.tasks == 2 and fits.keep_budget == every


def test_worker_bytes_follow_the_scheduler():
    from analyze.run.scheduler import WORKER_PROCESS_BYTES, Scheduler, worker_bytes

    assert worker_bytes("processes") == worker_bytes("multiprocessing") == WORKER_PROCESS_BYTES
    assert worker_bytes("threads") == worker_bytes("sync") == worker_bytes(None) == 0
    assert worker_bytes("tcp://10.0.0.1:8786") == 0  # a cluster's workers: not counted
    assert Scheduler("processes", progress=False).worker_bytes() == WORKER_PROCESS_BYTES


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/<pid>/smaps_rollup")
def test_worker_process_bytes_hold_what_a_fresh_worker_imports():
    """The constant the plan counts per worker process against a real spawned process that imports
    what a frame task imports: at least that (else the plan undercounts), at most twice (else it
    needlessly runs fewer tasks)."""
    import subprocess
    import sys

    from analyze.run.scheduler import WORKER_PROCESS_BYTES

    code = ("import analyze.run.tasks\n"
            "print(next(int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('Pss:')) * 1024)")
    pss = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert WORKER_PROCESS_BYTES / 2 <= pss <= WORKER_PROCESS_BYTES, pss / 2**20


def test_the_scheduler_runs_no_more_frame_tasks_than_the_plan_allows():
    """Real Dask threads: a pass capped at ``tasks`` never has more of its tasks running at once."""
    import threading
    import time

    import dask

    from analyze.run.scheduler import Scheduler

    lock, running, most = threading.Lock(), [0], [0]

    def work(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return i

    sched = Scheduler("threads", workers=3, progress=False)
    for cap, expected in ((1, 1), (2, 2), (None, 3)):
        most[0] = 0
        sched.start_passes(1, cap)
        parts = [dask.delayed(work, pure=False)(i) for i in range(9)]
        assert sched.map_reduce(parts, lambda p: dask.delayed(sum)(p), "test") == sum(range(9))
        assert most[0] == expected, (cap, most[0])


def test_score_under_a_small_budget_runs_fewer_tasks_and_says_so(caches, tmp_path):
    out, ref = tmp_path / "small.parquet", tmp_path / "ref.parquet"
    args = ["score", "--cache", str(caches / "q.zarr"), "--scorers", "msp,energy", "--temps", "0.5,1", "--no-progress"]
    res = CliRunner().invoke(analyze_main, [*args, "--workers", "2", "--max-memory", "1KiB", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "note: " in res.output and "1 of 2 frame tasks at once" in res.output and "--max-memory" in res.output
    res = CliRunner().invoke(analyze_main, [*args, "--workers", "2", "--max-memory", "1KiB", "--explain"])
    assert "frame tasks: 1 at once of the 2 the scheduler runs" in res.output
    assert CliRunner().invoke(analyze_main, [*args, "--scheduler", "sync", "--out", str(ref)]).exit_code == 0
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref), check_exact=True)  # whichever plan ran


def test_the_automatic_budget_adds_the_tasks_within_half_the_machine(caches):
    from analyze.plan.passes import DEFAULT_MAX_MEMORY, auto_budget, task_bytes

    task = task_bytes(4, 20 * 30)
    assert auto_budget(task, 2, None) == DEFAULT_MAX_MEMORY + 2 * task  # the scores' 4 GiB beside the tasks
    assert auto_budget(2**30, 16, 16 * 2**30) == 8 * 2**30  # 4 + 16 GiB wanted; half the machine's 16 GiB
    assert auto_budget(2**30, 16, 4 * 2**30) == DEFAULT_MAX_MEMORY  # never below 4 GiB
    plan = _plan(caches / "p.zarr", tasks=2, machine_memory=64 * 2**30)  # no --max-memory
    assert plan.budget == DEFAULT_MAX_MEMORY + 2 * task and plan.tasks == 2 and plan.keep_budget == DEFAULT_MAX_MEMORY
    assert ("memory budget 4.0 GiB (auto: 4.0 GiB of scores beside the frame tasks, at most half of this "
            "machine's 64.0 GiB)") in plan.lines()[0]
    plan = _plan(caches / "p.zarr", max_memory=2**20, tasks=2, machine_memory=64 * 2**30)  # a budget given: as it is
    assert plan.budget == 2**20 and "auto" not in plan.lines()[0]


def test_usable_memory_reads_the_control_group_limits(tmp_path):
    from schemas.machine import usable_memory

    physical = usable_memory(str(tmp_path / "none"), str(tmp_path / "none"))
    assert physical > 2**28
    v2 = tmp_path / "v2"
    (v2 / "job7").mkdir(parents=True)
    (v2 / "job7" / "memory.max").write_text(f"{2**30}\n")
    (v2 / "memory.max").write_text("max\n")  # the root group: no limit
    self_v2 = tmp_path / "self_v2"
    self_v2.write_text("0::/job7\n")
    assert usable_memory(str(v2), str(self_v2)) == min(physical, 2**30)
    v1 = tmp_path / "v1"
    (v1 / "memory" / "slurm" / "job9").mkdir(parents=True)
    (v1 / "memory" / "slurm" / "job9" / "memory.limit_in_bytes").write_text(f"{3 * 2**29}\n")
    self_v1 = tmp_path / "self_v1"
    self_v1.write_text("9:cpuset:/slurm/job9\n8:memory:/slurm/job9\n")
    assert usable_memory(str(v1), str(self_v1)) == min(physical, 3 * 2**29)
    self_v1.write_text("8:memory:/elsewhere\n")  # no such group, no root file: the machine's memory
    assert usable_memory(str(v1), str(self_v1)) == physical


def test_max_memory_auto_on_the_command_line(caches):
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(caches / "p.zarr"), "--scorers", "msp",
                                            "--explain", "--workers", "3"])
    assert res.exit_code == 0, res.output
    assert "(auto: 4.0 GiB of scores beside the frame tasks" in res.output and "frame tasks: 3 at once" in res.output
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(caches / "p.zarr"), "--max-memory", "AUTO",
                                            "--explain"])
    assert res.exit_code == 0 and "(auto:" in res.output


def test_two_passes_leave_the_tasks_all_but_4_gib_of_a_large_budget(caches):
    from analyze.plan.passes import task_bytes, task_room

    gib = 2**30
    assert task_room(13 * gib, "two-pass") == 9 * gib and task_room(5 * gib, "two-pass") == 5 * gib // 2
    assert task_room(320 * 2**20, "two-pass") == 160 * 2**20 and task_room(13 * gib, "one-pass") == 13 * gib
    task = task_bytes(4, 20 * 30)
    plan = _plan(caches / "p.zarr", max_memory=2 * task + 1, tasks=8)  # small: half the budget for the tasks
    assert plan.mode == "two-pass" and plan.tasks == 1
