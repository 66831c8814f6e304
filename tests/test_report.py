"""Report tables and figures: every cell is the parquet value x 100 rounded to 2 decimals, mIoU
comes from the semantic rows, writers carry the numbers, figures are real non-blank PNGs."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analyze import report as R
from schemas.results import ResultsError, read_results, write_results
from schemas.side_tables import write_side_table

DATASETS = ["smiyc_ra21", "fs_static", "road_anomaly"]
# (model, scorer) -> AuPRC, FPR95 per dataset at T = 1 (from the seed paper)
T1 = {
    ("eomt", "rba"): [54.62, 59.53, 39.78, 61.41, 30.69, 71.48],
    ("eomt", "msp"): [61.39, 33.28, 59.67, 91.92, 46.44, 42.91],
    ("erfnet", "maxlogit"): [32.88, 70.60, 37.94, 84.00, 16.16, 79.58],
    ("erfnet", "msp"): [29.08, 62.55, 32.90, 82.95, 12.42, 82.58],
}
GRID = {0.5: [51.27, 60.41, 60.49, 69.77, 39.65, 34.94], 1.1: [62.51, 30.61, 59.54, 89.60, 46.86, 45.07]}
MIOU = {("eomt", 1.0): 0.6181, ("eomt", 0.5): 0.5912, ("eomt", 1.1): 0.6267, ("erfnet", 1.0): 0.4638}
BASE = dict(protocol="exact", n_frames=10, n_pixels=1000, cache_digest="d", selected_on="", frames="all",
            run="r1")


def _target(model):
    return "logits" if model == "erfnet" else "query"


def _rows(grid=True, ci=False):
    rows = []
    rng = np.random.default_rng(0)

    def add(model, scorer, t, vals, **over):
        for j, d in enumerate(DATASETS):
            for k, metric in enumerate(("auprc", "fpr95")):
                v = vals[2 * j + k] / 100 + rng.uniform(-4e-5, 4e-5)  # not already rounded
                r = dict(BASE, model=model, dataset=d, scorer=scorer, temperature=t, temp_target=_target(model),
                         metric=metric, value=v)
                if ci:
                    r |= dict(ci_low=v - 0.02, ci_high=v + 0.03)
                rows.append(r | over)

    for (m, s), vals in T1.items():
        add(m, s, 1.0, vals)
    if grid:
        for t, vals in GRID.items():
            add("eomt", "msp", t, vals)
    for (m, t), v in MIOU.items():
        if grid or t == 1.0:
            rows.append(dict(BASE, model=m, dataset="cityscapes_val", scorer="semantic", temperature=t,
                             temp_target=_target(m), metric="miou", value=v))
    # decoys the tables must not pick up: another protocol, a temperature selection, AUROC
    add("eomt", "msp", 1.0, [1.0] * 6, protocol="smiyc")
    add("eomt", "msp", 1.1, [2.0] * 6, selected_on="smiyc_ra21")
    rows.append(dict(BASE, model="eomt", dataset="fs_static", scorer="msp", temperature=1.0, temp_target="query",
                     metric="auroc", value=0.5))
    return pd.DataFrame(rows)


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(_rows(), path)
    return path


def _pct(v):
    return float(np.round(100 * v, 2))


def _value(df, **key):
    sel = df[(df.protocol == "exact") & (df.selected_on == "")]
    for k, v in key.items():
        sel = sel[np.isclose(sel[k], v)] if k == "temperature" else sel[sel[k] == v]
    assert len(sel) == 1, key
    return float(sel["value"].iloc[0])


def test_table1_cells_equal_parquet(results):
    df = read_results(results)
    t = R.table1(df)
    assert list(t.index) == [("ERFNet", "MSP"), ("ERFNet", "MaxLogit"), ("EoMT", "MSP"), ("EoMT", "RbA")]
    assert list(t.columns.get_level_values(0)[1::2]) == ["SMIYC RA-21", "FS Static", "RoadAnomaly"]
    assert t.columns[0] == ("Cityscapes val", "mIoU")
    for (m, s) in T1:
        row = t.loc[(R.MODELS[m], R.SCORERS[s])]
        assert row.iloc[0] == _pct(MIOU[(m, 1.0)])  # the model's semantic row, same for every scorer
        for d in DATASETS:
            for metric in ("auprc", "fpr95"):
                want = _pct(_value(df, model=m, scorer=s, dataset=d, metric=metric, temperature=1.0))
                assert row[(R.dataset_name(d), R.METRIC_NAMES[metric])] == want


def test_table1_missing_cell_is_nan_and_protocol_filters(results):
    df = read_results(results)
    df = df[~((df.model == "erfnet") & (df.scorer == "msp") & (df.dataset == "fs_static"))]
    t = R.table1(df)
    assert np.isnan(t.loc[("ERFNet", "MSP"), ("FS Static", "AuPRC")])
    s = R.table1(df, protocol="smiyc")
    assert list(s.index) == [("EoMT", "MSP")] and s.iloc[0, 1] == 1.0
    with pytest.raises(ResultsError, match="protocol 'other'"):
        R.table1(df, protocol="other")


def test_table2_rows_are_temperatures_with_miou_per_t(results):
    df = read_results(results)
    t = R.table2(df)
    assert list(t.index) == [0.5, 1.0, 1.1]
    for temp in (0.5, 1.0, 1.1):
        assert t.loc[temp].iloc[0] == _pct(MIOU[("eomt", temp)])
        for d in DATASETS:
            want = _pct(_value(df, model="eomt", scorer="msp", dataset=d, metric="fpr95", temperature=temp))
            assert t.loc[temp, (R.dataset_name(d), "FPR95")] == want
    with pytest.raises(ResultsError, match="no temperature grid"):
        R.table2(df, model="erfnet", scorer="msp")
    # Table 1 at another T: EoMT's mIoU at that T (query target), never the T = 1 value
    t11 = R.table1(df, temperature=1.1)
    assert list(t11.index) == [("EoMT", "MSP")] and t11.iloc[0, 0] == _pct(MIOU[("eomt", 1.1)])


def test_writers_carry_numbers_and_directions(results):
    df = read_results(results)
    for t in (R.table1(df), R.table2(df)):
        md, tex = R.to_markdown(t), R.to_latex(t)
        for v in t.to_numpy().ravel():
            if not np.isnan(v):
                assert f"{v:.2f}" in md and f"{v:.2f}" in tex
        assert "AuPRC ↑" in md and "FPR95 ↓" in md
        assert r"AuPRC $\uparrow$" in tex and r"FPR95 $\downarrow$" in tex
        assert r"\multicolumn{2}{c}{SMIYC RA-21}" in tex and r"FS L\&F" not in md
    md = R.to_markdown(R.table1(df))
    assert md.count("\n| ") == 1 + 4  # header + one line per row
    assert "**61.39**" in md  # best RA-21 AuPRC in bold


def test_markdown_cells_are_the_table_cells(results):
    """Parsed back, the Markdown table holds exactly the table's cells (index left-aligned,
    values right-aligned, missing as a dash, the best value of a column in bold)."""
    df = read_results(results)
    for t in (R.table1(df), R.table2(df)):
        lines = [ln for ln in R.to_markdown(t).splitlines() if ln.startswith("|")]
        header, align, *body = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
        n_idx = t.index.nlevels
        assert header[:n_idx] == [n or "" for n in t.index.names]
        assert header[n_idx:] == [f"{d} / {R.metric_label(dict((v, k) for k, v in R.METRIC_NAMES.items())[m])}"
                                  for d, m in t.columns]
        assert [a.endswith(":") for a in align] == [False] * n_idx + [True] * len(t.columns)
        assert len(body) == len(t)
        for (idx, row), line in zip(t.iterrows(), body):
            idx = idx if isinstance(idx, tuple) else (idx,)
            assert line[:n_idx] == [f"{i:g}" if isinstance(i, float) else i for i in idx]
            assert [c.strip("*") for c in line[n_idx:]] == ["–" if np.isnan(v) else f"{v:.2f}" for v in row]


def test_ci_variant(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(_rows(ci=True), path)
    df = read_results(path)
    t = R.table1(df, ci=True)
    v = _value(df, model="eomt", scorer="msp", dataset="smiyc_ra21", metric="auprc", temperature=1.0)
    assert t.loc[("EoMT", "MSP"), ("SMIYC RA-21", "AuPRC")] == f"{_pct(v):.2f} [{100 * (v - 0.02):.1f}, " \
                                                                 f"{100 * (v + 0.03):.1f}]"
    assert R.has_ci(df) and not R.has_ci(_rows())


def _check_png(path, min_w=400, min_h=250):
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w >= min_w and h >= min_h
        a = np.asarray(im.convert("RGB"))
    colours = a.reshape(-1, 3).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    assert a.std() > 10 and np.unique(colours).size > 20  # not blank


def test_write_report_everything(results, tmp_path):
    curves = []
    for (m, s) in T1:
        for d in DATASETS[:1]:
            x = np.linspace(0, 1, 50)
            curves.append(dict(BASE, model=m, dataset=d, scorer=s, temperature=1.0, temp_target=_target(m),
                               recall=x.tolist(), precision=(1 - 0.8 * x ** 2).tolist(), fpr=x.tolist(),
                               tpr=np.sqrt(x).tolist()))
    write_side_table(pd.DataFrame(curves), tmp_path / "results_curves.parquet")
    out = tmp_path / "report"
    paths = R.write_report(results, out)
    names = {p.name for p in paths}
    # one figure per (figure kind, dataset)
    assert {"table1.md", "table1.tex", "table2.md", "table2.tex", "report.md", "curves_smiyc_ra21.png"} <= names
    assert {f"scorers_{d}.png" for d in DATASETS} | {f"temperature_eomt_{d}.png" for d in DATASETS} <= names
    assert len([n for n in names if n.endswith(".png")]) == 2 * len(DATASETS) + 1
    assert not any(n.startswith("temperature_erfnet") for n in names)  # no ERFNet grid
    assert "EoMT smiyc_ra21: metrics vs T (and mIoU)" in (out / "report.md").read_text()  # query T moves the mIoU
    assert not any("ci" in n for n in names)
    for p in paths:
        assert p.is_file()
        if p.suffix == ".png":
            _check_png(p)
    assert "61.39" in (out / "table1.md").read_text()
    assert "62.67" in (out / "table2.tex").read_text()  # mIoU at T = 1.1


def test_write_report_without_grid_or_curves(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(_rows(grid=False), path)
    notes = []
    paths = R.write_report(path, tmp_path / "out", warn=notes.append)
    names = {p.name for p in paths}
    assert "table1.md" in names and "table2.md" not in names
    assert not any(n.startswith("temperature_") for n in names)
    assert any("Table 2" in n for n in notes) and any("curves" in n for n in notes)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Table 2 and the temperature figures skipped" in report


def test_write_report_needs_anomaly_rows(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(pd.DataFrame([dict(BASE, model="eomt", dataset="cityscapes_val", scorer="semantic",
                                     temperature=1.0, temp_target="query", metric="miou", value=0.6)]), path)
    with pytest.raises(ResultsError, match="no anomaly-metric rows"):
        R.write_report(path, tmp_path / "out")


def test_every_scorer_of_the_registry_has_a_display_name():
    """A scorer added to analyze.scorers.SCORERS needs its name in the tables (and its row order)."""
    from analyze.scorers import SCORERS as REGISTRY

    assert list(R.SCORERS) == list(REGISTRY)


def test_table1_and_figures_include_every_scored_scorer(tmp_path):
    """Every scorer scored, a non-default parameter setting included, gets a Table 1 row (registry
    order, display name with its parameters) and a bar in the figure."""
    from analyze.scorers import SCORERS as REGISTRY

    names = list(REGISTRY) + ["gen:gamma=0.2,m=10"]
    rng = np.random.default_rng(1)
    rows = [dict(BASE, model="eomt", dataset=d, scorer=s, temperature=1.0, temp_target="query", metric=m,
                 value=rng.uniform(0.1, 0.9)) for s in reversed(names) for d in DATASETS for m in ("auprc", "fpr95")]
    rows += [dict(BASE, model="erfnet", dataset=d, scorer=s, temperature=1.0, temp_target="logits", metric=m,
                  value=rng.uniform(0.1, 0.9)) for s in ("kl", "gen") for d in DATASETS for m in ("auprc", "fpr95")]
    path = tmp_path / "results.parquet"
    write_results(pd.DataFrame(rows), path)
    t = R.table1(read_results(path))
    want = [("ERFNet", "GEN"), ("ERFNet", "KL matching")]
    want += [("EoMT", REGISTRY[n].display) for n in REGISTRY]
    want.insert(2 + list(REGISTRY).index("gen") + 1, ("EoMT", "GEN (gamma=0.2, m=10)"))
    assert list(t.index) == want
    cell = t.loc[("EoMT", "Mask2Anomaly (flip)"), ("FS Static", "AuPRC")]
    assert cell == _pct(_value(read_results(path), model="eomt", scorer="m2a_flip", dataset="fs_static",
                               metric="auprc", temperature=1.0))
    paths = R.write_report(path, tmp_path / "out")
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "GEN (gamma=0.2, m=10)" in md and "No-object" in md and "SML (raw)" in md
    bars = [p for p in paths if p.name.startswith("scorers_")]
    assert len(bars) == len(DATASETS)
    for p in bars:
        _check_png(p)
