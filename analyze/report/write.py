"""``analyze report``: every table and figure of one results file into a folder, with notes.

The report is written section by section (:class:`Report` collects the files, the notes and
the Markdown of ``report.md``): Tables 1-2 with their significance marks
(:mod:`analyze.report.significance`), the temperature small multiples and the per-dataset
bars (:mod:`analyze.report.multiples`), the PR/ROC curves, then ``report.md`` and, with
``html=True``, the browsable ``index.html`` (:mod:`analyze.report.html`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from analyze.report.cells import RowConflict
from analyze.report.figures import plot_curves
from analyze.report.multiples import (grid_panels, miou_series, plot_dataset_bars, plot_temperature_multiples,
                                     prevalence)
from analyze.report.names import dataset_order, default_miou_dataset, model_name, scorer_name, slug
from analyze.report.rows import anomaly_protocols, anomaly_rows, has_ci, ordered, temperature_grids
from analyze.report.tables import table1, table2
from analyze.report.text import to_latex, to_markdown
from schemas.results import ResultsError, read_results
from schemas.side_tables import read_side_table, side_table_paths

log = logging.getLogger(__name__)


def curves_path_for(results_path: str | os.PathLike) -> Path:
    """``results_curves.parquet`` beside ``results.parquet`` (as ``analyze score`` writes it)."""
    return side_table_paths(results_path)[1]


@dataclass(frozen=True)
class Significance:
    """How Table 1 and 2 mark cells not significantly different from a column's best:
    ``alpha`` (0: no marks), Holm's correction per column, resamples and seed."""

    alpha: float = 0.05
    holm: bool = False
    n_boot: int = 1000
    seed: int = 0


@dataclass
class Report:
    """What the sections of one report share: the folder, the files written, the notes, the
    Markdown of ``report.md``, and what the HTML page shows (tables, figures by section)."""

    out: Path
    warn: Callable[[str], None]
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)
    curves: pd.DataFrame | None = None

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.warn(msg)

    def text(self, name: str, content: str) -> None:
        p = self.out / name
        p.write_text(content, encoding="utf-8")
        self.written.append(p)

    def figure(self, group: str, title: str, make: Callable[[], Path | list[Path]]) -> None:
        try:
            got = make()
        except RowConflict:
            raise
        except ResultsError as exc:
            self.note(f"{title} skipped: {exc}")
            return
        for p in got if isinstance(got, list) else [got]:
            self.written.append(p)
            self.figures.setdefault(group, []).append((title, p))
            self.sections.append(f"![{title}]({p.name})\n")


