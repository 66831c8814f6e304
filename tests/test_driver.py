"""`analyze score` engine: Dask pooling equals sklearn on the concatenated scores, for every
scheduler, both cache kinds, ragged frames, void pixels, a frame without anomaly."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analyze.compose.frame_scores import FrameInputs, Scoring, score_frame
from analyze.run.driver import Scheduler, ScoreError, score_cache
from analyze.scorers import get_scorers
from schemas.cache import open_cache, read_label, read_pixel_logits, read_query_outputs
from tests.factories import pixel_cache, query_cache

SIZES = [(30, 50), (20, 40), (25, 25), (12, 60)]


def _no_anomaly(root, spec, i):
    lab = read_label(root, spec, i)
    lab[lab == 1] = 0
    h, w = spec.sizes[i]
    full = np.full(spec.label_shape, 255, np.uint8)
    full[:h, :w] = lab
    root["labels"][i] = full


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("caches")
    rng = np.random.default_rng(0)
    p_root, p_spec = pixel_cache(d / "p.zarr", SIZES, rng, logit_scale=0.3)
    q_root, q_spec = query_cache(d / "q.zarr", SIZES, rng, crop=32)
    for root, spec in ((p_root, p_spec), (q_root, q_spec)):
        _no_anomaly(root, spec, 2)
    return {"pixel": str(d / "p.zarr"), "query": str(d / "q.zarr")}


def _oracle(path, scorer, t, temp_target="query"):
    """Concatenate every frame's scores (computed directly) and ask scikit-learn."""
    root, spec = open_cache(path)
    ys, ts = [], []
    for i in range(spec.n_frames):
        if spec.kind == "pixel":
            frame = FrameInputs("pixel", spec.sizes[i], logits=read_pixel_logits(root, spec, i),
                                void_channel=spec.void_channel)
        else:
            cl, ml = read_query_outputs(root, spec, i)
            frame = FrameInputs("query", spec.sizes[i], class_logits=cl, mask_logits=ml, geom=spec.windows(i))
        fs = score_frame(frame, Scoring(get_scorers(scorer), (t,), temp_target))
        lab = read_label(root, spec, i)
        keep = lab != 255
        ys.append(fs.scores[(scorer, t)][keep])
        ts.append(lab[keep])
    y, s = np.concatenate(ts), np.concatenate(ys)
    return average_precision_score(y, s), roc_auc_score(y, s)


def _value(df, scorer, t, metric):
    row = df[(df.scorer == scorer) & (df.temperature == t) & (df.metric == metric)]
    assert len(row) == 1
    return float(row.value.iloc[0])


@pytest.mark.parametrize("kind", ["pixel", "query"])
def test_exact_equals_sklearn_on_concatenated_scores(caches, kind):
    res, frames, curves = score_cache(caches[kind], "all", (0.5, 1.0), scheduler=Scheduler("threads", progress=False))
    scorers = ["msp", "maxlogit", "maxentropy", "energy", "gen"]  # `all` without statistics or a flipped pass
    scorers += ["rba", "eam", "noobject", "m2a"] if kind == "query" else []
    assert set(res.scorer) - {"semantic"} == set(scorers)
    for scorer in scorers:
        for t in (0.5, 1.0):
            ap, auroc = _oracle(caches[kind], scorer, t)
            assert abs(_value(res, scorer, t, "auprc") - ap) < 1e-9
            assert abs(_value(res, scorer, t, "auroc") - auroc) < 1e-9
    assert (res.n_frames == len(SIZES)).all()
    # per-frame table: the frame without anomaly has NaN AP and still counts its negatives
    f2 = frames[(frames.frame == "f002") & (frames.scorer == "msp") & (frames.temperature == 1.0)]
    assert f2.ap.isna().all() and (f2.n_neg > 0).all() and (f2.n_pos == 0).all()
    assert len(curves) == len(scorers) * 2


def test_two_pass_plan_equals_one_pass(caches):
    one, _, _ = score_cache(caches["query"], "msp,rba", (0.75, 1.0), scheduler=Scheduler("sync", progress=False))
    two, _, _ = score_cache(caches["query"], "msp,rba", (0.75, 1.0), scheduler=Scheduler("sync", progress=False),
                            max_memory=0)
    pd.testing.assert_frame_equal(one.reset_index(drop=True), two.reset_index(drop=True))


@pytest.mark.slow
def test_schedulers_agree(caches, monkeypatch):
    from distributed import LocalCluster

    ref, _, _ = score_cache(caches["query"], "all", (0.5, 1.0), scheduler=Scheduler("sync", progress=False))
    threads, _, _ = score_cache(caches["query"], "all", (0.5, 1.0), scheduler=Scheduler("threads", progress=False))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        sched = Scheduler(None, progress=False)  # no --scheduler: the environment names the cluster
        try:
            assert sched.client is not None
            dist, _, _ = score_cache(caches["query"], "all", (0.5, 1.0), scheduler=sched)
        finally:
            sched.close()
    for other in (threads, dist):
        np.testing.assert_allclose(other.value.to_numpy(), ref.value.to_numpy(), rtol=0, atol=1e-12)


