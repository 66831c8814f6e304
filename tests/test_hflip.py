"""`extract run --hflip`: a flipped second pass stored beside the outputs (same schema, flagged),
caches without it unchanged and valid, and the flip-averaged scorer offered only where it exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from extract.datasets.reader import DatasetReader
from extract.models import load_model
from extract.models.eomt import window_image
from extract.models.erfnet import preprocess_erfnet
from schemas.cache import CacheError, CacheSpec, open_cache, read_pixel_logits, read_query_outputs
from schemas.manifest import get_dataset_spec
from schemas.results import read_results


def _extract(*args):
    return CliRunner().invoke(extract_main, ["run", *[str(a) for a in args], "--device", "cpu", "--no-progress"])


@pytest.fixture(scope="module")
def flipped(tmp_path_factory, checkpoints):
    from extract.datasets.synth import write_synth_dataset

    d = tmp_path_factory.mktemp("hflip")
    write_synth_dataset(get_dataset_spec("road_anomaly"), d / "data", 3, (40, 70), seed=1)
    for model, extra in (("erfnet", ("--input-height", "32")), ("eomt", ())):
        res = _extract("--model", model, "--dataset", "road_anomaly", "--data-root", d / "data", "--checkpoint",
                       checkpoints[model], "--cache", d / f"{model}.zarr", "--hflip", *extra)
        assert res.exit_code == 0, res.output
    return d


def test_flipped_pass_is_the_model_on_the_mirrored_image(flipped, checkpoints):
    reader = list(DatasetReader(get_dataset_spec("road_anomaly"), flipped / "data"))
    root, spec = open_cache(flipped / "erfnet.zarr")
    assert spec.hflip and spec.to_dict()["hflip"] is True
    model, _ = load_model("erfnet", checkpoints["erfnet"])
    for i, frame in enumerate(reader):
        mirrored = np.ascontiguousarray(frame.image[:, ::-1])
        with torch.inference_mode():
            direct = model(preprocess_erfnet(mirrored, 32)[None].contiguous())[0].half().numpy()
        np.testing.assert_array_equal(read_pixel_logits(root, spec, i, flip=True), direct)
        assert not np.array_equal(read_pixel_logits(root, spec, i), direct)
    root, spec = open_cache(flipped / "eomt.zarr")
    model, _ = load_model("eomt", checkpoints["eomt"])
    for i, frame in enumerate(reader):
        crops, geom = window_image(np.ascontiguousarray(frame.image[:, ::-1]), spec.crop_size)
        assert geom.n_crops == 2 and geom.windows[1].start < geom.crop  # overlapping windows
        with torch.inference_mode():
            masks, classes = model(crops.float() / 255.0)
        cl, ml = read_query_outputs(root, spec, i, flip=True)
        np.testing.assert_array_equal(cl, classes.numpy())
        np.testing.assert_array_equal(ml, masks.half().numpy())
    res = CliRunner().invoke(analyze_main, ["inspect", str(flipped / "eomt.zarr"), "--verify"])
    assert res.exit_code == 0 and "flip pass  stored" in res.output
    g = zarr.open_group(str(flipped / "eomt.zarr"), mode="r")
    for name in ("class_logits", "mask_logits"):  # same schema as the normal pass
        a, b = g[name], g[f"{name}_hflip"]
        assert (a.shape, a.dtype, a.chunks) == (b.shape, b.dtype, b.chunks)


def test_caches_without_it_keep_their_format(tmp_path, anomaly_data, checkpoints):
    res = _extract("--model", "erfnet", "--dataset", "road_anomaly", "--data-root", anomaly_data, "--checkpoint",
                   checkpoints["erfnet"], "--cache", tmp_path / "c.zarr", "--input-height", "32", "--limit", "2")
    assert res.exit_code == 0, res.output
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert "hflip" not in g.attrs.asdict() and "logits_hflip" not in set(g.array_keys())
    root, spec = open_cache(tmp_path / "c.zarr")
    assert spec.hflip is False and CacheSpec.from_dict(g.attrs.asdict()) == spec
    with pytest.raises(CacheError, match="without --hflip"):
        read_pixel_logits(root, spec, 0, flip=True)
    # continuing it with --hflip would mix caches with and without the flipped pass: refused
    res = _extract("--model", "erfnet", "--dataset", "road_anomaly", "--data-root", anomaly_data, "--checkpoint",
                   checkpoints["erfnet"], "--cache", tmp_path / "c.zarr", "--input-height", "32", "--hflip")
    assert res.exit_code == 1 and "different hflip" in res.output


def test_flip_scorer_offered_only_with_a_flipped_pass(flipped, tmp_path):
    out = tmp_path / "r.parquet"
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(flipped / "eomt.zarr"), "--out", str(out),
                                            "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "leaves out m2a_flip" not in res.output
    scorers = set(read_results(out).scorer)
    assert {"m2a", "m2a_flip"} <= scorers
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(flipped / "erfnet.zarr"), "--scorers", "m2a_flip",
                                            "--out", str(out)])
    assert res.exit_code == 1 and "not defined for pixel models" in res.output  # a mask-model scorer


def test_a_lost_flip_chunk_is_found(flipped, tmp_path):
    import shutil

    copy = tmp_path / "eomt.zarr"
    shutil.copytree(flipped / "eomt.zarr", copy)
    chunk = next((copy / "mask_logits_hflip" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(copy), "--out", str(tmp_path / "r.parquet"),
                                            "--no-progress"])
    assert res.exit_code == 1 and "mask_logits_hflip" in res.output
    res = CliRunner().invoke(analyze_main, ["inspect", str(copy), "--verify"])
    assert res.exit_code == 1 and "mask_logits_hflip" in res.output
