"""Bad inputs through the CLIs, as a user meets them: one-line error naming the file or
option, non-zero exit, no traceback, nothing already written lost."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from extract.datasets.reader import DatasetReader
from schemas.manifest import get_dataset_spec
from schemas.results import read_results, write_results
from tests.factories import pixel_cache

READ_ONLY = "/sys/anomseg-read-only"  # a read-only filesystem, refused even to root


def _ok_one_line_error(res, *needles, code=1):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    err = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1, res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)


def _run(args):
    return CliRunner().invoke(extract_main, args)


def _extract_args(data, ckpt, cache, model="erfnet", dataset="road_anomaly"):
    args = ["run", "--model", model, "--dataset", dataset, "--data-root", str(data), "--checkpoint", str(ckpt),
            "--cache", str(cache), "--no-progress"]
    return args + (["--input-height", "32"] if model == "erfnet" else [])


# ---- data -------------------------------------------------------------------------------

def test_label_value_outside_mapping_names_the_file(tmp_path, anomaly_data, checkpoints):
    ref = DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data).refs[1]
    lab = np.asarray(Image.open(ref.label_path)).copy()
    lab[0, 0] = 300 - 256 + 1  # 45: RoadAnomaly maps unknown values to void, so use FS L&F below
    res = _run(["datasets", "check", "--dataset", "road_anomaly", "--data-root", str(anomaly_data)])
    assert res.exit_code == 0  # road_anomaly: unlisted values are void by the manifest
    from extract.datasets.synth import write_synth_dataset

    write_synth_dataset(get_dataset_spec("fs_lost_found"), tmp_path / "fs", 3, (16, 32))
    ref = DatasetReader(get_dataset_spec("fs_lost_found"), tmp_path / "fs").refs[2]
    bad = np.asarray(Image.open(ref.label_path)).copy()
    bad[3, 3] = 9
    Image.fromarray(bad, mode="L").save(ref.label_path)
    res = _run(_extract_args(tmp_path / "fs", checkpoints["erfnet"], tmp_path / "c.zarr", dataset="fs_lost_found"))
    _ok_one_line_error(res, ref.label_path, "[9]")
    done = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["done"][:]
    assert list(done) == [True, True, False]  # frames before the bad one stay done


def test_image_without_label_and_size_mismatch(tmp_path, anomaly_data, checkpoints):
    refs = DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data).refs
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(refs[2].label_path)
    res = _run(_extract_args(anomaly_data, checkpoints["erfnet"], tmp_path / "c.zarr"))
    _ok_one_line_error(res, refs[2].label_path, "differs from image size")
    refs[4].label_path.unlink()
    res = _run(_extract_args(anomaly_data, checkpoints["erfnet"], tmp_path / "d.zarr"))
    _ok_one_line_error(res, refs[4].image_path, "image has no label")


def test_unreadable_image_header(tmp_path, anomaly_data, checkpoints):
    ref = DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data).refs[0]
    ref.image_path.write_bytes(b"not an image at all")
    res = _run(_extract_args(anomaly_data, checkpoints["erfnet"], tmp_path / "c.zarr"))
    _ok_one_line_error(res, ref.image_path, "cannot read image header")


# ---- checkpoints -------------------------------------------------------------------------

class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_bad_checkpoints(tmp_path, anomaly_data, checkpoints):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoints["erfnet"].read_bytes()[:100_000])
    res = _run(_extract_args(anomaly_data, truncated, tmp_path / "a.zarr"))
    _ok_one_line_error(res, truncated)
    res = _run(_extract_args(anomaly_data, checkpoints["eomt"], tmp_path / "b.zarr"))
    _ok_one_line_error(res, checkpoints["eomt"], "EoMT checkpoint, not ERFNet")
    evil, target = tmp_path / "evil.pth", tmp_path / "pwned"
    with open(evil, "wb") as f:
        pickle.dump({"module.x": _Evil(str(target))}, f)
    res = _run(_extract_args(anomaly_data, evil, tmp_path / "c.zarr"))
    _ok_one_line_error(res, evil)
    assert not target.exists()  # refused by weights-only loading, never executed
    res = _run(_extract_args(anomaly_data, tmp_path / "missing.pth", tmp_path / "d.zarr"))
    _ok_one_line_error(res, "missing.pth", "checkpoint not found")
    assert not any((tmp_path / n).exists() for n in ("a.zarr", "b.zarr", "c.zarr"))


# ---- options -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["run", "--model", "resnet"], "resnet"),
    (["run", "--model", "erfnet", "--dataset", "coco"], "road_anomaly"),
    (["datasets", "synth", "--dataset", "fs_static", "--out", "x", "--size", "0x10"], "--size"),
])
def test_unknown_names_list_valid_ones(args, needle):
    res = _run(args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("temps, needle", [("0.5,-1", "'-1'"), ("0.5,abc", "'abc'"), ("0", "'0'"), ("nan", "nan")])
def test_bad_temperatures(tmp_path, temps, needle):
    pixel_cache(tmp_path / "c.zarr", [(8, 8)], np.random.default_rng(0))
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--temps", temps])
    assert res.exit_code == 2 and "--temps" in res.output and needle in res.output
    assert not (tmp_path / "results.parquet").exists()


def test_unknown_scorer_lists_valid_ones(tmp_path):
    res = CliRunner().invoke(analyze_main, ["score", "--cache", "x.zarr", "--scorers", "msp,odin"])
    assert res.exit_code == 2 and "odin" in res.output and "maxentropy" in res.output


# ---- outputs -----------------------------------------------------------------------------

def test_read_only_cache_location(anomaly_data, checkpoints):
    res = _run(_extract_args(anomaly_data, checkpoints["erfnet"], f"{READ_ONLY}/c.zarr"))
    _ok_one_line_error(res, READ_ONLY)


def test_read_only_results_location(tmp_path):
    pixel_cache(tmp_path / "c.zarr", [(8, 8)], np.random.default_rng(0))
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--scorers", "msp",
                                            "--out", f"{READ_ONLY}/results.parquet", "--no-progress"])
    _ok_one_line_error(res, READ_ONLY)


def test_resume_with_another_dataset_is_refused_and_cache_untouched(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "c.zarr"
    assert _run(_extract_args(anomaly_data, checkpoints["erfnet"], cache)).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    from extract.datasets.synth import write_synth_dataset

    write_synth_dataset(get_dataset_spec("fs_static"), tmp_path / "fs", 5, (48, 96))
    res = _run(_extract_args(tmp_path / "fs", checkpoints["erfnet"], cache, dataset="fs_static"))
    _ok_one_line_error(res, cache, "different", "dataset")
    assert before == {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}


def test_resume_with_another_schema_version_is_refused(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "c.zarr"
    assert _run(_extract_args(anomaly_data, checkpoints["erfnet"], cache)).exit_code == 0
    zarr.open_group(str(cache), mode="r+").attrs["schema_version"] = 0
    res = _run(_extract_args(anomaly_data, checkpoints["erfnet"], cache))
    _ok_one_line_error(res, cache, "schema_version 0 is not supported")


def test_analyze_refuses_unfinished_cache(tmp_path):
    root, _ = pixel_cache(tmp_path / "c.zarr", [(8, 8), (8, 8)], np.random.default_rng(0))
    root["done"][1] = False
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--out",
                                            str(tmp_path / "r.parquet"), "--no-progress"])
    _ok_one_line_error(res, "1 of 2 frames are not done", "--allow-partial")
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--out",
                                            str(tmp_path / "r.parquet"), "--no-progress", "--allow-partial"])
    assert res.exit_code == 0 and "warning" in res.output


def test_nan_in_cached_logits_names_the_frame(tmp_path):
    root, _ = pixel_cache(tmp_path / "c.zarr", [(8, 8), (8, 8)], np.random.default_rng(0))
    logits = root["logits"][1]
    logits[3, 1, 1] = np.inf
    root["logits"][1] = logits
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--out",
                                            str(tmp_path / "r.parquet"), "--no-progress"])
    _ok_one_line_error(res, "frame f001", "Inf")


def test_dataset_without_anomaly_gives_nan_and_a_warning(tmp_path):
    root, spec = pixel_cache(tmp_path / "c.zarr", [(8, 8), (8, 8)], np.random.default_rng(0))
    labels = root["labels"][:]
    labels[labels == 1] = 0
    root["labels"][:] = labels
    out = tmp_path / "r.parquet"
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--scorers", "msp",
                                            "--out", str(out), "--no-progress"])
    assert res.exit_code == 0 and "no anomaly pixel" in res.output
    df = read_results(out)
    assert df[df.metric == "auprc"].value.isna().all()


def test_old_results_file_is_refused_and_kept(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pixel_cache(tmp_path / "c.zarr", [(8, 8)], np.random.default_rng(0))
    old = tmp_path / "results.parquet"
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({b"results_schema_version": b"0"}), old)
    data = old.read_bytes()
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--scorers", "msp",
                                            "--out", str(old), "--no-progress"])
    _ok_one_line_error(res, old, "schema version 0")
    assert old.read_bytes() == data


def test_verify_detects_a_flipped_byte(tmp_path):
    pixel_cache(tmp_path / "c.zarr", [(16, 16), (16, 16)], np.random.default_rng(0))
    res = CliRunner().invoke(analyze_main, ["inspect", str(tmp_path / "c.zarr"), "--verify"])
    assert res.exit_code == 0 and "present and intact" in res.output
    chunk = tmp_path / "c.zarr" / "logits" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    res = CliRunner().invoke(analyze_main, ["inspect", str(tmp_path / "c.zarr"), "--verify"])
    _ok_one_line_error(res, "array 'logits', frame f001 (index 1): corrupt chunk", "1 missing or corrupt chunk")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [9.0, 13.0])
def test_interrupted_score_never_leaves_a_partial_parquet(tmp_path, delay):
    """SIGKILL `analyze score` at some moment: results.parquet is the old file or the complete new one."""
    import pandas as pd

    pixel_cache(tmp_path / "c.zarr", [(400, 800)] * 8, np.random.default_rng(0))
    out = tmp_path / "results.parquet"
    write_results(pd.DataFrame([dict(run="r", model="m", dataset="d", scorer="msp", temperature=1.0, frames="all",
                                     temp_target="logits",
                                     protocol="exact", metric="auprc", value=0.5, n_frames=1, n_pixels=1,
                                     cache_digest="x")]), out)
    before = out.read_bytes()
    cmd = [sys.executable, "-m", "analyze.cli", "score", "--cache", str(tmp_path / "c.zarr"), "--temps",
           "0.5,0.75,1.1,2", "--out", str(out), "--no-progress", "--scheduler", "sync"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.read_bytes() != before:  # the run finished before the kill: then it is complete
        df = read_results(out)
        assert len(df) == 1 + 5 * 5 * 3  # T = 1 is always scored; msp, maxlogit, maxentropy, energy, gen; 3 metrics
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_is_numpys_isfinite(dtype):
    from analyze.run.tasks import all_finite

    info = np.finfo(dtype)
    special = np.array([0.0, -0.0, info.tiny, info.smallest_subnormal, info.max, -info.max, 1.5], dtype)
    assert all_finite(special.reshape(7, 1)) and all_finite(special[::2])
    for bad in (np.inf, -np.inf, np.nan, -np.nan):
        arr = np.repeat(special, 3)
        arr[5] = bad
        assert not all_finite(arr) and not np.isfinite(arr).all()
    if dtype == np.float16:  # every bit pattern: the exponent check is numpy's isfinite
        every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
        assert [all_finite(every[i:i + 1]) for i in range(0, 2**16, 97)] == list(np.isfinite(every[::97]))
