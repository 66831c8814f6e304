"""Tables as Markdown (pandas ``DataFrame.to_markdown``) and booktabs LaTeX.

Both print values with two decimals, cells not computed as a dash, undefined values (NaN
rows) as ``n/a`` with a note under the table saying why, and the best value of each
column in bold (highest for ↑ metrics, lowest for ↓). The LaTeX table is written here, not by
``Styler.to_latex``: the paper's layout (``\\cmidrule`` under each dataset, ``\\midrule``
between models, a model's name on its first row only, ``\\small``) is not one Styler produces.
"""

from __future__ import annotations

import math

import pandas as pd

from analyze.report.names import HIGHER_IS_BETTER, METRIC_NAMES, metric_label

MARK = "†"  # not significantly different from the column's best (analyze.report.significance)
MARK_TEX = r"$^\dagger$"


MISSING_MD = "–"  # not computed: no row in the results
MISSING_TEX = "--"
UNDEFINED = "n/a"  # computed and undefined: the row's value is NaN
UNDEFINED_NOTE = ("n/a: undefined (the value is NaN: the pooled frames give the metric no value, e.g. AuPRC without "
                  "an anomaly pixel, PPV without a predicted component); {missing}: not computed (no row in the results).")


def _has_undefined(table: pd.DataFrame) -> bool:
    return bool((table.astype(object) == UNDEFINED).any(axis=None))


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


def _is_best(v, best) -> bool:
    num = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
    return best is not None and not pd.isna(num) and num == best


def to_markdown(table: pd.DataFrame, caption: str | None = None, bold_best: bool = True) -> str:
    """A Markdown pipe table (pandas ``DataFrame.to_markdown``): one header row ``"dataset /
    metric ↑"``, the index as leading columns, a caption paragraph above.

    Numbers as ``61.39``; missing cells ``–``; the best value of each column in bold.
    """
    caption = table.attrs.get("caption") if caption is None else caption
    best = _best(table) if bold_best else {}
    index = [[_fmt_index(i).replace("|", "\\|") for i in (idx if isinstance(idx, tuple) else (idx,))]
             for idx in table.index]
    marks = table.attrs.get("marks", set())
    cells = [[(f"**{_fmt(v, MISSING_MD)}**" if _is_best(v, best.get(col)) else _fmt(v, MISSING_MD))
              + (MARK if (i, j) in marks else "") for j, (col, v) in enumerate(row.items())]
             for i, (_, row) in enumerate(table.iterrows())]
    headers = [n or "" for n in table.index.names]
    headers += [" / ".join(p for p in _header(c, "unicode") if p).replace("|", "\\|") for c in table.columns]
    shown = pd.DataFrame([i + c for i, c in zip(index, cells)])
    text = shown.to_markdown(index=False, headers=headers, tablefmt="pipe", disable_numparse=True,
                             colalign=["left"] * table.index.nlevels + ["right"] * len(table.columns))
    note = f"\n{UNDEFINED_NOTE.format(missing=MISSING_MD)}\n" if _has_undefined(table) else ""
    return (f"{caption}\n\n" if caption else "") + text + "\n" + note


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
    marks = table.attrs.get("marks", set())
    for i, (idx, row) in enumerate(table.iterrows()):
        idx = idx if isinstance(idx, tuple) else (idx,)
        first = _fmt_index(idx[0])
        if n_idx > 1 and prev is not None and first != prev:
            lines.append("\\midrule")
        cells = [_tex(first) if (n_idx == 1 or first != prev) else ""]
        cells += [_tex(_fmt_index(i)) for i in idx[1:]]
        prev = first
        for j, (col, v) in enumerate(row.items()):
            text = _tex(_fmt(v, MISSING_TEX)) if isinstance(v, str) else _fmt(v, MISSING_TEX)
            if _is_best(v, best.get(col)):
                text = f"\\textbf{{{text}}}"
            cells.append(text + (MARK_TEX if (i, j) in marks else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if _has_undefined(table):
        lines.append(f"\\par{{\\footnotesize {_tex(UNDEFINED_NOTE.format(missing=MISSING_TEX))}}}")
    if caption:
        cap = (_tex(caption).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")
           .replace(MARK, MARK_TEX))
        lines.append(f"\\caption{{{cap}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