def test_temperature_changes_eomt_miou_only_with_query_target(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "city.zarr"
    query_cache(path, [(32, 64), (40, 40)], rng, crop=32, n_classes=19, label_kind="semantic", dataset="cityscapes_val")
    q, _, _ = score_cache(str(path), "all", (0.5, 1.0), temp_target="query", scheduler=Scheduler("sync", progress=False))
    p, _, _ = score_cache(str(path), "all", (0.5, 1.0), temp_target="pixel", scheduler=Scheduler("sync", progress=False))
    assert set(q.metric) == {"miou"} and sorted(q.temperature) == [0.5, 1.0]
    assert sorted(p.temperature) == [1.0]
    assert _value(q, "semantic", 1.0, "miou") == _value(p, "semantic", 1.0, "miou")


def test_pixel_cache_miou_against_direct_confusion(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "city.zarr"
    pixel_cache(path, [(16, 32), (20, 20)], rng, label_kind="semantic", dataset="cityscapes_val")
    res, _, _ = score_cache(str(path), "all", (0.5, 1.0), scheduler=Scheduler("sync", progress=False))
    assert list(res.temperature) == [1.0]  # T never changes ERFNet's argmax
    root, spec = open_cache(path)
    conf = np.zeros((19, 19), np.int64)
    for i in range(spec.n_frames):
        fs = score_frame(FrameInputs("pixel", spec.sizes[i], logits=read_pixel_logits(root, spec, i), void_channel=19),
                         Scoring())
        pred, lab = fs.semantic[1.0], read_label(root, spec, i)
        keep = lab != 255
        np.add.at(conf, (lab[keep], pred[keep]), 1)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    assert abs(_value(res, "semantic", 1.0, "miou") - iou.mean()) < 1e-12


def test_unfinished_cache_is_refused_or_partially_scored(tmp_path):
    rng = np.random.default_rng(3)
    root, spec = pixel_cache(tmp_path / "c.zarr", SIZES, rng)
    root["done"][1] = False
    with pytest.raises(ScoreError, match="1 of 4 frames are not done .*f001"):
        score_cache(str(tmp_path / "c.zarr"), "msp", (1.0,), scheduler=Scheduler("sync", progress=False))
    warnings = []
    res, _, _ = score_cache(str(tmp_path / "c.zarr"), "msp", (1.0,), scheduler=Scheduler("sync", progress=False),
                            allow_partial=True, warn=warnings.append)
    assert (res.n_frames == 3).all() and "not done" in warnings[0]


def test_nan_logits_name_the_frame(tmp_path):
    rng = np.random.default_rng(4)
    root, spec = pixel_cache(tmp_path / "c.zarr", SIZES, rng)
    logits = root["logits"][2]
    logits[0, 0, 0] = np.nan
    root["logits"][2] = logits
    with pytest.raises(ScoreError, match="frame f002 .*NaN"):
        score_cache(str(tmp_path / "c.zarr"), "msp", (1.0,), scheduler=Scheduler("sync", progress=False))


def test_bootstrap_intervals_bracket_the_estimate_and_are_seeded(caches):
    sched = Scheduler("sync", progress=False)
    a, _, _ = score_cache(caches["pixel"], "msp,maxlogit", (1.0,), scheduler=sched, bootstrap=200, seed=3)
    b, _, _ = score_cache(caches["pixel"], "msp,maxlogit", (1.0,), scheduler=sched, bootstrap=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    anomaly = a[a.metric.isin(["auprc", "auroc", "fpr95"])]
    assert anomaly.ci_low.notna().all()
    assert ((anomaly.ci_low <= anomaly.value + 0.02) & (anomaly.value - 0.02 <= anomaly.ci_high)).all()
    assert (anomaly.ci_high - anomaly.ci_low > 0).all()
    none, _, _ = score_cache(caches["pixel"], "msp", (1.0,), scheduler=sched)
    assert none.ci_low.isna().all()


def test_cache_by_fsspec_url_with_storage_options(caches):
    sched = Scheduler("sync", progress=False)
    by_path, _, _ = score_cache(caches["pixel"], "msp", (1.0,), scheduler=sched)
    by_url, _, _ = score_cache("file://" + caches["pixel"], "msp", (1.0,), scheduler=sched,
                               storage_options={"auto_mkdir": False})
    np.testing.assert_array_equal(by_path.value.to_numpy(), by_url.value.to_numpy())
