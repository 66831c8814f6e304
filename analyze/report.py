"""The seed paper's tables and figures, built from ``results.parquet`` only.

Nothing here touches a cache or a model: every number is a row of the results table
(:mod:`schemas.results`), multiplied by 100 and rounded to two decimals for display.

Tables (pandas DataFrames, then Markdown / LaTeX text)
------------------------------------------------------

* :func:`table1`: the paper's Table 1. Rows (model, scorer) in the order ERFNet x {MSP,
  MaxLogit, MaxEntropy, Energy}, EoMT x {MSP, MaxLogit, MaxEntropy, Energy, RbA} (only those
  present; other models and scorers follow). Columns: mIoU on Cityscapes val, then AuPRC
  (higher is better) and FPR95 (lower is better) per anomaly dataset in the paper's order
  (SMIYC RA-21, SMIYC RO-21, FS L&F, FS Static, RoadAnomaly; other datasets follow).
  The mIoU is the model's ``scorer = "semantic"`` row: one value per model, repeated on every
  scorer row, because a scorer does not change the segmentation (the paper printed a
  different mIoU per scorer, which cannot be right).
* :func:`table2`: the paper's Table 2, one (model, scorer) at every temperature; the mIoU
  column is per T where T changes the segmentation (EoMT, T on the query class logits) and
  the T = 1 value otherwise.

Both take ``ci=True`` for cells such as ``"61.39 [59.1, 63.0]"`` (value and the bootstrap
interval of the ``ci_low``/``ci_high`` columns). Only rows with an empty ``selected_on`` are
used: rows made by :func:`analyze.temperature.select_temperature` are a different table.

Figures (matplotlib, PNG, object-oriented API: no global backend state)
----------------------------------------------------------------------

* :func:`plot_vs_temperature`: the paper's Figures 5-6, a metric against T, one line per dataset.
* :func:`plot_curves`: PR and ROC curves per dataset, one line per (model, scorer) at T = 1,
  from ``results_curves.parquet``.
* :func:`plot_scorer_bars`: grouped bars, scorers side by side for each dataset.

:func:`write_report` writes all of them, skipping (with a note) what the results cannot
support, and a ``report.md`` that shows every table and figure with those notes.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from schemas.results import SEMANTIC_SCORER, ResultsError, read_results

log = logging.getLogger(__name__)

# ---- vocabulary --------------------------------------------------------------------------

#: anomaly datasets in the paper's column order -> display name
DATASETS: dict[str, str] = {
    "smiyc_ra21": "SMIYC RA-21",
    "smiyc_ro21": "SMIYC RO-21",
    "fs_lost_found": "FS L&F",
    "fs_static": "FS Static",
    "road_anomaly": "RoadAnomaly",
}
MIOU_DATASET = "cityscapes_val"
MIOU_DATASET_NAME = "Cityscapes val"
MODELS: dict[str, str] = {"erfnet": "ERFNet", "eomt": "EoMT"}
SCORERS: dict[str, str] = {"msp": "MSP", "maxlogit": "MaxLogit", "maxentropy": "MaxEntropy",
                           "energy": "Energy", "rba": "RbA"}
#: rows of Table 1, in order, per model
MODEL_SCORERS: dict[str, tuple[str, ...]] = {
    "erfnet": ("msp", "maxlogit", "maxentropy", "energy"),
    "eomt": ("msp", "maxlogit", "maxentropy", "energy", "rba"),
}
METRIC_NAMES: dict[str, str] = {"auprc": "AuPRC", "fpr95": "FPR95", "auroc": "AUROC", "miou": "mIoU",
                                "ece": "ECE", "siou": "sIoU", "ppv": "PPV", "mean_f1": "mean F1"}
HIGHER_IS_BETTER: dict[str, bool] = {"auprc": True, "fpr95": False, "auroc": True, "miou": True, "ece": False,
                                     "siou": True, "ppv": True, "mean_f1": True}
TABLE_METRICS = ("auprc", "fpr95")
#: when the same (model, dataset, scorer, T) exists for several temperature targets (they
#: coincide at T = 1), the first of these is shown
TARGET_PREFERENCE = ("query", "logits", "pixel", "none")
TARGET_NOTES = {
    "query": "T divides the query class logits, which changes the segmentation",
    "pixel": "T divides the per-pixel class scores",
    "logits": "T divides the pixel logits",
}
MISSING_MD = "–"
MISSING_TEX = "--"
_T_ATOL = 1e-9

# one colour per scorer and one line style per model, shared by every figure
_SCORER_COLOURS = {"msp": "#1f77b4", "maxlogit": "#d62728", "maxentropy": "#2ca02c", "energy": "#9467bd",
                   "rba": "#ff7f0e"}
_MODEL_STYLES = {"erfnet": "--", "eomt": "-"}
_DATASET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def dataset_name(d: str) -> str:
    return DATASETS.get(d, MIOU_DATASET_NAME if d == MIOU_DATASET else d)


def model_name(m: str) -> str:
    return MODELS.get(m, m)


def scorer_name(s: str) -> str:
    return SCORERS.get(s, s)


def metric_label(metric: str, arrow: str = "unicode") -> str:
    """``"AuPRC ↑"``; ``arrow="latex"`` gives ``"AuPRC $\\uparrow$"``, ``arrow=""`` none."""
    name = METRIC_NAMES.get(metric, metric)
    if metric not in HIGHER_IS_BETTER or not arrow:
        return name
    up = HIGHER_IS_BETTER[metric]
    if arrow == "latex":
        return f"{name} $\\{'uparrow' if up else 'downarrow'}$"
    return f"{name} {'↑' if up else '↓'}"


def _ordered(present, canonical: Sequence[str]) -> list[str]:
    """``canonical`` items that are present, then the others sorted."""
    present = set(present)
    return [x for x in canonical if x in present] + sorted(present - set(canonical))


def _target_rank(t: str) -> int:
    return TARGET_PREFERENCE.index(t) if t in TARGET_PREFERENCE else len(TARGET_PREFERENCE)


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not the output of a temperature selection."""
    if "selected_on" not in df:
        return df
    sel = df["selected_on"]
    return df[sel.isna() | sel.astype(str).isin(["", "nan", "None"])]


