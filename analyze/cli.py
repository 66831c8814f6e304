"""`analyze`: score cached model outputs offline and turn results into tables and figures.

Commands only wire arguments; the work is in analyze.driver, analyze.report,
analyze.temperature, analyze.maps and analyze.inspect.
"""

from __future__ import annotations

import sys

import click

from schemas.cache import CacheError, open_cache
from schemas.results import ResultsError


class _Group(click.Group):
    """Turns the tool's user-facing errors into one-line messages with exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CacheError, ResultsError, FileNotFoundError, PermissionError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="anomaly-seg-cache")
def main():
    """Score every anomaly scorer on cached model outputs; report tables and figures.

    \b
    Examples (one per command):
      analyze inspect caches/eomt/road_anomaly.zarr --verify
      analyze score --cache caches/eomt/road_anomaly.zarr --scorers all --temps 0.5,0.75,1.1
      analyze report --results results.parquet --out report/
      analyze maps --cache caches/eomt/road_anomaly.zarr --scorer msp,rba --out maps/
      analyze temperature --results results.parquet --select-on fs_static --metric auprc
    """


@main.command()
@click.argument("cache")
@click.option("--verify", is_flag=True, help="Read every chunk and check its crc32c checksum.")
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
            raise click.ClickException(f"{cache}: {len(problems)} corrupt chunk(s)")
        click.echo("verify     all chunks intact (crc32c)")


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


@main.command()
@click.option("--cache", "caches", multiple=True, required=True,
              help="Cache path or fsspec URL (repeat for several caches).")
@click.option("--scorers", default="all", show_default=True, callback=_parse_scorers,
              help="'all' or a comma list of msp, maxlogit, maxentropy, energy, rba.")
@click.option("--temps", default="", callback=_parse_temps,
              help="Comma list of temperatures > 0; T = 1 is always included (e.g. 0.5,0.75,1.1).")
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
@click.option("--allow-partial", is_flag=True, help="Score the done frames of an unfinished cache (with a warning).")
@click.option("--component-metrics", is_flag=True, help="Also compute SMIYC component-level sIoU, PPV, mean F1.")
@click.option("--max-memory", default="4GiB", show_default=True,
              help="Memory budget of the exact protocol before it switches to two passes (e.g. 512MiB, 8GiB).")
@click.option("--bootstrap", default=0, show_default=True, type=click.IntRange(0),
              help="Frame-bootstrap resamples for ci_low/ci_high (e.g. 1000); 0 = none.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap resampling.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def score(caches, scorers, temps, temp_target, protocol, out, scheduler, scheduler_file, workers, storage_options,
          allow_partial, component_metrics, max_memory, bootstrap, seed, no_progress):
    """Apply every scorer at every temperature to cached outputs; write results.parquet.

    Rows for an existing (model, dataset, scorer, T, protocol) are replaced, not duplicated.
    Frames must all be done (see --allow-partial).

    \b
    Example:
      analyze score --cache caches/eomt/fs_static.zarr --cache caches/erfnet/fs_static.zarr \\
          --scorers all --temps 0.5,0.75,1.1 --out results.parquet
    """
    import pandas as pd

    from analyze.driver import Scheduler, ScoreError, parse_storage_options, score_cache
    from schemas.results import write_results, write_side_table

    try:
        opts = parse_storage_options(storage_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage-option") from None
    try:
        budget = _parse_bytes(max_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-memory") from None
    _check_writable(out)
    results, frames, curves = [], [], []
    try:
        sched = Scheduler(scheduler, scheduler_file, workers, progress=not no_progress)
        try:
            for cache in caches:
                click.echo(f"scoring {cache}", err=True)
                r, f, c = score_cache(
                    cache, scorers, temps, temp_target, protocol, sched, storage_options=opts or None,
                    allow_partial=allow_partial, max_memory=budget, component_metrics=component_metrics,
                    bootstrap=bootstrap, seed=seed, warn=lambda m: click.echo(f"warning: {m}", err=True),
                )
                results.append(r), frames.append(f), curves.append(c)
        finally:
            sched.close()
    except ScoreError as exc:
        raise click.ClickException(str(exc)) from None
    table = write_results(pd.concat(results, ignore_index=True), out)
    stem = str(out)[: -len(".parquet")] if str(out).endswith(".parquet") else str(out)
    write_side_table(pd.concat(frames, ignore_index=True), f"{stem}_frames.parquet",
                     key=("model", "dataset", "scorer", "temperature", "temp_target", "protocol", "frame"))
    write_side_table(pd.concat(curves, ignore_index=True), f"{stem}_curves.parquet")
    new = pd.concat(results, ignore_index=True)
    click.echo(summary_table(new))
    click.echo(f"wrote {len(new)} rows to {out} ({len(table)} rows in total)")


@main.command()
@click.option("--results", required=True, type=click.Path(dir_okay=False), help="results.parquet from `analyze score`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for tables and figures.")
@click.option("--protocol", type=click.Choice(["exact", "smiyc"]), default=None,
              help="Which protocol's rows to report (default: exact when present).")
def report(results, out, protocol):
    """Tables 1-2 of the seed paper (Markdown, LaTeX) and figures (PNG) from results.parquet.

    \b
    Example:
      analyze report --results results.parquet --out report/
    """
    from analyze.report import write_report

    _check_writable(f"{out}/x")
    paths = write_report(results, out, protocol=protocol, warn=lambda m: click.echo(f"note: {m}", err=True))
    for p in paths:
        click.echo(str(p))


@main.command()
@click.option("--cache", "caches", multiple=True, required=True,
              help="Cache path or URL; repeat it for other models on the same dataset (one panel for all).")
@click.option("--scorer", "scorers", default="all", show_default=True, callback=_parse_scorers,
              help="'all' or a comma list of scorers.")
@click.option("--temp", default=1.0, show_default=True, type=float, help="Temperature (> 0).")
@click.option("--temp-target", type=click.Choice(["query", "pixel"]), default="query", show_default=True)
@click.option("--frames", default=None, help="Comma list of frame ids (default: the first 4).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for .npy maps and PNG panels.")
def maps(caches, scorers, temp, temp_target, frames, out):
    """Per-frame anomaly maps (.npy) and image / ground truth / map panels (PNG).

    With several caches (one per model, same dataset) each model's files go to OUT/<model>/
    and OUT/panel.png shows every model, one row per frame and model.

    \b
    Example:
      analyze maps --cache caches/eomt/road_anomaly.zarr --scorer msp,rba --frames 0001,0002 --out maps/
      analyze maps --cache caches/erfnet/road_anomaly.zarr --cache caches/eomt/road_anomaly.zarr --out maps/
    """
    from analyze.maps import write_maps

    if not temp > 0:
        raise click.BadParameter(f"temperature must be > 0, got {temp}", param_hint="--temp")
    try:
        paths = write_maps(list(caches), scorers, temp, frames.split(",") if frames else None, out, temp_target)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for p in paths:
        click.echo(str(p))


@main.command()
@click.option("--results", type=click.Path(dir_okay=False), default=None, help="results.parquet (for --select-on).")
@click.option("--select-on", default=None, metavar="DATASET[,...]",
              help="Choose T on these datasets; report the chosen T on every other dataset.")
@click.option("--metric", default="auprc", show_default=True, type=click.Choice(["auprc", "fpr95", "auroc"]),
              help="Metric T is chosen by (fpr95 is minimised).")
@click.option("--fit", type=click.Choice(["nll"]), default=None,
              help="Fit T by the NLL of in-distribution pixels (Guo et al. 2017) on --cache.")
@click.option("--cache", default=None, help="In-distribution (cityscapes_val) cache for --fit nll.")
@click.option("--max-pixels", default=200_000, show_default=True, type=click.IntRange(1000),
              help="--fit: pixels sampled (seeded) for the fit.")
@click.option("--seed", default=0, show_default=True, type=int)
def temperature(results, select_on, metric, fit, cache, max_pixels, seed):
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

        res = fit_temperature_nll(cache, max_pixels=max_pixels, seed=seed)
        click.echo(f"T = {res['T']:.4f}  NLL {res['nll_before']:.4f} -> {res['nll_after']:.4f}  "
                   f"ECE {100 * res['ece_before']:.2f}% -> {100 * res['ece_after']:.2f}%  "
                   f"({res['n_pixels']} pixels of {res['n_frames']} frames)")
        if results:
            write_results(pd.DataFrame(res["rows"]), results)
            click.echo(f"added ECE rows to {results}")


def summary_table(df) -> str:
    """Compact pivot: one row per (model, dataset, scorer, T), metrics in percent."""
    if df.empty:
        return "(no rows)"
    pivot = df.pivot_table(index=["model", "dataset", "scorer", "temperature"], columns="metric", values="value",
                           aggfunc="first", observed=True)
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
