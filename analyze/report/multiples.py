"""The report's compact figures: one file per (figure kind, dataset).

* :func:`plot_temperature_multiples`: for one model (run, temp target) and one dataset, small
  multiples of AuPRC and FPR95 against T, one panel per scorer that T changes; scorers whose
  values are the same at every T (:func:`t_invariant`, e.g. RbA on class logits it does not
  rescale) are left out and named in the figure's note;
* :func:`plot_dataset_bars`: for one dataset, AuPRC and FPR95 per (model, run, scorer) at T = 1
  on an axis fitted to the values, with the chance level drawn (a scorer that ranks pixels at
  random has AuPRC = the anomaly pixel fraction, FPR95 = 95 %).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analyze.report.cells import at_t, prefer_target, series_labels
from analyze.report.figures import _axis_label, _figure, _save, _style
from analyze.report.names import (METRIC_NAMES, TABLE_METRICS, TARGET_NOTES, dataset_name, default_miou_dataset,
                                  model_name, scorer_name)
from analyze.report.rows import anomaly_rows, grid_rows, miou_row, table_keys
from schemas.results import ResultsError

CHANCE_FPR95 = 0.95  # a random ranking: FPR = TPR everywhere


def t_invariant(rows: pd.DataFrame, atol: float = 1e-9) -> bool:
    """Whether every (dataset, metric) of one scorer's grid ``rows`` has one value at all T."""
    spread = rows.groupby(["dataset", "metric"], observed=True)["value"].agg(lambda v: np.ptp(v.to_numpy(float)))
    return bool((spread.fillna(0) <= atol).all())