def _at_t(df: pd.DataFrame, t: float) -> pd.DataFrame:
    return df[np.isclose(df["temperature"].astype(float), float(t), rtol=0, atol=_T_ATOL)]


def _dedupe_targets(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys``: the preferred temperature target (identical values at T = 1)."""
    if df.empty:
        return df
    order = df["temp_target"].map(_target_rank)
    return df.assign(_rank=order).sort_values("_rank", kind="stable").drop_duplicates(list(keys)).drop(
        columns="_rank")


def _protocols(df: pd.DataFrame) -> list[str]:
    return sorted(set(df.loc[df["scorer"] != SEMANTIC_SCORER, "protocol"].astype(str)))


def _anomaly_rows(df: pd.DataFrame, protocol: str, metrics=TABLE_METRICS) -> pd.DataFrame:
    d = _plain(df)
    d = d[(d["scorer"] != SEMANTIC_SCORER) & (d["dataset"] != MIOU_DATASET) & d["metric"].isin(metrics)]
    out = d[d["protocol"] == protocol]
    if out.empty:
        have = _protocols(d) or ["none"]
        raise ResultsError(f"no anomaly-metric rows ({', '.join(metrics)}) for protocol {protocol!r}; "
                           f"protocols present: {', '.join(have)}")
    return out


# ---- table cells -------------------------------------------------------------------------


def _cell(row: pd.Series | None, ci: bool):
    """Percent with two decimals (float), or the ``"v [lo, hi]"`` string when ``ci``."""
    if row is None or pd.isna(row["value"]):
        return float("nan") if not ci else ""
    v = float(np.round(100.0 * float(row["value"]), 2))
    if not ci:
        return v
    lo, hi = row.get("ci_low", float("nan")), row.get("ci_high", float("nan"))
    if pd.isna(lo) or pd.isna(hi):
        return f"{v:.2f}"
    return f"{v:.2f} [{100 * float(lo):.1f}, {100 * float(hi):.1f}]"


def _miou_row(df: pd.DataFrame, model: str, t: float, temp_target: str | None,
              protocol: str, miou_dataset: str) -> pd.Series | None:
    """The model's mIoU row at ``t``; the T = 1 row when T does not change its segmentation.

    ``analyze score`` writes mIoU per T only for EoMT with the query target; for a pixel model
    or the pixel target the segmentation is the same at every T, so the T = 1 row holds.
    """
    d = _plain(df)
    d = d[(d["model"] == model) & (d["scorer"] == SEMANTIC_SCORER) & (d["metric"] == "miou")
          & (d["dataset"] == miou_dataset)]
    if d.empty:
        return None
    d = d.assign(_p=(d["protocol"] != protocol).astype(int), _r=d["temp_target"].map(_target_rank))
    at = _at_t(d, t)
    if abs(t - 1.0) > _T_ATOL:
        if temp_target is not None:
            at = at[at["temp_target"] == temp_target]
        if at.empty and temp_target != "query":
            at = _at_t(d, 1.0)  # both targets give the same segmentation at T = 1
    if at.empty:
        return None
    return at.sort_values(["_p", "_r"], kind="stable").iloc[0]


def _columns(datasets: Sequence[str]) -> pd.MultiIndex:
    cols = [(MIOU_DATASET_NAME, METRIC_NAMES["miou"])]
    cols += [(dataset_name(d), METRIC_NAMES[m]) for d in datasets for m in TABLE_METRICS]
    return pd.MultiIndex.from_tuples(cols, names=["dataset", "metric"])


def _lookup(rows: pd.DataFrame) -> dict:
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
           miou_dataset: str = MIOU_DATASET) -> pd.DataFrame:
    """The paper's Table 1: rows (Model, Method), columns (dataset, metric), values in %.

    Cells are ``round(100 * value, 2)`` (NaN where a row is missing) or, with ``ci=True``,
    strings ``"61.39 [59.1, 63.0]"``. The mIoU column is the model's semantic row on
    ``miou_dataset`` (the same for every scorer of a model). Raises ``ResultsError`` when no
    AuPRC/FPR95 row exists for ``protocol`` at ``temperature``.
    """
    rows = _anomaly_rows(df, protocol)
    rows = _at_t(rows, temperature)
    if rows.empty:
        temps = sorted(set(_anomaly_rows(df, protocol)["temperature"].astype(float)))
        raise ResultsError(f"no anomaly-metric rows at T = {temperature:g} (protocol {protocol}); "
                           f"temperatures present: {', '.join(f'{t:g}' for t in temps)}")
    rows = _dedupe_targets(rows, ["model", "dataset", "scorer", "metric"])
    datasets = _ordered(rows["dataset"], list(DATASETS))
    keys = []
    for m in _ordered(rows["model"], list(MODELS)):
        present = set(rows.loc[rows["model"] == m, "scorer"])
        keys += [(m, s) for s in _ordered(present, MODEL_SCORERS.get(m, tuple(SCORERS)))]

    def cells_of(key):
        m, s = key
        sub = rows[(rows["model"] == m) & (rows["scorer"] == s)]
        target = str(sub["temp_target"].iloc[0]) if len(sub) else None
        return _miou_row(df, m, temperature, target, protocol, miou_dataset), _lookup(sub)

    index = pd.MultiIndex.from_tuples([(model_name(m), scorer_name(s)) for m, s in keys], names=["Model", "Method"])
    table = pd.DataFrame(_fill(keys, datasets, cells_of, ci), index=index, columns=_columns(datasets))
    table.attrs["caption"] = (
        f"Anomaly segmentation at T = {temperature:g} (protocol {protocol}), in %. "
        f"mIoU on {dataset_name(miou_dataset)}: one value per model, since a scorer does not change "
        f"the segmentation. ↑ higher is better, ↓ lower is better."
        + (" Brackets: bootstrap confidence interval." if ci else "")
    )
    table.attrs["keys"] = keys
    table.attrs["no_bold"] = [table.columns[0]]  # one mIoU per model, repeated: bold would mark a model
    return table


def temperature_grids(df: pd.DataFrame, protocol: str = "exact") -> list[tuple[str, str, str]]:
    """(model, scorer, temp_target) with AuPRC/FPR95 at more than one T, in Table 1 order."""
    try:
        rows = _anomaly_rows(df, protocol)
    except ResultsError:
        return []
    out = []
    for m in _ordered(rows["model"], list(MODELS)):
        rm = rows[rows["model"] == m]
        for s in _ordered(rm["scorer"], MODEL_SCORERS.get(m, tuple(SCORERS))):
            rs = rm[rm["scorer"] == s]
            for tt in sorted(set(rs["temp_target"]), key=_target_rank):
                if rs.loc[rs["temp_target"] == tt, "temperature"].nunique() > 1:
                    out.append((m, s, tt))
    return out


def _grid_rows(df: pd.DataFrame, model: str, scorer: str, protocol: str, temp_target: str | None,
               metrics=TABLE_METRICS) -> tuple[pd.DataFrame, str]:
    rows = _anomaly_rows(df, protocol, metrics)
    rows = rows[(rows["model"] == model) & (rows["scorer"] == scorer)]
    grids = [g for g in temperature_grids(df, protocol) if g[:2] == (model, scorer)]
    if temp_target is not None:
        grids = [g for g in grids if g[2] == temp_target]
    if not grids:
        temps = sorted(set(rows["temperature"].astype(float)))
        have = ", ".join(f"{t:g}" for t in temps) or "none"
        raise ResultsError(
            f"no temperature grid for {model_name(model)} {scorer_name(scorer)} (protocol {protocol}"
            f"{', target ' + temp_target if temp_target else ''}): temperatures present: {have}; "
            "run `analyze score --temps 0.5,0.75,1.1`")
    target = grids[0][2]
    # T = 1 is the same for both targets: accept it from either
    same = rows["temp_target"] == target
    at_one = np.isclose(rows["temperature"].astype(float), 1.0, rtol=0, atol=_T_ATOL)
    rows = _dedupe_targets(rows[same | at_one], ["dataset", "metric", "temperature"])
    return rows, target


def table2(df: pd.DataFrame, model: str = "eomt", scorer: str = "msp", protocol: str = "exact",
           temp_target: str | None = None, ci: bool = False, miou_dataset: str = MIOU_DATASET) -> pd.DataFrame:
    """The paper's Table 2: one (model, scorer) at every temperature; rows T, Table 1's columns.

    ``temp_target=None`` takes the query target when it has a grid, else the first one that
    has. mIoU is per T where T changes the segmentation (EoMT, query target), otherwise the
    T = 1 value. Raises ``ResultsError`` when there is no temperature grid.
    """
    rows, target = _grid_rows(df, model, scorer, protocol, temp_target)
    temps = sorted(set(rows["temperature"].astype(float)))
    datasets = _ordered(rows["dataset"], list(DATASETS))

    def cells_of(t):
        return (_miou_row(df, model, t, target, protocol, miou_dataset),
                _lookup(_at_t(rows, t)))

    index = pd.Index(temps, name="T")
    table = pd.DataFrame(_fill(temps, datasets, cells_of, ci), index=index, columns=_columns(datasets))
    table.attrs["caption"] = (
        f"{model_name(model)} {scorer_name(scorer)} at each temperature T (protocol {protocol}; "
        f"{TARGET_NOTES.get(target, 'target ' + target)}), in %. T = 1 is the baseline. "
        f"↑ higher is better, ↓ lower is better." + (" Brackets: bootstrap confidence interval." if ci else "")
    )
    return table


def has_ci(df: pd.DataFrame) -> bool:
    return bool(df[["ci_low", "ci_high"]].notna().all(axis=1).any()) if {"ci_low", "ci_high"} <= set(df) else False


# ---- text writers ------------------------------------------------------------------------


def _best(table: pd.DataFrame) -> dict:
    """Column -> best value (max for ↑ metrics, min for ↓) among the numeric cells."""
    out = {}
    inv = {v: k for k, v in METRIC_NAMES.items()}
    skip = set(table.attrs.get("no_bold", []))
    for col in table.columns:
        if col in skip:
            continue
        vals = pd.to_numeric(table[col], errors="coerce")
        if vals.dropna().nunique() < 2:  # nothing to single out
            continue
        up = HIGHER_IS_BETTER.get(inv.get(col[-1] if isinstance(col, tuple) else col, ""), True)
        out[col] = vals.max() if up else vals.min()
    return out


def _fmt(v, missing: str) -> str:
    if isinstance(v, str):
        return v if v else missing
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    return f"{v:.2f}"


def _fmt_index(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _header(col, arrow: str) -> tuple[str, str]:
    inv = {v: k for k, v in METRIC_NAMES.items()}
    ds, metric = col if isinstance(col, tuple) else ("", col)
    return ds, metric_label(inv.get(metric, metric), arrow)


def to_markdown(table: pd.DataFrame, caption: str | None = None, bold_best: bool = True) -> str:
    """GitHub Markdown: one header row ``"dataset / metric ↑"``, a caption paragraph above.

    Numbers as ``61.39``; missing cells ``–``; the best value of each column in bold.
    """
    caption = table.attrs.get("caption") if caption is None else caption
    best = _best(table) if bold_best else {}
    names = [n or "" for n in table.index.names]
    head = names + [" / ".join(p for p in _header(c, "unicode") if p) for c in table.columns]
    align = ["---"] * len(names) + ["---:"] * len(table.columns)
    lines = []
    if caption:
        lines += [caption, ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for idx, row in table.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = [_fmt_index(i).replace("|", "\\|") for i in idx]
        for col, v in row.items():
            text = _fmt(v, MISSING_MD)
            num = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
            if col in best and not pd.isna(num) and num == best[col]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None,
             bold_best: bool = True) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``).

    Two header rows: the datasets (``\\multicolumn`` over their metrics, with ``\\cmidrule``)
    and the metrics with ``$\\uparrow$`` (higher is better) or ``$\\downarrow$``. A model's name
    is printed on its first row only, models separated by ``\\midrule``.
    """
    caption = table.attrs.get("caption") if caption is None else caption
    best = _best(table) if bold_best else {}
    n_idx = table.index.nlevels
    names = [_tex(n or "") for n in table.index.names]
    cols = list(table.columns)
    spec = "l" * n_idx + "r" * len(cols)
    top, rules, start = [""] * n_idx, [], n_idx + 1
    j = 0
    while j < len(cols):
        ds = _header(cols[j], "latex")[0]
        k = j
        while k + 1 < len(cols) and _header(cols[k + 1], "latex")[0] == ds:
            k += 1
        span = k - j + 1
        top.append(rf"\multicolumn{{{span}}}{{c}}{{{_tex(ds)}}}" if span > 1 else _tex(ds))
        rules.append(rf"\cmidrule(lr){{{start + j}-{start + k}}}")
        j = k + 1
    second = names + [_header(c, "latex")[1].replace("_", r"\_") for c in cols]
    lines = [
        "% generated by analyze.report; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(top) + r" \\",
        " ".join(rules),
        " & ".join(second) + r" \\",
        "\\midrule",
    ]
    prev = None
    for idx, row in table.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        first = _fmt_index(idx[0])
        if n_idx > 1 and prev is not None and first != prev:
            lines.append("\\midrule")
        cells = [_tex(first) if (n_idx == 1 or first != prev) else ""]
        cells += [_tex(_fmt_index(i)) for i in idx[1:]]
        prev = first
        for col, v in row.items():
            text = _tex(_fmt(v, MISSING_TEX)) if isinstance(v, str) else _fmt(v, MISSING_TEX)
            num = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
            if col in best and not pd.isna(num) and num == best[col]:
                text = f"\\textbf{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        cap = _tex(caption).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")
        lines.append(f"\\caption{{{cap}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


# ---- figures -----------------------------------------------------------------------------


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
                        scorer: str = "msp", protocol: str = "exact", temp_target: str | None = None) -> Path:
    """The paper's Figures 5-6: ``metric`` (%) against T, one line per anomaly dataset.

    ``metric='miou'`` draws the model's mIoU on Cityscapes val instead. Raises
    ``ResultsError`` when the (model, scorer) has no temperature grid.
    """
    rows, target = _grid_rows(df, model, scorer, protocol, temp_target,
                              metrics=(metric,) if metric != "miou" else TABLE_METRICS)
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    temps = sorted(set(rows["temperature"].astype(float)))
    if metric == "miou":
        series = {MIOU_DATASET_NAME: [(t, _miou_row(df, model, t, target, protocol, MIOU_DATASET)) for t in temps]}
        series = {k: [(t, r["value"]) for t, r in v if r is not None] for k, v in series.items()}
    else:
        series = {}
        for d in _ordered(rows["dataset"], list(DATASETS)):
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
    ax.set_title(f"{model_name(model)} {scorer_name(scorer)}: {METRIC_NAMES.get(metric, metric)} vs temperature\n"
                 f"protocol {protocol}; {TARGET_NOTES.get(target, 'target ' + target)}", fontsize=10)
    ax.grid(True, alpha=0.35)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9, title="dataset")
    return _save(fig, out_png)


