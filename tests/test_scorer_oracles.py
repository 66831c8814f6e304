"""Every scorer against a direct numpy transcription of its official formula (tests/scorer_oracles.py)
on random caches of both kinds: ragged frames, overlapping and portrait EoMT windows, a flipped
pass, in-distribution statistics fit by `analyze fit`, both temperature targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.compose.queries import FrameComposer
from analyze.compose.resize import pixel_logits_to_label_size, resize_scores
from analyze.compose.frame_scores import _channels, choose_scorers, frame_inputs
from analyze.scorers.id_stats import IdStats
from analyze.maps.write import frame_maps
from analyze.scorers.pixel import score_many
from analyze.scorers.registry import get_scorers
from schemas.cache import open_cache
from tests import scorer_oracles as O
from tests.factories import pixel_cache, query_cache

TEMPS = "0.5,2"
QUERY_SIZES = [(24, 44), (44, 24), (32, 32), (20, 75)]  # overlap, portrait, one crop, three crops


def _fit(cache, out, *extra):
    res = CliRunner().invoke(analyze_main, ["fit", "--cache", str(cache), "--out", str(out), "--temps", TEMPS,
                                            "--no-progress", "--scheduler", "sync", *extra])
    assert res.exit_code == 0, res.output
    return IdStats.read(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("oracles")
    rng = np.random.default_rng(0)
    pixel_cache(d / "p_ra.zarr", [(24, 40), (30, 30), (17, 33)], rng)
    pixel_cache(d / "p_city.zarr", [(24, 40), (20, 36), (26, 26)], rng, dataset="cityscapes_val", label_kind="semantic")
    kw = dict(crop=32, n_queries=8, n_classes=19, mask_size=8, confident=0.6)
    query_cache(d / "q_ra.zarr", QUERY_SIZES, rng, hflip=True, **kw)
    query_cache(d / "q_city.zarr", [(24, 44), (32, 32), (40, 30)], rng, dataset="cityscapes_val",
                label_kind="semantic", **kw)
    return {
        "dir": d,
        "pixel": (d / "p_ra.zarr", _fit(d / "p_city.zarr", d / "p.json")),
        "query": (d / "q_ra.zarr", _fit(d / "q_city.zarr", d / "q.json")),
        "query_pixel_target": (d / "q_ra.zarr", _fit(d / "q_city.zarr", d / "qp.json", "--temp-target", "pixel")),
    }


def _x_oracles(x, t, v):
    """Every scorer of x by its official formula (float64), the statistics of v at this T."""
    return {"gen": O.gen(x, t), "gen:gamma=0.3,m=3": O.gen(x, t, 0.3, 3), **O.stats_scores(x, t, v),
            "sml:width=2,iterations=1,dilation=2": O.stats_scores(x, t, v, width=2, iterations=1, dilation=2)["sml"],
            "sml:border=geodesic": O.stats_scores(x, t, v, border="geodesic")["sml"]}


X_SCORERS = "gen,gen:gamma=0.3,m=3,kl,sml_raw,sml,sml:width=2,iterations=1,dilation=2,sml:border=geodesic"


@pytest.mark.parametrize("case", ["pixel", "query", "query_pixel_target"])
@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_scorers_of_x_equal_their_official_formulas(world, case, t):
    """The tool's x (as composed for scoring), then the scorers: GEN, KL matching, SML raw and
    smoothed, with default and non-default parameters."""
    cache, stats = world[case]
    root, spec = open_cache(cache)
    target = "pixel" if case == "query_pixel_target" else "query"
    chosen = get_scorers(X_SCORERS, spec.kind, ("id_stats",))
    names = [s.name for s in chosen]
    assert set(names) == set(_x_oracles(np.zeros((19, 2, 2)), 1.0, stats.temperatures[t]))  # the same scorers
    class_stats = stats.class_stats(spec, str(cache), "logits" if spec.kind == "pixel" else target, (t,))[t]
    for i in range(spec.n_frames):
        inputs = frame_inputs(root, spec, i)
        if spec.kind == "pixel":
            x, ts = pixel_logits_to_label_size(inputs.logits, spec.sizes[i], spec.void_channel).numpy(), t
        else:
            comp = FrameComposer(inputs.mask_logits, inputs.class_logits, inputs.geom)
            x = comp.scores(t if target == "query" else 1.0, spec.sizes[i]).numpy()
            ts = 1.0 if target == "query" else t
        got = score_many(x, ts, names, stats=class_stats)
        want = _x_oracles(x, ts, stats.temperatures[t])
        for n in names:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-9, atol=1e-12, err_msg=f"{n} frame {i}")
        # and the whole path from the cache (analyze score / maps / export) gives the same maps
        maps = frame_maps(root, spec, i, chosen, t, target, {t: class_stats})
        for n in names:
            np.testing.assert_allclose(maps[n], got[n], rtol=1e-6, atol=1e-6, err_msg=n)


def _clear(b):
    """Pixels whose Mask2Anomaly gate is not within float32 rounding of its 0.5 threshold."""
    return np.abs(b - 0.5) > 1e-4


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_mask_scorers_equal_their_official_formulas_composed_like_s(world, t):
    """EAM, no-object, Mask2Anomaly (with its channel-slicing quirk and its `> 1` condition) and
    Mask2Anomaly averaged with the flipped pass, from the cache, against the official formulas on
    per-crop quantities composed like s (overlapping, portrait and multi-crop windows)."""
    cache, _ = world["query"]
    root, spec = open_cache(cache)
    chosen = get_scorers("eam,noobject,m2a,m2a_flip,m2a:conf=0.5,first=0,last=18", "query", ("flip",))
    kept_somewhere = False
    for i in range(spec.n_frames):
        inputs = frame_inputs(root, spec, i, flip=True)
        geom = inputs.geom
        got = frame_maps(root, spec, i, chosen, t, "query")
        q = O.compose_quantities(inputs.mask_logits, inputs.class_logits, geom, t)
        qf = O.compose_quantities(inputs.flip["mask_logits"], inputs.flip["class_logits"], geom, t)
        q2 = O.compose_quantities(inputs.mask_logits, inputs.class_logits, geom, t, conf=0.5, first=0, last=18)
        want = O.mask_scores(q)
        want["m2a_flip"] = (want["m2a"] + O.mask_scores(qf)["m2a"][:, ::-1]) / 2
        want["m2a:conf=0.5,first=0,last=18"] = O.mask_scores(q2)["m2a"]
        clear = {"eam": True, "noobject": True, "m2a": _clear(q[-1]), "m2a:conf=0.5,first=0,last=18": _clear(q2[-1]),
                 "m2a_flip": _clear(q[-1]) & _clear(qf[-1])[:, ::-1]}
        kept_somewhere |= bool((q[-2] > 0).any() and (want["m2a"] == 0).any())
        for s in chosen:
            sel = np.broadcast_to(clear[s.name], want[s.name].shape)
            assert sel.mean() > 0.99
            np.testing.assert_allclose(got[s.name][sel], want[s.name][sel], atol=2e-5, err_msg=f"{s.name} frame {i}")
    assert kept_somewhere  # the data exercise Mask2Anomaly's kept queries and its zeroing


def test_query_channels_are_composed_like_s(world):
    """The composer's sum and max channels equal the oracle's per-crop quantities merged and resized
    like s, at several T at once (one upsampling)."""
    cache, _ = world["query"]
    root, spec = open_cache(cache)
    scorers = get_scorers("eam,noobject,m2a", "query")
    for i in range(spec.n_frames):
        inp = frame_inputs(root, spec, i)
        comp = FrameComposer(inp.mask_logits, inp.class_logits, inp.geom, tile_rows=5,
                             channels=_channels(scorers))
        assert comp.channel_keys == ("eam", "noobject", "m2a/kept", "m2a/gate")
        maps = comp.resized_maps((0.5, 1.0))
        for t in (0.5, 1.0):
            got = resize_scores(maps[t], spec.sizes[i]).numpy()
            want = O.compose_quantities(inp.mask_logits, inp.class_logits, inp.geom, t)
            np.testing.assert_allclose(got, want, atol=2e-6)


def test_m2a_quirks_on_one_crop():
    """The official max runs over the kept queries' channels too, and the zeroing needs more than
    one kept query: with exactly one, its mask still lowers the score but zeroes nothing."""
    from analyze.scorers.masks import channels_for
    from schemas.windows import frame_windows

    g = frame_windows(32, 32, 32)
    masks = np.full((1, 3, 8, 8), -8.0, np.float32)
    masks[0, 0, :, :4] = 8.0  # query 0 covers the left half
    classes = np.full((1, 3, 20), -10.0, np.float32)
    classes[0, 0, 5] = 10.0  # query 0: class 5 (a kept "stuff" class), p ~ 1
    classes[0, 1, 19] = classes[0, 2, 19] = 10.0  # the others: no-object
    m2a = get_scorers("m2a")[0]
    comp = FrameComposer(masks, classes, g, channels=channels_for(m2a))
    maps = comp.resized_maps((1.0,))[1.0]
    s, kept, gate = maps[:19], maps[19], maps[20]
    assert float(gate.abs().max()) == 0.0 and float(kept.max()) > 0.99  # one kept query: no gate
    score = score_many(s, 1.0, ["m2a"], channels={"m2a/kept": kept, "m2a/gate": gate})["m2a"]
    np.testing.assert_allclose(score, 1 - np.maximum(s.numpy().max(0), kept.numpy()), atol=1e-12)
    classes[0, 1, 19], classes[0, 1, 7] = -10.0, 10.0  # a second kept query: now its region is zeroed
    masks[0, 1] = masks[0, 0]
    comp = FrameComposer(masks, classes, g, channels=channels_for(m2a))
    maps = comp.resized_maps((1.0,))[1.0]
    score = score_many(maps[:19], 1.0, ["m2a"], channels={"m2a/kept": maps[19], "m2a/gate": maps[20]})["m2a"]
    assert (score[:, :10] == 0).all() and (score[:, 20:] > 0).all()
    assert not np.signbit(score).any()  # +0.0 where zeroed


def test_mask_scorers_refused_without_their_inputs(world):
    cache, _ = world["query"]
    root, spec = open_cache(cache)
    x = torch.zeros((19, 4, 4))
    with pytest.raises(ValueError, match="query channels"):
        score_many(x, 1.0, ["eam"])
    with pytest.raises(ValueError, match="statistics"):
        score_many(x, 1.0, ["kl"])
    with pytest.raises(ValueError, match="two passes"):
        score_many(x, 1.0, ["m2a_flip"])
    chosen, _ = choose_scorers(str(cache), spec, "all", (1.0,), "query")
    assert {"eam", "noobject", "m2a", "m2a_flip", "gen"} <= {s.name for s in chosen}
    assert not {"kl", "sml", "sml_raw"} & {s.name for s in chosen}


@pytest.mark.parametrize("case", ["pixel", "query"])
def test_a_scorer_does_not_depend_on_the_others_requested(world, case):
    """Each map of `--scorers all` is bit for bit the map of that scorer scored alone (the query
    channels are composed and resized apart from s, and every scorer reads its own values)."""
    cache, stats = world[case]
    root, spec = open_cache(cache)
    everything = get_scorers("all", spec.kind, ("id_stats", "flip"))
    class_stats = stats.class_stats(spec, str(cache), "logits" if spec.kind == "pixel" else "query", (0.5,))
    for i in range(spec.n_frames):
        together = frame_maps(root, spec, i, everything, 0.5, "query", class_stats)
        for s in everything:
            alone = frame_maps(root, spec, i, [s], 0.5, "query", class_stats)
            np.testing.assert_array_equal(alone[s.name], together[s.name], err_msg=f"{s.name} frame {i}")


def _border(shape):
    edge = np.zeros(shape, bool)
    edge[0], edge[-1], edge[:, 0], edge[:, -1] = True, True, True, True
    return edge


@pytest.mark.parametrize("shape", [(1, 7), (6, 1), (2, 2), (9, 14), (31, 23)])
def test_sml_boundaries_follow_the_kornia_each_border_names(shape):
    """find_boundaries against the transcriptions of kornia af948c5 (the default, "pinned") and of
    later kornia ("geodesic"); pinned = geodesic plus every border pixel of class >= 2, as the
    constant paddings (0 for dilation, 1.0 for erosion) imply."""
    from analyze.scorers.sml import find_boundaries

    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    pred = rng.integers(0, 4, shape).astype(np.uint8)  # classes 0, 1 (border-neutral) and 2, 3
    pred[: max(1, shape[0] // 2)] = rng.choice([0, 1, 2, 18], size=(1, shape[1]))  # uniform runs along a border
    pinned, geodesic = O.find_boundaries(pred, "pinned"), O.find_boundaries(pred, "geodesic")
    np.testing.assert_array_equal(find_boundaries(torch.from_numpy(pred)).numpy(), pinned)
    np.testing.assert_array_equal(find_boundaries(torch.from_numpy(pred), "geodesic").numpy(), geodesic)
    np.testing.assert_array_equal(pinned, geodesic | (_border(shape) & (pred >= 2)))
    uniform = torch.full(shape, 5, dtype=torch.uint8)  # no boundary inside the image
    np.testing.assert_array_equal(find_boundaries(uniform).numpy(), _border(shape))
    assert not find_boundaries(uniform, "geodesic").any()
    with pytest.raises(ValueError, match="border must be one of pinned, geodesic"):
        find_boundaries(torch.from_numpy(pred), "reflect")


def test_sml_border_changes_the_map_only_near_borders_of_class_2_and_above():
    """On a uniform prediction of class 5 the geodesic border finds no boundary at all, the pinned
    one a frame of boundary pixels: the smoothed maps differ, and each equals its oracle."""
    rng = np.random.default_rng(7)
    score = rng.normal(size=(40, 50))
    for cls, differs in ((5, True), (1, False)):
        pred = np.full(score.shape, cls, np.uint8)
        pred[15:25, 20:30] = 0  # an interior object: a boundary under both borders
        got = {b: _smoothed(score, pred, b) for b in ("pinned", "geodesic")}
        for b in got:
            np.testing.assert_allclose(got[b], O.boundary_suppression_smoothing(score, pred, border=b),
                                       rtol=1e-12, atol=1e-12, err_msg=b)
        assert (not np.array_equal(got["pinned"], got["geodesic"])) is differs


def _smoothed(score, pred, border):
    from analyze.scorers.sml import suppress_and_smooth

    return suppress_and_smooth(torch.from_numpy(score), torch.from_numpy(pred), border=border).numpy()
