"""Benchmark section ``study`` of :mod:`analyze.bench.sections`: ``analyze score`` at real resolution and the
whole study projected (``python -m analyze.bench --section study``).

Caches (:mod:`analyze.bench.caches`): 1024x2048 frames, ERFNet (20 channels at 512x1024) and
EoMT (100 queries, 1024 crops, 2 per frame), 8 frames and the first of them alone, with
anomaly labels, and Cityscapes-val-shaped semantic ones (the study's in-distribution set).

1. The command itself (:data:`CONFIGS`): ``analyze score --scorers <the study's five> --temps 0.5,0.75,1.1``,
   alone and with ``--bootstrap 200 --component-metrics``, each with the default memory
   budget (one pass over 8 frames) and with :data:`TWO_PASS_BUDGET` (two passes with a frame
   task per core, as Fishyscapes Lost & Found's 100 frames and the study's other larger
   datasets run at the default budget), on the default local scheduler (threads, one per
   CPU). Seconds per frame with start-up excluded: (time on 8 frames - time on 1 frame) / 7,
   each the best of :data:`REPEATS` runs of the whole command in a process that ran it once before
   (:func:`worker`): the subtraction alone left a fresh interpreter's start-up (5 to 16 s
   on the shared machine) in the noise.
2. Where a frame's time goes, and the reference (:mod:`analyze.bench.reference`), in this
   process on one thread, on frame 1 (best of :data:`REPEATS`): reading the cache,
   composition and the scorers (five maps and the semantic map per temperature) each alone
   and fused as the tool runs them (the grid's figure counts the fused pass), the exact
   metric states (:class:`analyze.metrics.FramedExactState`: split, sort, the frame's AP),
   and the later steps (the frame's bootstrap histograms and component metrics from the
   kept scores, :mod:`analyze.run.later_passes`); the same steps the recomposing path took
   (score_cache(recompose=True): composition and scorers again, the histograms by a binary
   search per pixel, the dense component step) for the overhead before.
3. The study projected: per model, every dataset of the report (``data_manifest.yaml``: the
   anomaly datasets with a report order and the in-distribution one) at its frame count,
   each frame at the measured 1024x2048 seconds of its plan (one pass when its scores fit the
   default budget beside a frame task per CPU, else two), semantic frames at the semantic
   cache's seconds. Frames smaller than 1024x2048 (Road Anomaly, some of SMIYC) are counted at that size: an upper bound.

Ratios are taken within one run (the machine may be shared: the load average is printed).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


from analyze.bench.caches import build_cache
from analyze.bench.reference import study_scorers

GRID = ["--scorers", "study", "--temps", "0.5,0.75,1.1"]  # "study": the reference's scorers the cache kind supports
TEMPS = (0.5, 0.75, 1.0, 1.1)
LATER = ["--bootstrap", "200", "--component-metrics"]
# two passes over the 8 frames, with a frame task per core (2.5 GiB: under every score of the five
# at four T beside two frame tasks, and two tasks in what two passes leave them,
# analyze.plan.passes.task_room), as Lost & Found's 100 frames run at the default budget;
# 320 MiB (4 GiB scaled to 8 of 100 frames) until the frame tasks counted in the budget (it now
# runs one task at a time)
TWO_PASS_BUDGET = "2560MiB"
CONFIGS = {"grid": GRID, "grid + intervals + components": GRID + LATER,
           "two-pass grid": GRID + ["--max-memory", TWO_PASS_BUDGET],
           "two-pass grid + intervals + components": GRID + LATER + ["--max-memory", TWO_PASS_BUDGET]}


def command_args(kind: str, args: list[str]) -> list[str]:
    """``args`` with the ``study`` scorer list spelled out for ``kind``."""
    return [",".join(study_scorers(kind)) if a == "study" else a for a in args]
N_FRAMES = 8
REPEATS = 2
SCALE = 1  # divides every size of the caches (a quick look at the section's output: 8 or 16)
MODEL = {"pixel": "ERFNet", "query": "EoMT"}
TREE = Path(__file__).resolve().parents[2]  # the checkout whose analyze package the workers run


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


#: what :func:`worker` measures of each run: wall and CPU seconds (user + system), the system
#: part, and the new pages the process touched (minor page faults)
MEASURES = ("s", "cpu_s", "sys_s", "faults")


def per_frame(tmp: Path, name: str, args: list[str], tree: Path = TREE, repeats: int = REPEATS) -> dict:
    """``analyze score ARGS`` on ``tmp/{name}1.zarr`` and ``tmp/{name}8.zarr`` (:func:`worker`, a
    fresh process) run in ``tree`` (another checkout measures another version of the code on the
    same caches): the best of ``repeats`` runs' :data:`MEASURES`, and each per frame."""
    cmd = [sys.executable, "-m", "analyze.bench.study", str(tmp / f"{name}1.zarr"), str(tmp / f"{name}{N_FRAMES}.zarr"),
           str(tmp / "out" / f"{name}.parquet"), str(repeats), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
    if proc.returncode:
        raise RuntimeError(f"analyze score failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, **{f"per_frame_{m}": (out[f"many_{m}"] - out[f"one_{m}"]) / (N_FRAMES - 1) for m in MEASURES}}


def measured(fn) -> dict:
    """``fn()``'s :data:`MEASURES` in this process (``time.perf_counter``, ``time.process_time``,
    ``resource.getrusage``'s ``ru_stime`` and ``ru_minflt``)."""
    r0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
    fn()
    t1, c1, r1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    return {"s": t1 - t0, "cpu_s": c1 - c0, "sys_s": r1.ru_stime - r0.ru_stime, "faults": r1.ru_minflt - r0.ru_minflt}


def worker(one: str, many: str, out: str, repeats: int, args: list[str]) -> dict:
    """In this (fresh) process: ``analyze score`` through its command line (click's runner: the
    whole command, options to parquet) once on ``one`` to load everything (imports, numba's
    kernels, torch), then the best of ``repeats`` runs on ``one`` and on ``many``. Python's
    start-up and imports are so left out of both, and what is left of the start-up cancels
    in (many - one)."""
    from click.testing import CliRunner

    from analyze.cli.main import main as cli

    def run(cache: str) -> dict:
        def score() -> None:
            res = CliRunner().invoke(cli, ["score", "--cache", cache, "--out", out, "--no-progress", *args])
            if res.exit_code:
                raise RuntimeError(f"analyze score {' '.join(args)} on {cache}: {res.output[-2000:]}")

        return measured(score)

    run(one)
    ones, manys = [run(one) for _ in range(repeats)], [run(many) for _ in range(repeats)]
    return {f"{n}_{m}": min(r[m] for r in runs) for n, runs in (("one", ones), ("many", manys)) for m in MEASURES}


def _study_frames() -> list[tuple[str, int, int, str]]:
    """(dataset, frames, pixels per frame, label kind) of every dataset of the report."""
    from schemas.manifest import in_distribution_dataset, load_manifest, report_order

    specs = load_manifest()
    names = report_order(specs) + [n for n in [in_distribution_dataset(specs)] if n]
    out = []
    for n in names:
        h, w = specs[n].size or (1024, 2048)
        out.append((n, specs[n].count, h * w, "semantic" if specs[n].role == "in_distribution" else "anomaly"))
    return out


def _plan(frames: int, pixels: int, n_keys: int, positions: bool) -> str:
    """The plan ``analyze score`` takes for a dataset at the default budget on the default scheduler
    (a frame task per usable CPU beside the kept scores: :func:`analyze.plan.passes.auto_budget`)."""
    from analyze.plan.passes import POSITIONS, auto_budget, one_or_two, task_bytes
    from schemas.machine import usable_cpus, usable_memory

    task, tasks = task_bytes(n_keys, pixels), usable_cpus()
    room = auto_budget(task, tasks, usable_memory()) - tasks * task
    return one_or_two(frames * pixels, n_keys, "exact", room, POSITIONS if positions else 0.0)


def project(per_frame: dict, reference_s: dict) -> tuple[list[str], dict]:
    """Minutes of the whole study (both models) without and with the intervals and component
    metrics: from the measured wall seconds per frame, and from the CPU seconds per frame
    spread over the usable CPUs (what an idle machine would take if the frames kept every
    CPU busy); and the reference's (one thread per frame, every CPU busy)."""
    from schemas.machine import usable_cpus

    cpus = usable_cpus()
    lines, out = [], {}
    for later in (False, True):
        wall = cpu = 0.0
        parts = []
        for kind in MODEL:
            keys = 4 * (4 if kind == "pixel" else 5)
            for name, n, pixels, label_kind in _study_frames():
                if label_kind == "semantic":
                    plan, cfg = "semantic", "semantic"
                else:
                    plan = _plan(n, pixels, keys, later)
                    cfg = ("two-pass " if plan == "two-pass" else "") + ("grid + intervals + components" if later else "grid")
                r = per_frame[kind][cfg]
                wall += n * r["per_frame_s"]
                cpu += n * r["per_frame_cpu_s"] / cpus
                parts.append(f"{MODEL[kind]} {name} {n} x {r['per_frame_s']:.2f} s ({plan})")
        key = "with intervals + components" if later else "grid only"
        out[key] = {"wall_min": wall / 60, "cpu_min": cpu / 60}
        lines.append(f"* study, {key}: **{wall / 60:.1f} min** as measured, {cpu / 60:.1f} min from the CPU time "
                     f"on {cpus} CPUs ({'; '.join(parts)})")
    ref = sum(n * reference_s[kind] / cpus for kind in MODEL for _, n, _, _ in _study_frames())
    out["reference_min"] = ref / 60
    lines.append(f"* the library-kernel reference (float64 scorers, one frame per CPU, {cpus} CPUs, every frame at "
                 f"the anomaly grid's work): {ref / 60:.1f} min")
    return lines, out


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder for a section's caches (about 1 GB for the study's), removed when the
    section ends. On an error its caches (``*.zarr``, the bulk) are removed and the folder is
    kept, with what the section saved there so far (the study's ``per_frame.json``)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    except BaseException:
        for cache in tmp.glob("*.zarr"):
            shutil.rmtree(cache, ignore_errors=True)
        print(f"{prefix.strip('_')}: stopped; what it saved is in {tmp}", file=sys.stderr, flush=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def run_study(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """The ``study`` section (``n_pixels`` is not used): see the module docstring."""
    with scratch("bench_study_") as tmp:
        return _run_study(tmp, seed)


def _run_study(tmp: Path, seed: int) -> tuple[str, dict, bool]:
    from analyze.bench.breakdown import breakdown

    load0 = _load()
    (tmp / "out").mkdir()
    print(f"study: building caches in {tmp} ...", file=sys.stderr, flush=True)
    for kind in MODEL:
        for n in (N_FRAMES, 1):
            build_cache(tmp / f"{kind}{n}.zarr", kind, n, seed=seed, scale=SCALE)
            build_cache(tmp / f"{kind}_sem{n}.zarr", kind, n, label_kind="semantic", seed=seed, scale=SCALE)
    frames: dict = {}
    for kind in MODEL:
        frames[kind] = {}
        for cfg, args in CONFIGS.items():
            print(f"study: {MODEL[kind]} {cfg} ...", file=sys.stderr, flush=True)
            frames[kind][cfg] = per_frame(tmp, kind, command_args(kind, args))
        frames[kind]["semantic"] = per_frame(tmp, f"{kind}_sem", command_args(kind, GRID))
    (tmp / "per_frame.json").write_text(json.dumps(frames, indent=1))  # kept should a later step fail
    print("study: breakdown and reference ...", file=sys.stderr, flush=True)
    parts = {kind: breakdown(tmp / f"{kind}{N_FRAMES}.zarr", TEMPS, REPEATS) for kind in MODEL}
    load1 = _load()
    md, data = _report(frames, parts, load0, load1)
    ok = all(parts[k]["reference_agreement"] < 1e-6 for k in MODEL)
    return md, {"per_frame": frames, "breakdown": parts, **data, "load": [load0, load1]}, ok


def per_frame_row(model: str, cfg: str, r: dict, base: dict) -> str:
    """The table row of configuration ``cfg`` measured ``r`` (:func:`per_frame`), ``base`` its grid."""
    vs = (f"{r['per_frame_s'] / base['per_frame_s']:.2f}x, {r['per_frame_cpu_s'] / base['per_frame_cpu_s']:.2f}x"
          if cfg != "semantic" else "")
    system = (f"{r['per_frame_sys_s']:.2f} ({r['per_frame_faults'] / 1000:.0f} k)" if "per_frame_sys_s" in r else "")
    return (f"| {model} | {cfg} | {r['many_s']:.1f} | {r['one_s']:.1f} | {r['per_frame_s']:.2f} | "
            f"{r['per_frame_cpu_s']:.2f} | {system} | {vs} |")


def _report(per_frame: dict, parts: dict, load0: str, load1: str) -> tuple[str, dict]:
    from schemas.machine import usable_cpus

    lines = [
        f"## study: `analyze score` on {1024 // SCALE}x{2048 // SCALE} caches, `{' '.join(GRID)}`",
        "",
        f"Load average (1, 5, 15 min) before: {load0}, after: {load1} ({usable_cpus()} usable CPUs: a load above "
        f"that means the machine was shared). Seconds per frame with start-up excluded: ({N_FRAMES} frames - 1 "
        f"frame) / {N_FRAMES - 1}, each the best of {REPEATS} runs of the whole `analyze score` command (click's "
        "runner, default threads scheduler) in a fresh process after one run to load everything; "
        f"two-pass: `--max-memory {TWO_PASS_BUDGET}`.",
        "",
        f"| cache | configuration | {N_FRAMES} frames (s) | 1 frame (s) | s / frame | CPU s / frame | of which "
        "system (new pages / frame) | vs grid (wall, CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in MODEL:
        for cfg, r in per_frame[kind].items():
            base = per_frame[kind]["two-pass grid" if cfg.startswith("two-pass") else "grid"]
            lines.append(per_frame_row(MODEL[kind], cfg, r, base))
    lines += ["", "System CPU time is mostly the kernel's first touch of memory new to the process (a minor page "
              "fault per 4 KiB page). On a virtual machine that hands freed memory back to its host it can be a large "
              "share of a frame (docs/speed.md, runs 6-8: 0.4-0.7 s per GiB in 4 KiB pages there)."]
    lines += ["", f"Per frame on one thread (this process, frame 1, best of {REPEATS}), and the library-kernel reference "
              "(`analyze.bench.reference`: the same maps, checked):", "",
              "| step | ERFNet (s) | EoMT (s) |", "|---|---:|---:|"]
    steps = list(parts["query"]["steps"])
    for step in steps:
        lines.append(f"| {step} | {parts['pixel']['steps'].get(step, 0.0):.3f} | {parts['query']['steps'][step]:.3f} |")
    for key, label in (("reference_f32", "reference, float32 scorers (the issue's)"),
                       ("reference_f64", "reference, float64 scorers (what the tool computes)")):
        cells = [f"{parts[k][key]['total']:.3f} ({', '.join(f'{n} {v:.2f}' for n, v in parts[k][key]['parts'].items())})"
                 for k in MODEL]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for k in MODEL:
        p = parts[k]
        lines.append("")
        lines.append(f"{MODEL[k]}: grid {p['grid_s']:.2f} s = {p['grid_s'] / p['reference_f64']['total']:.2f}x the "
                     f"float64 reference ({p['grid_s'] / p['reference_f32']['total']:.2f}x the float32 one); "
                     f"composition + scorers alone {p['compose_score_s'] / p['reference_f64']['total']:.2f}x; "
                     f"later steps +{100 * p['later_s'] / p['grid_s']:.0f} % of the grid (recomposing them: "
                     f"+{100 * p['recompose_s'] / p['grid_s']:.0f} %); reference maps agree to "
                     f"{p['reference_agreement']:.1e} (relative).")
    reference_s = {k: parts[k]["reference_f64"]["total"] for k in MODEL}
    proj, data = project(per_frame, reference_s)
    lines += ["", "Whole study (two models; per dataset its frame count and plan at the default budget):", "", *proj,
              "", "Goals: at most 1.2x the reference per frame; the study under 15 minutes on this 2-core machine; "
              "intervals and component metrics at most +30 %.", ""]
    return "\n".join(lines), {"projection_min": data}


def run_two_pass(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """The ``two_pass`` section (``n_pixels`` is not used): step 1's ``grid`` and ``two-pass grid``
    alone, per model: the two-pass plan's seconds per frame against the one-pass plan's in the
    same run (issue 27's goal: at most 1.15x)."""
    with scratch("bench_two_pass_") as tmp:
        return _run_two_pass(tmp, seed)


def _run_two_pass(tmp: Path, seed: int) -> tuple[str, dict, bool]:
    load0 = _load()
    (tmp / "out").mkdir()
    for kind in MODEL:
        for n in (N_FRAMES, 1):
            build_cache(tmp / f"{kind}{n}.zarr", kind, n, seed=seed, scale=SCALE)
    lines = [f"## two_pass: `analyze score {' '.join(GRID)}`, one pass against two (`--max-memory {TWO_PASS_BUDGET}`)",
             "", "| cache | one pass: s / frame (CPU s) | two passes: s / frame (CPU s) | ratio (wall) | ratio (CPU) |",
             "|---|---:|---:|---:|---:|"]
    data: dict = {}
    for kind in MODEL:
        print(f"two_pass: {MODEL[kind]} ...", file=sys.stderr, flush=True)
        one, two = (per_frame(tmp, kind, command_args(kind, CONFIGS[c])) for c in ("grid", "two-pass grid"))
        wall, cpu = two["per_frame_s"] / one["per_frame_s"], two["per_frame_cpu_s"] / one["per_frame_cpu_s"]
        data[MODEL[kind]] = {"one_pass": one, "two_pass": two, "ratio_wall": wall, "ratio_cpu": cpu}
        lines.append(f"| {MODEL[kind]} | {one['per_frame_s']:.2f} ({one['per_frame_cpu_s']:.2f}) | {two['per_frame_s']:.2f} "
                     f"({two['per_frame_cpu_s']:.2f}) | {wall:.2f}x | {cpu:.2f}x |")
    lines += ["", f"Load average before: {load0}, after: {_load()}.", ""]
    return "\n".join(lines), {**data, "load": [load0, _load()]}, True


if __name__ == "__main__":  # python -m analyze.bench.study ONE MANY OUT REPEATS ARG...: one worker's JSON
    print(json.dumps(worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])))
