"""Which cells ``analyze compare`` compares, the check that they pool the same frames, and the
tidy rows it gives.

A cell is one key of :data:`schemas.side_tables.SIDE_KEY` (run, model, dataset, scorer, T, temp
target, protocol, frame rule): the rows of its anomaly metrics in ``results.parquet`` and the
per-frame data the scoring kept (:mod:`analyze.compare.framedata`). Two cells are compared on
the same frames only: the same dataset, protocol and frame rule, and the same pooled frame ids
in the same order (cells of two checkpoints come from two caches of one dataset; that is
allowed, their frames are the same images). Anything else is refused with one line.
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analyze.metrics.bootstrap import resample_counts
from analyze.compare.paired import METRICS, cell_resamples, paired_difference
from schemas.results import ResultsError
from schemas.side_tables import SIDE_KEY

Cell = tuple  # the values of SIDE_KEY
SIDES = ("run", "model", "scorer", "temperature", "temp_target")  # what differs between two cells
PAIR_COLUMNS = (("dataset", "protocol", "frames", "metric") + tuple(f"{s}_a" for s in SIDES) + ("value_a",)
                + tuple(f"{s}_b" for s in SIDES) + ("value_b", "difference", "ci_low", "ci_high", "p_value",
                                                      "n_resamples", "n_frames", "level", "seed"))


def describe(cell: Cell) -> str:
    c = dict(zip(SIDE_KEY, cell))
    return (f"{c['run']}/{c['model']} {c['dataset']} {c['scorer']} T={float(c['temperature']):g} "
            f"{c['temp_target']} {c['protocol']} frames={c['frames']}")


def cell_key(row: Mapping) -> Cell:
    return tuple(float(row[k]) if k == "temperature" else str(row[k]) for k in SIDE_KEY)


def kept_cells(results: pd.DataFrame, frame_data: pd.DataFrame) -> dict[Cell, dict]:
    """``{cell: {"values": {metric: value}, "data": frame data row}}`` for every cell with rows in
    ``results`` (not temperature selections) and per-frame data whose cache digest is that of
    its rows (data of an older scoring of the key is ignored)."""
    rows = results[results["metric"].isin(METRICS)]
    if "selected_on" in rows:
        rows = rows[rows["selected_on"].astype(str) == ""]
    data = {cell_key(r): r for _, r in frame_data.iterrows()}
    out: dict[Cell, dict] = {}
    for _, r in rows.iterrows():
        key = cell_key(r)
        kept = data.get(key)
        if kept is None or str(kept["cache_digest"]) != str(r["cache_digest"]):
            continue
        out.setdefault(key, {"values": {}, "data": kept})["values"][str(r["metric"])] = float(r["value"])
    return out


def check_same_frames(cells: Sequence[Cell], kept: Mapping[Cell, dict]) -> None:
    """ResultsError (one line) unless every cell pools the frames of the first (see module)."""
    first = cells[0]
    ids = list(kept[first]["data"]["frame_ids"])
    for c in cells[1:]:
        a, b = dict(zip(SIDE_KEY, first)), dict(zip(SIDE_KEY, c))
        why = next((f"{k} {a[k]} vs {b[k]}" for k in ("dataset", "protocol", "frames") if a[k] != b[k]), None)
        other = list(kept[c]["data"]["frame_ids"])
        if why is None and other != ids:
            why = (f"{len(ids)} vs {len(other)} pooled frames (caches {kept[first]['data']['cache_digest']} "
                   f"and {kept[c]['data']['cache_digest']})")
        if why is not None:
            raise ResultsError(f"cannot compare {describe(first)} with {describe(c)}: they are not scored on the "
                               f"same frames ({why}); a paired comparison needs the same frames")


def resamples(cells: Sequence[Cell], kept: Mapping[Cell, dict], n_boot: int, seed: int) -> dict[Cell, dict]:
    """Each cell's metrics on the same ``n_boot`` frame resamples (one per cell, reused by every
    pair: :func:`analyze.compare.paired.cell_resamples`)."""
    check_same_frames(cells, kept)
    n_frames = len(kept[cells[0]]["data"]["frame_ids"])
    w = resample_counts(n_frames, n_boot, seed)  # (n_boot, F), the same for every cell
    out = {}
    for c in dict.fromkeys(cells):
        d = kept[c]["data"]
        out[c] = cell_resamples(c[SIDE_KEY.index("protocol")], np.asarray(d["offsets"]), np.asarray(d["bins"]),
                                np.asarray(d["pos"]), np.asarray(d["neg"]), w)
    return out


def compare_pairs(pairs: Sequence[tuple[Cell, Cell]], kept: Mapping[Cell, dict], n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Tidy rows (:data:`PAIR_COLUMNS`), one per pair and metric: ``A - B`` with its paired
    interval and p-value (:func:`analyze.compare.paired.paired_difference`)."""
    cells = list(dict.fromkeys(c for p in pairs for c in p))
    if not cells:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    res = resamples(cells, kept, n_boot, seed)
    n_frames = len(kept[cells[0]]["data"]["frame_ids"])
    rows = []
    for a, b in pairs:
        ca, cb = dict(zip(SIDE_KEY, a)), dict(zip(SIDE_KEY, b))
        for m in METRICS:
            va, vb = kept[a]["values"].get(m), kept[b]["values"].get(m)
            if va is None or vb is None:
                continue
            rows.append({**{k: ca[k] for k in ("dataset", "protocol", "frames")}, "metric": m,
                         **{f"{s}_a": ca[s] for s in SIDES}, "value_a": va, **{f"{s}_b": cb[s] for s in SIDES},
                         "value_b": vb, **paired_difference(res[a][m], res[b][m], va, vb, level),
                         "n_frames": n_frames, "level": level, "seed": seed})
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def all_pairs(cells: Sequence[Cell]) -> list[tuple[Cell, Cell]]:
    """Every pair ``(cells[i], cells[j])``, ``i < j`` (a cell given twice is compared with itself)."""
    return list(combinations(cells, 2))


def missing_data(cell: Cell, results_path: str) -> ResultsError:
    return ResultsError(f"{results_path}: no per-frame data kept for {describe(cell)}: score it with "
                        "`analyze score --bootstrap N` (which keeps it beside the results) and compare again")
