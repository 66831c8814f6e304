"""`extract`: run segmentation models once over a dataset into a Zarr cache.

Commands only wire arguments; the work is in extract.run, extract.datasets, extract.bench
and extract.demo.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from extract.cli_demo import demo
from extract.cli_models import check_model, models_command, parse_model_options
from extract.datasets.reader import check_dataset
from schemas.manifest import default_manifest, get_dataset_spec, load_manifest
from extract.datasets.synth import parse_size, write_synth_dataset
from schemas.cache import COMPRESSION, DEFAULT_COMPRESSION
from schemas.cli import heavy_imports
from schemas.errors import ToolGroup
from schemas.version import PACKAGE, __version__


@click.group("extract", cls=ToolGroup)
@click.version_option(__version__, package_name=PACKAGE, prog_name=PACKAGE)
def main():
    """Extract raw model outputs into a chunked Zarr cache.

    Errors are one line; exit code 1 for bad data or files, 2 for bad options.

    \b
    Examples (one per command):
      extract datasets check --dataset fs_lost_found --data-root Validation_Dataset/
      extract datasets synth --dataset smiyc_ro21 --out /tmp/data --n 4 --size 64x128
      extract run --model erfnet --dataset road_anomaly --data-root Validation_Dataset/ --checkpoint erfnet_pretrained.pth
      extract bench --model eomt --device cuda --dtype bf16 --batch-size 4
      extract demo world --out demo_out/world && extract demo train --data demo_out/world --out demo_out/erfnet.pth
      extract demo train-eomt --data demo_out/world --out demo_out/eomt_demo.ckpt
    """


main.add_command(models_command)
main.add_command(demo)


@main.group()
def datasets():
    """Check local dataset copies or write synthetic ones (layouts from data_manifest.yaml).

    \b
    Example:
      extract datasets check --dataset fs_lost_found --data-root Validation_Dataset/
    """


@datasets.command("list")
def datasets_list():
    """List the datasets of the manifest, with their layouts and the manifest file read
    ($ANOMSEG_MANIFEST overrides the packaged one).

    \b
    Example:
      extract datasets list
    """
    source = default_manifest()
    for name, spec in sorted(load_manifest(source).items()):
        click.echo(f"{name:24s} {spec.kind:9s} layouts: {', '.join(spec.layout_names)}")
    click.echo(f"(manifest: {source})", err=True)


class DatasetName(click.ParamType):
    """A dataset of the manifest, checked when the option is parsed: nothing reads the manifest
    while the CLI loads, so ``--help`` and ``--version`` work without one."""

    name = "dataset"

    def get_metavar(self, param, ctx=None):  # click 8.1 passes (param), 8.2 (param, ctx)
        return "NAME"

    def convert(self, value, param, ctx):
        names = sorted(load_manifest())
        if value not in names:
            self.fail(f"{value!r} is not a dataset of the manifest; valid: {', '.join(names)}", param, ctx)
        return value


def _dataset_option(f):
    return click.option("--dataset", required=True, type=DatasetName(),
                        help="Dataset name in the manifest (`extract datasets list`).")(f)


def _layout_option(help_text):
    return click.option("--layout", default=None, metavar="NAME", help=help_text)


def _copy_options(f):
    """Options choosing which copy under --data-root is read and which of its files are frames."""
    f = click.option("--skip-unexpected", is_flag=True,
                     help="Leave out files that do not fit the layout (default: they are an error).")(f)
    f = click.option("--include-excluded", is_flag=True,
                     help="Keep frames the layout excludes (e.g. the 10 ids SMIYC ObstacleTrack-validation leaves out).")(f)
    return _layout_option("Only look for a copy in this layout of the manifest (when a data root holds several).")(f)


def _spec_with_layout(dataset: str, layout: str | None):
    """The dataset's spec; an unknown --layout is a usage error listing the valid ones."""
    spec = get_dataset_spec(dataset)
    if layout is not None and layout not in spec.layout_names:
        raise click.BadParameter(f"{dataset} has no layout {layout!r}; valid: {', '.join(spec.layout_names)}",
                                 param_hint="--layout")
    return spec


@datasets.command("check")
@_dataset_option
@click.option("--data-root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that holds the dataset folder (e.g. Validation_Dataset/).")
@_copy_options
def datasets_check(dataset, data_root, layout, include_excluded, skip_unexpected):
    """Find the copy under --data-root, say which layout it has, and validate every file;
    errors exit non-zero.

    \b
    Example:
      extract datasets check --dataset road_anomaly --data-root Validation_Dataset/
    """
    spec = _spec_with_layout(dataset, layout)
    report = check_dataset(spec, data_root, layout=layout, include_excluded=include_excluded,
                           skip_unexpected=skip_unexpected)
    for n in report.notes:
        click.echo(f"note: {n}", err=True)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    for e in report.errors:
        click.echo(f"error: {e}", err=True)
    if not report.ok:
        raise click.ClickException(f"{dataset}: {len(report.errors)} problem(s) in {report.copy.folder}")
    click.echo(f"{dataset}: {report.n_frames} frames OK in {report.copy.folder} (layout {report.copy.layout.name})")


@datasets.command("synth")
@_dataset_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Data root to write.")
@click.option("--n", "n", default=4, show_default=True, type=click.IntRange(1), help="Number of frames.")
@click.option("--size", default="64x128", show_default=True, help="Frame size HxW.")
@click.option("--seed", default=0, show_default=True, type=int)
@_layout_option("Layout of the manifest to write [default: the dataset's first].")
def datasets_synth(dataset, out, n, size, seed, layout):
    """Write a tiny synthetic dataset in a real layout, with real encoded files (one seed
    gives the same frames in every layout).

    \b
    Example:
      extract datasets synth --dataset smiyc_ro21 --layout smiyc_release --out /tmp/data --n 4 --size 64x128
    """
    try:
        hw = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    spec = _spec_with_layout(dataset, layout)
    lay = spec.layout(layout)
    paths = write_synth_dataset(spec, out, n, hw, seed=seed, layout=lay)
    click.echo(f"wrote {len(paths)} {dataset} frames in layout {lay.name} under {out / lay.folders[0]}")