def _curve_key_order(curves: pd.DataFrame) -> list[tuple[str, str]]:
    keys = []
    for m in _ordered(curves["model"], list(MODELS)):
        present = set(curves.loc[curves["model"] == m, "scorer"])
        keys += [(m, s) for s in _ordered(present, MODEL_SCORERS.get(m, tuple(SCORERS)))]
    return keys


def _style(model: str, scorer: str, j: int) -> dict:
    return {"color": _SCORER_COLOURS.get(scorer, f"C{(j + 5) % 10}"),
            "linestyle": _MODEL_STYLES.get(model, "-."), "linewidth": 1.6}


def plot_curves(curves_df: pd.DataFrame, out_dir: str | os.PathLike, results: pd.DataFrame | None = None,
                protocol: str = "exact", temperature: float = 1.0) -> list[Path]:
    """``curves_<dataset>.png``: PR (left) and ROC (right) curves, one line per (model, scorer).

    ``curves_df`` is ``results_curves.parquet`` (list columns recall, precision, fpr, tpr);
    with ``results`` the legend also gives each line's AuPRC and FPR95. Colour = scorer,
    line style = model (ERFNet dashed, EoMT solid).
    """
    need = {"model", "dataset", "scorer", "temperature", "protocol", "recall", "precision", "fpr", "tpr"}
    if not need <= set(curves_df.columns):
        raise ResultsError(f"curves table lacks columns {sorted(need - set(curves_df.columns))}")
    c = curves_df[curves_df["protocol"].astype(str) == protocol]
    c = _at_t(c, temperature)
    if "temp_target" in c:
        c = _dedupe_targets(c, ["model", "dataset", "scorer"])
    if c.empty:
        raise ResultsError(f"no curves for protocol {protocol!r} at T = {temperature:g}")
    summary = {}
    if results is not None:
        try:
            r = _dedupe_targets(_at_t(_anomaly_rows(results, protocol), temperature),
                                ["model", "dataset", "scorer", "metric"])
            summary = {(x.model, x.dataset, x.scorer, x.metric): x.value for x in r.itertuples()}
        except ResultsError:
            pass
    out = []
    keys = _curve_key_order(c)
    for d in _ordered(c["dataset"], list(DATASETS)):
        cd = c[c["dataset"] == d]
        fig = _figure(11, 4.9)
        ax_pr, ax_roc = fig.subplots(1, 2)
        for j, (m, s) in enumerate(keys):
            row = cd[(cd["model"] == m) & (cd["scorer"] == s)]
            if row.empty:
                continue
            row = row.iloc[0]
            label = f"{model_name(m)} {scorer_name(s)}"
            ap, fpr95 = summary.get((m, d, s, "auprc")), summary.get((m, d, s, "fpr95"))
            if ap is not None and fpr95 is not None and not (pd.isna(ap) or pd.isna(fpr95)):
                label += f" (AuPRC {100 * ap:.1f}, FPR95 {100 * fpr95:.1f})"
            st = _style(m, s, j)
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
        out.append(_save(fig, Path(out_dir) / f"curves_{_slug(d)}.png"))
    return out


