"""The report's figures (matplotlib, PNG, object-oriented API: no global backend state).

* :func:`plot_vs_temperature`: the paper's Figures 5-6, a metric against T, one line per dataset.
* :func:`plot_curves`: PR and ROC curves per dataset, one line per (model, run, scorer), from
  ``results_curves.parquet``.
* :func:`plot_scorer_bars`: grouped bars, scorers side by side for each dataset.

Colour = scorer, line style (or hatch) = model, shared by every figure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analyze.report.cells import at_t, checked, choose_frames, prefer_target, series_labels
from analyze.report.names import (HIGHER_IS_BETTER, METRIC_NAMES, SCORERS, TABLE_METRICS, TARGET_NOTES, dataset_name,
                                  dataset_order, default_miou_dataset, model_name, scorer_name, slug)
from analyze.report.rows import anomaly_rows, grid_rows, miou_row, ordered, runs_of, table_keys
from schemas.results import ResultsError

# one colour per scorer of the registry (the study's five keep theirs) and one line style per
# model, shared by every figure; a scorer with other parameters takes a colour of its own
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd")
_SCORER_COLOURS = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(SCORERS)}
_MODEL_STYLES = {"erfnet": "--", "eomt": "-"}
_DATASET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")



def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def _save(fig, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _axis_label(metric: str) -> str:
    up = HIGHER_IS_BETTER.get(metric)
    hint = "" if up is None else (" (higher is better)" if up else " (lower is better)")
    return f"{METRIC_NAMES.get(metric, metric)} (%){hint}"


def plot_vs_temperature(df: pd.DataFrame, metric: str, out_png: str | os.PathLike, model: str = "eomt",
                        scorer: str = "msp", protocol: str = "exact", temp_target: str | None = None,
                        run: str | None = None, frames: str | None = None) -> Path:
    """The paper's Figures 5-6: ``metric`` (%) against T, one line per anomaly dataset.

    ``metric='miou'`` draws the model's mIoU on Cityscapes val instead. ``run`` may be left
    out when the (model, scorer) has a grid for one run only. Raises ``ResultsError`` when
    the (model, scorer) has no temperature grid.
    """
    rows, target, run = grid_rows(df, model, scorer, protocol, temp_target,
                                   metrics=(metric,) if metric != "miou" else TABLE_METRICS, run=run, frames=frames)
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    temps = sorted(set(rows["temperature"].astype(float)))
    if metric == "miou":
        miou = default_miou_dataset()
        series = {dataset_name(miou): [(t, miou_row(df, model, run, t, target, protocol, miou)) for t in temps]}
        series = {k: [(t, r["value"]) for t, r in v if r is not None] for k, v in series.items()}
    else:
        series = {}
        for d in ordered(rows["dataset"], dataset_order()):
            rd = rows[rows["dataset"] == d].sort_values("temperature")
            series[dataset_name(d)] = list(zip(rd["temperature"].astype(float), rd["value"]))
    drawn = 0
    for j, (name, pts) in enumerate(series.items()):
        pts = [(t, v) for t, v in pts if not pd.isna(v)]
        if not pts:
            continue
        t, v = zip(*pts)
        ax.plot(t, 100 * np.asarray(v, float), marker=_DATASET_MARKERS[j % len(_DATASET_MARKERS)],
                color=f"C{j}", linewidth=1.8, markersize=6, label=name)
        drawn += 1
    if not drawn:
        raise ResultsError(f"no {metric} values for {model_name(model)} {scorer_name(scorer)} to plot")
    ax.axvline(1.0, color="0.4", linestyle=":", linewidth=1.2, label="T = 1 (baseline)")
    if max(temps) / min(temps) > 4:  # a wide grid (e.g. 0.1 ... 10): equal steps in log T
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(temps)
    ax.set_xticklabels([f"{t:g}" for t in temps])
    ax.set_xlabel("temperature T")
    ax.set_ylabel(_axis_label(metric))
    several = len(runs_of(anomaly_rows(df, protocol, frames=frames), model)) > 1
    label = f"{model_name(model)} ({run})" if several else model_name(model)
    who = label if metric == "miou" else f"{label} {scorer_name(scorer)}"  # no scorer changes the segmentation
    ax.set_title(f"{who}: {METRIC_NAMES.get(metric, metric)} vs temperature\n"
                 f"protocol {protocol}; {TARGET_NOTES.get(target, 'target ' + target)}", fontsize=10)
    ax.grid(True, alpha=0.35)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9, title="dataset")
    return _save(fig, out_png)


_RUN_LINESTYLES = (":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_RUN_HATCHES = ("..", "xx", "\\\\\\\\", "++")


def _style(model: str, scorer: str, j: int, run_index: int = 0) -> dict:
    """Colour = scorer; line style = model for its first run, then one style per further run."""
    style = _MODEL_STYLES.get(model, "-.") if run_index == 0 else _RUN_LINESTYLES[(run_index - 1) % len(_RUN_LINESTYLES)]
    return {"color": _SCORER_COLOURS.get(scorer, f"C{(j + 5) % 10}"), "linestyle": style, "linewidth": 1.6}


def _run_index(keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], int]:
    """(model, run) -> index of the run among the model's runs (0 for the first)."""
    out: dict[tuple[str, str], int] = {}
    for m, r, _ in keys:
        out.setdefault((m, r), len([k for k in out if k[0] == m]))
    return out


