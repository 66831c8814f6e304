"""From cache to leaderboard, through the CLIs: the SegmentMeIfYouCan whole tracks with their
unlabelled test frames, `analyze score` on the labelled frames only, and `analyze export
--format smiyc` checked against `analyze maps` and, through an independent transcription of
the benchmark's reading and binning, against the `smiyc` rows of results.parquet."""

import shutil
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from analyze.cli.main import main as analyze_main
from analyze.metrics import pixel_metrics
from extract.cli import main as extract_main
from extract.datasets.synth import write_synth_dataset
from schemas.cache import open_cache, read_label
from schemas.manifest import get_dataset_spec
from schemas.results import read_results
from tests.factories import pixel_cache
from tests.test_metrics import smiyc_oracle

SIZES = [(24, 40), (30, 36), (20, 44)]  # the labelled frames; the two test images are 24x40
IDS = ["airplane0000", "airplane0001", "validation0000", "validation0001", "validation0002"]
LABELLED = [False, False, True, True, True]
TRACK = "AnomalyTrack-all"


def _cli(main, *args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


def _extract(data, model, ckpt, cache, dataset="smiyc_anomaly_track", *opts, code=0):
    sized = ["--input-height", 16] if model == "erfnet" else []
    return _cli(extract_main, "run", "--model", model, "--dataset", dataset, "--data-root", data, "--checkpoint",
                ckpt, "--cache", cache, "--no-progress", *sized, *opts, code=code)


def _export(cache, out, scorer="msp", temp=0.5, method="M", *opts, code=0):
    return _cli(analyze_main, "export", "--cache", cache, "--scorer", scorer, "--temp", temp, "--format", "smiyc",
                "--method", method, "--out", out, "--no-progress", *opts, code=code)


# ---- the transcription of the benchmark (road-anomaly-benchmark), written out here ------

def benchmark_read(path) -> np.ndarray:
    """``ChannelLoaderHDF5.read_file`` (dataset ``value``, ``variable[:]``) then ``np.squeeze``
    (``Evaluation.run_metric_single`` / ``metric_worker``)."""
    with h5py.File(path, "r") as f:
        var = f["value"]
        value = var[:] if len(var.shape) > 0 else var
    return np.squeeze(value)


def benchmark_label(path) -> np.ndarray:
    """``DatasetRA.get_frame``: 255 everywhere, classes.usual (0) -> 0, classes.anomaly (1) -> 1."""
    sem = np.asarray(Image.open(path))
    label = np.full(sem.shape[:2], 255, np.uint8)
    label[sem == 0] = 0
    label[sem == 1] = 1
    return label


def _benchmark_metrics(out, method, data, ids):
    """The validation frames' maps as the benchmark reads them, pooled by its binning."""
    folder = data / "dataset_AnomalyTrack"
    maps = [benchmark_read(out / "anomaly_p" / method / TRACK / f"{fid}.hdf5") for fid in ids]
    labels = [benchmark_label(folder / "labels_masks" / f"{fid}_labels_semantic.png") for fid in ids]
    assert all(m.dtype == np.float16 and m.shape == y.shape for m, y in zip(maps, labels))
    return pixel_metrics(maps, labels, protocol="smiyc"), smiyc_oracle(list(zip(maps, labels)))


# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def track(tmp_path_factory, checkpoints):
    """A synthetic AnomalyTrack release (3 labelled frames of different sizes, 2 test images)
    and its ERFNet and EoMT caches, extracted through the CLI."""
    d = tmp_path_factory.mktemp("track")
    write_synth_dataset(get_dataset_spec("smiyc_anomaly_track"), d / "data", 3, SIZES[0], seed=3, sizes=SIZES)
    caches = {m: d / f"{m}.zarr" for m in ("erfnet", "eomt")}
    logs = {m: _extract(d / "data", m, checkpoints[m], caches[m]) for m in caches}
    return {"dir": d, "data": d / "data", "caches": caches, "logs": logs}


@pytest.fixture(scope="module")
def scored(track):
    out = track["dir"] / "results.parquet"
    log = _cli(analyze_main, "score", "--cache", track["caches"]["erfnet"], "--cache", track["caches"]["eomt"],
               "--protocol", "smiyc", "--temps", "0.5", "--out", out, "--no-progress")
    return {"log": log, "results": read_results(out), "frames": pd.read_parquet(track["dir"] / "results_frames.parquet")}


# ---- unlabelled frames ----------------------------------------------------------------------

def test_track_caches_record_which_frames_are_labelled(track):
    assert "5 frames (2 unlabelled)" in track["logs"]["erfnet"]
    assert "kept 2 unlabelled image(s) as frames" in track["logs"]["erfnet"]
    for model, cache in track["caches"].items():
        root, spec = open_cache(cache)
        assert list(spec.frame_ids) == IDS and spec.labelled == tuple(LABELLED)
        assert spec.extra["benchmarks"] == {"smiyc": {"dataset": TRACK, "count": 110}}
        assert spec.sizes == ((24, 40), (24, 40), *SIZES) and root["done"][:].all()
        for i, lab in enumerate(LABELLED):
            label = read_label(root, spec, i)
            assert (label == 255).all() != lab, (model, i)  # unlabelled: void everywhere
    out = _cli(analyze_main, "inspect", track["caches"]["eomt"], "--verify")
    assert "5/5 done, 2 unlabelled (never scored)" in out and "present and intact" in out


def test_score_uses_the_labelled_frames_only(track, scored):
    for cache in track["caches"].values():
        assert f"{cache}: skipped 2 unlabelled frame(s); scoring the 3 labelled ones" in scored["log"]
    res = scored["results"]
    assert set(res["dataset"]) == {"smiyc_anomaly_track"} and (res["n_frames"] == 3).all()
    assert set(scored["frames"]["frame"]) == set(IDS[2:])


def test_validation_numbers_equal_the_validation_copy(track, scored, checkpoints):
    """`smiyc_anomaly_track` scores exactly the frames of `smiyc_ra21` in the same release folder.
    Up to float16 ties: the smiyc protocol maps each track by one affine transform fitted on
    all its frames, as the export, and the whole track has its test frames too."""
    d = track["dir"]
    _extract(track["data"], "erfnet", checkpoints["erfnet"], d / "ra21.zarr", "smiyc_ra21")
    _cli(analyze_main, "score", "--cache", d / "ra21.zarr", "--protocol", "smiyc", "--temps", "0.5",
         "--out", d / "ra21.parquet", "--no-progress")
    key = ["scorer", "temperature", "metric"]
    a = scored["results"].query("model == 'erfnet'").set_index(key)["value"].sort_index()
    b = read_results(d / "ra21.parquet").set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(a, b, rtol=0, atol=5e-3)
    assert (a == b).mean() > 0.8  # most keys have the same float16 ties in both


def test_metrics_never_see_an_unlabelled_frame(tmp_path, track, scored):
    """Even a corrupted cache whose unlabelled frame holds labels: scoring ignores the frame
    and `inspect --verify` names it."""
    cache = tmp_path / "c.zarr"
    shutil.copytree(track["caches"]["erfnet"], cache)
    labels = zarr.open_group(str(cache), mode="r+")["labels"]
    labels[0, :24, :40] = np.eye(24, 40, dtype=np.uint8)  # anomaly on the diagonal, the rest in-distribution
    out = _cli(analyze_main, "inspect", cache, "--verify", code=1)
    assert "1 unlabelled frame(s) have labels that are not void (255) everywhere: airplane0000" in out
    _cli(analyze_main, "score", "--cache", cache, "--protocol", "smiyc", "--temps", "0.5", "--out",
         tmp_path / "r.parquet", "--no-progress")
    key = ["scorer", "temperature", "metric"]
    a = scored["results"].query("model == 'erfnet'").set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(a, read_results(tmp_path / "r.parquet").set_index(key)["value"].sort_index())


def test_resume_refuses_a_changed_set_of_labelled_frames(tmp_path, track, checkpoints):
    data = tmp_path / "data"
    shutil.copytree(track["data"], data)
    shutil.copytree(track["caches"]["erfnet"], tmp_path / "c.zarr")
    _extract(data, "erfnet", checkpoints["erfnet"], tmp_path / "c.zarr")  # same copy: every frame done, resumed
    shutil.copy(data / "dataset_AnomalyTrack/labels_masks/validation0000_labels_semantic.png",
                data / "dataset_AnomalyTrack/labels_masks/airplane0000_labels_semantic.png")
    out = _extract(data, "erfnet", checkpoints["erfnet"], tmp_path / "c.zarr", code=1)
    assert "was made with a different labelled frames" in out


# ---- export ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model,target,temp", [("erfnet", "query", 0.5), ("eomt", "query", 0.5), ("eomt", "pixel", 2.0)])
def test_export_round_trip_equals_analyze_maps(tmp_path, track, model, target, temp):
    """Every frame, labelled or not: the HDF5 `value` is `analyze maps`' map mapped by the
    affine transform its attributes record, fitted on the range of every frame, cast to float16."""
    cache = track["caches"][model]
    out = _export(cache, tmp_path / "sub", "msp", temp, "M", "--temp-target", target)
    what = f"{model} msp T={temp:g}" + (f" (T on the {target} target)" if model == "eomt" else "")
    assert f"SegmentMeIfYouCan {TRACK}: 5 frames (2 unlabelled) of {what} in {tmp_path / 'sub/anomaly_p/M' / TRACK}: " \
           "5 written, 0 already complete" in out
    assert "the full AnomalyTrack-all release has 110" in out  # a synthetic copy: the count is said
    _cli(analyze_main, "maps", "--cache", cache, "--scorer", "msp", "--temp", temp, "--temp-target", target,
         "--frames", ",".join(IDS), "--out", tmp_path / "maps")
    folder = tmp_path / "sub" / "anomaly_p" / "M" / TRACK
    assert sorted(p.name for p in folder.iterdir()) == [f"{fid}.hdf5" for fid in IDS]
    _, spec = open_cache(cache)
    maps = [np.load(tmp_path / "maps" / f"{fid}_msp_T{temp:g}.npy") for fid in IDS]
    lo, hi = min(m.min() for m in maps), max(m.max() for m in maps)
    for fid, size, m in zip(IDS, spec.sizes, maps):
        with h5py.File(folder / f"{fid}.hdf5", "r") as f:
            assert list(f.keys()) == ["value"]
            value = f["value"][:]
            attrs = dict(f.attrs)
            assert attrs["scorer"] == "msp" and attrs["temperature"] == temp
        assert (attrs["f16_fit_min"], attrs["f16_fit_max"]) == (lo, hi)  # the whole track, same constants
        center, scale = attrs["f16_center"], attrs["f16_scale"]
        ends = {"identity": (lo, hi), "centered": (-2**14, 2**14), "low": (0, 2**15), "high": (-2**15, 0)}
        assert ((lo - center) * scale, (hi - center) * scale) == pytest.approx(ends[attrs["f16_kind"]])
        want = ((m - center) * scale).astype(np.float16)
        assert value.dtype == np.float16 and value.shape == size
        np.testing.assert_array_equal(value, want)
        assert np.ptp(value.astype(np.float32)) > 0


@pytest.mark.parametrize("model,scorer,temp", [("erfnet", "msp", 0.5), ("erfnet", "energy", 1.0),
                                               ("eomt", "rba", 0.5), ("eomt", "maxentropy", 1.0)])
def test_exported_maps_give_the_smiyc_rows_of_results(tmp_path, track, scored, model, scorer, temp):
    """The benchmark's validation metrics from the exported files (read back with h5py,
    labels from the release's PNGs) equal `analyze score --protocol smiyc`."""
    _export(track["caches"][model], tmp_path, scorer, temp, "M")
    got, oracle = _benchmark_metrics(tmp_path, "M", track["data"], IDS[2:])
    rows = scored["results"].query("model == @model and scorer == @scorer and temperature == @temp")
    assert (rows["protocol"] == "smiyc").all() and len(rows) == 3
    for metric in ("auprc", "fpr95", "auroc"):
        want = float(rows.loc[rows["metric"] == metric, "value"].iloc[0])
        assert got[metric] == want, metric
        assert oracle[metric] == pytest.approx(want, abs=1e-12), metric
    assert int(rows["n_pixels"].iloc[0]) == got["n_pos"] + got["n_neg"]


def test_export_is_resumable_and_never_mixes_exports(tmp_path, track):
    cache = track["caches"]["erfnet"]
    _export(cache, tmp_path, "msp", 0.5, "M")
    folder = tmp_path / "anomaly_p" / "M" / TRACK
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "validation0001.hdf5").unlink()  # interrupted before this frame
    (folder / "validation0002.hdf5").write_bytes(b"not hdf5")  # a file another tool left half written
    (folder / ".validation0001.hdf5.0123abcd.tmp").write_bytes(b"partial")  # an interrupted write of ours
    kept = {n: (folder / n).stat().st_mtime_ns for n in ("airplane0000.hdf5", "airplane0001.hdf5", "validation0000.hdf5")}
    out = _export(cache, tmp_path, "msp", 0.5, "M")
    assert "2 written, 3 already complete" in out
    assert {n: (folder / n).stat().st_mtime_ns for n in kept} == kept  # complete files are not rewritten
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first  # same bytes, no temporary file left
    # another scorer, T or cache into the same method folder is refused before anything is written
    for args in (("maxlogit", 0.5), ("msp", 1.0)):
        out = _export(cache, tmp_path, *args, "M", code=1)
        assert "airplane0000.hdf5: holds a map made by another export (scorer msp, temperature 0.5" in out
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    out = _export(track["caches"]["eomt"], tmp_path, "msp", 0.5, "M", code=1)
    assert "use another --method or --out, or --overwrite" in out
    out = _export(cache, tmp_path, "maxlogit", 0.5, "M", "--overwrite")
    assert "5 written, 0 already complete" in out
    with h5py.File(folder / "validation0002.hdf5", "r") as f:
        assert f.attrs["scorer"] == "maxlogit"


