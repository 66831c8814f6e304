"""``analyze score``: scorers x temperatures of every cache -> results.parquet and its side tables."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (check_writable, parse_device, parse_name, parse_scorers, parse_storage_options, parse_temps,
                                 summary_table)
from analyze.scorers.catalogue import help_text
from schemas.cli import StrictCommand, comma_list_option, heavy_imports
from schemas.errors import DataError, one_line, os_error_line
from schemas.pooling import FRAMES


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
@click.option("--max-memory", default="auto", show_default=True,
              help="Memory budget (e.g. 512MiB, 8GiB) of the scores the exact protocol keeps (beyond it: two passes) "
                   "and of the frame tasks running at once (about 0.5 GiB each at 1024x2048; fewer run where they do "
                   "not fit). auto: 4GiB of scores beside a task per worker, within half this machine's memory "
                   "(its cgroup's limit where lower). Imports and the end's tables come on top. --explain shows the plan.")
@click.option("--max-spill", default="none", show_default=True,
              help="Disk the pass that composes every frame may fill with their scores for --component-metrics "
                   "(e.g. 20GiB); 0: none (it keeps pixels instead, and the frames they miss are composed again); "
                   "none: as much as the disk has free (--explain shows the size).")
@click.option("--spill-dir", default=None, type=click.Path(file_okay=False, exists=True, writable=True),
              help="Folder of that spill (default: the temporary folder, TMPDIR); removed when read or on error.")
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
@click.option("--explain", is_flag=True,
              help="Print each cache's plan (its passes over the frames, what each keeps, the memory it plans for) "
                   "and exit without scoring or writing anything.")
def score(caches, scorers, id_stats, temps, temp_target, protocol, out, scheduler, scheduler_file, workers,
          storage_options, allow_partial, keep_going, component_metrics, max_memory, max_spill, spill_dir, bootstrap,
          seed, name, frame_rule, device, no_progress, explain):
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
      analyze score --cache caches/eomt/fs_static.zarr --bootstrap 1000 --component-metrics --explain
    """
    opts, budget = _checked_options(storage_options, max_memory, device, scheduler)
    cap = None if max_spill.strip().lower() == "none" else _parse_budget(max_spill, "--max-spill")
    if not explain:
        _check_out(out)
    failures: dict[str, str] = {}
    specs = _open_caches(caches, opts or None, keep_going, failures)  # a bad cache is refused before the heavy imports
    with heavy_imports():
        from analyze.plan.passes import PlanOptions
        from analyze.run.driver import ScoreRequest
        from analyze.run.scheduler import Scheduler
        from analyze.run.spill import SpillPolicy

    stats = _read_stats(id_stats, specs, scorers, temps, temp_target)
    _check_distinct_runs(specs, name)
    request = ScoreRequest(scorers, temps, temp_target, frame_rule, name, opts or None, allow_partial, tuple(stats),
                           device, PlanOptions(protocol, budget, component_metrics, bootstrap, max_spill=cap), seed=seed,
                           spill=SpillPolicy(folder=spill_dir))
    if explain:
        from analyze.run.driver import on_this_machine
        from analyze.run.scheduler import tasks_at_once, worker_bytes

        tasks = tasks_at_once(scheduler, scheduler_file, workers)
        request = on_this_machine(request, tasks, worker_bytes(scheduler) if tasks else 0)  # as the run would plan
        return _explain([c for c in caches if str(c) not in failures], request)
    sched = Scheduler(scheduler, scheduler_file, workers, progress=not no_progress)
    results, total = _score_caches(caches, request, out, sched, keep_going, failures)
    _report(results, total, out)
    if failures:
        for cache in caches:
            if str(cache) in failures:
                click.echo(f"error: {failures[str(cache)]}", err=True)
        raise DataError(f"{len(failures)} of {len(caches)} cache(s) failed (listed above); "
                        f"the rows of the others are in {out}")


