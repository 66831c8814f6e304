"""`analyze`: score cached model outputs offline and turn results into tables and figures.

Commands only wire arguments; the work is in analyze.run.driver, analyze.report,
analyze.report.temperature, analyze.maps.write, analyze.export.submission and analyze.report.inspect.
"""

from __future__ import annotations

import sys

import click

from analyze.cli.fit import fit
from analyze.cli.options import check_writable, parse_name, parse_scorers, summary_table
from analyze.cli.score import score
from analyze.cli.compare import compare
from analyze.cli.scorers import scorers
from analyze.export.formats import FORMATS
from schemas.cli import comma_list_option
from schemas.errors import DataError, ToolGroup
from schemas.pooling import FRAMES
from schemas.version import PACKAGE, __version__


@click.group("analyze", cls=ToolGroup)
@click.version_option(__version__, package_name=PACKAGE, prog_name=PACKAGE)
def main():
    """Score every anomaly scorer on cached model outputs; report tables and figures.

    Errors are one line; exit code 1 for bad data or files, 2 for bad options.

    \b
    Examples (one per command):
      analyze inspect caches/eomt/road_anomaly.zarr --verify
      analyze fit --cache caches/eomt/cityscapes_val.zarr --temps 0.5,0.75,1.1 --out stats_eomt.json
      analyze score --cache caches/eomt/road_anomaly.zarr --scorers all --temps 0.5,0.75,1.1 --id-stats stats_eomt.json
      analyze report --results results.parquet --out report/
      analyze maps --cache caches/eomt/road_anomaly.zarr --scorer msp,rba --out maps/
      analyze export --cache caches/eomt/smiyc_anomaly_track.zarr --scorer msp --method EoMT_MSP --out sub/ --zip
      analyze temperature --results results.parquet --select-on fs_static --metric auprc
      analyze scorers
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
    from analyze.report import inspect as insp
    from schemas.cache import open_cache, unlabelled_not_void

    root, spec = open_cache(cache)
    for line in insp.summary(root, spec, cache):
        click.echo(line)
    if verify:
        problems = insp.verify(root, spec, cache)
        for p in problems:
            click.echo(f"error: {cache}: {p}", err=True)
        if problems:
            raise DataError(f"{cache}: {len(problems)} missing or corrupt chunk(s) or metadata file(s), listed above")
        click.echo("verify     metadata files intact; all chunks of the done frames present and intact (crc32c)")
        voided = unlabelled_not_void(root, spec)
        if voided:
            raise DataError(f"{cache}: {len(voided)} unlabelled frame(s) have labels that are not void "
                            f"(255) everywhere: {', '.join(voided[:3])}")


@main.command()
@click.option("--results", required=True, type=click.Path(dir_okay=False), help="results.parquet from `analyze score`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for tables and figures.")
@click.option("--protocol", type=click.Choice(["exact", "smiyc"]), default=None,
              help="Which protocol's rows to report (default: exact when present).")
@click.option("--frames", "frame_rule", type=click.Choice(FRAMES), default=None,
              help="Which frames rule's rows to report (default: all when present).")
@click.option("--alpha", type=click.FloatRange(0, 1, max_open=True), default=0.05, show_default=True,
              help="Mark cells not significantly different from their column's best at this level (paired frame "
                   "bootstrap, needs `analyze score --bootstrap`); 0: no marks.")
@click.option("--holm", is_flag=True, help="Holm-correct the p-values across each column's comparisons.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="Paired resamples behind the marks.")
@click.option("--html", is_flag=True, help="Also write index.html: one self-contained page to browse.")
@click.option("--cache", "caches", multiple=True, help="With --html: caches whose frames the page's frame browser "
                                                        "shows (image, ground truth, map; worst AP first).")
def report(results, out, protocol, frame_rule, alpha, holm, n_boot, html, caches):
    """Tables 1-2 of the seed paper (Markdown, LaTeX) and figures (PNG) from results.parquet.

    One table row or figure line per (model, run, scorer), labelled by the run name where a
    model has several runs. Two rows for one number, or rows of one run and dataset from two
    caches, are an error naming them.

    With --html, also one self-contained index.html (sortable tables, curves, frames).

    \b
    Example:
      analyze report --results results.parquet --out report/ --html --holm
    """
    from analyze.browse.frames import frame_browser
    from analyze.report import write_report
    from analyze.report.write import Significance

    if caches and not html:
        raise click.BadParameter("only the HTML page has a frame browser: add --html", param_hint="--cache")
    check_writable(f"{out}/x")
    paths = write_report(results, out, protocol=protocol, warn=lambda m: click.echo(f"note: {m}", err=True),
                         frames=frame_rule, significance=Significance(alpha, holm, n_boot), html=html,
                         frame_browser=frame_browser(caches) if caches else None)
    for p in paths:
        click.echo(str(p))


@main.command()
@click.option("--cache", "caches", multiple=True, required=True,
              help="Cache path or URL; repeat it for other models on the same dataset (one panel for all).")
@comma_list_option("--scorer", "scorers", default="all", callback=parse_scorers,
                   help="'all' (default) or a comma list of scorers.")
@click.option("--temp", default=1.0, show_default=True, type=float, help="Temperature in [0.1, 1000].")
@click.option("--temp-target", type=click.Choice(["query", "pixel"]), default="query", show_default=True)
@comma_list_option("--frames", default="", help="Frame ids (default: the first 4).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for .npy maps and PNG panels.")
@click.option("--id-stats", "id_stats", multiple=True, type=click.Path(dir_okay=False),
              help="In-distribution statistics from `analyze fit` (KL matching, SML), as in `analyze score`.")
def maps(caches, scorers, temp, temp_target, frames, out, id_stats):
    """Per-frame anomaly maps (.npy) and image / ground truth / map panels (PNG).

    With several caches (one per model, same dataset) each model's files go to OUT/<model>/
    and OUT/panel.png shows every model, one row per frame and model.

    \b
    Example:
      analyze maps --cache caches/eomt/road_anomaly.zarr --scorer msp,rba --frames 0001,0002 --out maps/
      analyze maps --cache caches/erfnet/road_anomaly.zarr --cache caches/eomt/road_anomaly.zarr --out maps/
    """
    from analyze.maps.write import write_maps

    from analyze.scorers import check_temperature

    try:
        check_temperature(temp)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--temp") from None
    from analyze.scorers.id_stats import IdStats

    try:
        paths = write_maps(list(caches), scorers, temp, frames.split(",") if frames else None, out, temp_target,
                           id_stats=[IdStats.read(p) for p in id_stats],
                           info=lambda m: click.echo(f"note: {m}", err=True))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for p in paths:
        click.echo(str(p))


@main.command()
@click.option("--cache", required=True, help="Cache path or URL of a benchmark split (e.g. smiyc_anomaly_track).")
@click.option("--scorer", required=True, help="One scorer (a spec of `analyze score --scorers`, e.g. msp or gen:gamma=0.2).")
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
@click.option("--id-stats", "id_stats", multiple=True, type=click.Path(dir_okay=False),
              help="In-distribution statistics from `analyze fit` (KL matching, SML), as in `analyze score`.")
def export(cache, scorer, temp, temp_target, fmt, method, out, overwrite, make_zip, no_progress, id_stats):
    """Write one scorer's anomaly map of every frame (labelled or not) for a benchmark submission.

    The maps are those of `analyze maps` (same scorer, T and --temp-target), mapped by one
    affine transform fitted on the whole track (recorded in the files; one more pass over the
    frames) and cast to float16 at the image's original size; the summary says how many
    distinct scores float16 loses. Resumable: rerun the same command to finish an
    interrupted export; files of another export in the same method folder are refused.

    \b
    Example:
      analyze export --cache caches/eomt/smiyc_anomaly_track.zarr --scorer msp --temp 1.1 \\
          --format smiyc --method EoMT_MSP_T1.1 --out submission/ --zip
    """
    from analyze.export.submission import ExportOptionError, export_maps
    from analyze.scorers.id_stats import IdStats
    from analyze.scorers import check_temperature

    try:
        check_temperature(temp)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--temp") from None
    try:
        summary = export_maps(cache, scorer, out, method, temperature=temp, temp_target=temp_target, fmt=fmt,
                              overwrite=overwrite, make_zip=make_zip, progress=not no_progress,
                              warn=lambda m: click.echo(f"warning: {m}", err=True),
                              id_stats=[IdStats.read(p) for p in id_stats])
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
@click.option("--name", default=None, callback=parse_name,
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
        from analyze.report.temperature import chosen_temperatures, select_temperature

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
        from analyze.report.temperature import fit_temperature_nll

        res = fit_temperature_nll(cache, max_pixels=max_pixels, seed=seed, name=name)
        click.echo(f"T = {res['T']:.4f}  NLL {res['nll_before']:.4f} -> {res['nll_after']:.4f}  "
                   f"ECE {100 * res['ece_before']:.2f}% -> {100 * res['ece_after']:.2f}%  "
                   f"({res['n_pixels']} pixels of {res['n_frames']} frames)")
        if results:
            write_results(pd.DataFrame(res["rows"]), results, note=lambda m: click.echo(f"note: {m}", err=True))
            click.echo(f"added ECE rows to {results}")


main.add_command(score)
main.add_command(fit)
main.add_command(scorers)
main.add_command(compare)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
