"""``analyze report``: every table and figure of one results file into a folder, with notes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from analyze.report.cells import RowConflict
from analyze.report.figures import plot_curves, plot_scorer_bars, plot_vs_temperature
from analyze.report.names import METRIC_NAMES, TABLE_METRICS, default_miou_dataset, model_name, scorer_name, slug
from analyze.report.rows import anomaly_protocols, anomaly_rows, has_ci, temperature_grids
from analyze.report.tables import table1, table2
from analyze.report.text import to_latex, to_markdown
from schemas.results import ResultsError, read_results, side_table_paths

log = logging.getLogger(__name__)


def curves_path_for(results_path: str | os.PathLike) -> Path:
    """``results_curves.parquet`` beside ``results.parquet`` (as ``analyze score`` writes it)."""
    return side_table_paths(results_path)[1]


def write_report(results_path: str | os.PathLike, out_dir: str | os.PathLike, protocol: str | None = None,
                 warn: Callable[[str], None] | None = None, frames: str | None = None) -> list[Path]:
    """Write Tables 1-2 (``.md``, ``.tex``, and ``*_ci`` variants when intervals exist), the
    figures (PNG) and ``report.md`` (everything in one page, with notes) into ``out_dir``.

    ``protocol=None`` uses ``exact`` when present, else the only protocol present;
    ``frames=None`` uses ``all`` when present. Table 1 is required (``ResultsError`` when the
    results cannot make it); Table 2 and the T figures need a temperature grid and the
    curves need ``results_curves.parquet``: what is missing is skipped with a note (``warn``,
    default: the module logger) and listed in ``report.md``. Two rows for one number, or rows
    of one run from two caches, are an error (:class:`analyze.report.cells.RowConflict`), never a
    skipped figure. Returns the paths written.
    """
    warn = warn or log.warning
    df = read_results(results_path)
    out = Path(out_dir)
    protocols = anomaly_protocols(df)
    if not protocols:
        raise ResultsError(f"{results_path}: no anomaly-metric rows (only {sorted(set(df['metric']))}); "
                           "score an anomaly dataset with `analyze score`")
    if protocol is None:
        protocol = "exact" if "exact" in protocols else protocols[0]
    try:
        t1 = table1(df, protocol, frames=frames)
    except ResultsError as exc:
        raise type(exc)(f"{results_path}: cannot build Table 1: {exc}") from None
    frames = str(anomaly_rows(df, protocol, frames=frames)["frames"].iloc[0])
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    sections: list[str] = [f"# Anomaly segmentation report\n\nFrom `{results_path}`, protocol `{protocol}`, "
                           f"frames `{frames}`. Values in %; ↑ higher is better, ↓ lower is better.\n"]

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
        except RowConflict:
            raise
        except ResultsError as exc:
            note(f"{title} skipped: {exc}")
            return
        for p in got if isinstance(got, list) else [got]:
            written.append(p)
            sections.append(f"![{title}]({p.name})\n")

    ci = has_ci(df)
    text("table1.md", to_markdown(t1))
    text("table1.tex", to_latex(t1, label="tab:anomaly"))
    sections += ["## Table 1\n", to_markdown(t1)]
    if t1.iloc[:, 0].isna().all():
        note(f"Table 1: no mIoU rows (score a {default_miou_dataset()} cache with `analyze score` to fill the mIoU column)")
    else:
        miou_runs = set(zip(*[df.loc[(df["metric"] == "miou") & (df["dataset"] == default_miou_dataset()), c]
                              for c in ("model", "run")]))
        for m, r in dict.fromkeys((m, r) for m, r, _ in t1.attrs["keys"]):
            other = sorted(rr for mm, rr in miou_runs if mm == m and rr != r)
            if (m, r) not in miou_runs and other:
                note(f"Table 1: {model_name(m)} run {r} has no mIoU row; {default_miou_dataset()} was scored as run(s) "
                     f"{', '.join(other)} (give both the same `analyze score --name`)")
    if ci:
        t1c = table1(df, protocol, ci=True, frames=frames)
        text("table1_ci.md", to_markdown(t1c))
        text("table1_ci.tex", to_latex(t1c, label="tab:anomaly-ci"))

    grids = temperature_grids(df, protocol, frames)
    if not grids:
        note("Table 2 and the temperature figures skipped: no (model, scorer) has results at more than one T "
             "(run `analyze score --temps 0.5,0.75,1.1`)")
    else:
        main = next((g for g in grids if (g[0], g[2]) == ("eomt", "msp")), grids[0])
        if (main[0], main[2]) != ("eomt", "msp"):
            note(f"Table 2 shows {model_name(main[0])} {scorer_name(main[2])}: EoMT MSP has no temperature grid")
        t2 = table2(df, main[0], main[2], protocol, main[3], frames=frames)
        text("table2.md", to_markdown(t2))
        text("table2.tex", to_latex(t2, label="tab:temperature"))
        sections += ["## Table 2\n", to_markdown(t2)]
        if ci:
            t2c = table2(df, main[0], main[2], protocol, main[3], ci=True, frames=frames)
            text("table2_ci.md", to_markdown(t2c))
            text("table2_ci.tex", to_latex(t2c, label="tab:temperature-ci"))
        sections.append("## Metrics against temperature\n")
        multi_target = len({g[3] for g in grids}) > 1
        keys = t1.attrs["keys"]
        multi_run = {m for m, _, _ in keys if len({r for mm, r, _ in keys if mm == m}) > 1}
        miou_drawn = set()
        for m, r, s, tt in grids:
            label = f"{model_name(m)} ({r})" if m in multi_run else model_name(m)
            for metric in TABLE_METRICS:
                name = (f"temperature_{metric}_{slug(m)}_{slug(s)}" + (f"_{slug(r)}" if m in multi_run else "")
                        + (f"_{slug(tt)}" if multi_target else ""))
                figure(f"{label} {scorer_name(s)} {METRIC_NAMES[metric]} vs T",
                       lambda m=m, r=r, s=s, tt=tt, metric=metric, name=name: plot_vs_temperature(
                           df, metric, out / f"{name}.png", m, s, protocol, tt, run=r, frames=frames))
            # where T changes the segmentation (EoMT, query target): one mIoU figure per model and run
            miou = df[(df["model"] == m) & (df["run"] == r) & (df["metric"] == "miou") & (df["temp_target"] == tt)]
            if (m, r, tt) not in miou_drawn and miou["temperature"].nunique() > 1:
                miou_drawn.add((m, r, tt))
                name = (f"temperature_miou_{slug(m)}" + (f"_{slug(r)}" if m in multi_run else "")
                        + (f"_{slug(tt)}" if multi_target else ""))
                figure(f"{label} {METRIC_NAMES['miou']} vs T",
                       lambda m=m, r=r, s=s, tt=tt, name=name: plot_vs_temperature(
                           df, "miou", out / f"{name}.png", m, s, protocol, tt, run=r, frames=frames))

    sections.append("## Scorers compared (T = 1)\n")
    for metric in TABLE_METRICS:
        figure(f"{METRIC_NAMES[metric]} per scorer",
               lambda metric=metric: plot_scorer_bars(df, out / f"scorers_{metric}.png", metric, protocol,
                                                      frames=frames))

    cpath = curves_path_for(results_path)
    if cpath.is_file():
        import pyarrow.parquet as pq

        from schemas.results import check_side_table

        check_side_table(cpath)
        curves = pq.read_table(cpath).to_pandas()
        sections.append("## PR and ROC curves (T = 1)\n")
        figure("PR and ROC curves", lambda: plot_curves(curves, out, results=df, protocol=protocol, frames=frames))
    else:
        note(f"PR/ROC curves skipped: {cpath} not found (`analyze score` writes it beside the results)")

    if notes:
        sections.insert(1, "## Notes\n\n" + "\n".join(f"* {n}" for n in notes) + "\n")
    text("report.md", "\n".join(sections))
    return written