def _checked_options(storage_options, max_memory: str, device: str, scheduler) -> tuple[dict, int | None]:
    """--storage-option as a dict and --max-memory in bytes; --device cuda refused with forked workers."""
    from analyze.run.scheduler import forks_workers

    try:
        opts = parse_storage_options(storage_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage-option") from None
    budget = None if max_memory.strip().lower() == "auto" else _parse_budget(max_memory)
    if device == "cuda" and forks_workers(scheduler):
        raise click.BadParameter("--device cuda runs in the scheduler's threads; a CUDA context does not survive "
                                 "the fork of --scheduler processes: use threads, sync or a distributed cluster",
                                 param_hint="--device")
    return opts, budget


def _explain(caches, request) -> None:
    """--explain: each cache's plan (:meth:`analyze.plan.passes.Plan.lines`); nothing is scored or written."""
    from analyze.run.driver import plan_cache

    for cache in caches:
        plan = plan_cache(str(cache), request, warn=lambda m: click.echo(f"warning: {m}", err=True),
                          info=lambda m: click.echo(f"note: {m}", err=True))
        click.echo("\n".join(plan.lines()))
    click.echo("(--explain: nothing was scored or written)")


def _score_caches(caches, request, out, sched, keep_going: bool, failures: dict) -> tuple[list, int]:
    """Score each cache in turn on ``sched`` (closed at the end), writing its rows to ``out`` as soon as it is done:
    (each cache's results, the rows in ``out``). A failure stops the command, or with ``keep_going``
    is recorded in ``failures`` and the next cache is scored."""
    from analyze.compare.framedata import write_frame_data
    from analyze.run.driver import score_request
    from schemas.results import save_results

    results, total, written = [], 0, []
    warn, note = (lambda m: click.echo(f"warning: {m}", err=True)), (lambda m: click.echo(f"note: {m}", err=True))
    try:
        for cache in caches:
            if str(cache) in failures:
                continue
            click.echo(f"scoring {cache}", err=True)
            try:
                kept: list = []  # what the intervals resampled, for `analyze compare`
                r, f, c = score_request(str(cache), request, sched, warn, note, frame_data=kept)
            except (DataError, OSError) as exc:
                if not keep_going:
                    raise
                failures[str(cache)] = one_line(exc)
                click.echo(f"warning: {cache} failed (reason at the end); --keep-going: next cache", err=True)
                continue
            # now: a later cache's failure loses nothing
            total = len(save_results(out, r, f, c, note=note))
            for rows in kept:  # the per-frame data of the intervals, for `analyze compare`
                write_frame_data(out, rows)
            results.append(r)
            written.append(str(cache))
            click.echo(f"wrote {len(r)} rows of {cache} to {out}", err=True)
    except KeyboardInterrupt:
        _interrupted(caches, written, failures, out)
    finally:
        sched.close()
    return results, total


def _report(results: list, total: int, out) -> None:
    """The summary table of the rows written, and the conflicts ``out`` now holds."""
    import pandas as pd

    from schemas.results import cache_conflicts, read_results

    if not results:
        return
    new = pd.concat(results, ignore_index=True)
    click.echo(summary_table(new))
    click.echo(f"wrote {len(new)} rows to {out} ({total} rows in total)")
    for msg in cache_conflicts(read_results(out)):
        click.echo(f"warning: {out}: {msg}; `analyze report` and `analyze temperature` refuse to combine them "
                   "(score the other rows again, or this cache under another --name)", err=True)


def _parse_budget(size: str, option: str = "--max-memory") -> int:
    """``--max-memory`` (or ``option``) in bytes (a usage error for anything that is not a finite size)."""
    from dask.utils import parse_bytes

    try:
        budget = parse_bytes(size)
    except (ValueError, OverflowError):  # "1e999" overflows int()
        budget = -1
    if budget < 0:
        raise click.BadParameter(f"expected a size like 512MiB or 8GiB, got {size!r}", param_hint=option)
    return budget


def _check_out(out) -> None:
    """--out and its side tables: a writable folder, and no old or foreign file (refused now, not
    after the scoring)."""
    from schemas.results import read_results
    from schemas.side_tables import check_side_table, side_table_paths

    check_writable(out)
    if Path(out).exists():
        read_results(out)
    for path in side_table_paths(out):
        check_side_table(path)


def _interrupted(caches, written, failures, out) -> None:
    """Ctrl-C: say which caches' rows are in ``out`` and how to score the rest; exit 130."""
    rest = [str(c) for c in caches if str(c) not in written and str(c) not in failures]
    done = f"the rows of {', '.join(written)} are in {out}" if written else f"no cache's rows were written to {out}"
    again = " ".join(f"--cache {c}" for c in rest)
    click.echo(f"Interrupted: {done}; to score the rest, run the same command with {again} "
               "(rows of a cache scored again replace its old ones)", err=True)
    raise click.exceptions.Exit(130)


def _open_caches(caches, storage_options, keep_going: bool, failures: dict) -> list:
    """Every cache opened (and its spec validated) before any work: {cache: spec}. A cache that
    cannot be opened is the command's error now, before anything is scored or written; with
    --keep-going it is recorded in ``failures`` (listed at the end) and the others are scored.
    A list of (cache, spec): a cache given twice is there twice (:func:`_check_distinct_runs`)."""
    from schemas.cache import open_cache

    specs = []
    for cache in caches:
        try:
            specs.append((str(cache), open_cache(cache, storage_options=storage_options)[1]))
        except (DataError, OSError) as exc:
            if not keep_going:
                raise
            failures[str(cache)] = one_line(exc) if isinstance(exc, DataError) else os_error_line(exc)
            click.echo(f"warning: {cache} cannot be opened (reason at the end); --keep-going: the others are scored",
                       err=True)
    return specs


def _read_stats(paths, specs, scorers, temps, temp_target) -> list:
    """The --id-stats files, checked before any work: each must fit the model and checkpoint of a
    cache scored (``specs``: (cache, spec) pairs), and where KL matching or SML will use one, it must not
    come from the dataset scored and must cover every T (:meth:`analyze.scorers.id_stats.IdStats.class_stats`)."""
    if not paths:
        return []
    from analyze.scorers.id_stats import IdStats, check_files_used, match_stats
    from analyze.scorers.registry import parse_spec

    files = [IdStats.read(p) for p in paths]
    check_files_used(files, dict(specs))
    if any(s.needs_stats for s in parse_spec(scorers)):
        for cache, spec in specs:
            fitted = match_stats(files, spec, cache)
            if fitted is not None and spec.label_kind == "anomaly":
                fitted.class_stats(spec, cache, "logits" if spec.kind == "pixel" else temp_target, temps)
    return files


def _check_distinct_runs(specs, name) -> None:
    """Two caches whose rows would share keys (one run, model and dataset: two checkpoints
    under one --name, or a cache given twice) are refused before any work."""
    from analyze.run.driver import run_name
    from schemas.results import ResultsError

    seen: dict[tuple, str] = {}
    for cache, spec in specs:
        key = (run_name(spec, name), spec.provenance.model, spec.provenance.dataset)
        if key in seen:
            raise ResultsError(f"{seen[key]} and {cache} would both write the rows of run {key[0]} ({key[1]}, "
                               f"{key[2]}): give each checkpoint its own run name (`analyze score --name`, one "
                               "call per name)")
        seen[key] = cache