def plot_scorer_bars(df: pd.DataFrame, out_png: str | os.PathLike, metric: str = "auprc", protocol: str = "exact",
                     temperature: float = 1.0) -> Path:
    """Grouped bars: for each dataset, one bar per (model, scorer) of ``metric`` (%) at ``temperature``.

    Colour = scorer; ERFNet bars hatched, EoMT bars solid.
    """
    rows = _dedupe_targets(_at_t(_anomaly_rows(df, protocol, (metric,)), temperature),
                           ["model", "dataset", "scorer", "metric"])
    if rows.empty:
        raise ResultsError(f"no {metric} rows at T = {temperature:g} (protocol {protocol})")
    datasets = _ordered(rows["dataset"], list(DATASETS))
    keys = _curve_key_order(rows)
    values = {(x.model, x.scorer, x.dataset): x.value for x in rows.itertuples()}
    n = len(keys)
    width = 0.85 / n
    fig = _figure(max(8.0, 1.3 + 0.28 * n * len(datasets)), 4.6)
    ax = fig.add_subplot()
    x0 = np.arange(len(datasets))
    for j, (m, s) in enumerate(keys):
        v = np.array([values.get((m, s, d), np.nan) for d in datasets], float) * 100
        st = _style(m, s, j)
        hatch = "///" if m == "erfnet" else None
        ax.bar(x0 - 0.425 + width * (j + 0.5), v, width, color=st["color"], alpha=0.55 if hatch else 0.95,
               hatch=hatch, edgecolor="white" if not hatch else st["color"], linewidth=0.6,
               label=f"{model_name(m)} {scorer_name(s)}")
    ax.set_xticks(x0)
    ax.set_xticklabels([dataset_name(d) for d in datasets])
    ax.set_ylabel(_axis_label(metric))
    ax.set_ylim(0, 100)
    ax.set_axisbelow(True)
    ax.grid(True, axis="y", alpha=0.35)
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)} per dataset and scorer (T = {temperature:g}, protocol {protocol})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9)
    return _save(fig, out_png)


