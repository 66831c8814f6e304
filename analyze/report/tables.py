"""The paper's Tables 1 and 2 as pandas DataFrames (values in %, or ``"v [lo, hi]"`` strings)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analyze.report.cells import at_t, one_row_each, prefer_target, series_labels
from analyze.report.names import (METRIC_NAMES, TABLE_METRICS, TARGET_NOTES, dataset_name, dataset_order,
                                  default_miou_dataset, model_name, scorer_name)
from analyze.report.text import UNDEFINED
from analyze.report.rows import (anomaly_rows, frames_note, grid_rows, miou_row, ordered, runs_of, table_keys,
                                 temperature_grids)
from schemas.results import ResultsError


def _cell(row: pd.Series | None, ci: bool):
    """Percent with two decimals (float), or the ``"v [lo, hi]"`` string when ``ci``; a row
    whose value is undefined (NaN) is :data:`UNDEFINED`, no row at all is NaN (or ``""``)."""
    if row is None:
        return float("nan") if not ci else ""
    if pd.isna(row["value"]):
        return UNDEFINED
    v = float(np.round(100.0 * float(row["value"]), 2))
    if not ci:
        return v
    lo, hi = row.get("ci_low", float("nan")), row.get("ci_high", float("nan"))
    if pd.isna(lo) or pd.isna(hi):
        return f"{v:.2f}"
    return f"{v:.2f} [{100 * float(lo):.1f}, {100 * float(hi):.1f}]"


def _columns(datasets: Sequence[str], miou: str) -> pd.MultiIndex:
    cols = [(dataset_name(miou), METRIC_NAMES["miou"])]
    cols += [(dataset_name(d), METRIC_NAMES[m]) for d in datasets for m in TABLE_METRICS]
    return pd.MultiIndex.from_tuples(cols, names=["dataset", "metric"])


def _lookup(rows: pd.DataFrame) -> dict:
    one_row_each(rows, ["dataset", "metric"])
    return {(r.dataset, r.metric): r for r in (row for _, row in rows.iterrows())}


def _fill(table_rows: list[tuple], datasets: Sequence[str], cells_of, ci: bool) -> list[list]:
    out = []
    for key in table_rows:
        miou, by = cells_of(key)
        line = [_cell(miou, ci)]
        for d in datasets:
            for m in TABLE_METRICS:
                line.append(_cell(by.get((d, m)), ci))
        out.append(line)
    return out


def table1(df: pd.DataFrame, protocol: str = "exact", temperature: float = 1.0, ci: bool = False,
           miou_dataset: str | None = None, frames: str | None = None) -> pd.DataFrame:
    """The paper's Table 1: rows (Model, Method), columns (dataset, metric), values in %.

    One row per (model, run, scorer); the Model cell is the model's name, followed by the run
    name when the model has several runs. Cells are ``round(100 * value, 2)`` (NaN where a
    row is missing) or, with ``ci=True``, strings ``"61.39 [59.1, 63.0]"``. The mIoU column is
    the semantic row of the same (model, run) on ``miou_dataset`` (the same for every scorer).
    Raises ``ResultsError`` when no AuPRC/FPR95 row exists for ``protocol`` at ``temperature``,
    or when two rows would fill one cell (naming both).
    """
    miou_dataset = miou_dataset or default_miou_dataset()
    rows = anomaly_rows(df, protocol, frames=frames)
    rule = str(rows["frames"].iloc[0])
    temps = sorted(set(rows["temperature"].astype(float)))
    rows = at_t(rows, temperature)
    if rows.empty:
        raise ResultsError(f"no anomaly-metric rows at T = {temperature:g} (protocol {protocol}); "
                           f"temperatures present: {', '.join(f'{t:g}' for t in temps)}")
    rows = prefer_target(rows, ["model", "run", "dataset", "scorer", "metric"], "one Table 1 cell")
    datasets = ordered(rows["dataset"], dataset_order())
    keys = table_keys(rows)
    labels = series_labels([(m, r) for m, r, _ in keys], model_name)

    def cells_of(key):
        m, r, s = key
        sub = rows[(rows["model"] == m) & (rows["run"] == r) & (rows["scorer"] == s)]
        target = str(sub["temp_target"].iloc[0]) if len(sub) else None
        return miou_row(df, m, r, temperature, target, protocol, miou_dataset), _lookup(sub)

    index = pd.MultiIndex.from_tuples([(labels[(m, r)], scorer_name(s)) for m, r, s in keys],
                                      names=["Model", "Method"])
    table = pd.DataFrame(_fill(keys, datasets, cells_of, ci), index=index, columns=_columns(datasets, miou_dataset))
    table.attrs["caption"] = (
        f"Anomaly segmentation at T = {temperature:g} (protocol {protocol}{frames_note(rule)}), in %. "
        f"mIoU on {dataset_name(miou_dataset)}: one value per model, since a scorer does not change "
        f"the segmentation. ↑ higher is better, ↓ lower is better."
        + (" Brackets: bootstrap confidence interval." if ci else "")
    )
    table.attrs["keys"] = keys
    table.attrs["cells"] = [(None, "miou")] + [(d, m) for d in datasets for m in TABLE_METRICS]
    table.attrs.update(protocol=protocol, frames=rule, row_cells=[(m, r, s, float(temperature), None) for m, r, s in keys])
    table.attrs["no_bold"] = [table.columns[0]]  # one mIoU per model, repeated: bold would mark a model
    return table


def table2(df: pd.DataFrame, model: str = "eomt", scorer: str = "msp", protocol: str = "exact",
           temp_target: str | None = None, ci: bool = False, miou_dataset: str | None = None,
           frames: str | None = None, run: str | None = None) -> pd.DataFrame:
    """The paper's Table 2: one (model, scorer) at every temperature; rows T, Table 1's columns.

    ``temp_target=None`` takes the query target when it has a grid, else the first one that
    has. ``run=None`` shows every run with a grid: rows (Run, T) when there are several. mIoU
    is per T where T changes the segmentation (EoMT, query target), otherwise the T = 1
    value. Raises ``ResultsError`` when there is no temperature grid.
    """
    miou_dataset = miou_dataset or default_miou_dataset()
    if run is None:
        runs = sorted({g[1] for g in temperature_grids(df, protocol, frames)
                       if (g[0], g[2]) == (model, scorer) and temp_target in (None, g[3])}) or [None]
    else:
        runs = [run]
    parts = [grid_rows(df, model, scorer, protocol, temp_target, run=r, frames=frames) for r in runs]
    datasets = ordered(set().union(*(set(p[0]["dataset"]) for p in parts)), dataset_order())
    keys, cells = [], {}
    for rows, target, r in parts:
        for t in sorted(set(rows["temperature"].astype(float))):
            keys.append((r, t))
            cells[(r, t)] = (miou_row(df, model, r, t, target, protocol, miou_dataset), _lookup(at_t(rows, t)))
    target, rule = parts[0][1], str(parts[0][0]["frames"].iloc[0])
    label = model_name(model)
    if len(parts) > 1:
        index = pd.MultiIndex.from_tuples(keys, names=["Run", "T"])
    else:
        index = pd.Index([t for _, t in keys], name="T")
        if len(runs_of(anomaly_rows(df, protocol, frames=frames), model)) > 1:
            label = f"{label} ({parts[0][2]})"
    table = pd.DataFrame(_fill(keys, datasets, cells.get, ci), index=index, columns=_columns(datasets, miou_dataset))
    table.attrs["caption"] = (
        f"{label} {scorer_name(scorer)} at each temperature T (protocol {protocol}{frames_note(rule)}; "
        f"{TARGET_NOTES.get(target, 'target ' + target)}), in %. T = 1 is the baseline. "
        f"↑ higher is better, ↓ lower is better." + (" Brackets: bootstrap confidence interval." if ci else "")
    )
    table.attrs["cells"] = [(None, "miou")] + [(d, m) for d in datasets for m in TABLE_METRICS]
    table.attrs.update(protocol=protocol, frames=rule, row_cells=[(model, r, scorer, t, target) for r, t in keys])
    return table
