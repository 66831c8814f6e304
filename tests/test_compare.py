"""`analyze compare`: paired frame-bootstrap differences from the per-frame data `analyze score
--bootstrap` keeps beside the results.

Checked through the CLI: a cell against itself gives 0, [0, 0] and p = 1; the difference is that
of the two rows' values, bit for bit; the intervals are those of a plain transcription of the
paired bootstrap (the tool's resampling counts ``default_rng(seed).multinomial(F, 1/F)``, each
resample's frames concatenated and scored by scikit-learn for both cells); cells on other
frames are refused with one line.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analyze.compare.framedata import frame_data_path
from analyze.compare.paired import holm, paired_difference
from analyze.scorers import score
from schemas.cache import open_cache, read_label, read_pixel_logits
from schemas.results import read_results
from tests.factories import run_analyze, scored_signal_cache, signal_pixel_cache

N_BOOT, SEED = 200, 3


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    _, out = scored_signal_cache(tmp, 12, (16, 24), 5, ("maxlogit", "msp", "maxentropy"), "1,2", 50)
    return tmp, out


def _pairs(out, *cells, extra=()):
    dest = out.with_name("pairs.parquet")
    args = ["compare", "--results", str(out), "--bootstrap", str(N_BOOT), "--seed", str(SEED), "--out", str(dest)]
    for c in cells:
        args += ["--cell", c]
    run_analyze([*args, *extra])
    return pd.read_parquet(dest)


def test_kept_beside_results(scored):
    _, out = scored
    data = pd.read_parquet(frame_data_path(out))
    assert len(data) == 6 and set(data["scorer"]) == {"maxlogit", "msp", "maxentropy"}
    assert all(len(ids) == 12 for ids in data["frame_ids"])


def test_cell_against_itself_is_zero(scored):
    _, out = scored
    rows = _pairs(out, "msp", "msp,t=1")
    assert len(rows) == 3  # the same cell twice: one pair, three metrics
    assert (rows["difference"] == 0).all() and (rows["ci_low"] == 0).all() and (rows["ci_high"] == 0).all()
    assert (rows["p_value"] == 1).all()


def _frames(path, scorer, t):
    root, spec = open_cache(path)
    out = []
    for i in range(spec.n_frames):
        lab = read_label(root, spec, i)
        s = score(scorer, read_pixel_logits(root, spec, i)[:19], t)
        keep = lab != 255
        out.append((s[keep].astype(np.float64), lab[keep]))
    return out


def _resampled(frames, w, metric):
    f = {"auprc": average_precision_score, "auroc": roc_auc_score}[metric]
    return np.array([f(np.concatenate([frames[i][1] for i in np.repeat(np.arange(len(frames)), row)]),
                       np.concatenate([frames[i][0] for i in np.repeat(np.arange(len(frames)), row)]))
                     for row in w])


def test_difference_and_interval_match_a_plain_transcription(scored):
    tmp, out = scored
    rows = _pairs(out, "maxlogit", "maxentropy,t=2")
    res = read_results(out)
    w = np.random.default_rng(SEED).multinomial(12, np.full(12, 1 / 12), size=N_BOOT)
    a, b = _frames(tmp / "c.zarr", "maxlogit", 1.0), _frames(tmp / "c.zarr", "maxentropy", 2.0)
    for metric in ("auprc", "auroc"):
        r = rows[rows["metric"] == metric].iloc[0]
        va = res[(res["scorer"] == "maxlogit") & (res["temperature"] == 1) & (res["metric"] == metric)]["value"].item()
        vb = res[(res["scorer"] == "maxentropy") & (res["temperature"] == 2) & (res["metric"] == metric)]["value"].item()
        assert r["difference"] == va - vb  # exactly the rows' difference
        d = _resampled(a, w, metric) - _resampled(b, w, metric)
        lo, hi = np.percentile(d, [2.5, 97.5])
        assert r["ci_low"] == pytest.approx(lo, abs=1e-12) and r["ci_high"] == pytest.approx(hi, abs=1e-12)
        p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))
        assert r["p_value"] == pytest.approx(p)


def test_every_pair_with_all(scored):
    _, out = scored
    rows = _pairs(out, extra=["--all"])
    assert len(rows) == 15 * 3  # 6 cells: 15 pairs, 3 metrics each
    flipped = _pairs(out, "msp", "maxlogit")
    again = _pairs(out, "maxlogit", "msp")
    np.testing.assert_array_equal(flipped["difference"].to_numpy(), -again["difference"].to_numpy())
    np.testing.assert_allclose(flipped["ci_low"].to_numpy(), -again["ci_high"].to_numpy(), atol=1e-15)


def test_other_frames_are_refused(scored, tmp_path):
    tmp, out = scored
    signal_pixel_cache(tmp_path / "d.zarr", 10, (16, 24), seed=6, checkpoint_sha256="b" * 64)
    mixed = tmp_path / "r.parquet"
    for cache, name in ((tmp / "c.zarr", "one"), (tmp_path / "d.zarr", "two")):
        run_analyze(["score", "--cache", str(cache), "--scorers", "msp", "--bootstrap", "20", "--out", str(mixed),
              "--name", name, "--no-progress", "--scheduler", "sync"])
    res = run_analyze(["compare", "--results", str(mixed), "--cell", "msp,run=one", "--cell", "msp,run=two"], code=1)
    assert "not scored on the same frames (12 vs 10 pooled frames" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_without_kept_data_says_how(tmp_path):
    signal_pixel_cache(tmp_path / "c.zarr", 4, (16, 24), seed=1)
    out = tmp_path / "r.parquet"
    run_analyze(["score", "--cache", str(tmp_path / "c.zarr"), "--scorers", "msp,maxlogit", "--out", str(out),
          "--no-progress", "--scheduler", "sync"])
    res = run_analyze(["compare", "--results", str(out), "--cell", "msp", "--cell", "maxlogit"], code=1)
    assert "--bootstrap N" in res.output


def test_smiyc_cell_against_itself_and_another(tmp_path):
    signal_pixel_cache(tmp_path / "c.zarr", 8, (16, 24), seed=2)
    out = tmp_path / "r.parquet"
    run_analyze(["score", "--cache", str(tmp_path / "c.zarr"), "--scorers", "msp,maxlogit", "--protocol", "smiyc",
          "--bootstrap", "20", "--out", str(out), "--no-progress", "--scheduler", "sync"])
    rows = _pairs(out, "msp", "msp", "maxlogit")
    self_rows = rows[rows["scorer_b"] == rows["scorer_a"]]
    assert len(self_rows) == 3 and (self_rows[["difference", "ci_low", "ci_high"]] == 0).all().all()
    other = rows[(rows["scorer_b"] != rows["scorer_a"])]
    assert other["ci_low"].le(other["ci_high"]).all() and other["p_value"].between(0, 1).all()


def test_holm_and_p_value():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(holm([0.5, 0.2]), [0.5, 0.4])
    got = paired_difference(np.array([0.1, 0.2, -0.1, 0.3]), np.zeros(4), 0.3, 0.1)
    assert got["difference"] == 0.3 - 0.1 and got["p_value"] == 0.5


@pytest.mark.parametrize("use_holm", [False, True])
def test_table1_marks_are_the_pairs_p_values(scored, use_holm):
    """Table 1 marks a cell iff its paired p-value against its column's best (Holm-adjusted across
    the column when asked) is at least alpha: the numbers `analyze compare` gives for those pairs."""
    from analyze.compare.framedata import read_frame_data
    from analyze.report import table1
    from analyze.report.significance import mark_table

    _, out = scored
    res = read_results(out)
    alpha = 0.05  # MaxLogit vs MaxEntropy: not significant here; MSP vs the best: significant
    t = mark_table(table1(res), res, read_frame_data(out), alpha, use_holm, N_BOOT, SEED)
    for j, (dataset, metric) in enumerate(t.attrs["cells"]):
        if dataset is None:
            continue
        at1 = res[(res["temperature"] == 1) & (res["metric"] == metric)].set_index("scorer")["value"]
        scorers = [s for _, _, s in t.attrs["keys"]]
        best = (at1.idxmax() if metric != "fpr95" else at1.idxmin())
        others = [s for s in scorers if s != best]
        rows = _pairs(out, *[f"{s}" for s in others], best)
        p = {s: rows[(rows["scorer_a"] == s) & (rows["scorer_b"] == best) & (rows["metric"] == metric)]["p_value"].item()
             for s in others}
        adjusted = dict(zip(others, holm([p[s] for s in others]))) if use_holm else p
        for i, s in enumerate(scorers):
            assert ((i, j) in t.attrs["marks"]) == (s != best and adjusted[s] >= alpha), (s, metric)
            if s != best:
                assert t.attrs["p_values"][(i, j)] == pytest.approx(adjusted[s])
    assert "paired frame bootstrap" in t.attrs["caption"] and ("Holm" in t.attrs["caption"]) == use_holm


def test_all_compares_within_each_dataset(tmp_path):
    out = tmp_path / "r.parquet"
    for name, dataset in (("a.zarr", "road_anomaly"), ("b.zarr", "fs_static")):
        signal_pixel_cache(tmp_path / name, 5, (16, 24), seed=8, dataset=dataset)
        run_analyze(["score", "--cache", str(tmp_path / name), "--scorers", "msp,maxlogit", "--bootstrap", "20",
              "--out", str(out), "--no-progress", "--scheduler", "sync"])
    res = run_analyze(["compare", "--results", str(out), "--all", "--bootstrap", "50"])
    assert res.output.count("\n") == 1 + 2 * 3  # header, one pair per dataset, three metrics each
    refused = run_analyze(["compare", "--results", str(out), "--cell", "msp,dataset=fs_static",
                    "--cell", "msp,dataset=road_anomaly"], code=1)
    assert "not scored on the same frames (dataset fs_static vs road_anomaly)" in refused.output


def test_bench_section_runs_on_a_small_case():
    from analyze.bench.compare import run_compare_every_pair

    md, data, ok = run_compare_every_pair(20_000, 0, n_frames=4)
    assert ok and data["pairs"] == 48 * 47 // 2 and data["cells"] == 48 and "goal <= 2x" in md
