"""`analyze fit` against a plain pooled computation; the statistics file; `analyze score --id-stats`
and its refusals, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.run.fit import fit_id_stats
from analyze.compose.frame_scores import frame_inputs, iter_scorer_inputs
from analyze.scorers.id_stats import IdStats, StatsError
from schemas.cache import open_cache
from schemas.results import read_results
from tests.factories import pixel_cache, query_cache

QKW = dict(crop=32, n_queries=8, n_classes=19, mask_size=8, confident=0.6)


def _an(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("idstats")
    rng = np.random.default_rng(5)
    pixel_cache(d / "p_city.zarr", [(24, 40), (20, 36), (31, 17)], rng, dataset="cityscapes_val", label_kind="semantic")
    pixel_cache(d / "p_ra.zarr", [(24, 40), (20, 20)], rng)
    query_cache(d / "q_city.zarr", [(24, 44), (44, 24), (32, 32)], rng, dataset="cityscapes_val",
                label_kind="semantic", **QKW)
    query_cache(d / "q_ra.zarr", [(24, 44), (32, 32)], rng, **QKW)
    query_cache(d / "q_fs.zarr", [(24, 44)], rng, dataset="fs_static", **QKW)
    query_cache(d / "q_other.zarr", [(24, 44)], rng, checkpoint_sha256="a" * 64, **QKW)  # another checkpoint
    # the checkpoint of the fit, extracted with another input size or precision
    query_cache(d / "q_big.zarr", [(24, 44)], rng, model_config={"num_classes": 20, "input_height": 64}, **QKW)
    query_cache(d / "q_bf16.zarr", [(24, 44)], rng, dtype="bf16", **QKW)
    return d


def _pooled(path, temps, target):
    """Per T: every pixel of every frame's scorer input u, concatenated; then per predicted class
    the count, mean and variance (ddof=1) of max u and the mean softmax, with numpy."""
    root, spec = open_cache(path)
    us = {t: [] for t in temps}
    for i in range(spec.n_frames):
        for t, x, ts in iter_scorer_inputs(frame_inputs(root, spec, i), temps, target):
            us[t].append((np.asarray(x, np.float64) / ts).reshape(x.shape[0], -1))
    out = {}
    for t, parts in us.items():
        u = np.concatenate(parts, axis=1)  # (K, N)
        top, c = u.max(0), u.argmax(0)
        e = np.exp(u - top)
        p = e / e.sum(0)
        k = u.shape[0]
        out[t] = {
            "count": [int((c == j).sum()) for j in range(k)],
            "mean": [top[c == j].mean() if (c == j).any() else None for j in range(k)],
            "var": [top[c == j].var(ddof=1) if (c == j).sum() > 1 else None for j in range(k)],
            "soft": [p[:, c == j].mean(1) if (c == j).any() else None for j in range(k)],
            "pooled": (top.mean(), top.var(ddof=1)),
        }
    return out


def _close(a, b, rtol=1e-11):
    assert (a is None) == (b is None)
    if a is not None:
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=1e-13)


@pytest.mark.parametrize("cache,target", [("p_city", "query"), ("q_city", "query"), ("q_city", "pixel")])
def test_fit_equals_a_plain_pooled_computation(caches, cache, target, tmp_path):
    temps = (0.5, 1.0, 2.0)
    out = tmp_path / "s.json"
    res = _an("fit", "--cache", caches / f"{cache}.zarr", "--temps", "0.5,2", "--temp-target", target, "--out", out,
              "--no-progress")
    assert res.exit_code == 0, res.output
    got = IdStats.read(out)
    want = _pooled(caches / f"{cache}.zarr", temps, target)
    assert sorted(got.temperatures) == list(temps)
    for t in temps:
        g, w = got.temperatures[t], want[t]
        assert g["count"] == w["count"] and sum(w["count"]) > 0
        for j in range(len(w["count"])):
            _close(g["max_mean"][j], w["mean"][j])
            _close(g["max_var"][j], w["var"][j], rtol=1e-9)
            _close(g["mean_softmax"][j], w["soft"][j])
        _close(g["pooled"]["mean"], w["pooled"][0])
        _close(g["pooled"]["var"], w["pooled"][1], rtol=1e-9)
    m = got.meta
    root, spec = open_cache(caches / f"{cache}.zarr")
    assert (m["model"], m["checkpoint_sha256"], m["dataset"], m["n_frames"]) == (
        spec.provenance.model, spec.provenance.checkpoint_sha256, "cityscapes_val", spec.n_frames)
    assert m["run"] == f"{spec.provenance.model}-00000000" and len(m["cache_digest"]) == 16
    assert m["temp_target"] == ("logits" if cache == "p_city" else target) and m["input"].startswith("u = ")


def test_any_scheduler_gives_the_same_statistics(caches):
    from distributed import Client, LocalCluster

    path = str(caches / "q_city.zarr")
    runs = [fit_id_stats(path, (0.5, 1.0), scheduler=s).to_json()["statistics"] for s in ("sync", "threads")]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runs.append(fit_id_stats(path, (0.5, 1.0), scheduler=client).to_json()["statistics"])
    assert runs[0] == runs[1] == runs[2]  # bit for bit: the frames are merged in one fixed tree


def test_stats_file_round_trip_and_bad_files(caches, tmp_path):
    stats = fit_id_stats(str(caches / "p_city.zarr"), (0.5,))
    stats.write(tmp_path / "s.json")
    back = IdStats.read(tmp_path / "s.json")
    assert back.temperatures == stats.temperatures and back.meta == stats.meta
    json.loads((tmp_path / "s.json").read_text())  # plain JSON, no NaN
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    for name, msg in (("bad.json", "not a statistics file"), ("other.json", "no format"), ("none.json", "no such")):
        with pytest.raises(StatsError, match=msg):
            IdStats.read(tmp_path / name)
    res = _an("score", "--cache", caches / "p_ra.zarr", "--id-stats", tmp_path / "bad.json", "--out",
              tmp_path / "r.parquet", "--no-progress")
    assert res.exit_code == 1 and "bad.json: not a statistics file" in res.output
    for field in ("model_config", "preprocessing", "dtype", "cache_digest"):
        assert field in back.meta
    old = {k: v for k, v in json.loads((tmp_path / "s.json").read_text()).items()
           if k not in ("model_config", "preprocessing", "dtype")}
    (tmp_path / "v1.json").write_text(json.dumps({**old, "version": 1}))
    with pytest.raises(StatsError, match="version 1 does not record the model config, input size and dtype"):
        IdStats.read(tmp_path / "v1.json")


@pytest.fixture(scope="module")
def fitted(caches, tmp_path_factory):
    d = tmp_path_factory.mktemp("fitted")
    for name, cache, extra in (("q", "q_city", ()), ("p", "p_city", ()), ("fs", "q_fs", ()),
                               ("qpix", "q_city", ("--temp-target", "pixel"))):
        res = _an("fit", "--cache", caches / f"{cache}.zarr", "--temps", "0.5", "--out", d / f"{name}.json",
                  "--no-progress", *extra)
        assert res.exit_code == 0, res.output
    return d


def test_score_with_id_stats_through_the_cli(caches, fitted, tmp_path):
    out = tmp_path / "r.parquet"
    res = _an("score", "--cache", caches / "q_ra.zarr", "--cache", caches / "p_ra.zarr", "--cache",
              caches / "q_city.zarr", "--temps", "0.5", "--id-stats", fitted / "q.json", "--id-stats",
              fitted / "p.json", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "leaves out m2a_flip: it needs flip pass" in res.output
    df = read_results(out)
    anomaly = df[df.metric == "auprc"]
    assert set(anomaly[anomaly.model == "eomt"].scorer) == {
        "msp", "maxlogit", "maxentropy", "energy", "rba", "gen", "kl", "sml", "sml_raw", "eam", "noobject", "m2a"}
    assert set(anomaly[anomaly.model == "erfnet"].scorer) == {
        "msp", "maxlogit", "maxentropy", "energy", "gen", "kl", "sml", "sml_raw"}
    assert set(anomaly.temperature) == {0.5, 1.0}


def test_all_without_stats_says_what_it_leaves_out(caches, tmp_path):
    res = _an("score", "--cache", caches / "q_ra.zarr", "--out", tmp_path / "r.parquet", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "--scorers all leaves out kl, sml, sml_raw: they need in-distribution statistics" in res.output
    assert set(read_results(tmp_path / "r.parquet").scorer) >= {"gen", "eam", "noobject", "m2a"}


@pytest.mark.parametrize("args,msg", [
    (("--cache", "q_ra", "--id-stats", "p.json"),  # another model
     "p.json (erfnet, checkpoint 00000000, fit on cityscapes_val) fits none of the caches scored"),
    (("--cache", "q_other", "--id-stats", "q.json"),  # another checkpoint of the same model
     "fits none of the caches scored (another model or checkpoint: "),
    (("--cache", "q_fs", "--id-stats", "fs.json"),  # fit on the dataset being scored
     "was fit on fs_static, the dataset"),
    (("--cache", "q_ra", "--id-stats", "q.json", "--temps", "0.75"),  # a temperature not fit
     "has statistics at T = 0.5, 1, not at T = 0.75"),
    (("--cache", "q_ra", "--id-stats", "qpix.json"),  # fit for the other temperature target
     "temperature target pixel; scoring"),
    (("--cache", "q_big", "--id-stats", "q.json"),  # fit at another input size
     "model_config.input_height differs (fit cache "),
    (("--cache", "q_bf16", "--id-stats", "q.json"),  # fit on outputs of another precision
     "dtype differs (fit cache "),
    (("--cache", "q_ra", "--scorers", "msp,kl"),  # a statistics scorer without statistics
     "scorer kl needs in-distribution statistics"),
    (("--cache", "q_ra", "--scorers", "m2a_flip"),  # a flip scorer on a cache without a flipped pass
     "needs flip pass (`extract run --hflip`) (")
])
def test_refusals_through_the_cli(caches, fitted, tmp_path, args, msg):
    args = [caches / f"{a}.zarr" if a.startswith("q_") or a.startswith("p_") else fitted / a if a.endswith(".json")
            else a for a in args]
    out = tmp_path / "r.parquet"
    res = _an("score", *args, "--temps", "0.5", "--out", out, "--no-progress")
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and msg in last
    if "--id-stats" in args:
        assert not res.output.startswith("scoring")  # refused before any cache is scored
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("spec,msg", [("gen:gamma=-1", "gamma=-1 must be > 0"), ("gen:nope=1", "no parameter"),
                                      ("kl:x=1", "no parameter")])
def test_bad_scorer_parameters_are_usage_errors(caches, tmp_path, spec, msg):
    res = _an("score", "--cache", caches / "q_ra.zarr", "--scorers", spec, "--out", tmp_path / "r.parquet")
    assert res.exit_code == 2 and msg in res.output


def test_fit_refusals_and_notes(caches, tmp_path):
    res = _an("fit", "--cache", caches / "q_ra.zarr", "--out", tmp_path / "s.json", "--no-progress")
    assert res.exit_code == 0 and "holds anomalies" in res.output  # allowed, with a warning
    res = _an("fit", "--cache", caches / "q_ra.zarr", "--out", tmp_path / "s.json", "--temps", "5000")
    assert res.exit_code == 2 and "outside [0.1, 1000]" in res.output
    res = _an("fit", "--cache", tmp_path / "none.zarr", "--out", tmp_path / "s.json")
    assert res.exit_code == 1 and "no cache found" in res.output


def test_maps_with_parameters_and_statistics(caches, fitted, tmp_path):
    from analyze.compose.frame_scores import choose_scorers
    from analyze.maps.write import frame_maps, map_filename

    out = tmp_path / "maps"
    res = _an("maps", "--cache", caches / "q_ra.zarr", "--scorer", "gen:gamma=0.2,kl,m2a", "--temp", "0.5",
              "--id-stats", fitted / "q.json", "--out", out)
    assert res.exit_code == 0, res.output
    root, spec = open_cache(caches / "q_ra.zarr")
    chosen, stats = choose_scorers("c", spec, "gen:gamma=0.2,kl,m2a", (0.5,), "query", [IdStats.read(fitted / "q.json")])
    want = frame_maps(root, spec, 0, chosen, 0.5, "query", stats)
    for name in ("gen:gamma=0.2", "kl", "m2a"):
        path = out / map_filename("f000", name, 0.5)
        assert ":" not in path.name and "=" not in path.name
        np.testing.assert_array_equal(np.load(path), want[name])
    res = _an("maps", "--cache", caches / "q_ra.zarr", "--scorer", "kl", "--out", out)
    assert res.exit_code == 1 and "kl needs in-distribution statistics" in res.output