def write_report(results_path: str | os.PathLike, out_dir: str | os.PathLike, protocol: str | None = None,
                 warn: Callable[[str], None] | None = None, frames: str | None = None,
                 significance: Significance = Significance(), html: bool = False,
                 frame_browser: Callable[[pd.DataFrame | None, str, str], str] | None = None) -> list[Path]:
    """Write Tables 1-2 (``.md``, ``.tex``, and ``*_ci`` variants when intervals exist), the
    figures (PNG, one per figure kind and dataset) and ``report.md`` (everything in one page,
    with notes) into ``out_dir``; with ``html`` also ``index.html`` (one self-contained page,
    :mod:`analyze.report.html`), whose frame browser is ``frame_browser(per-frame table, protocol,
    frames)`` (e.g. :func:`analyze.browse.frames.frame_browser` of some caches).

    ``protocol=None`` uses ``exact`` when present, else the only protocol present;
    ``frames=None`` uses ``all`` when present. Table 1 is required (``ResultsError`` when the
    results cannot make it); Table 2 and the T figures need a temperature grid and the
    curves need ``results_curves.parquet``: what is missing is skipped with a note (``warn``,
    default: the module logger) and listed in ``report.md``. Cells not significantly different
    from their column's best are marked where ``analyze score --bootstrap`` kept per-frame data
    (``significance``). Two rows for one number, or rows of one run from two caches, are an
    error (:class:`analyze.report.cells.RowConflict`), never a skipped figure. Returns the paths written.
    """
    df = read_results(results_path)
    protocols = anomaly_protocols(df)
    if not protocols:
        raise ResultsError(f"{results_path}: no anomaly-metric rows (only {sorted(set(df['metric']))}); "
                           "score an anomaly dataset with `analyze score`")
    protocol = protocol or ("exact" if "exact" in protocols else protocols[0])
    try:
        t1 = table1(df, protocol, frames=frames)
    except ResultsError as exc:
        raise type(exc)(f"{results_path}: cannot build Table 1: {exc}") from None
    frames = str(anomaly_rows(df, protocol, frames=frames)["frames"].iloc[0])
    rep = Report(Path(out_dir), warn or log.warning)
    rep.out.mkdir(parents=True, exist_ok=True)
    rep.sections.append(f"# Anomaly segmentation report\n\nFrom `{results_path}`, protocol `{protocol}`, "
                        f"frames `{frames}`. Values in %; ↑ higher is better, ↓ lower is better.\n")
    marker = _marker(results_path, df, significance, rep)
    _table1_section(rep, df, marker(t1), protocol, frames)
    _temperature_section(rep, df, t1, protocol, frames, marker)
    frames_df = _side(side_table_paths(results_path)[0])
    _bars_section(rep, df, protocol, frames, frames_df)
    _curves_section(rep, df, curves_path_for(results_path), protocol, frames)
    if rep.notes:
        rep.sections.insert(1, "## Notes\n\n" + "\n".join(f"* {n}" for n in rep.notes) + "\n")
    rep.text("report.md", "\n".join(rep.sections))
    if html:
        from analyze.report.html import write_html

        rep.written.append(write_html(rep, results_path, df, frames_df, protocol, frames, frame_browser))
    return rep.written


def _side(path: Path) -> pd.DataFrame | None:
    """The side table at ``path`` (checked as a results side table), None where there is none."""
    return read_side_table(path) if path.is_file() else None