def _model_option(f):
    return click.option("--model", required=True, type=click.Choice(["erfnet", "eomt"]),
                        help="erfnet: per-pixel logits; eomt: per-query class and mask logits.")(f)


@main.command()
@click.option("--model", required=True, callback=check_model,
              help="erfnet (per-pixel logits), eomt or mask2former (per-query class and mask logits), "
                   "python:MODULE:FUNCTION (any pixel model, from a factory) or an installed plugin "
                   "(`extract models` lists them).")
@_dataset_option
@click.option("--data-root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that holds the dataset folder.")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Checkpoint as released by the authors (erfnet_pretrained.pth, EoMT pytorch_model.bin; "
                   "Mask2Former: a save_pretrained folder or a hub id; a factory: the file it reads).")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="A setting of the model (repeatable): mask2former semantic_inference=transformers|detectron2; "
                   "a factory's declaration fields (input_height, void_channel, mean=a/b/c, ...).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Output cache (default caches/<model>/<dataset>.zarr).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available, else the CPU; the choice is printed), cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast dtype on CUDA (CPU always runs fp32).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Frames per forward pass.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="DataLoader decode workers.")
@click.option("--writer-threads", default=None, type=click.IntRange(1),
              help="Threads compressing and writing chunks [default: half the CPUs, 4 to 16].")
@click.option("--shard", default=None, metavar="I/N", help="Process frames i with i % N == I (several jobs, one cache).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Only the first N frames (in id order); a later run with a larger or no --limit continues the cache.")
@click.option("--input-height", type=click.IntRange(8), default=None,
              help="ERFNet and factory pixel models: short side of the model input (ERFNet default 512, as trained).")
@click.option("--compression", type=click.Choice(list(COMPRESSION)), default=DEFAULT_COMPRESSION,
              show_default=True, help="Chunk codec (Blosc + byte shuffle; crc32c always): zstd3 smallest, "
                                      "lz4 ~6x faster to write; a new cache only.")
@click.option("--hflip", is_flag=True,
              help="Also run the model on each horizontally flipped image and store those outputs beside the "
                   "normal ones (twice the model time and cache size), for the flip-averaged scorers (m2a_flip).")
@click.option("--overwrite", is_flag=True, help="Delete an existing cache at --cache and start over.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_copy_options
def run(model, dataset, data_root, checkpoint, model_options, cache, device, dtype, batch_size, workers, writer_threads,
        shard, limit, input_height, compression, hflip, overwrite, no_progress, layout, include_excluded,
        skip_unexpected):
    """Run a model once over a dataset and store its raw outputs in a Zarr cache.

    Resumable: rerunning the same command skips frames already done. Several jobs can
    fill one cache with --shard I/N (e.g. a SLURM array with --shard $SLURM_ARRAY_TASK_ID/N).

    \b
    Example:
      extract run --model eomt --dataset fs_static --data-root Validation_Dataset/ \\
          --checkpoint pytorch_model.bin --device cuda --dtype bf16 --batch-size 4 --workers 8
    """
    with heavy_imports():
        from extract.run import parse_shard, run_extraction

    try:
        parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None
    options = parse_model_options(model_options)
    _spec_with_layout(dataset, layout)
    summary = run_extraction(
        model, dataset, data_root, checkpoint, cache=cache, device=device, dtype=dtype, batch_size=batch_size,
        workers=workers, writer_threads=writer_threads, shard=shard, limit=limit, overwrite=overwrite,
        input_height=input_height, compression=compression, progress=not no_progress, log=lambda m: click.echo(m, err=True),
        layout=layout, include_excluded=include_excluded, skip_unexpected=skip_unexpected, hflip=hflip,
        model_options=options,
    )
    click.echo(summary.line())
    if summary.interrupted:
        click.echo("interrupted: frames written so far are done; rerun the same command to continue", err=True)
        sys.exit(130)


@main.command()
@_model_option
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--batches", default=8, show_default=True, type=click.IntRange(1), help="Batches timed per stage.")
@click.option("--size", default="512x1024", show_default=True, help="ERFNet input HxW (EoMT: the checkpoint's crop).")
@click.option("--writer-threads", default=None, type=click.IntRange(1),
              help="Compress-and-write threads [default: half the CPUs, 4 to 16].")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Released checkpoint (default: random weights of the full-size model).")
@click.option("--small", is_flag=True, help="EoMT: a small ViT-S / 64 px model instead of EoMT-L 1024 (CPU smoke test).")
@click.option("--compression", type=click.Choice(list(COMPRESSION)), default=DEFAULT_COMPRESSION, show_default=True)
def bench(model, device, dtype, batch_size, batches, size, writer_threads, checkpoint, small, compression):
    """Time forward pass, host copy, compression, storage write, and the overlapped pipeline.

    \b
    Example:
      extract bench --model eomt --device cuda --dtype bf16 --batch-size 4
    """
    from extract.bench import bench_extraction

    try:
        h, w = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    net = None
    if checkpoint is not None:
        from extract.models import load_model

        net, _ = load_model(model, checkpoint, device)
    times = bench_extraction(model, device, batch_size, batches, h, w, dtype, writer_threads,
                             size="small" if small else "full", net=net, compression=compression)
    for line in times.lines():
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