def plot_curves(curves_df: pd.DataFrame, out_dir: str | os.PathLike, results: pd.DataFrame | None = None,
                protocol: str = "exact", temperature: float = 1.0, frames: str | None = None) -> list[Path]:
    """``curves_<dataset>.png``: PR (left) and ROC (right) curves, one line per (model, run, scorer).

    ``curves_df`` is ``results_curves.parquet`` (list columns recall, precision, fpr, tpr);
    with ``results`` the legend also gives each line's AuPRC and FPR95. Colour = scorer,
    line style = model (ERFNet dashed, EoMT solid; further runs of a model dotted or
    dash-dotted, labelled by run).
    """
    need = {"run", "model", "dataset", "scorer", "temperature", "temp_target", "protocol", "frames", "cache_digest",
            "recall", "precision", "fpr", "tpr"}
    if not need <= set(curves_df.columns):
        raise ResultsError(f"curves table lacks columns {sorted(need - set(curves_df.columns))}")
    c = curves_df[curves_df["protocol"].astype(str) == protocol]
    c = at_t(c, temperature)
    if c.empty:
        raise ResultsError(f"no curves for protocol {protocol!r} at T = {temperature:g}")
    c = checked(c[c["frames"] == choose_frames(c, frames)], "curves")
    # the curves of two targets at T = 1 are one computation: compared by their points
    c = prefer_target(c.assign(value=[hash((tuple(a), tuple(b))) for a, b in zip(c["recall"], c["fpr"])]),
                      ["model", "run", "dataset", "scorer"], "one curve")
    summary = {}
    if results is not None:
        try:
            r = prefer_target(at_t(anomaly_rows(results, protocol, frames=frames), temperature),
                              ["model", "run", "dataset", "scorer", "metric"])
            summary = {(x.model, x.run, x.dataset, x.scorer, x.metric): x.value for x in r.itertuples()}
        except ResultsError:
            pass
    out = []
    keys = table_keys(c)
    labels = series_labels([(m, r) for m, r, _ in keys], model_name)
    runs = _run_index(keys)
    for d in ordered(c["dataset"], dataset_order()):
        cd = c[c["dataset"] == d]
        fig = _figure(11, 4.9)
        ax_pr, ax_roc = fig.subplots(1, 2)
        for j, (m, run, s) in enumerate(keys):
            row = cd[(cd["model"] == m) & (cd["run"] == run) & (cd["scorer"] == s)]
            if row.empty:
                continue
            row = row.iloc[0]
            label = f"{labels[(m, run)]} {scorer_name(s)}"
            ap, fpr95 = summary.get((m, run, d, s, "auprc")), summary.get((m, run, d, s, "fpr95"))
            if ap is not None and fpr95 is not None and not (pd.isna(ap) or pd.isna(fpr95)):
                label += f" (AuPRC {100 * ap:.1f}, FPR95 {100 * fpr95:.1f})"
            st = _style(m, s, j, runs[(m, run)])
            ax_pr.plot(100 * np.asarray(row["recall"], float), 100 * np.asarray(row["precision"], float),
                       label=label, **st)
            ax_roc.plot(100 * np.asarray(row["fpr"], float), 100 * np.asarray(row["tpr"], float), **st)
        ax_pr.set_xlabel("recall (%)")
        ax_pr.set_ylabel("precision (%)")
        ax_pr.set_title("precision-recall")
        ax_roc.plot([0, 100], [0, 100], color="0.6", linewidth=0.8, linestyle=":")
        ax_roc.axhline(95, color="0.3", linewidth=0.9, linestyle=":")
        ax_roc.text(99, 93.5, "TPR 95%", ha="right", va="top", fontsize=8, color="0.3")
        ax_roc.set_xlabel("false positive rate (%)")
        ax_roc.set_ylabel("true positive rate (%)")
        ax_roc.set_title("ROC")
        for ax in (ax_pr, ax_roc):
            ax.set_xlim(0, 100)
            ax.set_ylim(0, 101)
            ax.grid(True, alpha=0.35)
        fig.suptitle(f"{dataset_name(d)}: anomaly = positive class, T = {temperature:g}, protocol {protocol}")
        fig.legend(loc="outside lower center", ncols=min(3, max(1, len(keys))), fontsize=8.5)
        out.append(_save(fig, Path(out_dir) / f"curves_{slug(d)}.png"))
    return out


