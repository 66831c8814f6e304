"""One scoring path with a device argument: the torch code a GPU runs (``compiled=False``: torch's
matrix products in the composition, the torch reference scorers) run here on the CPU against the
CPU's fast path (numpy's BLAS, the compiled scorers), on caches of both kinds with every scorer,
statistics and a flipped pass. (On a GPU: tests/test_gpu.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from analyze.bench.scorers import synthetic_stats
from analyze.compose.frame_scores import Scoring, frame_inputs, score_frame
from analyze.scorers.registry import get_scorers
from schemas.cache import open_cache
from tests.factories import pixel_cache, query_cache

TEMPS = (0.5, 0.75, 1.0, 1.1)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("device")
    rng = np.random.default_rng(4)
    pixel_cache(d / "p.zarr", [(24, 40), (17, 33)], rng)
    query_cache(d / "q.zarr", [(24, 44), (20, 75)], rng, crop=32, n_queries=8, n_classes=19, mask_size=8,
                hflip=True, confident=0.6)
    return d


def _frames(path, kind, **kw):
    root, spec = open_cache(path)
    every = get_scorers("all", kind, ("id_stats", "flip") if kind == "query" else ("id_stats",))
    stats = synthetic_stats(0, TEMPS, spec.n_classes)
    for i in range(spec.n_frames):
        inputs = frame_inputs(root, spec, i, flip=spec.hflip)
        yield score_frame(inputs, Scoring(every, TEMPS, stats=stats, **kw))


@pytest.mark.parametrize("kind,temp_target", [("pixel", "query"), ("query", "query"), ("query", "pixel")])
def test_the_device_code_on_the_cpu_equals_the_fast_path(caches, kind, temp_target):
    path = caches / ("p.zarr" if kind == "pixel" else "q.zarr")
    fast = list(_frames(path, kind, temp_target=temp_target))
    portable = list(_frames(path, kind, temp_target=temp_target, device="cpu", compiled=False))
    for a, b in zip(fast, portable):
        assert a.scores.keys() == b.scores.keys() and len(a.scores) >= 4 * 8
        for key in a.scores:
            assert b.scores[key].dtype == np.float64
            np.testing.assert_allclose(b.scores[key], a.scores[key], rtol=1e-5, atol=1e-5, err_msg=str(key))
        for t in a.semantic:
            np.testing.assert_array_equal(b.semantic[t], a.semantic[t])


def test_the_compiled_path_is_refused_off_the_cpu():
    from analyze.compose.queries import FrameComposer
    from schemas.windows import frame_windows

    geom = frame_windows(32, 32, 32)
    with pytest.raises(ValueError, match="CPU only"):
        FrameComposer(np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 2, 3), np.float32), geom, device="meta",
                      compiled=True)


def _shape_sweep():
    """Frame shapes (h, w) and label heights / widths: integer and fractional factors per axis,
    among them the shapes where per-tile kernel calls missed the full resize (8x33 -> 32x99)."""
    for h in (1, 2, 5, 8, 9, 12, 17):
        for w in (5, 8, 17, 33):
            for fh, fw in ((2, 2), (2, 3), (4, 1), (4, 2), (4, 3), (4, 4), (3, 2), (8, 2), (1.5, 2.5)):
                yield h, w, int(h * fh), int(w * fw)


def test_label_size_tiles_are_the_full_resize_at_every_shape():
    """ERFNet's fused pass scores row tiles of the one resize that fit, maps and export use:
    the same bits at every shape, every tile height (a sweep of 252 shapes)."""
    from analyze.compose.resize import label_size_tiles, pixel_logits_to_label_size

    rng = np.random.default_rng(0)
    for h, w, h_out, w_out in _shape_sweep():
        logits = (rng.normal(size=(20, h, w)) * 2).astype(np.float32)
        full = pixel_logits_to_label_size(logits, (h_out, w_out), 19).numpy()
        for rows in (1, 7):
            tiles = np.concatenate([t.numpy() for _, t in label_size_tiles(logits, (h_out, w_out), 19, rows)], 1)
            assert np.array_equal(tiles, full), (h, w, h_out, w_out, rows)


@pytest.mark.parametrize("f", [2, 3, 4, 8])
@pytest.mark.parametrize("h,w,w_out", [(12, 20, 40), (9, 18, 55), (1, 7, 7), (33, 300, 600)])
def test_label_size_tiles_are_the_full_resize(f, h, w, w_out):
    """ERFNet's fused pass resizes row tiles: the same bits as the full resize, float16 and
    float32 logits."""
    from analyze.compose.resize import label_size_tiles, pixel_logits_to_label_size

    rng = np.random.default_rng(h * w + f)
    for dtype in (np.float16, np.float32):
        logits = (rng.normal(size=(20, h, w)) * 2).astype(dtype)
        full = pixel_logits_to_label_size(logits, (f * h, w_out), 19)
        for rows in (1, 5, 16):
            tiles = list(label_size_tiles(logits, (f * h, w_out), 19, rows))
            assert [t.shape[1] for _, t in tiles] == [s.stop - s.start for s, _ in tiles]
            np.testing.assert_array_equal(np.concatenate([t.numpy() for _, t in tiles], 1), full.numpy())


def test_fused_erfnet_pass_equals_resize_then_score(caches):
    """Every scorer at every T of the fused pass against the full resize scored T by T (the path
    before the fusion): the same bits, the same semantic map."""
    from analyze.compose.resize import pixel_logits_to_label_size, semantic_prediction
    from analyze.scorers.pixel import score_many

    root, spec = open_cache(caches / "p.zarr")
    every = get_scorers("all", "pixel", ("id_stats",))
    stats = synthetic_stats(0, TEMPS, spec.n_classes)
    for i in range(spec.n_frames):
        inputs = frame_inputs(root, spec, i)
        got = score_frame(inputs, Scoring(every, TEMPS, stats=stats))
        z = pixel_logits_to_label_size(inputs.logits, spec.sizes[i], spec.void_channel)
        for t in TEMPS:
            want = score_many(z, t, [s.name for s in every], stats=stats[t])
            for s in every:
                np.testing.assert_array_equal(got.scores[(s.name, t)], want[s.name], err_msg=f"{s.name} T={t}")
            np.testing.assert_array_equal(got.semantic[t], semantic_prediction(z))


@pytest.mark.parametrize("temp_target", ["query", "pixel"])
def test_fused_eomt_pass_equals_compose_then_score(tmp_path, monkeypatch, temp_target):
    """Frames whose crops lie side by side at the original size are scored block by block as the
    composition makes them: every scorer (the flip average aside) at every T and the semantic
    maps equal the full composition scored T by T (the path before the fusion), bit for bit."""
    from analyze.compose.queries import FrameComposer
    from analyze.compose.resize import semantic_prediction
    from analyze.compose.frame_scores import _channels
    from analyze.scorers.pixel import score_many

    rng = np.random.default_rng(9)
    path = tmp_path / "q.zarr"
    query_cache(path, [(32, 60), (32, 32), (32, 100)], rng, crop=32, n_queries=8, n_classes=19, mask_size=8,
                confident=0.6)  # overlapping crops, one crop, three crops
    root, spec = open_cache(path)
    every = get_scorers("all", "query", ("id_stats",))
    names = [s.name for s in every]
    stats = synthetic_stats(0, TEMPS, spec.n_classes)
    full = FrameComposer.resized_maps
    for i in range(spec.n_frames):
        inputs = frame_inputs(root, spec, i)
        monkeypatch.setattr(FrameComposer, "resized_maps", None)  # the fused pass composes no full map
        got = score_frame(inputs, Scoring(every, TEMPS, temp_target, stats))
        monkeypatch.setattr(FrameComposer, "resized_maps", full)
        comp = FrameComposer(inputs.mask_logits, inputs.class_logits, inputs.geom, channels=_channels(every))
        k, keys = comp.num_classes, comp.channel_keys
        maps = comp.resized_maps(TEMPS if temp_target == "query" else (1.0,))
        for t in TEMPS:
            m = maps[t if temp_target == "query" else 1.0]
            s, ch = m[:k], {key: m[k + c] for c, key in enumerate(keys)}
            chosen = [n for n, sc in zip(names, every) if temp_target == "query" or t == 1.0 or not sc.needs_queries]
            sem = np.empty(s.shape[1:], np.uint8)
            want = score_many(s, 1.0 if temp_target == "query" else t, chosen, sem, stats=stats[t], channels=ch)
            assert {n for n, tt in got.scores if tt == t} == set(chosen)
            for n in chosen:
                np.testing.assert_array_equal(got.scores[(n, t)], want[n], err_msg=f"{n} T={t} frame {i}")
            np.testing.assert_array_equal(got.semantic[t], sem if temp_target == "query" else semantic_prediction(s))


# --- analyze score --device -------------------------------------------------------------------


def _score_cli(cache, out, *extra):
    from click.testing import CliRunner

    from analyze.cli.main import main as analyze_main

    return CliRunner().invoke(analyze_main, ["score", "--cache", str(cache), "--temps", "0.5,1.1", "--out", str(out),
                                             "--no-progress", "--scheduler", "sync", *extra])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device exists here")
def test_device_cuda_without_a_gpu_is_a_one_line_option_error(tmp_path):
    from tests.factories import signal_pixel_cache

    signal_pixel_cache(tmp_path / "p.zarr", 2)
    res = _score_cli(tmp_path / "p.zarr", tmp_path / "r.parquet", "--device", "cuda")
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert "--device" in line and "no CUDA device" in line
    assert not (tmp_path / "r.parquet").exists()


def test_device_option_reaches_the_frame_tasks(tmp_path, monkeypatch):
    """--device auto (the CPU here) and --device cpu: the frame tasks get the device, the tables agree."""
    import pandas as pd
    import torch

    import analyze.run.tasks as tasks
    from tests.factories import signal_pixel_cache

    signal_pixel_cache(tmp_path / "p.zarr", 3, seed=2)
    seen = []
    inner = tasks.iter_frame_scores

    def spy(frame, scoring, pixels=None):
        seen.append(scoring.device)
        return inner(frame, scoring, pixels)

    monkeypatch.setattr(tasks, "iter_frame_scores", spy)
    tables = []
    for device in ("cpu", "auto"):
        res = _score_cli(tmp_path / "p.zarr", tmp_path / f"{device}.parquet", "--device", device)
        assert res.exit_code == 0, res.output
        tables.append(pd.read_parquet(tmp_path / f"{device}.parquet"))
    assert set(seen) == {"cpu"} | ({"cuda"} if torch.cuda.is_available() else set())
    a, b = tables
    assert len(a) > 0
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-6, atol=1e-6)


def test_device_cuda_with_the_processes_scheduler_is_refused(tmp_path, monkeypatch):
    """A CUDA context does not survive a fork: the combination is a one-line option error before
    any work (torch is told a GPU exists, so the refusal, not the missing GPU, is what answers)."""
    import torch

    from tests.factories import signal_pixel_cache

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    signal_pixel_cache(tmp_path / "p.zarr", 2)
    from click.testing import CliRunner

    from analyze.cli.main import main as analyze_main

    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "p.zarr"), "--out", str(tmp_path / "r.parquet"),
                                            "--device", "cuda", "--scheduler", "processes"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert "--device" in line and "processes" in line
    assert not (tmp_path / "r.parquet").exists()
