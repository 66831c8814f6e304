"""Mask2Former (transformers) into the query cache: the cache composes what transformers'
``post_process_semantic_segmentation`` gives (or detectron2's ``sem_seg_postprocess``), and every
mask scorer runs on it. Random weights, a tiny Swin-backboned network written by ``save_pretrained``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.compose.frame_scores import FrameInputs, Scoring, frame_inputs, score_frame
from analyze.compose.queries import FrameComposer
from analyze.compose.resize import semantic_prediction
from analyze.scorers.registry import get_scorers
from extract.cli import main as extract_main
from extract.datasets.reader import DatasetReader
from schemas.cache import CacheSpec, cache_digest, open_cache, read_query_outputs
from schemas.inference import inference_windows
from schemas.manifest import get_dataset_spec
from schemas.results import read_results
from tests.factories import mask2former_checkpoint

transformers = pytest.importorskip("transformers")

SIZES = [(40, 70), (70, 40), (64, 64), (33, 130), (97, 61)]


@pytest.fixture(scope="module")
def m2f(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2f")
    folder = mask2former_checkpoint(d / "ckpt", num_labels=19)
    model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    return SimpleNamespace(dir=d, folder=folder, model=model, processor=processor)


def _outputs(m2f, image):
    """The network's outputs on the processor's input, mask logits rounded to float16 as the cache stores them."""
    x = m2f.processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        out = m2f.model(**x)
    return (out.class_queries_logits.float(), out.masks_queries_logits.half().float(),
            tuple(x["pixel_values"].shape[-2:]))


def _hf(class_logits, mask_logits, size):
    """transformers' own semantic inference: (class scores (K, H, W), semantic map)."""
    out = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
    proc = transformers.Mask2FormerImageProcessor()
    r = proc.post_process_semantic_segmentation(out, target_sizes=[size], return_segmentation_scores=True)[0]
    return r.segmentation_scores, r.segmentation


def sem_seg_postprocess(result, img_size, output_height, output_width):
    """Transcription of ``detectron2/modeling/postprocessing.py`` ``sem_seg_postprocess``."""
    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)[0]


def _detectron2(class_logits, mask_logits, padded, image_size, size):
    """Transcription of Mask2Former's ``MaskFormer.forward`` (semantic, postprocess after inference)
    and ``semantic_inference``, for one image."""
    masks = F.interpolate(mask_logits, size=padded, mode="bilinear", align_corners=False)[0]  # (Q, Hp, Wp)
    mask_cls = F.softmax(class_logits[0], dim=-1)[..., :-1]
    semseg = torch.einsum("qc,qhw->chw", mask_cls, masks.sigmoid())
    return sem_seg_postprocess(semseg, image_size, *size)


