"""The lines ``make demo`` prints under Table 1: chance level and each model's best scorer.

The chance level of a dataset is its anomaly-pixel fraction ``n_pos / (n_pos + n_neg)``
over the scored (non-void) pixels: the expected AuPRC of a scorer that ranks pixels at
random. Each model's best AuPRC at T = 1 (Table 1's temperature) is quoted as a multiple of
it, so the demo's numbers read the same on machines whose floating point makes training,
and hence the exact values, differ.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from schemas.results import read_results
from schemas.side_tables import side_table_paths


def frames_path_for(results_path: str | os.PathLike) -> Path:
    """``results_frames.parquet`` beside ``results.parquet`` (as ``analyze score`` writes it)."""
    return side_table_paths(results_path)[0]


_PER_FRAME = ("frame", "ap", "n_pos", "n_neg")


def chance_levels(frames: pd.DataFrame) -> dict[str, float]:
    """Anomaly-pixel fraction per dataset over all its scored frames, from the per-frame
    pixel counts of one result of each dataset (every scorer of a cache counts the same
    pixels; rows restricted to frames with anomalies are left out)."""
    if "frames" in frames:
        frames = frames[frames["frames"].astype(str) == "all"]
    out = {}
    for dataset, d in frames.groupby("dataset", observed=True, sort=True):
        key = [c for c in d.columns if c not in _PER_FRAME and c != "dataset"]
        first = d[key].astype(str).iloc[0]
        d = d[(d[key].astype(str) == first).all(axis=1)]
        pos, neg = int(d.n_pos.sum()), int(d.n_neg.sum())
        if pos + neg:
            out[str(dataset)] = pos / (pos + neg)
    return out


def best_scorers(results: pd.DataFrame, temperature: float = 1.0, protocol: str = "exact") -> pd.DataFrame:
    """Per (dataset, model): the scorer with the highest AuPRC at ``temperature`` over all
    frames (Table 1's rows of ``results``), columns ``dataset, model, scorer, value``."""
    r = results[(results.metric == "auprc") & (results.protocol == protocol)
                & ((results.temperature - temperature).abs() < 1e-9)]
    r = r[r.selected_on.astype(str) == ""] if "selected_on" in r else r
    r = r[r["frames"].astype(str) == "all"] if "frames" in r else r
    r = r.sort_values(["dataset", "model", "value", "scorer"], ascending=[True, True, False, True])
    best = r.groupby(["dataset", "model"], observed=True, sort=True).head(1)
    return best[["dataset", "model", "scorer", "value"]].astype({"dataset": str, "model": str, "scorer": str})


def summary_lines(results_path: str | os.PathLike, temperature: float = 1.0) -> list[str]:
    """Chance level and, per model, best AuPRC as a multiple of it, for each anomaly
    dataset of ``results_path`` (values in %; names as in ``results.parquet``)."""
    results = read_results(results_path)
    chance = chance_levels(pd.read_parquet(frames_path_for(results_path)))
    lines = []
    best = best_scorers(results, temperature)
    for dataset, level in chance.items():
        lines.append(f"{dataset}: chance level {100 * level:.2f} % "
                     "(anomaly pixel fraction = the AuPRC of a random scorer)")
        for row in best[best.dataset == dataset].itertuples():
            lines.append(f"  {row.model}: best AuPRC at T = {temperature:g} {100 * row.value:.2f} % "
                         f"({row.scorer}) = {row.value / level:.1f}x chance")
    return lines