def test_a_failed_write_leaves_complete_files_and_the_rerun_finishes(tmp_path, track):
    folder = tmp_path / "anomaly_p" / "M" / TRACK
    (folder / "validation0001.hdf5").mkdir(parents=True)  # a file that cannot be written
    (folder / "validation0001.hdf5" / "x").write_text("x")
    out = _export(track["caches"]["erfnet"], tmp_path, "msp", 0.5, "M", code=1)
    assert "validation0001.hdf5: cannot write" in out and len(out.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["airplane0000.hdf5", "airplane0001.hdf5",
                                                        "validation0000.hdf5", "validation0001.hdf5"]
    shutil.rmtree(folder / "validation0001.hdf5")
    out = _export(track["caches"]["erfnet"], tmp_path, "msp", 0.5, "M")
    assert "2 written, 3 already complete" in out


def test_zip_packs_the_method_folder(tmp_path, track, checkpoints):
    _export(track["caches"]["eomt"], tmp_path, "rba", 1.0, "EoMT_RbA")
    # the other track into the same method folder, then the archive of both
    data = tmp_path / "obstacle"
    write_synth_dataset(get_dataset_spec("smiyc_obstacle_track"), data, 2, (16, 32), seed=1)
    _extract(data, "eomt", checkpoints["eomt"], tmp_path / "o.zarr", "smiyc_obstacle_track")
    out = _export(tmp_path / "o.zarr", tmp_path, "rba", 1.0, "EoMT_RbA", "--zip")
    assert "SegmentMeIfYouCan ObstacleTrack-all: 4 frames (2 unlabelled) of eomt rba T=1" in out
    assert f"packed AnomalyTrack-all 5 files, ObstacleTrack-all 4 files into {tmp_path / 'EoMT_RbA.zip'}" in out
    base = tmp_path / "anomaly_p"
    with zipfile.ZipFile(tmp_path / "EoMT_RbA.zip") as zf:
        names = zf.namelist()
        assert names == sorted(p.relative_to(base).as_posix() for p in base.rglob("*.hdf5"))
        assert "EoMT_RbA/ObstacleTrack-all/curvy-street_1.hdf5" in names and len(names) == 9
        for n in names:
            assert zf.read(n) == (base / n).read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))
    # one method is one scorer at one T: an archive never mixes two
    shutil.copytree(base / "EoMT_RbA", base / "Mixed")
    _export(tmp_path / "o.zarr", tmp_path, "msp", 1.0, "Mixed", "--overwrite")
    out = _export(track["caches"]["eomt"], tmp_path, "rba", 1.0, "Mixed", "--zip", code=1)
    assert "Mixed: mixes two methods" in out and "scorer rba" in out and "scorer msp" in out
    assert not (tmp_path / "Mixed.zip").exists()


