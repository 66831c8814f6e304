"""A cache that lost data is never scored: chunk files deleted or damaged on disk, through the
real CLIs (`analyze inspect --verify`, `analyze score`, `analyze temperature --fit`, `analyze
maps`, `extract run`) and real Zarr stores (a local folder and an fsspec URL)."""

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.run.driver import Scheduler, ScoreError, score_cache
from extract.cli import main as extract_main
from schemas import integrity
from schemas.cache import open_cache, thumbnail_size, write_frame_common
from schemas.results import read_results
from tests.factories import pixel_cache, query_cache

SIZES = [(30, 50), (20, 40), (25, 25), (12, 60)]


def _analyze(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


def _one_line_error(res, *needles, code=1):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1, res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)


def _chunk(cache, array, index):
    arr = zarr.open_group(str(cache), mode="r")[array]
    return cache / array / "c" / "/".join(map(str, (index,) + (0,) * (arr.ndim - 1)))


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _make(kind, path, **kw):
    rng = np.random.default_rng(0)
    if kind == "pixel":
        return pixel_cache(path, SIZES, rng, **kw)
    return query_cache(path, SIZES, rng, crop=32, **kw)


@pytest.mark.parametrize("kind, array, chunk, frame", [
    ("pixel", "logits", 2, "f002"),
    ("pixel", "labels", 1, "f001"),
    ("query", "mask_logits", 2, "f001"),  # frame f000 (30x50) has crops 0 and 1
    ("query", "class_logits", 0, "f000"),
    ("query", "labels", 3, "f003"),
])
def test_deleted_chunk_is_reported_and_never_scored(tmp_path, kind, array, chunk, frame):
    cache = tmp_path / "c.zarr"
    _make(kind, cache)
    res = _analyze("inspect", cache, "--verify")
    assert res.exit_code == 0 and "present and intact" in res.output
    _chunk(cache, array, chunk).unlink()

    res = _analyze("inspect", cache, "--verify")
    _one_line_error(res, f"array '{array}', frame {frame}", "chunk missing", "1 missing or corrupt chunk")
    out = tmp_path / "r.parquet"
    res = _analyze("score", "--cache", cache, "--scorers", "msp", "--out", out, "--no-progress")
    _one_line_error(res, cache, f"array '{array}', frame {frame}", "--allow-partial")
    assert not out.exists()

    # --allow-partial skips that frame and says so; the numbers are those of the other frames
    res = _analyze("score", "--cache", cache, "--scorers", "msp", "--out", out, "--no-progress", "--allow-partial")
    assert res.exit_code == 0, res.output
    assert "skipping these 1 frame(s)" in res.output and frame in res.output
    got = read_results(out)
    assert (got.n_frames == len(SIZES) - 1).all()
    root = zarr.open_group(str(cache), mode="r+")
    root["done"][int(frame[1:])] = False  # the oracle: the same frame simply not done
    want, _, _ = score_cache(str(cache), "msp", (1.0,), scheduler="sync", allow_partial=True, warn=lambda m: None)
    np.testing.assert_array_equal(got.sort_values("metric").value.to_numpy(),
                                  want.sort_values("metric").value.to_numpy())


def test_corrupt_chunks_are_named_by_array_and_frame(tmp_path):
    cache = tmp_path / "q.zarr"
    _make("query", cache)
    _flip_byte(_chunk(cache, "mask_logits", 1))  # second crop of frame f000
    _flip_byte(_chunk(cache, "labels", 3))
    res = _analyze("inspect", cache, "--verify")
    _one_line_error(res, "array 'mask_logits', frame f000 (index 0): corrupt chunk (crc32c",
                    "array 'labels', frame f003 (index 3): corrupt chunk", "2 missing or corrupt chunk")


def test_crc_failure_during_score_names_cache_array_and_frame(tmp_path):
    cache = tmp_path / "c.zarr"
    _make("pixel", cache)
    _flip_byte(_chunk(cache, "logits", 1))
    for scheduler in ("threads", "processes"):
        res = _analyze("score", "--cache", cache, "--scorers", "msp", "--out", tmp_path / "r.parquet",
                       "--no-progress", "--scheduler", scheduler)
        _one_line_error(res, cache, "array 'logits', frame f001 (index 1)", "crc32c checksum mismatch",
                        "analyze inspect --verify")


def test_lost_static_chunk_is_refused_even_with_allow_partial(tmp_path):
    cache = tmp_path / "q.zarr"
    _make("query", cache)
    (cache / "crop_start" / "c" / "0").unlink()  # reads as zeros: every crop would start at 0
    for extra in ((), ("--allow-partial",)):
        res = _analyze("score", "--cache", cache, "--out", tmp_path / "r.parquet", "--no-progress", *extra)
        _one_line_error(res, cache, "array 'crop_start', whole array", "differs from the cache attributes")
    _one_line_error(_analyze("inspect", cache, "--verify"), "crop_start")


