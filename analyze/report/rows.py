"""Which results rows a table or figure of the report shows.

Anomaly-metric rows of one protocol and one frames rule, checked to come from one cache per
(run, model, dataset) (:mod:`analyze.report.cells`); their (model, run, scorer) keys in Table 1's
order; the mIoU row of a model at a temperature; the temperature grids of Table 2 and the
T figures.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analyze.report.cells import T_ATOL, at_t, checked, choose_frames, one_row_each, plain, prefer_target, target_rank
from analyze.report.names import MODELS, TABLE_METRICS, default_miou_dataset, model_name, scorer_name, scorers_in_order
from schemas.results import SEMANTIC_SCORER, ResultsError


def ordered(present, canonical: Sequence[str]) -> list[str]:
    """``canonical`` items that are present, then the others sorted."""
    present = set(present)
    return [x for x in canonical if x in present] + sorted(present - set(canonical))


def anomaly_protocols(df: pd.DataFrame) -> list[str]:
    """The protocols of the anomaly-metric (not semantic) rows."""
    return sorted(set(df.loc[df["scorer"] != SEMANTIC_SCORER, "protocol"].astype(str)))


def anomaly_rows(df: pd.DataFrame, protocol: str, metrics=TABLE_METRICS, frames: str | None = None) -> pd.DataFrame:
    """Plain anomaly-metric rows of ``protocol`` and one frames rule (``frames``, default
    ``all`` when present), checked to come from one cache per (run, model, dataset)."""
    d = plain(df)
    d = d[(d["scorer"] != SEMANTIC_SCORER) & (d["dataset"] != default_miou_dataset()) & d["metric"].isin(metrics)]
    out = d[d["protocol"] == protocol]
    if out.empty:
        have = anomaly_protocols(d) or ["none"]
        raise ResultsError(f"no anomaly-metric rows ({', '.join(metrics)}) for protocol {protocol!r}; "
                           f"protocols present: {', '.join(have)}")
    out = out[out["frames"] == choose_frames(out, frames)]
    return checked(out, f"protocol {protocol}")


def runs_of(rows: pd.DataFrame, model: str) -> list[str]:
    """The runs of ``model`` among ``rows``, by name."""
    return sorted(set(rows.loc[rows["model"] == model, "run"]))


def table_keys(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(model, run, scorer) in Table 1 order: models, then runs by name, then scorers."""
    keys = []
    for m in ordered(rows["model"], list(MODELS)):
        for r in runs_of(rows, m):
            present = set(rows.loc[(rows["model"] == m) & (rows["run"] == r), "scorer"])
            keys += [(m, r, s) for s in scorers_in_order(present)]
    return keys


def frames_note(frames: str) -> str:
    return "" if frames == "all" else "; only frames with an anomaly pixel"


def miou_row(df: pd.DataFrame, model: str, run: str, t: float, temp_target: str | None,
              protocol: str, miou_dataset: str) -> pd.Series | None:
    """The mIoU row of (model, run) at ``t``; the T = 1 row when T does not change its segmentation.

    ``analyze score`` writes mIoU per T only for EoMT with the query target; for a pixel model
    or the pixel target the segmentation is the same at every T, so the T = 1 row holds.
    Rows of several protocols or targets hold the same confusion matrix: their values must
    agree (ResultsError naming two that do not); the row of ``protocol`` is preferred.
    """
    d = plain(df)
    d = d[(d["model"] == model) & (d["run"] == run) & (d["scorer"] == SEMANTIC_SCORER) & (d["metric"] == "miou")
          & (d["dataset"] == miou_dataset)]
    if d.empty:
        return None
    checked(d, "mIoU")
    at = at_t(d, t)
    if abs(t - 1.0) > T_ATOL:
        if temp_target is not None:
            at = at[at["temp_target"] == temp_target]
        if at.empty and temp_target != "query":
            at = at_t(d, 1.0)  # both targets give the same segmentation at T = 1
    if at.empty:
        return None
    if at["value"].nunique(dropna=False) > 1:
        one_row_each(at, ["model", "run", "dataset"], f"the mIoU cell of {model_name(model)} ({run}) at T = {t:g}")
    at = at.assign(_p=(at["protocol"] != protocol).astype(int), _r=at["temp_target"].map(target_rank))
    return at.sort_values(["_p", "_r"], kind="stable").iloc[0]


def temperature_grids(df: pd.DataFrame, protocol: str = "exact",
                      frames: str | None = None) -> list[tuple[str, str, str, str]]:
    """(model, run, scorer, temp_target) with AuPRC/FPR95 at more than one T, in Table 1 order."""
    try:
        rows = anomaly_rows(df, protocol, frames=frames)
    except ResultsError:
        return []
    out = []
    for m, r, s in table_keys(rows):
        rs = rows[(rows["model"] == m) & (rows["run"] == r) & (rows["scorer"] == s)]
        for tt in sorted(set(rs["temp_target"]), key=target_rank):
            if rs.loc[rs["temp_target"] == tt, "temperature"].nunique() > 1:
                out.append((m, r, s, tt))
    return out


def grid_rows(df: pd.DataFrame, model: str, scorer: str, protocol: str, temp_target: str | None,
               metrics=TABLE_METRICS, run: str | None = None,
               frames: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """(rows, temp_target, run) of one temperature grid; ``run=None`` needs the (model,
    scorer) to have grids of one run only."""
    rows = anomaly_rows(df, protocol, metrics, frames)
    rows = rows[(rows["model"] == model) & (rows["scorer"] == scorer)]
    grids = [g for g in temperature_grids(df, protocol, frames) if (g[0], g[2]) == (model, scorer)]
    if temp_target is not None:
        grids = [g for g in grids if g[3] == temp_target]
    if run is not None:
        grids = [g for g in grids if g[1] == run]
    if not grids:
        temps = sorted(set(rows["temperature"].astype(float)))
        have = ", ".join(f"{t:g}" for t in temps) or "none"
        raise ResultsError(
            f"no temperature grid for {model_name(model)} {scorer_name(scorer)} (protocol {protocol}"
            f"{', target ' + temp_target if temp_target else ''}{', run ' + run if run else ''}): "
            f"temperatures present: {have}; run `analyze score --temps 0.5,0.75,1.1`")
    runs = sorted({g[1] for g in grids})
    if len(runs) > 1:
        raise ResultsError(f"{model_name(model)} {scorer_name(scorer)} has temperature grids for several runs "
                           f"({', '.join(runs)}): choose one")
    _, run, _, target = grids[0]
    rows = rows[rows["run"] == run]
    # T = 1 is the same for both targets: accept it from either
    same = rows["temp_target"] == target
    at_one = np.isclose(rows["temperature"].astype(float), 1.0, rtol=0, atol=T_ATOL)
    rows = prefer_target(rows[same | at_one], ["dataset", "metric", "temperature"], "one Table 2 cell")
    return rows, target, run


def has_ci(df: pd.DataFrame) -> bool:
    """Whether some row has a bootstrap interval (both ``ci_low`` and ``ci_high``)."""
    return bool(df[["ci_low", "ci_high"]].notna().all(axis=1).any()) if {"ci_low", "ci_high"} <= set(df) else False
