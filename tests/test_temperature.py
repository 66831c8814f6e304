"""Temperature: selection never reports what it selected on; NLL fitting recovers a known T;
bootstrap intervals are deterministic, contain the estimate, narrow with more frames, and the
binned metrics are exact when every score has its own bin."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analyze.compose.queries import FrameComposer
from analyze.metrics import pixel_metrics
from analyze.metrics.bootstrap import _metrics_from_cumulative, bootstrap_ci, frame_histograms, resample_counts
from analyze.report.temperature import (chosen_temperatures, expected_calibration_error, fit_temperature_nll,
                                 pixel_keys, sample_pixels, select_temperature)
from schemas.cache import CacheSpec, create_cache, mark_done, read_query_outputs, thumbnail_size
from schemas.cache import write_frame_common, write_frame_pixel
from schemas.errors import DataError
from schemas.results import write_results
from tests.factories import provenance, query_cache

BASE = dict(protocol="exact", n_frames=5, n_pixels=100, cache_digest="d", temp_target="query", selected_on="",
            run="r1", frames="all")


def _grid(values: dict) -> pd.DataFrame:
    """values[(model, scorer, dataset, T)] = (auprc, fpr95)."""
    rows = []
    for (m, s, d, t), (ap, fpr) in values.items():
        rows.append(dict(BASE, model=m, scorer=s, dataset=d, temperature=t, metric="auprc", value=ap))
        rows.append(dict(BASE, model=m, scorer=s, dataset=d, temperature=t, metric="fpr95", value=fpr))
    return pd.DataFrame(rows)


# ---- selection ---------------------------------------------------------------------------


def test_select_hand_made(tmp_path):
    v = {}
    for t, a_ap, b_ap, a_fpr in ((0.5, 0.2, 0.9, 0.1), (1.0, 0.4, 0.5, 0.5), (1.1, 0.6, 0.1, 0.6), (2.0, 0.5, 0.3, 0.7)):
        v[("eomt", "msp", "val_a", t)] = (a_ap, a_fpr)
        v[("eomt", "msp", "test_b", t)] = (b_ap, 0.3)
        v[("eomt", "msp", "test_c", t)] = (0.3, 0.3)
    df = _grid(v)
    out = select_temperature(df, ["val_a"])
    assert set(out.dataset) == {"test_b", "test_c"}
    assert np.allclose(out.temperature, 1.1)  # best AuPRC on val_a, although test_b prefers 0.5
    assert set(out.selected_on) == {"val_a"} and set(out.metric) == {"auprc", "fpr95"}
    assert out[(out.dataset == "test_b") & (out.metric == "auprc")].value.item() == 0.1
    assert np.allclose(select_temperature(df, ["val_a"], metric="fpr95").temperature, 0.5)  # minimised
    # the rows can go back into the results table (selected_on is part of the key)
    both = write_results(pd.concat([df, out]), tmp_path / "results.parquet")
    assert len(both) == len(df) + len(out)


def test_select_tie_goes_to_t_closest_to_one():
    v = {}
    for t in (0.5, 0.9, 1.2, 3.0):
        v[("m", "msp", "a", t)] = (0.7 if t in (0.5, 0.9, 1.2) else 0.1, 0.2)
        v[("m", "msp", "b", t)] = (0.5, 0.2)
    ch = chosen_temperatures(_grid(v), ["a"])
    assert ch.temperature.item() == 0.9


def test_select_on_every_dataset_or_unknown_raises():
    v = {("m", "msp", d, t): (0.5, 0.5) for d in ("a", "b") for t in (0.5, 1.0)}
    df = _grid(v)
    with pytest.raises(ValueError, match="covers every dataset"):
        select_temperature(df, ["a", "b"])
    with pytest.raises(ValueError, match="not in the results"):
        select_temperature(df, ["zzz"])
    with pytest.raises(ValueError, match="empty"):
        select_temperature(df, [])


def test_select_never_reports_a_selection_dataset():
    datasets = ["a", "b", "c", "d"]
    for seed in range(3):
        rng = np.random.default_rng(seed)
        temps = sorted(rng.choice([0.25, 0.5, 0.75, 1.0, 1.1, 1.5, 2.0], size=rng.integers(2, 6), replace=False))
        v = {}
        for m, s in (("eomt", "msp"), ("eomt", "rba"), ("erfnet", "maxlogit")):
            for d in datasets:
                if rng.random() < 0.15:
                    continue  # datasets missing for some scorers
                for t in temps:
                    v[(m, s, d, float(t))] = (rng.random(), rng.random())
        df = _grid(v)
        present = sorted(set(df.dataset))
        for k in range(1, len(present) + 1):
            for sel in itertools.combinations(present, k):
                if set(sel) == set(present):
                    with pytest.raises(ValueError):
                        select_temperature(df, list(sel))
                    continue
                metric = ("auprc", "fpr95")[(seed + k) % 2]
                out = select_temperature(df, list(sel), metric=metric)
                assert not out.dataset.isin(sel).any()
                assert (out.selected_on == ",".join(sel)).all()
                # one T per (model, scorer): every reported row of a group shares it
                assert (out.groupby(["model", "scorer"]).temperature.nunique() <= 1).all()


# ---- calibration -------------------------------------------------------------------------


def test_ece_small_case():
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1])
    # bins: 0.95 -> acc 0.5 vs 0.95; 0.55 -> acc 1 vs 0.55; each half the pixels
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)


def _calibration_pixel_cache(path, t_true, rng, sizes=((48, 64), (40, 80), (64, 64), (32, 96))):
    spec = CacheSpec(kind="pixel", label_kind="semantic", frame_ids=tuple(f"c{i}" for i in range(len(sizes))),
                     sizes=tuple(sizes), provenance=provenance("erfnet", "cityscapes_val"), n_classes=19,
                     n_channels=20, void_channel=19, logit_sizes=tuple(sizes))
    root = create_cache(path, spec)
    for i, (h, w) in enumerate(sizes):
        z = (rng.normal(size=(20, h, w)) * 2.5).astype(np.float16)
        z[rng.integers(0, 19), :, : w // 2] += 4  # a confident half
        p = torch.softmax(torch.as_tensor(z[:19].astype(np.float32)) / t_true, 0).numpy()  # (K, h, w)
        u = rng.random((h, w))
        lab = (p.cumsum(0) < u).sum(0).clip(0, 18).astype(np.uint8)
        lab[rng.random((h, w)) < 0.05] = 255
        write_frame_pixel(root, spec, i, z)
        write_frame_common(root, spec, i, lab, np.zeros((*thumbnail_size(h, w), 3), np.uint8))
        mark_done(root, i)
    return spec


def test_fit_temperature_recovers_t_pixel(tmp_path):
    _calibration_pixel_cache(tmp_path / "c.zarr", 2.0, np.random.default_rng(0))
    fit = fit_temperature_nll(tmp_path / "c.zarr", max_pixels=12_000, seed=0)
    assert fit["T"] == pytest.approx(2.0, rel=0.1)
    assert fit["nll_after"] < fit["nll_before"]
    assert fit["ece_after"] < fit["ece_before"]
    assert fit["n_pixels"] == 12_000
    rows = fit["rows"]
    assert set(rows.metric) == {"ece"} and rows.value.between(0, 1).all()
    assert set(rows.selected_on) == {"", "cityscapes_val"}
    write_results(rows, tmp_path / "results.parquet")
    again = fit_temperature_nll(tmp_path / "c.zarr", max_pixels=12_000, seed=0)
    assert again["T"] == fit["T"]  # same pixels for a seed


def test_fit_temperature_recovers_t_query(tmp_path):
    rng = np.random.default_rng(2)
    root, spec = query_cache(tmp_path / "q.zarr", [(32, 64)] * 4, rng, crop=32, n_queries=8, n_classes=19,
                             label_kind="semantic")
    for i in range(spec.n_frames):
        cl, ml = read_query_outputs(root, spec, i)
        cl = cl * 3
        a, b = (int(x) for x in root["frame_crop_offset"][i : i + 2])
        root["class_logits"][a:b] = cl
        s = FrameComposer(ml, cl, spec.windows(i)).scores(2.0).numpy()
        p = s / s.sum(0, keepdims=True)
        lab = (p.cumsum(0) < rng.random(p.shape[1:])).sum(0).clip(0, 18).astype(np.uint8)
        root["labels"][i] = lab
    fit = fit_temperature_nll(tmp_path / "q.zarr", max_pixels=8000, seed=0)
    assert fit["T"] == pytest.approx(2.0, rel=0.15)
    assert fit["nll_after"] <= fit["nll_before"]
    assert set(fit["rows"].temp_target) == {"query"}


def test_fit_refuses_anomaly_cache(tmp_path):
    query_cache(tmp_path / "q.zarr", [(32, 32)], np.random.default_rng(0), crop=32)
    with pytest.raises(DataError, match="semantic"):
        fit_temperature_nll(tmp_path / "q.zarr")


def _labels(rng, sizes, p_void=0.3):
    out = []
    for i, (h, w) in enumerate(sizes):
        lab = rng.integers(0, 19, (h, w)).astype(np.uint8)
        lab[rng.random((h, w)) < p_void] = 255
        out.append((i, lab.ravel()))
    return out


def _oracle_sample(labels, k, seed):
    """Slow and obvious: every labelled pixel of every frame with its key, sorted, the k smallest."""
    rows = [(key, i, int(p)) for i, lab in labels
            for p, key in zip(np.flatnonzero(lab != 255), pixel_keys(seed, i, int((lab != 255).sum())))]
    return sorted((i, p) for _, i, p in sorted(rows)[:k])


@pytest.mark.parametrize("k", [1, 50, 700, 10_000])
def test_reservoir_sample_is_the_global_bottom_k(k):
    labels = _labels(np.random.default_rng(0), [(20, 30), (1, 1), (15, 40), (30, 10), (8, 8)])
    got = sample_pixels(iter(labels), k, seed=4)
    flat = sorted((i, int(p)) for i, (idx, _) in got.items() for p in idx)
    assert flat == _oracle_sample(labels, k, 4)
    for i, (idx, lab) in got.items():
        assert (np.diff(idx) > 0).all()  # sorted, distinct
        np.testing.assert_array_equal(lab, labels[i][1][idx])  # the labels of those pixels, none void
    total = sum(int((lab != 255).sum()) for _, lab in labels)
    assert len(flat) == min(k, total)
    # the sample depends on the seed only, not on the order in which frames arrive
    again = sample_pixels(iter(labels[::-1]), k, seed=4)
    assert sorted(got) == sorted(again) and all((got[i][0] == again[i][0]).all() for i in got)
    if k < total:
        other = sample_pixels(iter(labels), k, seed=5)
        assert sorted((i, int(p)) for i, (idx, _) in other.items() for p in idx) != flat


def test_reservoir_sample_is_uniform():
    """Every labelled pixel has the same chance k / N of being drawn (2000 seeds, 3 sigma)."""
    labels = _labels(np.random.default_rng(1), [(2, 5), (4, 5), (6, 5)], p_void=0.2)
    index = {(i, int(p)): j for j, (i, p) in enumerate((i, p) for i, lab in labels for p in np.flatnonzero(lab != 255))}
    k, n_seeds = 9, 2000
    hits = np.zeros(len(index))
    for seed in range(n_seeds):
        for i, (idx, _) in sample_pixels(iter(labels), k, seed).items():
            hits[[index[(i, int(p))] for p in idx]] += 1
    p = k / len(index)
    assert hits.sum() == k * n_seeds
    assert np.abs(hits / n_seeds - p).max() < 4 * np.sqrt(p * (1 - p) / n_seeds)


def test_fit_is_deterministic_for_a_seed(tmp_path):
    _calibration_pixel_cache(tmp_path / "c.zarr", 1.5, np.random.default_rng(3))
    a = fit_temperature_nll(tmp_path / "c.zarr", max_pixels=3000, seed=7)
    b = fit_temperature_nll(tmp_path / "c.zarr", max_pixels=3000, seed=7)
    c = fit_temperature_nll(tmp_path / "c.zarr", max_pixels=3000, seed=8)
    assert (a["T"], a["nll_after"], a["ece_after"]) == (b["T"], b["nll_after"], b["ece_after"])
    assert a["nll_before"] != c["nll_before"]  # another seed draws other pixels


# ---- bootstrap ---------------------------------------------------------------------------


def _frames(rng, n_frames, n_pix=400, sep=1.5):
    out = []
    for _ in range(n_frames):
        y = (rng.random(n_pix) < rng.uniform(0.02, 0.2)).astype(np.uint8)
        s = rng.normal(size=n_pix) + sep * y + rng.normal(scale=0.5)  # frame effect
        y[rng.random(n_pix) < 0.05] = 255
        out.append((s, y))
    return out


def decreasing_edges(lo: float, hi: float, n_bins: int = 2048) -> np.ndarray:
    """``n_bins + 1`` decreasing edges spanning [lo, hi] with open ends (+inf first, -inf last),
    so that every finite score falls in a bin."""
    inner = np.linspace(hi, lo, n_bins + 1)[1:-1]
    return np.concatenate(([np.inf], inner, [-np.inf]))


def binned_metrics(pos_hist: np.ndarray, neg_hist: np.ndarray) -> dict[str, float]:
    """AuPRC, AUROC, FPR95 of pooled histograms ((B,) or (F, B) summed over frames): the estimator
    of :func:`analyze.metrics.bootstrap.bootstrap_ci` on the full sample."""
    pos = np.atleast_2d(np.asarray(pos_hist, np.float64)).sum(axis=0)
    neg = np.atleast_2d(np.asarray(neg_hist, np.float64)).sum(axis=0)
    m = _metrics_from_cumulative(np.cumsum(pos)[None], np.cumsum(neg)[None])
    return {k: float(v[0]) for k, v in m.items()}


def _hists(frames, edges):
    pos, neg = zip(*(frame_histograms(s, y, edges) for s, y in frames))
    return np.stack(pos), np.stack(neg)


def test_frame_histograms_counts_and_clipping():
    edges = np.array([2.0, 1.0, 0.0, -1.0])
    s = np.array([5.0, 1.5, 1.0, 0.5, -0.5, -3.0, 0.2])
    y = np.array([1, 0, 1, 1, 0, 0, 255])
    pos, neg = frame_histograms(s, y, edges)
    assert pos.tolist() == [2, 1, 0] and neg.tolist() == [1, 0, 2]  # 5.0 -> bin 0, -3.0 -> last bin
    with pytest.raises(ValueError, match="decreasing"):
        frame_histograms(s, y, edges[::-1])


def test_binned_metrics_exact_when_every_score_has_its_bin():
    rng = np.random.default_rng(0)
    frames = [(np.round(s, 1), y) for s, y in _frames(rng, 6, 300)]  # rounding makes ties pos/neg
    s = np.concatenate([f[0] for f in frames])
    y = np.concatenate([f[1] for f in frames])
    keep = y != 255
    u = np.unique(s[keep])[::-1]
    edges = np.concatenate(([np.inf], u))  # bin b = exactly the score u[b]
    m = binned_metrics(*_hists(frames, edges))
    yt, st = y[keep], s[keep]
    assert m["auprc"] == pytest.approx(average_precision_score(yt, st), abs=1e-12)
    assert m["auroc"] == pytest.approx(roc_auc_score(yt, st), abs=1e-12)
    fpr, tpr, _ = roc_curve(yt, st)
    assert m["fpr95"] == pytest.approx(float(np.interp(0.95, tpr, fpr)), abs=1e-12)
    exact = pixel_metrics([f[0] for f in frames], [f[1] for f in frames])
    assert m["fpr95"] == pytest.approx(exact["fpr95"], abs=1e-12)


def test_bootstrap_ci_properties():
    rng = np.random.default_rng(0)
    edges = decreasing_edges(-4, 6, 256)
    small = _hists(_frames(rng, 20), edges)
    large = _hists(_frames(rng, 200), edges)
    a = bootstrap_ci(*small, n_boot=300, seed=1)
    assert a == bootstrap_ci(*small, n_boot=300, seed=1)
    assert a != bootstrap_ci(*small, n_boot=300, seed=2)
    full = binned_metrics(*small)
    for k in ("auprc", "auroc", "fpr95"):
        lo, hi = a[k]
        assert 0 <= lo <= full[k] <= hi <= 1
    b = bootstrap_ci(*large, n_boot=300, seed=1)
    for k in ("auprc", "auroc", "fpr95"):
        assert b[k][1] - b[k][0] < a[k][1] - a[k][0]
    narrow = bootstrap_ci(*small, n_boot=300, seed=1, level=0.5)
    assert narrow["auprc"][1] - narrow["auprc"][0] < a["auprc"][1] - a["auprc"][0]


def test_bootstrap_ci_equals_a_loop_over_resamples():
    # the vectorised resampling (one matrix product) against one binned evaluation per resample
    rng = np.random.default_rng(0)
    f, b = 30, 64
    pos = rng.poisson(0.5, size=(f, b))
    neg = rng.poisson(20.0, size=(f, b))
    w = resample_counts(f, 50, seed=4)
    per = [binned_metrics(wr[:, None] * pos, wr[:, None] * neg) for wr in w]
    got = bootstrap_ci(pos, neg, n_boot=50, seed=4)
    for k in ("auprc", "auroc", "fpr95"):
        assert got[k] == pytest.approx(tuple(np.percentile([m[k] for m in per], [2.5, 97.5])), abs=1e-12)
