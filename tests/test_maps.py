"""Anomaly maps: the .npy files are the scorer applied directly to the composed logits; panels
are real PNGs; frame selection is checked."""

import numpy as np
import pytest
from PIL import Image

from analyze.compose.queries import FrameComposer
from analyze.compose.resize import pixel_logits_to_label_size
from analyze.maps.write import display_range, ground_truth_rgb, map_filename, write_maps
from analyze.scorers import score
from analyze.scorers.registry import get_scorers
from schemas.cache import CacheError, open_cache, read_pixel_logits, read_query_outputs
from tests.factories import pixel_cache, query_cache


def _png_ok(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 100
        a = np.asarray(im.convert("L"))
    assert a.std() > 5


def test_pixel_maps_equal_direct_scores(tmp_path):
    sizes = [(24, 40), (30, 30), (16, 48), (20, 20), (18, 36)]
    pixel_cache(tmp_path / "p.zarr", sizes, np.random.default_rng(0))
    paths = write_maps(tmp_path / "p.zarr", "msp,maxlogit", 0.5, None, tmp_path / "maps")
    root, spec = open_cache(tmp_path / "p.zarr")
    names = {p.name for p in paths}
    assert {"panel.png", "f000_T0.5.png", "f003_T0.5.png"} <= names and "f004_T0.5.png" not in names  # first 4
    for i in range(4):
        z = pixel_logits_to_label_size(read_pixel_logits(root, spec, i), spec.sizes[i], spec.void_channel)
        for name in ("msp", "maxlogit"):
            got = np.load(tmp_path / "maps" / map_filename(spec.frame_ids[i], name, 0.5))
            assert got.dtype == np.float64 and got.shape == spec.sizes[i]
            np.testing.assert_array_equal(got, score(name, z, 0.5))
    for p in paths:
        if p.suffix == ".png":
            _png_ok(p)


def test_query_maps_chosen_frames(tmp_path):
    rng = np.random.default_rng(1)
    root, spec = query_cache(tmp_path / "q.zarr", [(30, 50), (50, 30), (32, 32)], rng, crop=32)
    paths = write_maps(tmp_path / "q.zarr", "rba,msp", 2.0, ["f001"], tmp_path / "maps", temp_target="query")
    assert sorted(p.name for p in paths) == ["f001_T2.png", "f001_msp_T2.npy", "f001_rba_T2.npy", "panel.png"]
    cl, ml = read_query_outputs(root, spec, 1)
    s = FrameComposer(ml, cl, spec.windows(1)).scores(2.0)  # T on the query class logits
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "f001_rba_T2.npy"), score("rba", s, 1.0), atol=1e-6)
    with pytest.raises(CacheError, match="nope"):
        write_maps(tmp_path / "q.zarr", "rba", 1.0, ["nope"], tmp_path / "maps")
    pixel_cache(tmp_path / "p.zarr", [(8, 8)], rng)
    with pytest.raises(ValueError, match="rba"):  # RbA is for mask models only
        write_maps(tmp_path / "p.zarr", "rba", 1.0, None, tmp_path / "maps")


def test_display_helpers():
    lab = np.array([[0, 1], [255, 0]], np.uint8)
    gt = ground_truth_rgb(lab)
    assert gt[0, 1].tolist() == [255, 255, 255] and gt[1, 0].tolist() == [128] * 3 and gt[0, 0].sum() == 0
    score = np.arange(100, dtype=np.float32).reshape(10, 10)
    lo, hi = display_range(score)
    assert lo == pytest.approx(0.99) and hi == pytest.approx(98.01)


def test_one_panel_for_two_models(tmp_path):
    """ERFNet and EoMT caches of one dataset: each model's files in its own folder, one panel
    with a row per frame and model; RbA is an empty cell on the ERFNet rows."""
    from click.testing import CliRunner

    from analyze.cli.main import main

    rng = np.random.default_rng(2)
    sizes = [(30, 50), (40, 40), (32, 48)]
    pixel_cache(tmp_path / "p.zarr", sizes, rng)
    query_cache(tmp_path / "q.zarr", sizes, rng, crop=32)
    out = tmp_path / "maps"
    res = CliRunner().invoke(main, ["maps", "--cache", str(tmp_path / "p.zarr"), "--cache", str(tmp_path / "q.zarr"),
                                    "--frames", "f000,f002", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "erfnet").glob("*.npy")) == sorted(
        f"{f}_{s.name}_T1.npy" for f in ("f000", "f002") for s in get_scorers("all", "pixel", available=()))
    assert (out / "eomt" / "f002_rba_T1.npy").is_file() and (out / "eomt" / "f000_T1.png").is_file()
    # the per-model files are what a single-cache run writes
    write_maps(tmp_path / "q.zarr", "all", 1.0, ["f002"], tmp_path / "single")
    np.testing.assert_array_equal(np.load(out / "eomt" / "f002_rba_T1.npy"),
                                  np.load(tmp_path / "single" / "f002_rba_T1.npy"))
    with Image.open(out / "panel.png") as both, Image.open(tmp_path / "single" / "panel.png") as one:
        assert both.size[1] > 2.5 * one.size[1]  # four rows (2 frames x 2 models) against one
    _png_ok(out / "panel.png")
    query_cache(tmp_path / "q2.zarr", sizes, rng, crop=32, dataset="fs_static")
    res = CliRunner().invoke(main, ["maps", "--cache", str(tmp_path / "p.zarr"), "--cache", str(tmp_path / "q2.zarr"),
                                    "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "one panel shows one dataset" in res.output
