"""``index.html``: the whole report as one self-contained page (``analyze report --html``).

Everything is inside the file: the CSS and the script (:mod:`analyze.report.html_assets`),
the figures as ``data:image/png;base64`` URIs, the PR/ROC curves as inline SVG; the page makes
no request. Sections: notes, Table 1 and Table 2 (sortable, best in bold, the significance
marks of :mod:`analyze.report.significance` with their p-value on hover), PR and ROC curves per
dataset (the label of a curve shows on hover), the temperature small multiples, the
per-dataset bars, and the frame browser (:mod:`analyze.browse.frames`, handed in by the caller)
when caches are given.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analyze.report.html_assets import CSS, JS
from analyze.report.text import MARK, UNDEFINED, _best, _fmt, _fmt_index, _header, _is_best

SECTIONS = (("table1", "Table 1"), ("table2", "Table 2"), ("curves", "PR and ROC curves"),
            ("temperature", "Metrics against temperature"), ("bars", "Scorers compared"), ("frames", "Frames"))


def png_uri(path: str | os.PathLike) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _sort_value(v) -> str:
    """A cell's ``data-v``: the number (also the value before ``[`` in an interval cell), else empty."""
    if isinstance(v, str):
        head = v.split(" ")[0]
        try:
            return repr(float(head))
        except ValueError:
            return "" if v in ("", UNDEFINED) else v
    return "" if v is None or pd.isna(v) else repr(float(v))