def test_all_void_frame_is_stored_verified_and_warned_about(tmp_path):
    cache = tmp_path / "c.zarr"
    root, spec = _make("pixel", cache)
    h, w = spec.sizes[2]
    write_frame_common(root, spec, 2, np.full((h, w), 255, np.uint8), np.zeros((*thumbnail_size(h, w), 3), np.uint8))
    assert _chunk(cache, "labels", 2).exists()  # stored although it equals the fill value
    assert _analyze("inspect", cache, "--verify").exit_code == 0
    res = _analyze("score", "--cache", cache, "--scorers", "msp", "--out", tmp_path / "r.parquet", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "frame f002 is done but its labels are all void" in res.output


def test_missing_chunk_through_an_fsspec_url(tmp_path):
    cache = tmp_path / "c.zarr"
    _make("pixel", cache)
    _chunk(cache, "thumbnails", 3).unlink()
    with pytest.raises(ScoreError, match="array 'thumbnails', frame f003"):
        score_cache(f"file://{cache}", "msp", (1.0,), scheduler=Scheduler("sync", progress=False),
                    storage_options={"auto_mkdir": False})
    root, spec = open_cache(f"file://{cache}", storage_options={"auto_mkdir": False})
    assert [p.frame_id for p in integrity.missing_chunks(root, spec, range(4))] == ["f003"]


def test_fit_and_maps_refuse_a_cache_that_lost_data(tmp_path):
    cache = tmp_path / "city.zarr"
    pixel_cache(cache, SIZES, np.random.default_rng(0), label_kind="semantic", dataset="cityscapes_val")
    _chunk(cache, "logits", 0).unlink()
    _one_line_error(_analyze("temperature", "--fit", "nll", "--cache", cache), cache, "array 'logits', frame f000")
    _one_line_error(_analyze("maps", "--cache", cache, "--out", tmp_path / "maps"), "array 'logits', frame f000")


def test_extract_rerun_extracts_lost_frames_again(tmp_path, anomaly_data, checkpoints):
    def run(cache):
        return CliRunner().invoke(extract_main, [
            "run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root", str(anomaly_data),
            "--checkpoint", str(checkpoints["erfnet"]), "--cache", str(cache), "--input-height", "32",
            "--device", "cpu", "--no-progress"])

    full, damaged = tmp_path / "full.zarr", tmp_path / "damaged.zarr"
    assert run(full).exit_code == 0 and run(damaged).exit_code == 0
    _chunk(damaged, "logits", 1).unlink()
    _chunk(damaged, "labels", 3).unlink()
    (damaged / "sizes" / "c" / "0" / "0").unlink()
    res = run(damaged)
    assert res.exit_code == 0, res.output
    assert "2 done frame(s) lack chunks" in res.output and "array 'sizes'" in res.output
    assert "2 frames written (3 already done)" in res.output
    a, b = zarr.open_group(str(full), mode="r"), zarr.open_group(str(damaged), mode="r")
    for name in a.array_keys():
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    assert _analyze("inspect", damaged, "--verify").exit_code == 0
    pd.testing.assert_frame_equal(*(score_cache(str(c), "msp", (1.0,), scheduler="sync")[0] for c in (full, damaged)))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("consolidated", [True, False])
def test_truncated_metadata_file_is_named(tmp_path, consolidated):
    from schemas.cache import consolidate

    cache = tmp_path / "c.zarr"
    _make("pixel", cache)
    if consolidated:
        consolidate(cache)  # readers then use the copy in zarr.json and never read labels/zarr.json
    _truncate(cache / "labels" / "zarr.json")
    res = _analyze("inspect", cache, "--verify")
    _one_line_error(res, cache, "labels/zarr.json", "not valid JSON")
    assert "unexpected" not in res.output


def test_extract_run_names_a_truncated_metadata_file(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "c.zarr"
    args = ["run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root", str(anomaly_data), "--checkpoint",
            str(checkpoints["erfnet"]), "--cache", str(cache), "--input-height", "32", "--device", "cpu",
            "--no-progress"]
    assert CliRunner().invoke(extract_main, args).exit_code == 0  # finished: consolidated
    _truncate(cache / "labels" / "zarr.json")
    res = CliRunner().invoke(extract_main, args)
    _one_line_error(res, cache, "labels/zarr.json", "not valid JSON", "--overwrite")
    assert "unexpected" not in res.output


def test_corrupt_done_chunk_names_cache_and_array(tmp_path):
    cache = tmp_path / "c.zarr"
    pixel_cache(cache, SIZES, np.random.default_rng(0), label_kind="semantic", dataset="cityscapes_val")
    _flip_byte(_chunk(cache, "done", 1))
    for cmd in (("score", "--cache", cache, "--no-progress", "--out", tmp_path / "r.parquet"),
                ("maps", "--cache", cache, "--out", tmp_path / "maps"),
                ("temperature", "--fit", "nll", "--cache", cache),
                ("inspect", cache, "--verify")):
        res = _analyze(*cmd)
        _one_line_error(res, cache, "array 'done'", "crc32c checksum mismatch")
        assert "unexpected" not in res.output


def test_corrupt_chunk_in_maps_names_the_cache(tmp_path):
    cache = tmp_path / "c.zarr"
    _make("pixel", cache)
    _flip_byte(_chunk(cache, "logits", 1))
    res = _analyze("maps", "--cache", cache, "--scorer", "msp", "--frames", "f001", "--out", tmp_path / "maps")
    _one_line_error(res, f"{cache}: array 'logits', frame f001", "crc32c checksum mismatch")


def test_extract_run_on_a_corrupt_done_chunk_names_cache_and_array(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "c.zarr"
    args = ["run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root", str(anomaly_data), "--checkpoint",
            str(checkpoints["erfnet"]), "--cache", str(cache), "--input-height", "32", "--device", "cpu",
            "--no-progress"]
    assert CliRunner().invoke(extract_main, args).exit_code == 0
    _flip_byte(_chunk(cache, "done", 2))
    res = CliRunner().invoke(extract_main, args)
    _one_line_error(res, cache, "array 'done'", "crc32c checksum mismatch")
    assert "unexpected" not in res.output
