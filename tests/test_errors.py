"""The error contract of both CLIs (schemas/errors.py): every known escape is one line with
exit code 1 (data) or 2 (options); anything unexpected is one line pointing to --debug; a
failing cache or disk loses no finished work."""

import errno
import itertools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas.results import read_results
from tests.factories import pixel_cache, query_cache


def _one_line_error(res, *needles, code=1):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1, res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)


def _analyze(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


def _extract_run(data, ckpt, cache, *extra):
    args = ["run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root", str(data), "--checkpoint",
            str(ckpt), "--cache", str(cache), "--input-height", "32", "--no-progress", *extra]
    return CliRunner().invoke(extract_main, args)


def _same_arrays(a, b):
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(ga.array_keys()) == sorted(gb.array_keys())
    for name in ga.array_keys():
        np.testing.assert_array_equal(ga[name][...], gb[name][...], err_msg=name)


# ---- known escapes, each by its message ---------------------------------------------------

def test_fit_nll_on_an_anomaly_cache(tmp_path):
    cache = tmp_path / "q.zarr"
    query_cache(cache, [(32, 32)], np.random.default_rng(0), crop=32)
    res = _analyze("temperature", "--fit", "nll", "--cache", cache)
    _one_line_error(res, cache, "temperature scaling needs an in-distribution semantic cache", "anomaly labels")


def test_store_failing_after_n_writes_stops_extraction_and_resume_completes(tmp_path, anomaly_data, checkpoints,
                                                                            monkeypatch):
    """The store raises ENOSPC (a full disk) from its 12th chunk write on: 2 static chunks, then
    4 per frame (logits, labels, thumbnail, done) on one writer thread."""
    from zarr.storage import LocalStore

    full, cache = tmp_path / "full.zarr", tmp_path / "c.zarr"
    assert _extract_run(anomaly_data, checkpoints["erfnet"], full, "--device", "cpu").exit_code == 0
    real_set, writes = LocalStore.set, itertools.count()

    async def failing_set(self, key, value):
        if "/c/" in key and next(writes) >= 11:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", failing_set)
    res = _extract_run(anomaly_data, checkpoints["erfnet"], cache, "--device", "cpu", "--writer-threads", "1")
    _one_line_error(res, cache, "cannot write frame", "(index 2)", "No space left on device",
                    "the 2 frames written before it are done")
    monkeypatch.undo()
    assert list(zarr.open_group(str(cache), mode="r")["done"][:]) == [True, True, False, False, False]
    res = _extract_run(anomaly_data, checkpoints["erfnet"], cache, "--device", "cpu")
    assert res.exit_code == 0 and "2 of 5 frames already done" in res.output, res.output
    _same_arrays(full, cache)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a small tmpfs needs root")
def test_a_real_full_disk_stops_extraction_with_one_line(tmp_path, anomaly_data, checkpoints):
    """`extract run` in a subprocess on a 320 KiB tmpfs: the disk fills up part way. One writer
    thread, so the frames are stored one after the other: the metadata (12 pages) and the first
    frame (36 pages of 4 KiB) fit in its 80 pages, the second frame does not (1 done). With several
    writer threads the frames in flight share the space, and each of them may fail (0 done)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        cache = mnt / "c.zarr"
        cmd = [sys.executable, "-m", "extract.cli", "run", "--model", "erfnet", "--dataset", "road_anomaly",
               "--data-root", str(anomaly_data), "--checkpoint", str(checkpoints["erfnet"]), "--cache", str(cache),
               "--input-height", "32", "--no-progress", "--device", "cpu", "--writer-threads", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "No space left on device" in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and str(cache) in errors[0]
        done = zarr.open_group(str(cache), mode="r")["done"][:]
        assert 0 < done.sum() < 5, done
        moved = tmp_path / "moved.zarr"  # more space: the same command completes it
        shutil.copytree(cache, moved)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert _extract_run(anomaly_data, checkpoints["erfnet"], moved, "--device", "cpu").exit_code == 0
    full = tmp_path / "full.zarr"
    assert _extract_run(anomaly_data, checkpoints["erfnet"], full, "--device", "cpu").exit_code == 0
    _same_arrays(full, moved)


@pytest.mark.parametrize("device, dtype, needle", [
    ("tpu", "fp32", "--device 'tpu'"),
    ("cuda", "fp32", "--device cuda: no CUDA device"),
    ("cpu", "bf16", "--dtype bf16 needs a CUDA device"),
])
def test_option_errors_exit_2(tmp_path, anomaly_data, checkpoints, device, dtype, needle):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = _extract_run(anomaly_data, checkpoints["erfnet"], tmp_path / "c.zarr", "--device", device, "--dtype", dtype)
    _one_line_error(res, needle, code=2)
    assert not (tmp_path / "c.zarr").exists()


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    import analyze.report.inspect

    cache = tmp_path / "c.zarr"
    pixel_cache(cache, [(8, 8)], np.random.default_rng(0))

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(analyze.report.inspect, "summary", broken)
    res = _analyze("inspect", cache)
    _one_line_error(res, "unexpected RuntimeError: boom; second line", "analyze --debug inspect")
    res = _analyze("--debug", "inspect", cache)
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)


# ---- no finished work lost -----------------------------------------------------------------

def test_each_cache_is_written_as_soon_as_it_is_scored(tmp_path):
    good = tmp_path / "good.zarr"
    pixel_cache(good, [(16, 24)] * 3, np.random.default_rng(0))
    partial = tmp_path / "partial.zarr"  # opens fine; fails only when it is scored
    root, _ = pixel_cache(partial, [(16, 24)] * 3, np.random.default_rng(1), dataset="fs_static")
    root["done"][0] = False
    out = tmp_path / "r.parquet"
    res = _analyze("score", "--cache", good, "--cache", partial, "--scorers", "msp", "--out", out, "--no-progress")
    _one_line_error(res, "partial.zarr: 1 of 3 frames are not done")
    assert set(read_results(out).dataset) == {"road_anomaly"}  # the first cache's rows are kept
    assert (tmp_path / "r_frames.parquet").exists() and (tmp_path / "r_curves.parquet").exists()


def test_every_cache_is_opened_before_any_is_scored(tmp_path):
    good = tmp_path / "good.zarr"
    pixel_cache(good, [(16, 24)] * 3, np.random.default_rng(0))
    out = tmp_path / "r.parquet"
    res = _analyze("score", "--cache", good, "--cache", tmp_path / "missing.zarr", "--scorers", "msp",
                   "--out", out, "--no-progress")
    _one_line_error(res, "missing.zarr: no cache found")
    assert "scoring" not in res.output  # nothing scored ...
    assert not out.exists() and not (tmp_path / "r_frames.parquet").exists()  # ... nothing written


def test_keep_going_scores_the_rest_and_lists_each_failure(tmp_path):
    good = tmp_path / "good.zarr"
    pixel_cache(good, [(16, 24)] * 3, np.random.default_rng(0), dataset="fs_static")
    partial = tmp_path / "partial.zarr"
    root, _ = pixel_cache(partial, [(16, 24)] * 3, np.random.default_rng(1))
    root["done"][0] = False
    out = tmp_path / "r.parquet"
    res = _analyze("score", "--cache", partial, "--cache", good, "--cache", tmp_path / "missing.zarr",
                   "--scorers", "msp", "--out", out, "--no-progress", "--keep-going")
    _one_line_error(res, "2 of 3 cache(s) failed", f"the rows of the others are in {out}")
    failures = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(failures) == 2
    assert "partial.zarr: 1 of 3 frames are not done" in failures[0] and "missing.zarr" in failures[1]
    assert set(read_results(out).dataset) == {"fs_static"}


def test_missing_scheduler_file_and_unreachable_address_fail_at_once(tmp_path):
    import time

    cache = tmp_path / "c.zarr"
    pixel_cache(cache, [(8, 8)], np.random.default_rng(0))
    for args, needles in ((("--scheduler-file", tmp_path / "missing.json"), ("--scheduler-file", "missing.json: no such file")),
                          (("--scheduler", "tcp://127.0.0.1:9"), ("--scheduler", "cannot connect"))):
        start = time.monotonic()
        res = _analyze("score", "--cache", cache, *args, "--no-progress", "--out", tmp_path / "r.parquet")
        assert time.monotonic() - start < 15, args  # Dask alone waits for a scheduler file forever
        _one_line_error(res, *needles, code=2)
    assert not (tmp_path / "r.parquet").exists()


def test_bogus_scheduler_is_one_line_without_a_stall_or_traceback(tmp_path):
    cache = tmp_path / "c.zarr"
    pixel_cache(cache, [(8, 8)], np.random.default_rng(0))
    proc = subprocess.run([sys.executable, "-m", "analyze.cli", "score", "--cache", str(cache), "--scheduler", "bogus",
                           "--no-progress", "--out", str(tmp_path / "r.parquet")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr  # no "Exception ignored ..." after it
    assert "--scheduler" in proc.stderr and "'bogus'" in proc.stderr and "missing port number" in proc.stderr


def test_unusable_scheduler_is_an_option_error(tmp_path):
    cache = tmp_path / "c.zarr"
    pixel_cache(cache, [(8, 8)], np.random.default_rng(0))
    res = _analyze("score", "--cache", cache, "--scheduler", "foo://bar", "--no-progress", "--out", tmp_path / "r.parquet")
    _one_line_error(res, "--scheduler", "'foo://bar'", "unknown address scheme", code=2)
    assert not (tmp_path / "r.parquet").exists()
