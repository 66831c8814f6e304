"""The two commands end to end on synthetic data: extract -> score -> report / maps / temperature."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas.results import read_results


def _ok(res):
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path, checkpoints):
    ex, an = CliRunner(), CliRunner()
    data = tmp_path / "data"
    for ds, n in (("road_anomaly", 4), ("fs_static", 3), ("cityscapes_val", 3)):
        _ok(ex.invoke(extract_main, ["datasets", "synth", "--dataset", ds, "--out", str(data), "--n", str(n),
                                     "--size", "48x96"]))
    caches = []
    for model in ("erfnet", "eomt"):
        for ds in ("road_anomaly", "fs_static", "cityscapes_val"):
            cache = tmp_path / "caches" / model / f"{ds}.zarr"
            args = ["run", "--model", model, "--dataset", ds, "--data-root", str(data), "--checkpoint",
                    str(checkpoints[model]), "--cache", str(cache), "--no-progress"]
            _ok(ex.invoke(extract_main, args + (["--input-height", "32"] if model == "erfnet" else [])))
            caches += ["--cache", str(cache)]
    out = tmp_path / "results.parquet"
    stats = []  # in-distribution statistics of each model, on its cityscapes_val cache
    for model in ("erfnet", "eomt"):
        stats += ["--id-stats", str(tmp_path / f"stats_{model}.json")]
        _ok(an.invoke(analyze_main, ["fit", "--cache", str(tmp_path / "caches" / model / "cityscapes_val.zarr"),
                                     "--temps", "0.5,1.1", "--out", stats[-1], "--no-progress"]))
    res = _ok(an.invoke(analyze_main, ["score", *caches, "--scorers", "all", "--temps", "0.5,1.1", "--out", str(out),
                                       "--no-progress", "--scheduler", "sync", "--component-metrics", *stats]))
    assert "wrote" in res.output
    df = read_results(out)
    eomt = df[(df.model == "eomt") & (df.dataset == "road_anomaly")]
    assert set(eomt.scorer) == {"msp", "maxlogit", "maxentropy", "energy", "rba", "gen", "kl", "sml", "sml_raw",
                                "eam", "noobject", "m2a"}  # m2a_flip: these caches have no flipped pass
    assert set(df[df.model == "erfnet"].scorer) == {"msp", "maxlogit", "maxentropy", "energy", "gen", "kl", "sml",
                                                    "sml_raw", "semantic"}
    assert set(eomt.metric) == {"auprc", "fpr95", "auroc", "siou", "ppv", "mean_f1"}
    # every row of a key counts the non-void pixels pooled, component rows too
    keyed = df[df.scorer != "semantic"].groupby(["model", "dataset", "scorer", "temperature"], observed=True)
    assert (keyed["n_pixels"].nunique() == 1).all() and (df.n_pixels > 0).all()
    miou = df[df.metric == "miou"]
    assert sorted(miou[miou.model == "eomt"].temperature) == [0.5, 1.0, 1.1]
    assert list(miou[miou.model == "erfnet"].temperature) == [1.0]
    assert (tmp_path / "results_frames.parquet").exists() and (tmp_path / "results_curves.parquet").exists()
    # running a subset again replaces rows instead of duplicating them
    _ok(an.invoke(analyze_main, ["score", caches[0], caches[1], "--scorers", "msp", "--out", str(out),
                                 "--no-progress", "--scheduler", "sync"]))
    assert len(read_results(out)) == len(df)

    report = tmp_path / "report"
    res = _ok(an.invoke(analyze_main, ["report", "--results", str(out), "--out", str(report)]))
    table = (report / "table1.md").read_text()
    v = df[(df.model == "eomt") & (df.scorer == "rba") & (df.dataset == "fs_static") & (df.metric == "auprc")
           & (df.temperature == 1.0)].value.iloc[0]
    assert f"{100 * v:.2f}" in table
    pngs = sorted(report.glob("*.png"))
    assert len(pngs) >= 4
    assert all(Image.open(p).size[0] > 300 for p in pngs)

    res = _ok(an.invoke(analyze_main, ["maps", "--cache", caches[7], "--scorer", "msp,rba", "--out", str(tmp_path / "maps")]))
    assert (tmp_path / "maps" / "panel.png").exists()
    npy = sorted((tmp_path / "maps").glob("*.npy"))
    assert len(npy) == 8 and np.load(npy[0]).shape == (48, 96)

    res = _ok(an.invoke(analyze_main, ["temperature", "--results", str(out), "--select-on", "fs_static"]))
    sel = read_results(out)
    sel = sel[sel.selected_on != ""]
    assert len(sel) and not (sel.dataset == "fs_static").any()
    res = _ok(an.invoke(analyze_main, ["temperature", "--fit", "nll", "--cache", caches[-1], "--max-pixels", "2000"]))
    assert "T = " in res.output and "ECE" in res.output
