"""`analyze score --bootstrap`: each protocol's intervals come from that protocol's estimator.

Checked through the CLI against independent computations on the resampled frames (drawn
as the tool draws them: ``numpy.random.default_rng(seed).multinomial(F, 1/F)``): scikit-learn
on the concatenated resample for ``exact``, and for ``smiyc`` the benchmark's procedure
written out here (float16 scores, ``np.quantile`` percentile bins and ``np.histogram`` per
frame, pooled curve, AP as ``sum(diff(recall) * precision[1:])``, FPR at the first
TPR >= 0.95). Frames without a labelled pixel are neither counted nor resampled; per-frame
rows hold the AP of the protocol they name.
"""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analyze.cli.main import main as analyze_main
from analyze.scorers import score
from schemas.cache import open_cache, read_label, read_pixel_logits
from schemas.results import read_results
from tests.factories import signal_pixel_cache

N_BOOT, SEED = 200, 7


def _score(args):
    res = CliRunner().invoke(analyze_main, ["score", *args, "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    return res


def _frames(path, scorer):
    """[(scores, labels)] of the frames with a labelled pixel (non-void pixels only), T = 1."""
    root, spec = open_cache(path)
    out = []
    for i in range(spec.n_frames):
        lab = read_label(root, spec, i)
        s = score(scorer, read_pixel_logits(root, spec, i)[:19], 1.0)
        keep = lab != 255
        if keep.any():
            out.append((s[keep], lab[keep]))
    return out


def _weights(n_frames):
    return np.random.default_rng(SEED).multinomial(n_frames, np.full(n_frames, 1.0 / n_frames), size=N_BOOT)


def _percentiles(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return tuple(np.percentile(v, [2.5, 97.5]))


# ---- exact: scikit-learn on each resample ---------------------------------------------------


def _exact(frames):
    s = np.concatenate([f[0] for f in frames]).astype(np.float64)
    y = np.concatenate([f[1] for f in frames])
    fpr, tpr, _ = roc_curve(y, s)
    return {"auprc": average_precision_score(y, s), "auroc": roc_auc_score(y, s),
            "fpr95": float(np.interp(0.95, tpr, fpr))}


def test_exact_intervals_are_sklearn_on_the_resamples(tmp_path):
    # < 2048 anomaly pixels: every distinct anomaly score has its own bin, the binned metrics are exact
    signal_pixel_cache(tmp_path / "c.zarr", 40, (16, 24), seed=1)
    out = tmp_path / "r.parquet"
    _score(["--cache", str(tmp_path / "c.zarr"), "--scorers", "maxlogit,msp", "--bootstrap", str(N_BOOT),
            "--seed", str(SEED), "--out", str(out)])
    df = read_results(out)
    for scorer in ("maxlogit", "msp"):
        frames = _frames(tmp_path / "c.zarr", scorer)
        assert sum(int((y == 1).sum()) for _, y in frames) < 2048
        boot = [_exact([frames[f] for f in np.repeat(np.arange(len(frames)), w)]) for w in _weights(len(frames))]
        point = _exact(frames)
        for metric in ("auprc", "auroc", "fpr95"):
            row = df[(df.scorer == scorer) & (df.metric == metric)].iloc[0]
            assert row.value == pytest.approx(point[metric], abs=1e-12)
            lo, hi = _percentiles([b[metric] for b in boot])
            assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi), abs=1e-12), (scorer, metric)
            assert row.ci_low <= row.value <= row.ci_high and row.ci_high > row.ci_low


# ---- smiyc: the benchmark's estimator on each resample -----------------------------------------


def _smiyc_bins(score, label, num_bins=768):
    """One frame as the benchmark bins it: (lower edges, anomaly counts, in-distribution counts)."""
    p16 = score.astype(np.float16)
    pos, neg = p16[label == 1], p16[label == 0]
    vmin, vmax = p16.min(), p16.max()
    eps = max(float(vmax - vmin) * 0.01, 0.01)
    edges = [np.array([float(vmin) - eps, float(vmax) + eps])]
    for x in (pos, neg):
        if x.size:
            edges.append(np.quantile(x, np.linspace(0, 1, min(num_bins // 2, x.size))).astype(np.float64))
    edges = np.unique(np.concatenate(edges))
    tp = np.histogram(pos.astype(np.float64), bins=edges)[0]
    fp = np.histogram(neg.astype(np.float64), bins=edges)[0]
    return edges[:-1], tp, fp


def _smiyc_pooled(bins, weights):
    """AP, AUROC, FPR95 of the pooled curve of frame f's bins taken weights[f] times."""
    thr = np.concatenate([e for (e, _, _), w in zip(bins, weights) if w])
    tp_rel = np.concatenate([w * t for (_, t, _), w in zip(bins, weights) if w]).astype(np.float64)
    fp_rel = np.concatenate([w * f for (_, _, f), w in zip(bins, weights) if w]).astype(np.float64)
    order = np.argsort(-thr, kind="stable")
    thr, tp, fp = thr[order], np.cumsum(tp_rel[order]), np.cumsum(fp_rel[order])
    last = np.r_[thr[1:] != thr[:-1], True]  # the complete count at each distinct threshold
    tp, fp = np.r_[0.0, tp[last]], np.r_[0.0, fp[last]]
    recall, fpr = tp / tp[-1], fp / fp[-1]
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=tp + fp > 0)
    reach = np.flatnonzero(recall >= 0.95)
    return {"auprc": float(np.sum(np.diff(recall) * precision[1:])),
            "auroc": float(np.sum(np.diff(fpr) * (recall[1:] + recall[:-1]) / 2)),
            "fpr95": float(fpr[reach[0]]) if reach.size else 1.0}


def test_smiyc_intervals_use_the_smiyc_estimator(tmp_path):
    signal_pixel_cache(tmp_path / "c.zarr", 64, (20, 32), seed=2)
    out = tmp_path / "r.parquet"
    _score(["--cache", str(tmp_path / "c.zarr"), "--scorers", "maxlogit,msp", "--protocol", "smiyc",
            "--bootstrap", str(N_BOOT), "--seed", str(SEED), "--out", str(out)])
    df = read_results(out)
    assert set(df.protocol) == {"smiyc"}
    for scorer in ("maxlogit", "msp"):
        bins = [_smiyc_bins(s, y) for s, y in _frames(tmp_path / "c.zarr", scorer)]
        point = _smiyc_pooled(bins, np.ones(len(bins), int))
        boot = [_smiyc_pooled(bins, w) for w in _weights(len(bins))]
        for metric in ("auprc", "auroc", "fpr95"):
            row = df[(df.scorer == scorer) & (df.metric == metric)].iloc[0]
            assert row.value == pytest.approx(point[metric], abs=1e-12), (scorer, metric)
            lo, hi = _percentiles([b[metric] for b in boot])
            assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi), abs=1e-12), (scorer, metric)
            # on well-behaved data the value lies inside its own interval, which has a width
            assert row.ci_low <= row.value <= row.ci_high and row.ci_high > row.ci_low, (scorer, metric)
    # per-frame rows labelled smiyc hold each frame's SMIYC AP
    frames = pd.read_parquet(tmp_path / "r_frames.parquet")
    msp = frames[frames.scorer == "msp"].set_index("frame")
    assert set(msp.protocol) == {"smiyc"}
    for i, (s, y) in enumerate(_frames(tmp_path / "c.zarr", "msp")[:8]):
        want = _smiyc_pooled([_smiyc_bins(s, y)], [1])["auprc"] if (y == 1).any() else np.nan
        assert msp.loc[f"f{i:03d}", "ap"] == pytest.approx(want, abs=1e-12, nan_ok=True)


def test_exact_per_frame_rows_are_sklearn_ap(tmp_path):
    signal_pixel_cache(tmp_path / "c.zarr", 6, seed=3, no_anomaly=(2,))
    _score(["--cache", str(tmp_path / "c.zarr"), "--scorers", "energy", "--out", str(tmp_path / "r.parquet")])
    frames = pd.read_parquet(tmp_path / "r_frames.parquet").set_index("frame")
    assert set(frames.protocol) == {"exact"}
    for i, (s, y) in enumerate(_frames(tmp_path / "c.zarr", "energy")):
        want = average_precision_score(y, s) if (y == 1).any() else np.nan
        assert frames.loc[f"f{i:03d}", "ap"] == pytest.approx(want, abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("protocol", ["exact", "smiyc"])
def test_frames_without_labels_are_neither_counted_nor_resampled(tmp_path, protocol):
    # the same frames with and without two all-void frames: identical rows, intervals included
    signal_pixel_cache(tmp_path / "with.zarr", 14, seed=4, empty=(3, 9))
    root, spec = open_cache(tmp_path / "with.zarr")
    keep = [i for i in range(spec.n_frames) if i not in (3, 9)]
    signal_pixel_cache(tmp_path / "without.zarr", 12, seed=99)
    other, ospec = open_cache(tmp_path / "without.zarr", mode="r+")
    for j, i in enumerate(keep):
        other["logits"][j] = root["logits"][i]
        other["labels"][j] = root["labels"][i]
    args = ["--scorers", "msp,maxlogit", "--protocol", protocol, "--bootstrap", "100", "--seed", "3"]
    res = _score(["--cache", str(tmp_path / "with.zarr"), *args, "--out", str(tmp_path / "a.parquet")])
    assert "2 of 14 frames are done but their labels are all void" in res.output and "f003, f009" in res.output
    _score(["--cache", str(tmp_path / "without.zarr"), *args, "--out", str(tmp_path / "b.parquet")])
    a, b = read_results(tmp_path / "a.parquet"), read_results(tmp_path / "b.parquet")
    assert (a.n_frames == 12).all() and (b.n_frames == 12).all()
    cols = ["scorer", "metric", "value", "ci_low", "ci_high", "n_pixels"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))
    assert a.ci_low.notna().all()