def plot_scorer_bars(df: pd.DataFrame, out_png: str | os.PathLike, metric: str = "auprc", protocol: str = "exact",
                     temperature: float = 1.0, frames: str | None = None) -> Path:
    """Grouped bars: for each dataset, one bar per (model, run, scorer) of ``metric`` (%) at ``temperature``.

    Colour = scorer; ERFNet bars hatched, EoMT bars solid; further runs of a model dotted or
    cross-hatched, labelled by run.
    """
    rows = prefer_target(at_t(anomaly_rows(df, protocol, (metric,), frames), temperature),
                         ["model", "run", "dataset", "scorer", "metric"], "one bar")
    if rows.empty:
        raise ResultsError(f"no {metric} rows at T = {temperature:g} (protocol {protocol})")
    datasets = ordered(rows["dataset"], dataset_order())
    keys = table_keys(rows)
    labels = series_labels([(m, r) for m, r, _ in keys], model_name)
    runs = _run_index(keys)
    values = {(x.model, x.run, x.scorer, x.dataset): x.value for x in rows.itertuples()}
    n = len(keys)
    width = 0.85 / n
    fig = _figure(max(8.0, 1.3 + 0.28 * n * len(datasets)), 4.6)
    ax = fig.add_subplot()
    x0 = np.arange(len(datasets))
    for j, (m, run, s) in enumerate(keys):
        v = np.array([values.get((m, run, s, d), np.nan) for d in datasets], float) * 100
        st = _style(m, s, j)
        k = runs[(m, run)]
        hatch = ("///" if m == "erfnet" else None) if k == 0 else _RUN_HATCHES[(k - 1) % len(_RUN_HATCHES)]
        ax.bar(x0 - 0.425 + width * (j + 0.5), v, width, color=st["color"], alpha=0.55 if hatch else 0.95,
               hatch=hatch, edgecolor="white" if not hatch else st["color"], linewidth=0.6,
               label=f"{labels[(m, run)]} {scorer_name(s)}")
    ax.set_xticks(x0)
    ax.set_xticklabels([dataset_name(d) for d in datasets])
    ax.set_ylabel(_axis_label(metric))
    ax.set_ylim(0, 100)
    ax.set_axisbelow(True)
    ax.grid(True, axis="y", alpha=0.35)
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)} per dataset and scorer (T = {temperature:g}, protocol {protocol})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9)
    return _save(fig, out_png)
