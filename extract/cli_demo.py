"""``extract demo``: the toy road world and the two toy trainings behind ``make demo``, and its
chance-level summary (wiring only; the work is in :mod:`extract.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from extract.datasets.synth import parse_size
from extract.demo import settings as demo_settings
from extract.demo.progress import DEFAULT_EVERY


@click.group()
def demo():
    """The toy road world and the two toy models behind `make demo` (CPU, deterministic).

    \b
    Example:
      extract demo world --out demo_out/world && extract demo train --data demo_out/world --out demo_out/erfnet.pth
      extract demo train-eomt --data demo_out/world --out demo_out/eomt_demo.ckpt
    """


@demo.command("world")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--n-train", default=320, show_default=True, type=click.IntRange(1))
@click.option("--n-val", default=12, show_default=True, type=click.IntRange(1))
@click.option("--n-anomaly", default=20, show_default=True, type=click.IntRange(1))
@click.option("--size", default="128x256", show_default=True, help="HxW of the rendered frames.")
def demo_world(out, seed, n_train, n_val, n_anomaly, size):
    """Render a procedural road world: a training set, an in-distribution val set (Cityscapes
    layout) and an anomaly test set with objects never seen in training (RoadAnomaly layout).

    \b
    Example:
      extract demo world --out demo_out/world --seed 0
    """
    from extract.demo.world import write_world

    try:
        hw = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    info = write_world(out, seed=seed, n_train=n_train, n_val=n_val, n_anomaly=n_anomaly, size=hw)
    click.echo(f"world written to {out}: " + ", ".join(f"{k} {v}" for k, v in info.items() if not isinstance(v, (dict, list))))


_progress_every_option = click.option(
    "--progress-every", default=DEFAULT_EVERY, show_default=True, type=click.FloatRange(0), metavar="SECONDS",
    help="Seconds between progress lines (step, loss, elapsed, time left) on stderr; 0: every step.")


@demo.command("train")
@click.option("--data", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="World folder from `extract demo world` (its train/ split is used).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write.")
@click.option("--steps", default=demo_settings.ERFNET["steps"], show_default=True, type=click.IntRange(1))
@click.option("--height", default=demo_settings.ERFNET["height"], show_default=True, type=click.IntRange(8),
              help="Training input height.")
@click.option("--batch-size", default=demo_settings.ERFNET["batch_size"], show_default=True, type=click.IntRange(1))
@click.option("--loss", type=click.Choice(["ce", "logitnorm"]), default="ce", show_default=True,
              help="Cross-entropy, or Logit Normalisation (Wei et al. 2022).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=demo_settings.ERFNET["threads"], show_default=True, type=click.IntRange(1),
              help="Torch threads (the weights depend on it).")
@_progress_every_option
def demo_train(data, out, steps, height, batch_size, loss, seed, threads, progress_every):
    """Train a small ERFNet from scratch on the CPU; save it in the official checkpoint format.

    \b
    Example:
      extract demo train --data demo_out/world --out demo_out/erfnet_demo.pth --steps 600
    """
    from extract.demo.train_erfnet import train_erfnet

    stats = train_erfnet(_train_root(data), out, steps=steps, height=height, batch_size=batch_size, loss=loss, seed=seed,
                         threads=threads, log=lambda m: click.echo(m, err=True), log_seconds=progress_every,
                         log_label="erfnet")
    _echo_checkpoint(out, stats)


def _train_root(data: Path) -> Path:
    """The world's train/ split, or ``data`` itself when it has none."""
    return data / "train" if (data / "train").is_dir() else data


def _echo_checkpoint(out: Path, stats: dict) -> None:
    """One line: the checkpoint written and its training's final figures."""
    click.echo(f"checkpoint {out}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in stats.items() if not isinstance(v, dict)))


@demo.command("train-eomt")
@click.option("--data", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="World folder from `extract demo world` (its train/ split is used).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write.")
@click.option("--steps", default=demo_settings.EOMT["steps"], show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=demo_settings.EOMT["batch_size"], show_default=True, type=click.IntRange(1))
@click.option("--lr", default=demo_settings.EOMT["lr"], show_default=True, type=click.FloatRange(0, min_open=True),
              help="AdamW peak learning rate.")
@click.option("--queries", default=demo_settings.EOMT["num_q"], show_default=True, type=click.IntRange(1),
              help="Number of queries.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=demo_settings.EOMT["threads"], show_default=True, type=click.IntRange(1),
              help="Torch threads (the weights depend on it).")
@_progress_every_option
def demo_train_eomt(data, out, steps, batch_size, lr, queries, seed, threads, progress_every):
    """Train a small EoMT from scratch on the CPU and save it in the released Lightning format.

    The released architecture (DINOv2-style ViT with registers, queries joined before the
    last 2 of 6 blocks, class head with no-object, mask MLP, upscale blocks) at width 128,
    patch 16, 128-pixel crops; EoMT's loss (Hungarian matching, CE incl. no-object, BCE +
    Dice). `extract run --model eomt` reads its size from the checkpoint.

    \b
    Example:
      extract demo train-eomt --data demo_out/world --out demo_out/eomt_demo.ckpt --steps 1000
    """
    from extract.demo.train_eomt import train_eomt

    stats = train_eomt(_train_root(data), out, steps=steps, batch_size=batch_size, lr=lr, num_q=queries, seed=seed,
                       threads=threads, log=lambda m: click.echo(m, err=True), log_seconds=progress_every,
                       log_label="eomt")
    _echo_checkpoint(out, stats)


@demo.command("summary")
@click.option("--results", required=True, type=click.Path(dir_okay=False, exists=True),
              help="results.parquet from `analyze score` (results_frames.parquet must be beside it).")
def demo_summary(results):
    """Print each anomaly dataset's chance level and every model's best AuPRC (T = 1) as a multiple of it.

    \b
    Example:
      extract demo summary --results demo_out/results.parquet
    """
    from extract.demo.summary import frames_path_for, summary_lines

    if not frames_path_for(results).is_file():
        raise click.ClickException(f"{frames_path_for(results)} not found (`analyze score` writes it beside {results})")
    for line in summary_lines(results):
        click.echo(line)