@pytest.mark.parametrize("size", SIZES)
def test_composition_is_transformers_post_process(m2f, size):
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    cl, ml, input_size = _outputs(m2f, image)
    scores, seg = _hf(cl, ml, size)
    geom = inference_windows("transformers", size, input_size)
    composed = FrameComposer(ml, cl, geom).scores(1.0)
    assert composed.shape == scores.shape == (19, *size)
    np.testing.assert_allclose(composed.numpy(), scores.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(semantic_prediction(composed), seg.numpy())


@pytest.mark.parametrize("size", SIZES)
def test_composition_is_detectron2_sem_seg_postprocess(m2f, size):
    image = np.random.default_rng(sum(size) + 1).integers(0, 256, (*size, 3), dtype=np.uint8)
    cl, ml, input_size = _outputs(m2f, image)
    # the processor pads nothing for one image: its output is the image size detectron2 crops to
    expected = _detectron2(cl, ml, input_size, input_size, size)
    composed = FrameComposer(ml, cl, inference_windows("detectron2", size, input_size)).scores(1.0)
    np.testing.assert_allclose(composed.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(semantic_prediction(composed), semantic_prediction(expected))
    if size[0] != size[1]:  # transformers' square 384 x 384 intermediate distorts other aspect ratios
        assert (composed - _hf(cl, ml, size)[0]).abs().max() > 1e-4


def _extract(m2f, data, cache, *extra):
    return CliRunner().invoke(extract_main, [
        "run", "--model", "mask2former", "--dataset", "road_anomaly", "--data-root", str(data), "--checkpoint",
        str(m2f.folder), "--cache", str(cache), "--device", "cpu", "--no-progress", *extra])


@pytest.fixture(scope="module")
def cache(m2f):
    from extract.datasets.synth import write_synth_dataset

    write_synth_dataset(get_dataset_spec("road_anomaly"), m2f.dir / "data", 3, (40, 70), seed=2)
    res = _extract(m2f, m2f.dir / "data", m2f.dir / "m2f.zarr", "--batch-size", "2")
    assert res.exit_code == 0, res.output
    return m2f.dir / "m2f.zarr"


def test_cache_holds_the_outputs_and_composes_as_transformers(m2f, cache):
    root, spec = open_cache(cache)
    assert spec.kind == "query" and spec.semantic_inference == "transformers"
    assert spec.to_dict()["input_sizes"] == [[64, 128]] * 3 and spec.mask_sizes == ((16, 32),) * 3
    assert CacheSpec.from_dict(spec.to_dict()) == spec
    prov = spec.provenance
    assert prov.model == "mask2former" and prov.model_config["semantic_inference"] == "transformers"
    assert "Mask2FormerImageProcessor" in prov.preprocessing["processor"]
    frames = list(DatasetReader(get_dataset_spec("road_anomaly"), m2f.dir / "data"))
    for i, frame in enumerate(frames):
        cl, ml, _ = _outputs(m2f, frame.image)
        stored_cl, stored_ml = read_query_outputs(root, spec, i)
        np.testing.assert_allclose(stored_cl, cl.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(stored_ml, ml.numpy(), rtol=0, atol=2e-3)  # float16 storage
        inputs = frame_inputs(root, spec, i)
        fs = score_frame(inputs, Scoring(get_scorers("maxlogit,rba,eam,noobject")))
        scores, seg = _hf(torch.from_numpy(stored_cl), torch.from_numpy(stored_ml.astype(np.float32)), spec.sizes[i])
        np.testing.assert_array_equal(fs.semantic[1.0], seg.numpy())
        np.testing.assert_allclose(fs.scores[("maxlogit", 1.0)], -scores.max(0).values.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(fs.scores[("rba", 1.0)], -torch.tanh(scores).sum(0).numpy(), rtol=0, atol=1e-4)
        # the query channels compose as s does: transformers' 384 x 384 mask resize, then the frame
        p = torch.softmax(torch.from_numpy(stored_cl[0]), -1)  # (Q, K+1)
        sig = F.interpolate(torch.from_numpy(stored_ml.astype(np.float32)), (384, 384), mode="bilinear",
                            align_corners=False)[0].sigmoid()
        for name, w, expect in (("eam", p[:, :-1].max(-1).values, lambda c: 1 - c), ("noobject", p[:, -1], lambda c: c)):
            chan = F.interpolate(torch.einsum("q,qhw->hw", w, sig)[None, None], spec.sizes[i], mode="bilinear",
                                 align_corners=False)[0, 0]
            np.testing.assert_allclose(fs.scores[(name, 1.0)], expect(chan).numpy(), rtol=0, atol=1e-5)


def test_every_mask_scorer_scores_a_mask2former_cache(cache, tmp_path):
    out = tmp_path / "results.parquet"
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(cache), "--scorers", "all", "--temps", "0.5,1",
                                            "--out", str(out), "--no-progress", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    rows = read_results(out)
    assert {"rba", "eam", "noobject", "m2a"} <= set(rows["scorer"])
    assert set(rows["temperature"]) == {0.5, 1.0} and np.isfinite(rows["value"].to_numpy(float)).all()
    assert (rows["model"] == "mask2former").all()
    res = CliRunner().invoke(analyze_main, ["inspect", str(cache), "--verify"])
    assert res.exit_code == 0, res.output


def test_detectron2_option_is_recorded_and_composed(m2f, cache, tmp_path):
    res = _extract(m2f, m2f.dir / "data", tmp_path / "d2.zarr", "--model-option", "semantic_inference=detectron2",
                   "--hflip", "--limit", "1")
    assert res.exit_code == 0, res.output
    root, spec = open_cache(tmp_path / "d2.zarr")
    _, spec_hf = open_cache(cache)
    assert spec.semantic_inference == "detectron2" and spec.hflip
    frame = next(iter(DatasetReader(get_dataset_spec("road_anomaly"), m2f.dir / "data")))
    cl, ml, _ = _outputs(m2f, np.ascontiguousarray(frame.image[:, ::-1]))  # the flipped pass: the mirrored image
    stored_cl, stored_ml = read_query_outputs(root, spec, 0, flip=True)
    np.testing.assert_allclose(stored_cl, cl.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(stored_ml, ml.numpy(), rtol=0, atol=2e-3)
    assert cache_digest(spec) != cache_digest(spec_hf)  # another inference, another cache identity
    inputs = frame_inputs(root, spec, 0)
    cl, ml = (torch.from_numpy(a.astype(np.float32)) for a in (inputs.class_logits, inputs.mask_logits))
    composed = FrameComposer(ml, cl, spec.windows(0)).scores(1.0)
    expected = _detectron2(cl, ml, spec.input_sizes[0], spec.input_sizes[0], spec.sizes[0])
    np.testing.assert_allclose(composed.numpy(), expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (("--model-option", "semantic_inference=eomt"), "semantic_inference=eomt"),
    (("--model-option", "crop=3"), "--model-option crop"),
])
def test_bad_options_are_one_line(m2f, cache, tmp_path, args, message):
    res = _extract(m2f, m2f.dir / "data", tmp_path / "bad.zarr", *args)
    last = res.output.strip().splitlines()[-1]  # after the device and dataset lines
    assert res.exit_code == 2 and last.startswith("Error: ") and message in last, res.output
    assert not (tmp_path / "bad.zarr").exists()


def test_a_folder_that_is_not_mask2former_is_one_line(m2f, tmp_path):
    (tmp_path / "empty").mkdir()
    res = _extract(SimpleNamespace(folder=tmp_path / "empty"), m2f.dir / "data", tmp_path / "x.zarr")
    assert res.exit_code == 1 and "cannot load Mask2Former" in res.output.strip().splitlines()[-1], res.output
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("inference, size", [("transformers", (40, 70)), ("detectron2", (70, 40)),
                                             ("detectron2", (64, 128))])
def test_sampled_pixels_and_the_fused_pass_follow_the_same_geometry(m2f, inference, size):
    """The temperature fit's pixel weights and the fused row pass (a frame the size of the model input)
    give the composition's numbers on Mask2Former geometries too."""
    from analyze.compose.queries import class_probs

    image = np.random.default_rng(7).integers(0, 256, (*size, 3), dtype=np.uint8)
    cl, ml, input_size = _outputs(m2f, image)
    geom = inference_windows(inference, size, input_size)
    composer = FrameComposer(ml, cl, geom, tile_rows=5)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, size[0], 300), rng.integers(0, size[1], 300)
    a = composer.pixel_weights(rows, cols)
    for t in (0.5, 2.0):
        want = composer.scores(t).numpy()[:, rows, cols].T
        np.testing.assert_allclose(a @ class_probs(cl[0], t).numpy(), want, rtol=0, atol=2e-6)
    fs = score_frame(FrameInputs("query", class_logits=cl, mask_logits=ml, geom=geom),
                     Scoring(get_scorers("maxlogit"), (0.5, 1.0)))
    for t in (0.5, 1.0):
        s = composer.scores(t)
        np.testing.assert_allclose(fs.scores[("maxlogit", t)], -s.max(0).values.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(fs.semantic[t], semantic_prediction(s))
    assert (geom.resized == size) == (size == (64, 128))  # the last case takes the fused row pass


def test_a_missing_folder_is_not_taken_for_a_hub_id(m2f, tmp_path):
    for missing in (tmp_path / "nothing", m2f.dir / "ckpt_typo"):  # absolute; and inside an existing folder
        res = _extract(SimpleNamespace(folder=missing), m2f.dir / "data", tmp_path / "x.zarr")
        assert res.exit_code == 1 and "not a save_pretrained folder" in res.output.strip().splitlines()[-1], res.output