def _marker(results_path, df: pd.DataFrame, sig: Significance, rep: Report) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A function that adds the significance marks to a table (the identity when nothing was kept)."""
    from analyze.compare.framedata import read_frame_data
    from analyze.report.significance import mark_table

    kept = read_frame_data(results_path) if sig.alpha > 0 else None
    if kept is None or kept.empty:
        if sig.alpha > 0:
            rep.note("significance marks skipped: no per-frame data beside the results (score with "
                     "`analyze score --bootstrap 1000` to keep it)")
        return lambda t: t
    return lambda t: mark_table(t, df, kept, sig.alpha, sig.holm, sig.n_boot, sig.seed)


def _table1_section(rep: Report, df: pd.DataFrame, t1: pd.DataFrame, protocol: str, frames: str) -> None:
    rep.tables["Table 1"] = t1
    rep.text("table1.md", to_markdown(t1))
    rep.text("table1.tex", to_latex(t1, label="tab:anomaly"))
    rep.sections += ["## Table 1\n", to_markdown(t1)]
    if t1.iloc[:, 0].isna().all():
        rep.note(f"Table 1: no mIoU rows (score a {default_miou_dataset()} cache with `analyze score` to fill the "
                 "mIoU column)")
    else:
        miou_runs = set(zip(*[df.loc[(df["metric"] == "miou") & (df["dataset"] == default_miou_dataset()), c]
                              for c in ("model", "run")]))
        for m, r in dict.fromkeys((m, r) for m, r, _ in t1.attrs["keys"]):
            other = sorted(rr for mm, rr in miou_runs if mm == m and rr != r)
            if (m, r) not in miou_runs and other:
                rep.note(f"Table 1: {model_name(m)} run {r} has no mIoU row; {default_miou_dataset()} was scored as "
                         f"run(s) {', '.join(other)} (give both the same `analyze score --name`)")
    if has_ci(df):
        t1c = table1(df, protocol, ci=True, frames=frames)
        rep.text("table1_ci.md", to_markdown(t1c))
        rep.text("table1_ci.tex", to_latex(t1c, label="tab:anomaly-ci"))


def _temperature_section(rep: Report, df: pd.DataFrame, t1: pd.DataFrame, protocol: str, frames: str,
                         marker: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    grids = temperature_grids(df, protocol, frames)
    if not grids:
        rep.note("Table 2 and the temperature figures skipped: no (model, scorer) has results at more than one T "
                 "(run `analyze score --temps 0.5,0.75,1.1`)")
        return
    main = next((g for g in grids if (g[0], g[2]) == ("eomt", "msp")), grids[0])
    if (main[0], main[2]) != ("eomt", "msp"):
        rep.note(f"Table 2 shows {model_name(main[0])} {main[2]}: EoMT MSP has no temperature grid")
    t2 = marker(table2(df, main[0], main[2], protocol, main[3], frames=frames))
    rep.tables["Table 2"] = t2
    rep.text("table2.md", to_markdown(t2))
    rep.text("table2.tex", to_latex(t2, label="tab:temperature"))
    rep.sections += ["## Table 2\n", to_markdown(t2)]
    if has_ci(df):
        t2c = table2(df, main[0], main[2], protocol, main[3], ci=True, frames=frames)
        rep.text("table2_ci.md", to_markdown(t2c))
        rep.text("table2_ci.tex", to_latex(t2c, label="tab:temperature-ci"))
    rep.sections.append("## Metrics against temperature\n")
    keys = t1.attrs["keys"]
    multi_run = {m for m, _, _ in keys if len({r for mm, r, _ in keys if mm == m}) > 1}
    multi_target = len({g[3] for g in grids}) > 1
    rows = anomaly_rows(df, protocol, frames=frames)
    for (m, r, tt) in dict.fromkeys((g[0], g[1], g[3]) for g in grids):
        scorers = [g[2] for g in grids if (g[0], g[1], g[3]) == (m, r, tt)]
        label = f"{model_name(m)} ({r})" if m in multi_run else model_name(m)
        panels, flat = grid_panels(df, m, r, tt, scorers, protocol, frames)
        temps = sorted({float(t) for p in panels.values() for t in p["temperature"]})
        miou = miou_series(df, m, r, tt, temps, protocol)
        if flat:
            rep.note(f"{label}: T changes neither metric of {', '.join(scorer_name(s) for s in flat)} on any "
                     "dataset; left out of its temperature figures")
        for d in ordered(rows["dataset"], dataset_order()):
            name = (f"temperature_{slug(m)}" + (f"_{slug(r)}" if m in multi_run else "")
                    + (f"_{slug(tt)}" if multi_target else "") + f"_{slug(d)}")
            rep.figure("temperature", f"{label} {d}: metrics vs T" + (" (and mIoU)" if miou else ""),
                       lambda panels=panels, flat=flat, name=name, d=d, label=label, tt=tt, miou=miou:
                       plot_temperature_multiples(panels, flat, rep.out / f"{name}.png", label, d, tt, miou))


def _bars_section(rep: Report, df: pd.DataFrame, protocol: str, frames: str, frames_df: pd.DataFrame | None) -> None:
    rep.sections.append("## Scorers compared (T = 1)\n")
    for d in ordered(anomaly_rows(df, protocol, frames=frames)["dataset"], dataset_order()):
        chance = prevalence(frames_df, d)
        rep.figure("bars", f"{d}: scorers compared",
                   lambda d=d, chance=chance: plot_dataset_bars(df, rep.out / f"scorers_{slug(d)}.png", d, protocol,
                                                                frames, chance))


def _curves_section(rep: Report, df: pd.DataFrame, cpath: Path, protocol: str, frames: str) -> None:
    curves = _side(cpath)
    if curves is None:
        rep.note(f"PR/ROC curves skipped: {cpath} not found (`analyze score` writes it beside the results)")
        return
    rep.curves = curves
    rep.sections.append("## PR and ROC curves (T = 1)\n")
    rep.figure("curves", "PR and ROC curves",
               lambda: plot_curves(curves, rep.out, results=df, protocol=protocol, frames=frames))