# ---- whole report ------------------------------------------------------------------------


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_") or "x"


def curves_path_for(results_path: str | os.PathLike) -> Path:
    """``results_curves.parquet`` beside ``results.parquet`` (as ``analyze score`` writes it)."""
    p = str(results_path)
    stem = p[: -len(".parquet")] if p.endswith(".parquet") else p
    return Path(f"{stem}_curves.parquet")


def write_report(results_path: str | os.PathLike, out_dir: str | os.PathLike, protocol: str | None = None,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Write Tables 1-2 (``.md``, ``.tex``, and ``*_ci`` variants when intervals exist), the
    figures (PNG) and ``report.md`` (everything in one page, with notes) into ``out_dir``.

    ``protocol=None`` uses ``exact`` when present, else the only protocol present. Table 1
    is required (``ResultsError`` when the results cannot make it); Table 2 and the T
    figures need a temperature grid and the curves need ``results_curves.parquet``: what
    is missing is skipped with a note (``warn``, default: the module logger) and listed in
    ``report.md``. Returns the paths written.
    """
    warn = warn or log.warning
    df = read_results(results_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protocols = _protocols(df)
    if not protocols:
        raise ResultsError(f"{results_path}: no anomaly-metric rows (only {sorted(set(df['metric']))}); "
                           "score an anomaly dataset with `analyze score`")
    if protocol is None:
        protocol = "exact" if "exact" in protocols else protocols[0]
    written: list[Path] = []
    notes: list[str] = []
    sections: list[str] = [f"# Anomaly segmentation report\n\nFrom `{results_path}`, protocol `{protocol}`. "
                           "Values in %; ↑ higher is better, ↓ lower is better.\n"]

    def note(msg: str) -> None:
        notes.append(msg)
        warn(msg)

    def text(name: str, content: str) -> None:
        p = out / name
        p.write_text(content, encoding="utf-8")
        written.append(p)

    def figure(title: str, make: Callable[[], Path | list[Path]]) -> None:
        try:
            got = make()
        except ResultsError as exc:
            note(f"{title} skipped: {exc}")
            return
        for p in got if isinstance(got, list) else [got]:
            written.append(p)
            sections.append(f"![{title}]({p.name})\n")

    ci = has_ci(df)
    try:
        t1 = table1(df, protocol)
    except ResultsError as exc:
        raise ResultsError(f"{results_path}: cannot build Table 1: {exc}") from None
    text("table1.md", to_markdown(t1))
    text("table1.tex", to_latex(t1, label="tab:anomaly"))
    sections += ["## Table 1\n", to_markdown(t1)]
    if t1.iloc[:, 0].isna().all():
        note(f"Table 1: no mIoU rows (score a {MIOU_DATASET} cache with `analyze score` to fill the mIoU column)")
    if ci:
        t1c = table1(df, protocol, ci=True)
        text("table1_ci.md", to_markdown(t1c))
        text("table1_ci.tex", to_latex(t1c, label="tab:anomaly-ci"))

    grids = temperature_grids(df, protocol)
    if not grids:
        note("Table 2 and the temperature figures skipped: no (model, scorer) has results at more than one T "
             "(run `analyze score --temps 0.5,0.75,1.1`)")
    else:
        main = next((g for g in grids if g[:2] == ("eomt", "msp")), grids[0])
        if main[:2] != ("eomt", "msp"):
            note(f"Table 2 shows {model_name(main[0])} {scorer_name(main[1])}: EoMT MSP has no temperature grid")
        t2 = table2(df, main[0], main[1], protocol, main[2])
        text("table2.md", to_markdown(t2))
        text("table2.tex", to_latex(t2, label="tab:temperature"))
        sections += ["## Table 2\n", to_markdown(t2)]
        if ci:
            t2c = table2(df, main[0], main[1], protocol, main[2], ci=True)
            text("table2_ci.md", to_markdown(t2c))
            text("table2_ci.tex", to_latex(t2c, label="tab:temperature-ci"))
        sections.append("## Metrics against temperature\n")
        multi_target = len({g[2] for g in grids}) > 1
        miou_drawn = set()
        for m, s, tt in grids:
            for metric in TABLE_METRICS:
                name = f"temperature_{metric}_{_slug(m)}_{_slug(s)}" + (f"_{_slug(tt)}" if multi_target else "")
                figure(f"{model_name(m)} {scorer_name(s)} {METRIC_NAMES[metric]} vs T",
                       lambda m=m, s=s, tt=tt, metric=metric, name=name: plot_vs_temperature(
                           df, metric, out / f"{name}.png", m, s, protocol, tt))
            # where T changes the segmentation (EoMT, query target), one mIoU figure per model
            miou = df[(df["model"] == m) & (df["metric"] == "miou") & (df["temp_target"] == tt)]
            if (m, tt) not in miou_drawn and miou["temperature"].nunique() > 1:
                miou_drawn.add((m, tt))
                name = f"temperature_miou_{_slug(m)}" + (f"_{_slug(tt)}" if multi_target else "")
                figure(f"{model_name(m)} {METRIC_NAMES['miou']} vs T",
                       lambda m=m, s=s, tt=tt, name=name: plot_vs_temperature(
                           df, "miou", out / f"{name}.png", m, s, protocol, tt))

    sections.append("## Scorers compared (T = 1)\n")
    for metric in TABLE_METRICS:
        figure(f"{METRIC_NAMES[metric]} per scorer",
               lambda metric=metric: plot_scorer_bars(df, out / f"scorers_{metric}.png", metric, protocol))

    cpath = curves_path_for(results_path)
    if cpath.is_file():
        import pyarrow.parquet as pq

        curves = pq.read_table(cpath).to_pandas()
        sections.append("## PR and ROC curves (T = 1)\n")
        figure("PR and ROC curves", lambda: plot_curves(curves, out, results=df, protocol=protocol))
    else:
        note(f"PR/ROC curves skipped: {cpath} not found (`analyze score` writes it beside the results)")

    if notes:
        sections.insert(1, "## Notes\n\n" + "\n".join(f"* {n}" for n in notes) + "\n")
    text("report.md", "\n".join(sections))
    return written
