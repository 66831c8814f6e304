"""What float16 does to a submission, and that `--protocol smiyc` sees what the benchmark sees:
the component step thresholds the float16 map read back from the exported HDF5 file (a
transcription of the benchmark's `default_instancer`), on maps where float16 rounding matters
(MSP and energy at T = 1000, whose float64 scores sit on a large offset)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from analyze.metrics.best_f1 import best_f1_threshold
from analyze.cli.main import main as analyze_main
from analyze.metrics.components import TAUS, ComponentState
from analyze.metrics.f16_range import HALF_WIDTH, SAMPLE, Float16Transform, ScoreRange
from analyze.maps.write import frame_maps
from analyze.metrics import SmiycState, pixel_metrics
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
    log = _cli("score", "--cache", cache, "--protocol", "smiyc", "--component-metrics", "--scorers", "msp,energy",
               "--temps", "1,1000", "--out", out, "--no-progress", "--scheduler", "sync")
    exact = d / "exact.parquet"
    _cli("score", "--cache", cache, "--scorers", "msp,energy", "--temps", "1000", "--out", exact, "--no-progress",
         "--scheduler", "sync")
    exports = {}
    for scorer, t in KEYS:
        method = f"{scorer}_T{t:g}"
        exports[(scorer, t)] = _cli("export", "--cache", cache, "--scorer", scorer, "--temp", t, "--format", "smiyc",
                                    "--method", method, "--out", d / "sub", "--no-progress")
    return {"dir": d, "cache": cache, "results": read_results(out), "exports": exports, "log": log,
            "exact": read_results(exact)}


def _read_back(world, scorer, t):
    """The exported maps as the benchmark reads them, the labels, and the transform the files record."""
    root, spec = open_cache(world["cache"])
    folder = world["dir"] / "sub" / "anomaly_p" / f"{scorer}_T{t:g}" / TRACK
    maps = [benchmark_read(folder / f"{fid}.hdf5") for fid in spec.frame_ids]
    labels = [read_label(root, spec, i) for i in range(spec.n_frames)]
    with h5py.File(folder / f"{spec.frame_ids[0]}.hdf5", "r") as f:
        attrs = dict(f.attrs)
    return maps, labels, attrs


def _float64_maps(world, scorer, t):
    root, spec = open_cache(world["cache"])
    chosen = get_scorers(scorer, "pixel")
    return [frame_maps(root, spec, i, chosen, t, "query")[scorer] for i in range(spec.n_frames)]


def _distinct(x) -> int:
    return np.unique(np.asarray(x)).size


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
    maps, labels, _ = _read_back(world, scorer, t)
    want = benchmark_components(maps, labels, _threshold(maps, labels))
    rows = world["results"].query("scorer == @scorer and temperature == @t")
    got = dict(zip(rows["metric"], rows["value"]))
    for metric in ("siou", "ppv", "mean_f1"):
        assert got[metric] == pytest.approx(want[metric], abs=1e-12, nan_ok=True), metric


# ---- item 3: one affine map per track, and what float16 loses ---------------------------------

def test_the_transform_is_monotone_and_chosen_on_the_track():
    """On scores sitting on a large offset (energy at T = 1000: about -T log 19) a plain cast keeps
    two values; the chosen transform keeps the pooled order as far as float16 allows; on scores
    that are float16 values already the plain cast (identity) is kept, losing nothing."""
    rng = np.random.default_rng(0)
    frames = [-2944.4 + rng.uniform(0, 2e-3, (20, 30)) for _ in range(3)]
    state = ScoreRange()
    for f in frames:
        state = state.merge(ScoreRange().update(f))
    tr = state.transform()
    assert tr.kind != "identity" and (tr.lo, tr.hi) == (min(f.min() for f in frames), max(f.max() for f in frames))
    pooled = np.concatenate([f.ravel() for f in frames])
    order = np.argsort(pooled, kind="stable")
    mapped = tr.apply(pooled)[order].astype(np.float64)
    assert np.all(np.diff(mapped) >= 0)  # monotone: the pooled order, ties at most
    assert np.abs(mapped).max() <= 2 * HALF_WIDTH
    assert _distinct(pooled.astype(np.float16)) <= 3 and _distinct(mapped) > 0.5 * pooled.size
    f16_valued = [rng.normal(size=(20, 30)).astype(np.float16).astype(np.float64) * 4 for _ in range(3)]
    ident = ScoreRange().update(f16_valued[0]).merge(ScoreRange().update(f16_valued[1])).transform()
    assert ident.kind == "identity" and _distinct(ident.apply(f16_valued[0])) == _distinct(f16_valued[0])
    assert SAMPLE <= len(ScoreRange().update(np.zeros((100, 100))).samples[0]) < 2 * SAMPLE  # a fixed stride
    with pytest.raises(ValueError, match="cannot fit"):
        Float16Transform.candidates(0.0, np.inf)


@pytest.mark.parametrize("scorer,t", [("msp", 1000.0), ("energy", 1000.0)])
def test_export_says_what_float16_loses_before_and_after(world, scorer, t):
    """The export's summary counts, per frame, the distinct float64 scores and those float16
    loses with a plain cast and with the recorded transform (summed), and warns above 1 %."""
    maps, _, attrs = _read_back(world, scorer, t)
    m64 = _float64_maps(world, scorer, t)
    n = sum(_distinct(m) for m in m64)
    plain = n - sum(_distinct(m.astype(np.float16)) for m in m64)
    after = n - sum(_distinct(m) for m in maps)
    tr = Float16Transform(attrs["f16_kind"], attrs["f16_center"], attrs["f16_scale"])
    for m, v in zip(m64, maps):
        np.testing.assert_array_equal(tr.apply(m), v)
    out = world["exports"][(scorer, t)]
    assert f"loses {after} of {n} distinct scores" in out and f"(a plain cast: {plain} of {n} distinct scores" in out
    assert after < plain / 2  # the plain cast flattens these maps; the transform keeps far more
    assert ("even after the track's affine map" in out) == (after > 0.01 * n)


def test_smiyc_pixel_rows_are_the_benchmark_on_the_exported_maps_and_closer_to_exact(world):
    """MSP at T = 1000: the smiyc rows equal the benchmark's binning of the exported maps, and the
    transform brings smiyc AuPRC far closer to the exact one than a plain cast does."""
    scorer, t = "msp", 1000.0
    maps, labels, _ = _read_back(world, scorer, t)
    got = pixel_metrics(maps, labels, protocol="smiyc")
    rows = world["results"].query("scorer == @scorer and temperature == @t")
    rows = dict(zip(rows["metric"], rows["value"]))
    for metric in ("auprc", "auroc", "fpr95"):
        assert got[metric] == rows[metric], metric
    plain = pixel_metrics([m.astype(np.float16) for m in _float64_maps(world, scorer, t)], labels, protocol="smiyc")
    ex = world["exact"].query("scorer == @scorer and temperature == @t and metric == 'auprc'")["value"].iloc[0]
    assert abs(rows["auprc"] - ex) < 0.5 * abs(plain["auprc"] - ex)


def test_smiyc_protocol_warns_with_the_figure(world):
    """`analyze score --protocol smiyc` counts, over the non-void pixels of its frames, what
    float16 loses after the transform, and says it above 1 %."""
    scorer, t = "msp", 1000.0
    maps, labels, _ = _read_back(world, scorer, t)
    m64 = _float64_maps(world, scorer, t)
    n = sum(_distinct(m[y != 255]) for m, y in zip(m64, labels))
    lost = n - sum(_distinct(m[y != 255]) for m, y in zip(maps, labels))
    assert lost > 0.01 * n
    assert f"float16 loses {lost} of {n} distinct scores" in " ".join(world["log"].split())


def test_export_refuses_files_of_a_plain_cast(world, tmp_path):
    """Files written before the transform (no f16 attributes) are not mixed into a method."""
    folder = tmp_path / "anomaly_p" / "M" / TRACK
    _cli("export", "--cache", world["cache"], "--scorer", "msp", "--temp", 1000, "--format", "smiyc", "--method", "M",
         "--out", tmp_path, "--no-progress")
    first = sorted(folder.iterdir())[0]
    with h5py.File(first, "a") as f:
        for k in [k for k in f.attrs if k.startswith("f16_")]:
            del f.attrs[k]
    res = CliRunner().invoke(analyze_main, ["export", "--cache", str(world["cache"]), "--scorer", "msp", "--temp",
                                            "1000", "--format", "smiyc", "--method", "M", "--out", str(tmp_path),
                                            "--no-progress"])
    assert res.exit_code != 0 and "holds a map made by another export" in res.output
    assert len(res.output.strip().splitlines()) == 1
