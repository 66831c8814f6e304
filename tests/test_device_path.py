"""One scoring path with a device argument: the torch code a GPU runs (``compiled=False``: torch's
matrix products in the composition, the torch reference scorers) run here on the CPU against the
CPU's fast path (numpy's BLAS, the compiled scorers), on caches of both kinds with every scorer,
statistics and a flipped pass. (On a GPU: tests/test_gpu.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from analyze.bench_scorers import synthetic_stats
from analyze.frame_scores import frame_inputs, score_frame
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
        yield score_frame(kind, scorers=every, temperatures=TEMPS, stats=stats, **inputs, **kw)


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
    from analyze.compose import FrameComposer
    from schemas.windows import frame_windows

    geom = frame_windows(32, 32, 32)
    with pytest.raises(ValueError, match="CPU only"):
        FrameComposer(np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 2, 3), np.float32), geom, device="meta",
                      compiled=True)