def test_export_refusals(tmp_path, track):
    erf = track["caches"]["erfnet"]
    out = _export(erf, tmp_path, "rba", 1.0, "M", code=2)  # RbA needs mask (query) outputs
    assert "--scorer" in out and "rba not defined for pixel models" in out
    for bad in ("all", "msp,maxlogit"):
        assert "--scorer" in _export(erf, tmp_path, bad, 1.0, "M", code=2)
    for bad in ("a/b", "x,y", ".hidden", ""):
        assert "--method" in _export(erf, tmp_path, "msp", 1.0, bad, code=2)
    assert "--temp" in _export(erf, tmp_path, "msp", 0, "M", code=2)
    pixel_cache(tmp_path / "ra.zarr", [(8, 8)], np.random.default_rng(0))  # road_anomaly: no benchmark split
    out = _export(tmp_path / "ra.zarr", tmp_path, "msp", 1.0, "M", code=1)
    assert "dataset road_anomaly is not a SegmentMeIfYouCan split" in out
    part = tmp_path / "part.zarr"
    shutil.copytree(erf, part)
    zarr.open_group(str(part), mode="r+")["done"][1] = False
    out = _export(part, tmp_path, "msp", 1.0, "M", code=1)
    assert "1 of 5 frames are not done (e.g. airplane0001); a submission needs every frame" in out
    lost = tmp_path / "lost.zarr"
    shutil.copytree(erf, lost)
    (lost / "logits" / "c" / "3" / "0" / "0" / "0").unlink()  # a done frame's logits chunk lost in a copy
    out = _export(lost, tmp_path, "msp", 1.0, "M", code=1)
    assert "array 'logits', frame validation0001" in out and "the cache lost data" in out
    assert not (tmp_path / "anomaly_p").exists()


