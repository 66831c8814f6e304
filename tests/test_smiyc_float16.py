"""What float16 does to a submission, and that `--protocol smiyc` sees what the benchmark sees:
the component step thresholds the float16 map read back from the exported HDF5 file (a
transcription of the benchmark's `default_instancer`), on maps where float16 rounding matters
(MSP and energy at T = 1000, whose float64 scores sit on a large offset)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from analyze.best_f1 import best_f1_threshold
from analyze.cli import main as analyze_main
from analyze.components import TAUS, ComponentState
from analyze.maps import frame_maps
from analyze.metrics import SmiycState
from analyze.scorers.registry import get_scorers
from schemas.cache import CacheSpec, create_cache, mark_done, open_cache, read_label, thumbnail_size
from schemas.cache import write_frame_common, write_frame_pixel
from schemas.results import read_results
from tests.factories import provenance
from tests.test_components import oracle_frame
from tests.test_smiyc_export import benchmark_read

TRACK = "ObstacleTrack-all"
OBSTACLE = (50, 10)  # SegEval-ObstacleTrack: thresh_segsize, thresh_instsize
KEYS = [("msp", 1.0), ("msp", 1000.0), ("energy", 1000.0)]


def blob_cache(path, n_frames=4, size=(40, 56), seed=0):
    """An obstacle-track pixel cache whose anomalies are blobs (components of 60 to 300 pixels)
    with flatter logits than the road around them, logits at label resolution; every frame
    labelled, with a ``benchmarks.smiyc`` split so that it exports."""
    rng = np.random.default_rng(seed)
    h, w = size
    spec = CacheSpec(
        kind="pixel", label_kind="anomaly", frame_ids=tuple(f"validation_{i}" for i in range(n_frames)),
        sizes=(size,) * n_frames, provenance=provenance(dataset="smiyc_obstacle_track"), n_classes=19,
        n_channels=20, void_channel=19, logit_sizes=(size,) * n_frames,
        extra={"benchmarks": {"smiyc": {"dataset": TRACK}}},
    )
    root = create_cache(path, spec)
    rows, cols = np.mgrid[0:h, 0:w]
    for i in range(n_frames):
        lab = np.zeros(size, np.uint8)
        lab[: h // 5] = 255  # off the road
        for _ in range(2):
            r, c = rng.integers(h // 4, h - 8), rng.integers(4, w - 12)
            lab[r : r + rng.integers(6, 14), c : c + rng.integers(8, 20)] = 1
        z = rng.normal(size=(20, h, w)) * 2
        z[rng.integers(0, 19, size=size), rows, cols] += rng.uniform(4, 8, size=size)  # a confident class
        z[:, lab == 1] *= rng.uniform(0.2, 0.6)  # anomalies: flatter logits
        write_frame_pixel(root, spec, i, z.astype(np.float16))
        write_frame_common(root, spec, i, lab, np.zeros((*thumbnail_size(h, w), 3), np.uint8))
        mark_done(root, i)
    return path


def _cli(*args):
    res = CliRunner().invoke(analyze_main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return res.output


# ---- the transcription of the benchmark's component step ----------------------------------

def benchmark_instancer(anomaly_p: np.ndarray, label: np.ndarray, thresh_p: float):
    """``instance_segmentation.py`` ``default_instancer`` then ``segment_metrics`` on one frame
    (per-component loops: :func:`tests.test_components.oracle_frame`, obstacle-track sizes):
    ``segmentation[anomaly_p > thresh_p] = 1`` with ``anomaly_p`` the float16 map read back
    from the HDF5 file and ``thresh_p`` the Python float of ``get_thresh_p_from_curve``, so the
    comparison runs in float16 (numpy 1.23's value-based casting, which the benchmark pins; a
    weak Python scalar under numpy 2 alike)."""
    assert anomaly_p.dtype == np.float16 and type(thresh_p) is float
    return oracle_frame(anomaly_p, label, thresh_p, *OBSTACLE)


def benchmark_components(maps, labels, thresh_p: float) -> dict:
    """``MetricSegment.aggregate``: pooled sIoU and PPV means, F1 per tau, their mean."""
    siou, ppv = [], []
    for m, y in zip(maps, labels):
        s, p = benchmark_instancer(m, y, thresh_p)
        siou += s
        ppv += p
    f1 = []
    for tau in TAUS:
        tp = sum(v >= tau for v in siou)
        fn, fp = len(siou) - tp, sum(v < tau for v in ppv)
        f1.append(2 * tp / (2 * tp + fn + fp) if 2 * tp + fn + fp else math.nan)
    return {"siou": np.mean(siou) if siou else math.nan, "ppv": np.mean(ppv) if ppv else math.nan,
            "mean_f1": float(np.mean(f1))}


def _threshold(maps, labels) -> float:
    state = SmiycState()
    for m, y in zip(maps, labels):
        state.update(m, y)
    return best_f1_threshold(state)


# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("f16")
    cache = blob_cache(d / "c.zarr")
    out = d / "results.parquet"
    _cli("score", "--cache", cache, "--protocol", "smiyc", "--component-metrics", "--scorers", "msp,energy",
         "--temps", "1,1000", "--out", out, "--no-progress", "--scheduler", "sync")
    exports = {}
    for scorer, t in KEYS:
        method = f"{scorer}_T{t:g}"
        exports[(scorer, t)] = _cli("export", "--cache", cache, "--scorer", scorer, "--temp", t, "--format", "smiyc",
                                    "--method", method, "--out", d / "sub", "--no-progress")
    return {"dir": d, "cache": cache, "results": read_results(out), "exports": exports}


def _read_back(world, scorer, t):
    root, spec = open_cache(world["cache"])
    folder = world["dir"] / "sub" / "anomaly_p" / f"{scorer}_T{t:g}" / TRACK
    maps = [benchmark_read(folder / f"{fid}.hdf5") for fid in spec.frame_ids]
    labels = [read_label(root, spec, i) for i in range(spec.n_frames)]
    return maps, labels


# ---- item 2: the component step thresholds the map the benchmark reads ----------------------

def test_component_state_compares_in_float16_like_the_benchmark():
    """float16=True: the float64 map cast to float16 and the threshold rounded as numpy 1.23
    rounds it; on scores that differ from their float16 values the float64 comparison differs."""
    rng = np.random.default_rng(5)
    label = np.zeros((30, 40), np.uint8)
    label[5:20, 8:30] = 1
    label[25:] = 255
    score = 0.9470 + rng.uniform(-1e-3, 1e-3, label.shape) + 1e-3 * (label == 1)  # a few float16 values
    thr = 0.94755  # between two float16 values (0.94726..., 0.94775...)
    want = benchmark_instancer(score.astype(np.float16), label, thr)
    got16 = ComponentState("obstacle", thr, float16=True).update(score, label).compute(warn=False)
    got64 = ComponentState("obstacle", thr).update(score, label).compute(warn=False)
    assert got16["siou"] == pytest.approx(np.mean(want[0]), abs=1e-12)
    assert got16["ppv"] == pytest.approx(np.mean(want[1]), abs=1e-12)
    assert got64["siou"] != pytest.approx(got16["siou"], abs=1e-6)
    with pytest.raises(ValueError, match="float16=True"):
        ComponentState("obstacle", thr, float16=True).merge(ComponentState("obstacle", thr))


@pytest.mark.parametrize("scorer,t", KEYS)
def test_smiyc_component_rows_equal_the_benchmark_on_the_exported_maps(world, scorer, t):
    """sIoU, PPV and mean F1 of `analyze score --protocol smiyc --component-metrics` equal the
    benchmark's instancer on the exported maps read back, at the best-F1 threshold of their
    pixel curve."""
    maps, labels = _read_back(world, scorer, t)
    want = benchmark_components(maps, labels, _threshold(maps, labels))
    rows = world["results"].query("scorer == @scorer and temperature == @t")
    got = dict(zip(rows["metric"], rows["value"]))
    for metric in ("siou", "ppv", "mean_f1"):
        assert got[metric] == pytest.approx(want[metric], abs=1e-12, nan_ok=True), metric


def test_float16_rounding_matters_on_these_maps(world):
    """The float64 maps thresholded in float64 predict other pixels than the benchmark does (what
    the component step did before) at T = 1000."""
    root, spec = open_cache(world["cache"])
    scorer, t = "msp", 1000.0
    maps, labels = _read_back(world, scorer, t)
    thr = _threshold(maps, labels)
    chosen = get_scorers(scorer, "pixel")
    differ = 0
    for i, (m16, y) in enumerate(zip(maps, labels)):
        m64 = frame_maps(root, spec, i, chosen, t, "query")[scorer]
        differ += int(np.count_nonzero(((m64 > thr) != (m16 > thr)) & (y != 255)))
    assert differ > 0