def grid_panels(df: pd.DataFrame, model: str, run: str, target: str, scorers: Sequence[str], protocol: str,
                frames: str | None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """(``{scorer: its grid rows}`` of the scorers T changes, the scorers it does not change)."""
    panels, flat = {}, []
    for s in scorers:
        rows, _, _ = grid_rows(df, model, s, protocol, target, run=run, frames=frames)
        if t_invariant(rows):
            flat.append(s)
        else:
            panels[s] = rows
    return panels, flat


def _span(values: np.ndarray, min_span: float = 2.0) -> tuple[float, float]:
    """A y range (%) around the finite ``values``, at least ``min_span`` points wide (a difference of
    hundredths of a point must not fill the panel), within [0, 100]."""
    v = values[np.isfinite(values)]
    if not v.size:
        return 0.0, 100.0
    mid, half = (v.max() + v.min()) / 2, max(min_span, 1.15 * float(np.ptp(v))) / 2
    lo, hi = max(0.0, mid - half), min(100.0, mid + half)
    return (lo, max(hi, lo + min_span)) if hi - lo < min_span else (lo, hi)


def plot_temperature_multiples(panels: dict[str, pd.DataFrame], flat: Sequence[str], out_png: str | os.PathLike,
                               title: str, dataset: str, target: str,
                               miou: Sequence[tuple[float, float]] = ()) -> Path:
    """One panel per scorer of ``panels`` (:func:`grid_panels`): AuPRC (solid) and FPR95 (dashed),
    in %, against T on ``dataset``, and a last panel of the model's mIoU (``miou``: (T, value))
    where T changes the segmentation; the note under the figure names the scorers left out."""
    if not panels:
        raise ResultsError(f"{title}: T changes no scorer on {dataset_name(dataset)}")
    n = len(panels) + bool(miou)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig = _figure(2.6 * cols + 0.6, 2.2 * nrows + 0.9)
    axes = np.atleast_1d(fig.subplots(nrows, cols, sharex=True, squeeze=False)).ravel()
    handles: dict[str, object] = {}  # one legend entry per metric
    for ax, (s, rows) in zip(axes, panels.items()):
        rd = rows[rows["dataset"] == dataset]
        # each metric on its own axis fitted to its values (AuPRC left, FPR95 right): a shared
        # 0-100 axis would flatten the few points that T moves them
        for a, metric, style, colour in ((ax, "auprc", "-", "C0"), (ax.twinx(), "fpr95", "--", "C3")):
            r = rd[rd["metric"] == metric].sort_values("temperature")
            (handles[metric],) = a.plot(r["temperature"].astype(float), 100 * r["value"].astype(float), style,
                                        marker="o", markersize=3, color=colour, label=f"{METRIC_NAMES[metric]} (%)")
            a.tick_params(axis="y", labelsize=7, colors=colour)
            a.set_ylim(*_span(100 * r["value"].to_numpy(float)))
        ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(scorer_name(s), fontsize=9)
        ax.set_xlabel("T", fontsize=8, labelpad=1)
        ax.grid(True, alpha=0.3)
    if miou:
        ax = axes[len(panels)]
        t, v = zip(*sorted(miou))
        ax.plot(t, 100 * np.asarray(v, float), "-", marker="s", markersize=3, color="C2")
        ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(f"{METRIC_NAMES['miou']} (%, {dataset_name(default_miou_dataset())})", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(*_span(100 * np.asarray(v, float)))
        ax.set_xlabel("T", fontsize=8, labelpad=1)
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    temps = sorted(set(pd.concat(panels.values())["temperature"].astype(float)))
    if max(temps) / min(temps) > 4:
        axes[0].set_xscale("log")
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=2, fontsize=8)
    note = f"not shown (the same at every T): {', '.join(scorer_name(s) for s in flat)}" if flat else ""
    fig.suptitle(f"{title} on {dataset_name(dataset)}: AuPRC ↑ (left axis) and FPR95 ↓ (right axis) vs T "
                 f"({TARGET_NOTES.get(target, 'target ' + target)})" + (f"\n{note}" if note else ""), fontsize=9)
    return _save(fig, out_png)


def miou_series(df: pd.DataFrame, model: str, run: str, target: str, temps: Sequence[float],
                protocol: str) -> list[tuple[float, float]]:
    """(T, mIoU) of the model where T changes its segmentation (more than one value), else []."""
    pts = [(t, r["value"]) for t in temps
           if (r := miou_row(df, model, run, t, target, protocol, default_miou_dataset())) is not None
           and not pd.isna(r["value"])]
    return pts if len({v for _, v in pts}) > 1 else []


def prevalence(frames_df: pd.DataFrame | None, dataset: str) -> float | None:
    """The anomaly pixel fraction of ``dataset``'s pooled pixels (per-frame table, one scorer and T)."""
    if frames_df is None or frames_df.empty or not {"n_pos", "n_neg"} <= set(frames_df):
        return None
    f = frames_df[frames_df["dataset"].astype(str) == dataset]
    if f.empty:
        return None
    one = f[(f["scorer"] == f["scorer"].iloc[0]) & (f["temperature"] == f["temperature"].iloc[0])
            & (f["model"] == f["model"].iloc[0])]
    total = float(one["n_pos"].sum() + one["n_neg"].sum())
    return float(one["n_pos"].sum()) / total if total else None


def _limits(values: np.ndarray, chance: float | None) -> tuple[float, float]:
    """A y range (%) holding the values and the chance level, with a margin, within [0, 100]; the
    whole range when there is nothing to fit (every value undefined, no chance level)."""
    v = values[np.isfinite(values)]
    pts = np.concatenate([v, [] if chance is None else [100 * chance]])
    if not pts.size:
        return 0.0, 100.0
    lo, hi = float(pts.min()), float(pts.max())
    pad = max(2.0, 0.12 * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad)


def plot_dataset_bars(df: pd.DataFrame, out_png: str | os.PathLike, dataset: str, protocol: str = "exact",
                      frames: str | None = None, chance_auprc: float | None = None, temperature: float = 1.0) -> Path:
    """AuPRC and FPR95 (side by side) per (model, run, scorer) on ``dataset`` at ``temperature``."""
    rows = prefer_target(at_t(anomaly_rows(df, protocol, TABLE_METRICS, frames), temperature),
                         ["model", "run", "dataset", "scorer", "metric"], "one bar")
    rows = rows[rows["dataset"] == dataset]
    if rows.empty:
        raise ResultsError(f"no rows of {dataset} at T = {temperature:g} (protocol {protocol})")
    keys = table_keys(rows)
    labels = series_labels([(m, r) for m, r, _ in keys], model_name)
    values = {(x.model, x.run, x.scorer, x.metric): x.value for x in rows.itertuples()}
    fig = _figure(max(7.0, 2.0 + 0.55 * len(keys)), 4.4)
    for k, (metric, chance) in enumerate(zip(TABLE_METRICS, (chance_auprc, CHANCE_FPR95))):
        ax = fig.add_subplot(1, 2, k + 1)
        v = np.array([values.get((m, r, s, metric), np.nan) for m, r, s in keys], float) * 100
        ax.bar(np.arange(len(keys)), v, 0.8, color=[_style(m, s, j)["color"] for j, (m, r, s) in enumerate(keys)],
               hatch=None, edgecolor="white")
        if chance is not None:
            ax.axhline(100 * chance, color="0.2", linestyle="--", linewidth=1)
            ax.text(len(keys) - 0.5, 100 * chance, f" chance {100 * chance:.1f}", va="bottom", ha="right", fontsize=7)
        ax.set_ylim(*_limits(v, chance))
        ax.set_xticks(np.arange(len(keys)))
        ax.set_xticklabels([f"{labels[(m, r)]} {scorer_name(s)}" for m, r, s in keys], rotation=60, ha="right",
                           fontsize=7)
        ax.set_ylabel(_axis_label(metric), fontsize=8)
        ax.grid(True, axis="y", alpha=0.35)
        ax.set_axisbelow(True)
    fig.suptitle(f"{dataset_name(dataset)}: scorers at T = {temperature:g} (protocol {protocol}); "
                 "the axis is fitted to the values", fontsize=9)
    return _save(fig, out_png)
