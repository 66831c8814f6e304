"""``analyze fit``: in-distribution statistics of a cache for KL matching and SML -> a JSON file."""

from __future__ import annotations

import click

from analyze.cli.options import check_writable, parse_name, parse_storage_options, parse_temps
from schemas.cli import StrictCommand, comma_list_option, heavy_imports


@click.command(cls=StrictCommand)
@click.option("--cache", required=True, help="In-distribution cache (path or fsspec URL), e.g. caches/eomt/cityscapes_val.zarr.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Statistics file to write (JSON).")
@comma_list_option("--temps", default="", callback=parse_temps,
                   help="Temperatures in [0.1, 1000] to fit at (T = 1 always): every T that `analyze score` will use.")
@click.option("--temp-target", type=click.Choice(["query", "pixel"]), default="query", show_default=True,
              help="EoMT: the temperature target `analyze score` will use (ERFNet: T divides the logits).")
@click.option("--scheduler", default=None, help="threads (default), processes, sync, or a Dask scheduler address.")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False), help="Dask scheduler file.")
@click.option("--workers", default=None, type=click.IntRange(1), help="Local threads/processes (default: all cores).")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option for URL caches (repeatable).")
@click.option("--allow-partial", is_flag=True, help="Fit on the done frames of an unfinished cache (with a warning).")
@click.option("--name", default=None, callback=parse_name,
              help="Run recorded in the file (default: <checkpoint file stem>-<first 8 hex of its sha256>).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def fit(cache, out, temps, temp_target, scheduler, scheduler_file, workers, storage_options, allow_partial, name,
        no_progress):
    """Fit the in-distribution statistics that KL matching and SML need (analyze score --id-stats).

    Per temperature and per predicted class: the pixel count, the mean and variance of the
    max logit and the mean softmax of the scorer input (what the scorers see at that T),
    over every pixel of the cache's frames. The file records the cache digest, model,
    checkpoint sha256, run and the scorer-input definition; `analyze score` refuses it for
    another model or checkpoint and for the dataset it was fit on.

    \b
    Example:
      analyze fit --cache caches/eomt/cityscapes_val.zarr --temps 0.5,0.75,1.1 --out stats_eomt.json
    """
    with heavy_imports():
        from analyze.run.driver import Scheduler
        from analyze.run.fit import fit_id_stats

    try:
        opts = parse_storage_options(storage_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage-option") from None
    check_writable(out)
    sched = Scheduler(scheduler, scheduler_file, workers, progress=not no_progress)
    try:
        stats = fit_id_stats(cache, temps, temp_target=temp_target, scheduler=sched, storage_options=opts or None,
                             allow_partial=allow_partial,
                             warn=lambda m: click.echo(f"warning: {m}", err=True),
                             info=lambda m: click.echo(f"note: {m}", err=True), name=name)
    finally:
        sched.close()
    stats.write(out)
    thin = stats.poorly_covered()
    if thin:
        click.echo(f"note: class(es) {', '.join(map(str, thin))} have fewer than 2 pixels at some T: SML standardises "
                   "their pixels with the pooled statistics of all classes, KL matching leaves out classes without "
                   "pixels", err=True)
    m = stats.meta
    click.echo(f"wrote {out}: {m['model']} on {m['dataset']} ({m['n_frames']} frames), T = "
               f"{', '.join(f'{t:g}' for t in sorted(stats.temperatures))}, target {m['temp_target']}")
