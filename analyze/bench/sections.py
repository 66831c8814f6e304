"""Benchmarks: ``python -m analyze.bench [--pixels 50_000_000] [--out bench_out]``.

Each entry of :data:`SECTIONS` is one benchmark (a name, a help line, a function that returns
a Markdown report); add a section by appending to that list. ``--section NAME`` runs one.
Sections: ``pixel_metrics`` (:mod:`analyze.bench.pixels`: the exact metrics against scikit-learn
and ood_metrics), ``sort_frames`` (:mod:`analyze.bench.sorting`: a frame's split and sort against
numpy), ``study`` (:mod:`analyze.bench.study`: ``analyze score`` on 1024x2048 caches
of both kinds against a library-kernel reference, and the whole study projected), ``two_pass``
(the same module: the two-pass plan against the one-pass plan per frame), ``later_passes``
(:mod:`analyze.bench.later`: the intervals and component metrics against the grid, on
informative and uninformative scores),
``eomt_temperature_grid`` (:mod:`analyze.bench.eomt`), ``compare_every_pair``
(:mod:`analyze.bench.compare`), ``fit_nll_memory``
(:mod:`analyze.bench.fit`). ``--worker`` runs one measurement of ``pixel_metrics`` in a fresh
process (:func:`analyze.bench.pixels.worker`).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from analyze.bench import pixels as bench_pixels
from analyze.bench.pixels import DEFAULT_PIXELS, run_pixel_metrics


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    run: Callable[[int, int], tuple[str, dict, bool]]  # (pixels, seed) -> (markdown, data, ok)


def _lazy(module: str, function: str) -> Callable[[int, int], tuple[str, dict, bool]]:
    """``module.function(pixels, seed)``, imported when the section runs (a section's imports, torch
    and the caches among them, load only for the sections asked for)."""
    def run(pixels: int, seed: int) -> tuple[str, dict, bool]:
        return getattr(importlib.import_module(module), function)(pixels, seed)

    return run


SECTIONS: list[Section] = [
    Section(
        "pixel_metrics",
        "exact pooled AuPRC/AUROC/FPR95 vs concatenate + scikit-learn + ood_metrics",
        run_pixel_metrics,
    ),
    Section(
        "sort_frames",
        "a 1024x2048 float64 map's split and sort (`split_sorted`, the radix sorts) vs numpy, per score distribution",
        _lazy("analyze.bench.sorting", "run_sort_frames"),
    ),
    Section(
        "study",
        "`analyze score` on 1024x2048 caches of both kinds vs a library-kernel reference; the whole study projected",
        _lazy("analyze.bench.study", "run_study"),
    ),
    Section(
        "two_pass",
        "`analyze score` two-pass plan vs one-pass plan per frame, both models (goal <= 1.15x)",
        _lazy("analyze.bench.study", "run_two_pass"),
    ),
    Section(
        "later_passes",
        "`analyze score` grid vs grid + intervals + components, informative and uninformative scores (goal <= 1.5x)",
        _lazy("analyze.bench.later", "run_later_passes"),
    ),
    Section(
        "eomt_temperature_grid",
        "EoMT scoring of a full T grid against a single T",
        _lazy("analyze.bench.eomt", "run_eomt_temperature_grid"),
    ),
    Section(
        "eomt_every_scorer",
        "EoMT T grid with every scorer vs the same grid with the study's five (goal <= 1.5x)",
        _lazy("analyze.bench.scorers", "run_eomt_every_scorer"),
    ),
    Section(
        "compare_every_pair",
        "`analyze compare` of every pair of 12 scorers x 4 T vs their `--bootstrap 1000` intervals (goal <= 2x)",
        _lazy("analyze.bench.compare", "run_compare_every_pair"),
    ),
    Section(
        "fit_nll_memory",
        "peak memory of `analyze temperature --fit nll` on 100 and 500 Cityscapes-val-shaped frames",
        _lazy("analyze.bench.fit", "run_fit_nll_memory"),
    ),
]


@click.command()
@click.option("--pixels", default=DEFAULT_PIXELS, show_default=True, type=int, help="pixels in the synthetic data")
@click.option(
    "--out", "out_dir", default="bench_out", show_default=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--section", "sections", multiple=True, type=click.Choice([s.name for s in SECTIONS]), help="run only these"
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--worker", default=None, hidden=True)
@click.option("--distinct", is_flag=True, hidden=True, help="worker: all-distinct scores")
@click.option("--dtype", default="float32", hidden=True, type=click.Choice(["float32", "float64"]),
              help="worker: the scores' type")
def main(pixels: int, out_dir: Path, sections: tuple[str, ...], seed: int, worker: str | None, distinct: bool,
         dtype: str) -> None:
    """Run the benchmarks and write bench.md and bench.json under --out.

    Example: python -m analyze.bench --pixels 20_000_000 --out bench_out
    """
    if worker is not None:
        click.echo(json.dumps(bench_pixels.worker(worker, pixels, seed, distinct, dtype)))
        return
    chosen = [s for s in SECTIONS if not sections or s.name in sections]
    reports, data, all_ok = [], {}, True
    for section in chosen:
        click.echo(f"running {section.name}: {section.help} ...", err=True)
        md, d, ok = section.run(pixels, seed)
        reports.append(md)
        data[section.name] = d
        all_ok &= ok
        click.echo(md)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.md").write_text("\n".join(reports))
    (out_dir / "bench.json").write_text(json.dumps(data, indent=2))
    if not all_ok:
        raise click.ClickException("a benchmark's results disagree with its reference")


if __name__ == "__main__":
    main()
