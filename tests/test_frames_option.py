"""`analyze score --frames all|with-anomaly`: both ways of pooling frames, recorded in the rows.

``all`` (the default, as SMIYC) pools every frame; ``with-anomaly`` reproduces the course
evaluation code, which skips frames without an anomaly pixel together with their
in-distribution pixels. Checked against scikit-learn on the frames each rule pools.
"""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from analyze.cli.main import main as analyze_main
from analyze.scorers import score
from schemas.cache import open_cache, read_label, read_pixel_logits
from schemas.results import read_results
from tests.factories import signal_pixel_cache


def _invoke(*args):
    return CliRunner().invoke(analyze_main, [*args])


def _sklearn(path, scorer, with_anomaly_only):
    root, spec = open_cache(path)
    ss, ys = [], []
    for i in range(spec.n_frames):
        lab = read_label(root, spec, i)
        if with_anomaly_only and not (lab == 1).any():
            continue  # the course code: `if 1 not in np.unique(label): continue`
        keep = lab != 255
        ss.append(score(scorer, read_pixel_logits(root, spec, i)[:19], 1.0)[keep])
        ys.append(lab[keep])
    s, y = np.concatenate(ss), np.concatenate(ys)
    return {"auprc": average_precision_score(y, s), "auroc": roc_auc_score(y, s)}, len(ys)


def test_frames_rule_through_the_cli(tmp_path):
    cache = tmp_path / "fs_lost_found.zarr"
    signal_pixel_cache(cache, 10, seed=5, no_anomaly=(1, 6, 7), dataset="fs_lost_found")
    out = tmp_path / "results.parquet"
    common = ["score", "--cache", str(cache), "--scorers", "msp,energy", "--out", str(out), "--no-progress",
              "--scheduler", "sync"]
    res = _invoke(*common)
    assert res.exit_code == 0, res.output
    res = _invoke(*common, "--frames", "with-anomaly")
    assert res.exit_code == 0, res.output
    assert "leaves out 3 of 10 frames without an anomaly pixel" in res.output and "f001, f006, f007" in res.output
    df = read_results(out)
    assert sorted(set(df.frames)) == ["all", "with-anomaly"]  # both kept: frames is part of the key
    for rule, only in (("all", False), ("with-anomaly", True)):
        for scorer in ("msp", "energy"):
            want, n = _sklearn(cache, scorer, only)
            rows = df[(df.frames == rule) & (df.scorer == scorer)]
            assert (rows.n_frames == n).all()
            for metric, v in want.items():
                assert rows[rows.metric == metric].value.item() == pytest.approx(v, abs=1e-12), (rule, metric)
    a = df[(df.frames == "all") & (df.scorer == "msp") & (df.metric == "auprc")].value.item()
    b = df[(df.frames == "with-anomaly") & (df.scorer == "msp") & (df.metric == "auprc")].value.item()
    assert a != b  # the frames without anomaly carried in-distribution pixels that count under `all`
    # the report shows `all` by default and either rule on request, saying which
    for rule, value in ((None, a), ("with-anomaly", b)):
        rep = tmp_path / f"report_{rule}"
        res = _invoke("report", "--results", str(out), "--out", str(rep), *(["--frames", rule] if rule else []))
        assert res.exit_code == 0, res.output
        assert f"{100 * value:.2f}" in (rep / "table1.md").read_text()
        assert f"frames `{rule or 'all'}`" in (rep / "report.md").read_text()
    assert "only frames with an anomaly pixel" in (tmp_path / "report_with-anomaly" / "table1.md").read_text()
    frames = pd.read_parquet(tmp_path / "results_frames.parquet")
    assert set(frames[frames.frames == "with-anomaly"].frame) == {f"f{i:03d}" for i in (0, 2, 3, 4, 5, 8, 9)}
    assert len(set(frames[frames.frames == "all"].frame)) == 10


def test_frames_rule_refuses_a_cache_without_anomaly_and_bad_values(tmp_path):
    cache = tmp_path / "c.zarr"
    signal_pixel_cache(cache, 3, seed=6, no_anomaly=(0, 1, 2))
    res = _invoke("score", "--cache", str(cache), "--frames", "with-anomaly", "--out", str(tmp_path / "r.parquet"),
                  "--no-progress", "--scheduler", "sync")
    assert res.exit_code == 1 and "no done frame has an anomaly pixel" in res.output
    assert not (tmp_path / "r.parquet").exists()
    res = _invoke("score", "--cache", str(cache), "--frames", "some", "--out", str(tmp_path / "r.parquet"))
    assert res.exit_code == 2 and "--frames" in res.output
