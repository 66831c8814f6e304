"""Option parsing and checks shared by the ``analyze`` commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import click


def parse_temps(ctx, param, value):
    """Click callback: ``--temps`` as sorted unique temperatures with 1.0 (:func:`analyze.scorers.parse_temperatures`)."""
    from analyze.scorers import parse_temperatures

    try:
        return parse_temperatures(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_scorers(ctx, param, value):
    """Click callback: ``--scorers`` checked against the registry, passed on as given."""
    from analyze.scorers import get_scorers

    try:
        get_scorers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def parse_name(ctx, param, value):
    """Click callback: ``--name`` checked as a run name (:func:`schemas.results.parse_run`)."""
    from schemas.results import parse_run

    try:
        return None if value is None else parse_run(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_device(ctx, param, value: str) -> str:
    """``--device``: ``cpu``, ``cuda`` (refused where torch sees no CUDA device) or ``auto`` (CUDA
    where there is one, else the CPU) -> ``cpu`` or ``cuda``."""
    if value == "cpu":
        return value
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if value == "auto":
        return "cpu"
    raise click.BadParameter("no CUDA device is available here (torch.cuda.is_available() is False); "
                             "use --device cpu or auto")


def parse_storage_options(items: Sequence[str]) -> dict[str, Any]:
    """``["anon=true", "key=abc"]`` -> dict (true/false/ints parsed)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--storage-option must be key=value, got {item!r}")
        k, v = item.split("=", 1)
        low = v.lower()
        out[k] = True if low == "true" else False if low == "false" else int(v) if v.isdigit() else v
    return out


def check_writable(out) -> None:
    """A usage error unless the folder that will hold ``out`` exists (it is made) and is writable."""
    folder = Path(out).resolve().parent
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot create folder {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise click.ClickException(f"{out}: folder {folder} is not writable")


def summary_table(df) -> str:
    """Compact pivot: one row per (run, model, dataset, scorer, T) and whichever of target,
    protocol, frames and selection vary; metrics in percent. Two rows for one cell raise."""
    from analyze.report.cells import one_row_each
    from schemas.results import normalise

    if df.empty:
        return "(no rows)"
    df = normalise(df)
    index = ["run", "model", "dataset", "scorer", "temperature"]
    index += [c for c in ("temp_target", "protocol", "frames", "selected_on") if df[c].nunique() > 1]
    d = one_row_each(df.astype({c: str for c in index if c != "temperature"}), index + ["metric"])
    pivot = d.pivot(index=index, columns="metric", values="value")
    return (pivot * 100).round(2).to_string(na_rep="-")
