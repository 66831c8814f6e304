"""Benchmark section ``later_passes`` of :mod:`analyze.bench.sections`: what ``--bootstrap 200
--component-metrics`` adds to the grid, on informative and on uninformative scores
(``python -m analyze.bench --section later_passes``).

The study section's caches (:mod:`analyze.bench.caches`, 1024x2048, 8 frames and the first
alone) twice per model: as there (the anomaly objects' logits differ, so the scorers find
them and the best-F1 threshold predicts blobs) and uninformative (``informative=False``: the
objects' logits like the rest's, as a random-weight model scores them; the best-F1 threshold
then sits low and predicts most pixels). On each: ``analyze score`` with the study section's
grid (:data:`analyze.bench.study.GRID`) alone and with the later steps
(:data:`analyze.bench.study.LATER`), with the default memory budget (one pass) and with
:data:`analyze.bench.study.TWO_PASS_BUDGET` (two passes). Seconds per frame as the study
section takes them (:func:`per_frame`: (8 frames - 1 frame) / 7, best of
:data:`analyze.bench.study.REPEATS` runs of the whole command in a warm process), the grid
and the grid + later steps of one case run one after the other; the ratio of CPU seconds
per frame is the figure (issue 27's goal: at most 1.5x on every kind of data).

Before and after a change, alternately on the same caches (each case in each checkout, one
after the other): ``python -m analyze.bench.later CACHES OUT.json CHECKOUT...`` (:func:`compare`;
the caches are built in the folder ``CACHES`` when missing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analyze.bench.caches import build_cache
from analyze.bench.study import (GRID, LATER, MODEL, N_FRAMES, SCALE, TREE, TWO_PASS_BUDGET, _load, command_args,
                                 per_frame, scratch)

DATA = {"informative": True, "uninformative": False}
PLANS = {"one pass": [], "two passes": ["--max-memory", TWO_PASS_BUDGET]}


def build(tmp: Path, seed: int) -> None:
    """Both models' caches, informative and not, of 8 frames and of the first frame alone (those missing)."""
    for kind in MODEL:
        for data, informative in DATA.items():
            for n in (N_FRAMES, 1):
                if not (tmp / f"{kind}_{data}{n}.zarr").exists():
                    build_cache(tmp / f"{kind}_{data}{n}.zarr", kind, n, seed=seed, scale=SCALE, informative=informative)


def measure(tmp: Path, tree: Path = TREE) -> dict:
    """model -> data -> plan -> {"grid", "later"}: :func:`per_frame` of each, and their ratios."""
    return compare(tmp, [tree])[str(tree)]


def compare(tmp: Path, trees: list[Path], out: Path | None = None) -> dict:
    """:func:`measure` for each checkout of ``trees``, case by case (each case in every checkout in
    turn, so slow drifts of the shared machine's load fall on all alike); written to ``out``
    after each case when given. tree -> model -> data -> plan -> figures."""
    res: dict = {}
    for kind in MODEL:
        for data in DATA:
            for plan, budget in PLANS.items():
                for tree in trees:
                    print(f"later_passes: {tree} {MODEL[kind]} {data} {plan} ...", file=sys.stderr, flush=True)
                    grid = per_frame(tmp, f"{kind}_{data}", command_args(kind, GRID + budget), tree)
                    later = per_frame(tmp, f"{kind}_{data}", command_args(kind, GRID + LATER + budget), tree)
                    res.setdefault(str(tree), {}).setdefault(MODEL[kind], {}).setdefault(data, {})[plan] = {
                        "grid": grid, "later": later, "ratio_wall": later["per_frame_s"] / grid["per_frame_s"],
                        "ratio_cpu": later["per_frame_cpu_s"] / grid["per_frame_cpu_s"]}
                    if out is not None:
                        out.write_text(json.dumps(res, indent=1))
    return res


def report(data: dict, load0: str, load1: str) -> str:
    lines = [f"## later_passes: `analyze score {' '.join(GRID)}` alone and with `{' '.join(LATER)}`",
             "", f"Two passes: `--max-memory {TWO_PASS_BUDGET}`. Load average before: {load0}, after: {load1}.", "",
             "| cache | scores | plan | grid: s / frame (CPU s) | + later: s / frame (CPU s) | ratio: CPU (wall) |",
             "|---|---|---|---:|---:|---:|"]
    for model, by_data in data.items():
        for what, by_plan in by_data.items():
            for plan, r in by_plan.items():
                g, lt = r["grid"], r["later"]
                lines.append(f"| {model} | {what} | {plan} | {g['per_frame_s']:.2f} ({g['per_frame_cpu_s']:.2f}) | "
                             f"{lt['per_frame_s']:.2f} ({lt['per_frame_cpu_s']:.2f}) | **{r['ratio_cpu']:.2f}x** "
                             f"({r['ratio_wall']:.2f}x) |")
    return "\n".join(lines + ["", "Goal (issue 27): at most 1.5x on every kind of data.", ""])


def run_later_passes(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """The ``later_passes`` section (``n_pixels`` is not used): see the module docstring."""
    load0 = _load()
    with scratch("bench_later_") as tmp:
        (tmp / "out").mkdir()
        print(f"later_passes: building caches in {tmp} ...", file=sys.stderr, flush=True)
        build(tmp, seed)
        data = measure(tmp)
    load1 = _load()
    return report(data, load0, load1), {**data, "load": [load0, load1]}, True


if __name__ == "__main__":  # python -m analyze.bench.later CACHES OUT.json CHECKOUT...: see the module docstring
    caches, trees = Path(sys.argv[1]), [Path(t).resolve() for t in sys.argv[3:]]
    (caches / "out").mkdir(parents=True, exist_ok=True)
    build(caches, 0)
    for tree, data in compare(caches, trees, Path(sys.argv[2])).items():
        print(report(data, _load(), _load()).replace("## later_passes", f"## later_passes ({tree})"))
