"""``analyze score``: scorers x temperatures of every cache -> results.parquet and its side tables."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli_options import (check_writable, parse_device, parse_name, parse_scorers, parse_storage_options, parse_temps,
                                 summary_table)
from analyze.scorers.registry import help_text
from schemas.cache import open_cache
from schemas.cli import StrictCommand, comma_list_option
from schemas.errors import DataError, one_line
from schemas.results import FRAMES, ResultsError


@click.command(cls=StrictCommand)  # a command of ToolGroup: a single-valued option given twice is refused
@click.option("--cache", "caches", multiple=True, required=True,
              help="Cache path or fsspec URL (repeat for several caches).")
@comma_list_option("--scorers", default="all", callback=parse_scorers, help=help_text())
@click.option("--id-stats", "id_stats", multiple=True, type=click.Path(dir_okay=False),
              help="In-distribution statistics from `analyze fit` for KL matching and SML (repeat: one per model and "
                   "checkpoint; each cache uses the file fit on its checkpoint).")
@comma_list_option("--temps", default="", callback=parse_temps,
                   help="Temperatures in [0.1, 1000]; T = 1 is always included (e.g. 0.5,0.75,1.1).")
@click.option("--temp-target", type=click.Choice(["query", "pixel"]), default="query", show_default=True,
              help="EoMT: divide the query class logits by T (changes the segmentation) or the per-pixel class scores.")
@click.option("--protocol", type=click.Choice(["exact", "smiyc"]), default="exact", show_default=True,
              help="exact: sklearn AP/AUROC, ood_metrics FPR95; smiyc: the SMIYC benchmark's binned curves.")
@click.option("--out", default="results.parquet", show_default=True, type=click.Path(dir_okay=False),
              help="Results table; results_frames.parquet and results_curves.parquet are written beside it.")
@click.option("--scheduler", default=None,
              help="threads (default), processes, sync, or a Dask scheduler address (tcp://host:8786). "
                   "DASK_SCHEDULER_ADDRESS is used when set and no scheduler is given.")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False), help="Dask scheduler file.")
@click.option("--workers", default=None, type=click.IntRange(1), help="Local threads/processes (default: all cores).")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option for URL caches (repeatable).")
@click.option("--allow-partial", is_flag=True,
              help="Score the done frames of an unfinished cache, skipping done frames that lost chunks (with a warning).")
@click.option("--keep-going", is_flag=True,
              help="When a cache fails, score the remaining ones; exit 1 at the end, one line per failure.")
@click.option("--component-metrics", is_flag=True, help="Also compute SMIYC component-level sIoU, PPV, mean F1.")
@click.option("--max-memory", default="4GiB", show_default=True,
              help="Memory budget of the exact protocol before it switches to two passes (e.g. 512MiB, 8GiB).")
@click.option("--bootstrap", default=0, show_default=True, type=click.IntRange(0),
              help="Frame-bootstrap resamples for ci_low/ci_high (e.g. 1000); 0 = none.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap resampling.")
@click.option("--name", default=None, callback=parse_name,
              help="Run name of every row (default: per cache, <checkpoint file stem>-<first 8 hex of its sha256>).")
@click.option("--frames", "frame_rule", type=click.Choice(FRAMES), default="all", show_default=True,
              help="all: every frame, as SMIYC; with-anomaly: only frames with an anomaly pixel, as the course "
                   "evaluation code (their in-distribution pixels are dropped too).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              callback=parse_device, help="Where composition and scorers run (torch); auto: CUDA if present. "
                                          "Metrics are computed on the CPU either way.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def score(caches, scorers, id_stats, temps, temp_target, protocol, out, scheduler, scheduler_file, workers,
          storage_options, allow_partial, keep_going, component_metrics, max_memory, bootstrap, seed, name, frame_rule,
          device, no_progress):
    """Apply every scorer at every temperature to cached outputs; write results.parquet.

    Each row is keyed by its run (--name, default from the cache's checkpoint), model,
    dataset, scorer, T, target, protocol, frames and metric. Rows with the key of a new row
    are replaced; rows of other runs stay. Each cache's rows are written (atomically) as
    soon as it is scored; two caches that would write rows with one key are refused before
    any work. Frames must all be done and complete (see --allow-partial).

    \b
    Example:
      analyze score --cache caches/eomt/fs_static.zarr --cache caches/erfnet/fs_static.zarr \\
          --scorers all --temps 0.5,0.75,1.1 --id-stats stats_eomt.json --out results.parquet
    """
    import pandas as pd
    from dask.utils import parse_bytes

    from analyze.driver import Scheduler, score_cache
    from analyze.scheduler import forks_workers
    from schemas.results import cache_conflicts, check_side_table, read_results, save_results, side_table_paths

    try:
        opts = parse_storage_options(storage_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage-option") from None
    try:
        budget = parse_bytes(max_memory)
    except ValueError:
        budget = -1
    if budget < 0:
        raise click.BadParameter(f"expected a size like 512MiB or 8GiB, got {max_memory!r}", param_hint="--max-memory")
    if device == "cuda" and forks_workers(scheduler):
        raise click.BadParameter("--device cuda runs in the scheduler's threads; a CUDA context does not survive "
                                 "the fork of --scheduler processes: use threads, sync or a distributed cluster",
                                 param_hint="--device")
    check_writable(out)
    if Path(out).exists():  # an old or foreign file is refused now, not after the scoring
        read_results(out)
    for path in side_table_paths(out):
        check_side_table(path)
    stats = _read_stats(id_stats, caches, opts or None, scorers, temps, temp_target)
    _check_distinct_runs(caches, opts or None, name)
    results, failures, total = [], [], 0
    sched = Scheduler(scheduler, scheduler_file, workers, progress=not no_progress)
    try:
        for cache in caches:
            click.echo(f"scoring {cache}", err=True)
            try:
                r, f, c = score_cache(
                    cache, scorers, temps, temp_target=temp_target, protocol=protocol, scheduler=sched,
                    storage_options=opts or None,
                    allow_partial=allow_partial, max_memory=budget, component_metrics=component_metrics,
                    bootstrap=bootstrap, seed=seed, warn=lambda m: click.echo(f"warning: {m}", err=True),
                    info=lambda m: click.echo(f"note: {m}", err=True), name=name, frames=frame_rule,
                    id_stats=stats, device=device,
                )
            except (DataError, OSError) as exc:
                if not keep_going:
                    raise
                failures.append(one_line(exc))
                click.echo(f"warning: {cache} failed (reason at the end); --keep-going: next cache", err=True)
                continue
            total = len(save_results(out, r, f, c))  # now: a later cache's failure loses nothing
            results.append(r)
            click.echo(f"wrote {len(r)} rows of {cache} to {out}", err=True)
    finally:
        sched.close()
    if results:
        new = pd.concat(results, ignore_index=True)
        click.echo(summary_table(new))
        click.echo(f"wrote {len(new)} rows to {out} ({total} rows in total)")
        for msg in cache_conflicts(read_results(out)):
            click.echo(f"warning: {out}: {msg}; `analyze report` and `analyze temperature` refuse to combine them "
                       "(score the other rows again, or this cache under another --name)", err=True)
    if failures:
        for line in failures:
            click.echo(f"error: {line}", err=True)
        raise DataError(f"{len(failures)} of {len(caches)} cache(s) failed (listed above); "
                        f"the rows of the others are in {out}")


def _read_stats(paths, caches, storage_options, scorers, temps, temp_target) -> list:
    """The --id-stats files, checked before any work: each must fit the model and checkpoint of a
    cache scored, and where KL matching or SML will use one, it must not come from the dataset
    scored and must cover every T (:meth:`analyze.id_stats.IdStats.class_stats`)."""
    if not paths:
        return []
    from analyze.id_stats import IdStats, check_files_used, match_stats
    from analyze.scorers.registry import parse_spec

    files = [IdStats.read(p) for p in paths]
    specs = {}
    for cache in caches:
        try:
            specs[str(cache)] = open_cache(cache, storage_options=storage_options)[1]
        except (DataError, OSError):
            continue  # fails when it is scored
    check_files_used(files, specs)
    if any(s.needs_stats for s in parse_spec(scorers)):
        for cache, spec in specs.items():
            fitted = match_stats(files, spec, cache)
            if fitted is not None and spec.label_kind == "anomaly":
                fitted.class_stats(spec, cache, "logits" if spec.kind == "pixel" else temp_target, temps)
    return files


def _check_distinct_runs(caches, storage_options, name) -> None:
    """Two caches whose rows would share keys (one run, model and dataset: two checkpoints
    under one --name, or a cache given twice) are refused before any work; a cache that
    cannot be opened is left to fail when it is scored."""
    from analyze.driver import run_name

    seen: dict[tuple, str] = {}
    for cache in caches:
        try:
            _, spec = open_cache(cache, storage_options=storage_options)
        except (DataError, OSError):
            continue
        key = (run_name(spec, name), spec.provenance.model, spec.provenance.dataset)
        if key in seen:
            raise ResultsError(f"{seen[key]} and {cache} would both write the rows of run {key[0]} ({key[1]}, "
                               f"{key[2]}): give each checkpoint its own run name (`analyze score --name`, one "
                               "call per name)")
        seen[key] = cache
