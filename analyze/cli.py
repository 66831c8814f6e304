"""`analyze`: score cached model outputs offline and turn results into tables and figures.

Commands only wire arguments; the work is in analyze.driver, analyze.report,
analyze.temperature, analyze.maps, analyze.export and analyze.inspect.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from analyze.export import FORMATS
from schemas.cache import open_cache, unlabelled_not_void
from schemas.cli import comma_list_option
from schemas.errors import DataError, ToolGroup, one_line
from schemas.results import FRAMES, ResultsError


@click.group("analyze", cls=ToolGroup)
@click.version_option(package_name="anomaly-seg-cache")
def main():
    """Score every anomaly scorer on cached model outputs; report tables and figures.

    Errors are one line; exit code 1 for bad data or files, 2 for bad options.

    \b
    Examples (one per command):
      analyze inspect caches/eomt/road_anomaly.zarr --verify
      analyze score --cache caches/eomt/road_anomaly.zarr --scorers all --temps 0.5,0.75,1.1
      analyze report --results results.parquet --out report/
      analyze maps --cache caches/eomt/road_anomaly.zarr --scorer msp,rba --out maps/
      analyze export --cache caches/eomt/smiyc_anomaly_track.zarr --scorer msp --method EoMT_MSP --out sub/ --zip
      analyze temperature --results results.parquet --select-on fs_static --metric auprc
    """


@main.command()
@click.argument("cache")
@click.option("--verify", is_flag=True,
              help="Check that every done frame has all its chunks and that every chunk decodes (crc32c).")
def inspect(cache, verify):
    """Print a summary of CACHE and validate it against the schema.

    \b
    Example:
      analyze inspect caches/erfnet/fs_static.zarr --verify
    """
    from analyze import inspect as insp

    root, spec = open_cache(cache)
    for line in insp.summary(root, spec, cache):
        click.echo(line)
    if verify:
        problems = insp.verify(root, spec)
        for p in problems:
            click.echo(f"error: {cache}: {p}", err=True)
        if problems:
            raise DataError(f"{cache}: {len(problems)} missing or corrupt chunk(s), listed above")
        click.echo("verify     all chunks of the done frames present and intact (crc32c)")
        voided = unlabelled_not_void(root, spec)
        if voided:
            raise DataError(f"{cache}: {len(voided)} unlabelled frame(s) have labels that are not void "
                            f"(255) everywhere: {', '.join(voided[:3])}")


def _parse_temps(ctx, param, value):
    from analyze.scorers import parse_temperatures

    try:
        return parse_temperatures(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_scorers(ctx, param, value):
    from analyze.scorers import get_scorers

    try:
        get_scorers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _parse_name(ctx, param, value):
    from schemas.results import parse_run

    try:
        return None if value is None else parse_run(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--cache", "caches", multiple=True, required=True,
              help="Cache path or fsspec URL (repeat for several caches).")
@comma_list_option("--scorers", default="all", callback=_parse_scorers,
                   help="'all' (default) or a comma list of msp, maxlogit, maxentropy, energy, rba.")
@comma_list_option("--temps", default="", callback=_parse_temps,
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
@click.option("--name", default=None, callback=_parse_name,
              help="Run name of every row (default: per cache, <checkpoint file stem>-<first 8 hex of its sha256>).")
@click.option("--frames", "frame_rule", type=click.Choice(FRAMES), default="all", show_default=True,
              help="all: every frame, as SMIYC; with-anomaly: only frames with an anomaly pixel, as the course "
                   "evaluation code (their in-distribution pixels are dropped too).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def score(caches, scorers, temps, temp_target, protocol, out, scheduler, scheduler_file, workers, storage_options,
          allow_partial, keep_going, component_metrics, max_memory, bootstrap, seed, name, frame_rule, no_progress):
    """Apply every scorer at every temperature to cached outputs; write results.parquet.

    Each row is keyed by its run (--name, default from the cache's checkpoint), model,
    dataset, scorer, T, target, protocol, frames and metric. Rows with the key of a new row
    are replaced; rows of other runs stay. Each cache's rows are written (atomically) as
    soon as it is scored; two caches that would write rows with one key are refused before
    any work. Frames must all be done and complete (see --allow-partial).

    \b
    Example:
      analyze score --cache caches/eomt/fs_static.zarr --cache caches/erfnet/fs_static.zarr \\
          --scorers all --temps 0.5,0.75,1.1 --out results.parquet
    """
    import pandas as pd

    from analyze.driver import Scheduler, parse_storage_options, score_cache
    from schemas.results import cache_conflicts, check_side_table, read_results

    try:
        opts = parse_storage_options(storage_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage-option") from None
    try:
        budget = _parse_bytes(max_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-memory") from None
    _check_writable(out)
    stem = str(out)[: -len(".parquet")] if str(out).endswith(".parquet") else str(out)
    if Path(out).exists():  # an old or foreign file is refused now, not after the scoring
        read_results(out)
    for path in (f"{stem}_frames.parquet", f"{stem}_curves.parquet"):
        check_side_table(path)
    _check_distinct_runs(caches, opts or None, name)
    results, failures, total = [], [], 0
    sched = Scheduler(scheduler, scheduler_file, workers, progress=not no_progress)
    try:
        for cache in caches:
            click.echo(f"scoring {cache}", err=True)
            try:
                r, f, c = score_cache(
                    cache, scorers, temps, temp_target, protocol, sched, storage_options=opts or None,
                    allow_partial=allow_partial, max_memory=budget, component_metrics=component_metrics,
                    bootstrap=bootstrap, seed=seed, warn=lambda m: click.echo(f"warning: {m}", err=True),
                    info=lambda m: click.echo(f"note: {m}", err=True), name=name, frames=frame_rule,
                )
            except (DataError, OSError) as exc:
                if not keep_going:
                    raise
                failures.append(one_line(exc))
                click.echo(f"warning: {cache} failed (reason at the end); --keep-going: next cache", err=True)
                continue
            total = _write_tables(r, f, c, out)  # now: a later cache's failure loses nothing
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


def _write_tables(results, frames, curves, out) -> int:
    """Write one cache's rows into results.parquet and its side tables (each atomically)."""
    from schemas.results import FRAME_KEY, write_results, write_side_table

    table = write_results(results, out)  # refuses (writing nothing) two rows with one key
    stem = str(out)[: -len(".parquet")] if str(out).endswith(".parquet") else str(out)
    write_side_table(frames, f"{stem}_frames.parquet", key=FRAME_KEY)
    write_side_table(curves, f"{stem}_curves.parquet")
    return len(table)


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


@main.command()
@click.option("--results", required=True, type=click.Path(dir_okay=False), help="results.parquet from `analyze score`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for tables and figures.")
@click.option("--protocol", type=click.Choice(["exact", "smiyc"]), default=None,
              help="Which protocol's rows to report (default: exact when present).")
@click.option("--frames", "frame_rule", type=click.Choice(FRAMES), default=None,
              help="Which frames rule's rows to report (default: all when present).")
def report(results, out, protocol, frame_rule):
    """Tables 1-2 of the seed paper (Markdown, LaTeX) and figures (PNG) from results.parquet.

    One table row or figure line per (model, run, scorer), labelled by the run name where a
    model has several runs. Two rows for one number, or rows of one run and dataset from two
    caches, are an error naming them.

    \b
    Example:
      analyze report --results results.parquet --out report/
    """
    from analyze.report import write_report

    _check_writable(f"{out}/x")
    paths = write_report(results, out, protocol=protocol, warn=lambda m: click.echo(f"note: {m}", err=True),
                         frames=frame_rule)
    for p in paths:
        click.echo(str(p))


@main.command()
@click.option("--cache", required=True, help="Cache path or URL.")
@comma_list_option("--scorer", "scorers", default="all", callback=_parse_scorers,
                   help="'all' (default) or a comma list of scorers.")
@click.option("--temp", default=1.0, show_default=True, type=float, help="Temperature in [0.1, 1000].")
@click.option("--temp-target", type=click.Choice(["query", "pixel"]), default="query", show_default=True)
@comma_list_option("--frames", default="", help="Frame ids (default: the first 4).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for .npy maps and PNG panels.")
def maps(cache, scorers, temp, temp_target, frames, out):
    """Per-frame anomaly maps (.npy) and image / ground truth / map panels (PNG).

    \b
    Example:
      analyze maps --cache caches/eomt/road_anomaly.zarr --scorer msp,rba --frames 0001,0002 --out maps/
    """
    from analyze.maps import write_maps

    from analyze.scorers import check_temperature

    try:
        check_temperature(temp)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--temp") from None
    try:
        paths = write_maps(cache, scorers, temp, frames.split(",") if frames else None, out, temp_target)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for p in paths:
        click.echo(str(p))


@main.command()
@click.option("--cache", required=True, help="Cache path or URL of a benchmark split (e.g. smiyc_anomaly_track).")
@click.option("--scorer", required=True, help="One scorer: msp, maxlogit, maxentropy, energy or rba (EoMT only).")
@click.option("--temp", default=1.0, show_default=True, type=float, help="Temperature in [0.1, 1000].")
@click.option("--temp-target", type=click.Choice(["query", "pixel"]), default="query", show_default=True,
              help="EoMT: T on the query class logits or on the per-pixel class scores (as in `analyze score`).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="smiyc", show_default=True,
              help="; ".join(f"{f.name}: {f.benchmark}, DIR/{f.doc}" for f in FORMATS.values()))
@click.option("--method", required=True, help="Method name: the submission's folder (letters, digits, _ . + -).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (the benchmark's DIR_OUTPUTS).")
@click.option("--overwrite", is_flag=True, help="Rewrite files that exist (default: complete files are skipped).")
@click.option("--zip", "make_zip", is_flag=True, help="Also pack DIR/anomaly_p/<method>/ into DIR/<method>.zip for upload.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def export(cache, scorer, temp, temp_target, fmt, method, out, overwrite, make_zip, no_progress):
    """Write one scorer's anomaly map of every frame (labelled or not) for a benchmark submission.

    The maps are those of `analyze maps` (same scorer, T and --temp-target), cast to float16
    at the image's original size. Resumable: rerun the same command to finish an
    interrupted export; files of another export in the same method folder are refused.

    \b
    Example:
      analyze export --cache caches/eomt/smiyc_anomaly_track.zarr --scorer msp --temp 1.1 \\
          --format smiyc --method EoMT_MSP_T1.1 --out submission/ --zip
    """
    from analyze.export import ExportOptionError, export_maps
    from analyze.scorers import check_temperature

    try:
        check_temperature(temp)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--temp") from None
    try:
        summary = export_maps(cache, scorer, out, method, temperature=temp, temp_target=temp_target, fmt=fmt,
                              overwrite=overwrite, make_zip=make_zip, progress=not no_progress,
                              warn=lambda m: click.echo(f"warning: {m}", err=True))
    except ExportOptionError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from None
    click.echo(summary.line())
    if summary.zip_path is not None:
        packed = ", ".join(f"{d} {n} files" for d, n in summary.zipped.items())
        click.echo(f"packed {packed} into {summary.zip_path}")


@main.command()
@click.option("--results", type=click.Path(dir_okay=False), default=None, help="results.parquet (for --select-on).")
@comma_list_option("--select-on", metavar="DATASET[,...]",
                   help="Choose T on these datasets; report the chosen T on every other dataset.")
@click.option("--metric", default="auprc", show_default=True, type=click.Choice(["auprc", "fpr95", "auroc"]),
              help="Metric T is chosen by (fpr95 is minimised).")
@click.option("--fit", type=click.Choice(["nll"]), default=None,
              help="Fit T by the NLL of in-distribution pixels (Guo et al. 2017) on --cache.")
@click.option("--cache", default=None, help="In-distribution (cityscapes_val) cache for --fit nll.")
@click.option("--max-pixels", default=200_000, show_default=True, type=click.IntRange(1000),
              help="--fit: pixels sampled (seeded) for the fit.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--name", default=None, callback=_parse_name,
              help="--fit: run name of the ECE rows (default: from the cache's checkpoint, as `analyze score`).")
def temperature(results, select_on, metric, fit, cache, max_pixels, seed, name):
    """Choose the temperature honestly: on validation datasets only, or by NLL on in-distribution data.

    With --select-on the chosen rows (marked selected_on) are added to --results; a dataset
    that T was chosen on is never reported. With --fit nll the fitted T and ECE before and
    after are printed and the ECE rows are added to --results when given.

    \b
    Examples:
      analyze temperature --results results.parquet --select-on fs_static --metric auprc
      analyze temperature --fit nll --cache caches/eomt/cityscapes_val.zarr --results results.parquet
    """
    import pandas as pd

    from schemas.results import read_results, write_results

    if not select_on and not fit:
        raise click.UsageError("give --select-on DATASETS (with --results) or --fit nll (with --cache)")
    if select_on:
        if not results:
            raise click.BadParameter("--select-on needs --results", param_hint="--results")
        from analyze.temperature import chosen_temperatures, select_temperature

        df = read_results(results)
        datasets = [d.strip() for d in select_on.split(",") if d.strip()]
        try:
            rows = select_temperature(df, datasets, metric)
            chosen = chosen_temperatures(df, datasets, metric)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--select-on") from None
        click.echo(chosen.to_string(index=False))
        write_results(rows, results)
        click.echo(summary_table(rows))
        click.echo(f"added {len(rows)} rows (selected_on={','.join(datasets)}) to {results}")
    if fit:
        if not cache:
            raise click.BadParameter("--fit nll needs --cache", param_hint="--cache")
        from analyze.temperature import fit_temperature_nll

        res = fit_temperature_nll(cache, max_pixels=max_pixels, seed=seed, name=name)
        click.echo(f"T = {res['T']:.4f}  NLL {res['nll_before']:.4f} -> {res['nll_after']:.4f}  "
                   f"ECE {100 * res['ece_before']:.2f}% -> {100 * res['ece_after']:.2f}%  "
                   f"({res['n_pixels']} pixels of {res['n_frames']} frames)")
        if results:
            write_results(pd.DataFrame(res["rows"]), results)
            click.echo(f"added ECE rows to {results}")


def summary_table(df) -> str:
    """Compact pivot: one row per (run, model, dataset, scorer, T) and whichever of target,
    protocol, frames and selection vary; metrics in percent. Two rows for one cell raise."""
    from analyze.cells import one_row_each
    from schemas.results import normalise

    if df.empty:
        return "(no rows)"
    df = normalise(df)
    index = ["run", "model", "dataset", "scorer", "temperature"]
    index += [c for c in ("temp_target", "protocol", "frames", "selected_on") if df[c].nunique() > 1]
    d = one_row_each(df.astype({c: str for c in index if c != "temperature"}), index + ["metric"])
    pivot = d.pivot(index=index, columns="metric", values="value")
    return (pivot * 100).round(2).to_string(na_rep="-")


def _parse_bytes(text: str) -> int:
    units = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    t = text.strip().lower()
    num = t.rstrip("kmgib")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"expected a size like 512MiB or 8GiB, got {text!r}") from None
    if unit not in units or value < 0:
        raise ValueError(f"expected a size like 512MiB or 8GiB, got {text!r}")
    return int(value * units[unit])


def _check_writable(out) -> None:
    import os
    from pathlib import Path

    folder = Path(out).resolve().parent
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot create folder {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise click.ClickException(f"{out}: folder {folder} is not writable")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