def test_obstacle_track_scores_the_benchmark_validation_frames(tmp_path, checkpoints):
    """ObstacleTrack-all keeps validation_19 and validation_21 (excluded by ObstacleTrack-
    validation) as unlabelled frames: exported, never scored, so the track's numbers are those
    of the validation copy (smiyc_ro21) in the same folder."""
    write_synth_dataset(get_dataset_spec("smiyc_obstacle_track"), tmp_path, 21, (16, 32), seed=5)
    ckpt = checkpoints["erfnet"]
    log = _extract(tmp_path, "erfnet", ckpt, tmp_path / "track.zarr", "smiyc_obstacle_track")
    assert "kept 2 frame(s) the layout excludes as unlabelled frames" in log
    _, spec = open_cache(tmp_path / "track.zarr")
    assert spec.n_frames == 23 and not spec.labelled_mask[[spec.frame_ids.index("validation_19"),
                                                             spec.frame_ids.index("validation_21")]].any()
    assert int(spec.labelled_mask.sum()) == 19
    _extract(tmp_path, "erfnet", ckpt, tmp_path / "ro21.zarr", "smiyc_ro21")
    key = ["scorer", "temperature", "metric"]
    values, logs = [], []
    for name in ("track", "ro21"):
        logs.append(_cli(analyze_main, "score", "--cache", tmp_path / f"{name}.zarr", "--protocol", "smiyc",
                         "--scorers", "msp,maxlogit", "--out", tmp_path / f"{name}.parquet", "--no-progress"))
        values.append(read_results(tmp_path / f"{name}.parquet").set_index(key)["value"].sort_index())
    assert "skipped 4 unlabelled frame(s); scoring the 19 labelled ones" in logs[0] and "unlabelled" not in logs[1]
    pd.testing.assert_series_equal(values[0], values[1])
    out = _export(tmp_path / "track.zarr", tmp_path / "sub", "msp", 1.0, "M")
    assert "SegmentMeIfYouCan ObstacleTrack-all: 23 frames (4 unlabelled) of erfnet msp T=1" in out
    files = {p.stem for p in (tmp_path / "sub/anomaly_p/M/ObstacleTrack-all").iterdir()}
    assert files == set(spec.frame_ids) and {"validation_19", "validation_21", "curvy-street_1"} <= files


def test_export_of_a_reextracted_cache_never_reuses_the_old_files(tmp_path, track):
    from schemas.cache import consolidate

    cache = tmp_path / "c.zarr"
    shutil.copytree(track["caches"]["erfnet"], cache)
    assert "5 written" in _export(cache, tmp_path, "msp", 0.5, "M")
    root = zarr.open_group(str(cache), mode="r+", use_consolidated=False)
    prov = dict(root.attrs["provenance"])
    root.attrs["provenance"] = {**prov, "dtype": "bf16"}  # as a re-extraction with --dtype bf16
    consolidate(cache)
    out = _export(cache, tmp_path, "msp", 0.5, "M", code=1)
    assert "holds a map made by another export" in out and "cache_digest" in out
