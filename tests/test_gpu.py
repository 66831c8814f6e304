"""The CUDA paths of `extract run`: pinned non-blocking copies, batching, autocast.

Skipped where no CUDA device exists (CI). Run them on a GPU machine with
``pytest tests/test_gpu.py``. The oracle is the same model on the CPU in float32: the GPU
path may differ by TF32 convolutions, bf16 autocast and the float16 cache, but a frame
stored at the wrong index, a copy read before it finished or a pinned buffer reused too
early gives errors of the order of the values themselves.
"""

import numpy as np
import pytest
import torch

from extract.datasets.reader import DatasetReader
from extract.models import load_model
from extract.models.eomt import window_image
from extract.models.erfnet import preprocess_erfnet
from extract.run import run_extraction
from extract.writer.frames import HostCopier
from schemas.cache import open_cache, read_label, read_pixel_logits, read_query_outputs
from schemas.manifest import get_dataset_spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

RUN = dict(progress=False, log=lambda m: None)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_host_copier_returns_each_tensor_even_when_the_source_is_overwritten_at_once():
    copier = HostCopier(torch.device("cuda"))
    src = torch.empty(64, 256, 256, device="cuda", dtype=torch.float16)
    expected, waits = [], []
    for k in range(24):  # more submissions than pinned buffers in flight: buffers are reused
        src.normal_(generator=None)
        src.add_(k)
        expected.append(src.cpu().numpy())
        waits.append(copier.submit(src.clone()))
        src.zero_()  # overwrite the compute stream's memory right after the submit
        if k % 3 == 2:  # collect some copies late, some early
            for w, e in zip(waits, expected):
                np.testing.assert_array_equal(w(), e)
            expected, waits = [], []
    for w, e in zip(waits, expected):
        np.testing.assert_array_equal(w(), e)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_erfnet_cuda_cache_matches_the_cpu_model(tmp_path, anomaly_data, checkpoints, batch_size):
    cache = tmp_path / "erf.zarr"
    s = run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=cache,
                       device="cuda", batch_size=batch_size, workers=1, input_height=32, **RUN)
    assert s.frames_written == 5
    root, spec = open_cache(cache)
    model, _ = load_model("erfnet", checkpoints["erfnet"])
    frames = list(DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data))
    with torch.inference_mode():
        direct = [model(preprocess_erfnet(f.image, 32)[None].contiguous())[0].numpy() for f in frames]
    for i, frame in enumerate(frames):
        got = read_pixel_logits(root, spec, i)
        errs = [_rel(got, d) for d in direct]
        assert errs[i] < 2e-2, (i, errs)  # TF32 convolutions + float16 storage
        assert errs[i] == min(errs)  # and it is this frame's output, not a neighbour's
        np.testing.assert_array_equal(read_label(root, spec, i), frame.label)
    assert root["done"][:].all()


@pytest.mark.parametrize("dtype,tol", [("fp32", 2e-2), ("bf16", 6e-2)])
def test_eomt_cuda_cache_matches_the_cpu_model(tmp_path, anomaly_data, checkpoints, dtype, tol):
    cache = tmp_path / "eomt.zarr"
    run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=cache, device="cuda",
                   dtype=dtype, batch_size=2, workers=1, **RUN)
    root, spec = open_cache(cache)
    model, _ = load_model("eomt", checkpoints["eomt"])
    frames = list(DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data))
    direct = []
    with torch.inference_mode():
        for f in frames:
            crops, _ = window_image(f.image, 64)
            masks, classes = model(crops.float() / 255.0)
            direct.append((classes.numpy(), masks.numpy()))
    for i in range(len(frames)):
        cl, ml = read_query_outputs(root, spec, i)
        errs = [_rel(ml, m) for _, m in direct]
        assert _rel(cl, direct[i][0]) < tol
        assert errs[i] < tol, (i, errs)
        assert errs[i] == min(errs)


# --- analyze score --device cuda: the same scoring path as the CPU's, on the GPU ----------------


def _score_frames(path, **kw):
    from analyze.bench.scorers import synthetic_stats
    from analyze.compose.frame_scores import Scoring, frame_inputs, score_frame
    from analyze.scorers.registry import get_scorers

    root, spec = open_cache(path)
    temps = (0.5, 0.75, 1.0, 1.1)
    every = get_scorers("all", spec.kind, ("id_stats", "flip") if spec.hflip else ("id_stats",))
    stats = synthetic_stats(0, temps, spec.n_classes)
    return [score_frame(frame_inputs(root, spec, i, flip=spec.hflip), Scoring(every, temps, stats=stats, **kw))
            for i in range(spec.n_frames)]


@pytest.mark.parametrize("kind", ["pixel", "query"])
def test_cuda_score_maps_agree_with_the_cpu_path(tmp_path, kind):
    """Composition and every scorer at every T on the GPU: maps within 1e-5 of the CPU's, semantic
    maps equal but for near-ties of the float32 class scores (the GPU's products round otherwise)."""
    from tests.factories import pixel_cache, query_cache

    rng = np.random.default_rng(0)
    path = tmp_path / "c.zarr"
    if kind == "pixel":
        pixel_cache(path, [(96, 160), (70, 131)], rng)
    else:
        query_cache(path, [(96, 176), (80, 300)], rng, crop=64, n_queries=20, n_classes=19, mask_size=16,
                    hflip=True, confident=0.6)
    cpu, gpu = _score_frames(path), _score_frames(path, device="cuda")
    for a, b in zip(cpu, gpu):
        assert a.scores.keys() == b.scores.keys()
        for key in a.scores:
            np.testing.assert_allclose(b.scores[key], a.scores[key], rtol=1e-5, atol=1e-5, err_msg=str(key))
        for t in a.semantic:
            assert (b.semantic[t] != a.semantic[t]).mean() < 1e-3


def test_analyze_score_device_cuda_metrics_agree_with_cpu(tmp_path):
    import pandas as pd
    from click.testing import CliRunner

    from analyze.cli.main import main as analyze_main
    from tests.factories import signal_pixel_cache

    cache = tmp_path / "p.zarr"
    signal_pixel_cache(cache, 6, size=(64, 96), seed=1)
    tables = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.parquet"
        res = CliRunner().invoke(analyze_main, ["score", "--cache", str(cache), "--temps", "0.5,1.1", "--device", device,
                                                "--out", str(out), "--no-progress", "--scheduler", "threads"])
        assert res.exit_code == 0, res.output
        tables[device] = pd.read_parquet(out).sort_values(["scorer", "temperature", "metric"]).reset_index(drop=True)
    a, b = tables["cpu"], tables["cuda"]
    assert len(a) == len(b) > 0
    assert (a[["scorer", "temperature", "metric"]] == b[["scorer", "temperature", "metric"]]).all().all()
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-6, atol=1e-6)