def table_html(table: pd.DataFrame, table_id: str) -> str:
    """A sortable ``<table>`` of a report table: index columns first, the best of each column in
    bold, marked cells with :data:`analyze.report.text.MARK` and their p-value as a title."""
    best = _best(table)
    marks, p_values = table.attrs.get("marks", set()), table.attrs.get("p_values", {})
    heads = [html.escape(n or "") for n in table.index.names]
    heads += [html.escape(" / ".join(p for p in _header(c, "unicode") if p)) for c in table.columns]
    n_idx = table.index.nlevels
    out = [f'<table class="sortable" id="{table_id}"><thead><tr>']
    out += [f'<th class="{"idx" if j < n_idx else "num"}">{h}</th>' for j, h in enumerate(heads)]
    out.append("</tr></thead><tbody>")
    for i, (idx, row) in enumerate(table.iterrows()):
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = [f'<td class="idx" data-v="{html.escape(_fmt_index(x))}">{html.escape(_fmt_index(x))}</td>'
                 for x in idx]
        for j, (col, v) in enumerate(row.items()):
            cls = ' class="best"' if _is_best(v, best.get(col)) else ""
            mark = ""
            if (i, j) in marks:
                mark = f'<span class="mark" title="p = {p_values.get((i, j), float("nan")):.3g}">{MARK}</span>'
            cells.append(f'<td{cls} data-v="{html.escape(_sort_value(v))}">{html.escape(_fmt(v, "–"))}{mark}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _polyline(x, y, size: int, pad: int, colour: str, dash: str, label: str) -> str:
    """An SVG polyline of ``x``, ``y`` in [0, 1] on a ``size`` square with ``pad`` margins."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    w = size - 2 * pad
    pts = " ".join(f"{pad + w * a:.1f},{pad + w * (1 - b):.1f}" for a, b in zip(x[ok], y[ok]))
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    # the drawn line, then a wide transparent twin that catches the pointer for the tooltip
    return (f'<polyline points="{pts}" stroke="{colour}"{dash_attr}/>'
            f'<polyline class="hit" points="{pts}" data-label="{html.escape(label)}"/>')


def curves_svg(curves: pd.DataFrame, dataset: str, labels: dict, size: int = 330, pad: int = 34) -> str:
    """Two SVG panels (PR, ROC) of one dataset's curves, one polyline per (model, run, scorer)."""
    from analyze.report.figures import _style

    c = curves[curves["dataset"].astype(str) == dataset]
    parts = []
    for kind, (xs, ys), (xl, yl) in (("PR", ("recall", "precision"), ("recall", "precision")),
                                     ("ROC", ("fpr", "tpr"), ("false positive rate", "true positive rate"))):
        w = size - 2 * pad
        lines = [_polyline(r[xs], r[ys], size, pad, _style(r["model"], r["scorer"], j)["color"],
                           "6,3" if r["model"] == "erfnet" else "", labels.get((r["model"], r["run"], r["scorer"]), ""))
                 for j, (_, r) in enumerate(c.iterrows())]
        ticks = "".join(f'<text x="{pad + w * v:.0f}" y="{size - pad + 13}" text-anchor="middle">{v:g}</text>'
                        f'<text x="{pad - 4}" y="{pad + w * (1 - v) + 4:.0f}" text-anchor="end">{v:g}</text>'
                        for v in (0, 0.5, 1))
        axes = (ticks + f'<rect x="{pad}" y="{pad}" width="{w}" height="{w}" fill="none" stroke="#999"/>'
                f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">{xl}</text>'
                f'<text x="10" y="{size / 2}" transform="rotate(-90 10 {size / 2})" text-anchor="middle">{yl}</text>'
                f'<text x="{size / 2}" y="20" text-anchor="middle">{kind}</text>')
        parts.append(f'<svg class="curves" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
                     f'role="img" aria-label="{kind} curves of {html.escape(dataset)}">{axes}{"".join(lines)}</svg>')
    return '<div class="figs">' + "".join(parts) + "</div>"


def _curves_section(rep, df: pd.DataFrame, protocol: str, frames: str) -> str:
    from analyze.report.cells import at_t, series_labels
    from analyze.report.names import dataset_name, dataset_order, model_name, scorer_name
    from analyze.report.rows import ordered, table_keys

    c = rep.curves
    if c is None or c.empty:
        return "<p>No curves (<code>results_curves.parquet</code> not found).</p>"
    c = at_t(c[(c["protocol"].astype(str) == protocol) & (c["frames"].astype(str) == frames)], 1.0)
    c = c.drop_duplicates(["model", "run", "dataset", "scorer"])
    if c.empty:
        return "<p>No curves at T = 1 for this protocol and frame rule.</p>"
    keys = table_keys(c)
    runs = series_labels([(m, r) for m, r, _ in keys], model_name)
    labels = {(m, r, s): f"{runs[(m, r)]} {scorer_name(s)}" for m, r, s in keys}
    out = ['<p class="caption">Hover a curve for its model and scorer (ERFNet dashed, EoMT solid; colour = '
           'scorer).</p>']
    for d in ordered(c["dataset"], dataset_order()):
        out.append(f"<h3>{html.escape(dataset_name(d))}</h3>{curves_svg(c, d, labels)}")
    return "".join(out)


def _figures(rep, group: str, empty: str) -> str:
    figs = rep.figures.get(group, [])
    if not figs:
        return f"<p>{html.escape(empty)}</p>"
    return '<div class="figs">' + "".join(
        f'<figure><img src="{png_uri(p)}" alt="{html.escape(t)}"><figcaption>{html.escape(t)} '
        f"({html.escape(p.name)})</figcaption></figure>" for t, p in figs) + "</div>"


def _table_section(rep, name: str) -> str:
    t = rep.tables.get(name)
    if t is None:
        return "<p>Not made (see the notes).</p>"
    return (f'<p class="caption">{html.escape(t.attrs.get("caption", ""))} Click a header to sort.</p>'
            + table_html(t, name.lower().replace(" ", "")))


def write_html(rep, results_path, df: pd.DataFrame, frames_df: pd.DataFrame | None, protocol: str, frames: str,
               frame_browser: Callable[[pd.DataFrame | None, str, str], str] | None = None) -> Path:
    """Write ``index.html`` into ``rep.out`` (see the module docstring) and return its path;
    ``frame_browser(frames_df, protocol, frames)`` gives the frame browser's HTML."""
    browser = (frame_browser(frames_df, protocol, frames) if frame_browser is not None else
               "<p>No frame browser: give the caches (<code>analyze report --html --cache ...</code>).</p>")
    body = {
        "table1": _table_section(rep, "Table 1"),
        "table2": _table_section(rep, "Table 2"),
        "curves": _curves_section(rep, df, protocol, frames),
        "temperature": _figures(rep, "temperature", "No temperature grid in the results."),
        "bars": _figures(rep, "bars", "No bars."),
        "frames": browser,
    }
    nav = "".join(f'<a href="#{k}">{t}</a>' for k, t in SECTIONS)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes)
    sections = "".join(f'<section id="{k}"><h2>{t}</h2>{body[k]}</section>' for k, t in SECTIONS)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Anomaly segmentation report</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f"<header><h1>Anomaly segmentation report</h1><nav>{nav}</nav></header><main>"
            f"<p>From <code>{html.escape(str(results_path))}</code>, protocol <code>{protocol}</code>, frames "
            f"<code>{frames}</code>. Values in %; ↑ higher is better, ↓ lower is better.</p>"
            + (f'<ul class="notes">{notes}</ul>' if notes else "")
            + f'{sections}</main><div id="tip"></div><script>{JS}</script></body></html>')
    path = rep.out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
