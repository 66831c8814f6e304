"""`extract run`: cache contents, resume after SIGKILL, shards, provenance checks."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from extract.cli import main as extract_main
from extract.datasets.reader import DatasetReader
from extract.models import load_model
from extract.models.eomt import window_image
from extract.models.erfnet import preprocess_erfnet
from extract.run import run_extraction
from schemas.cache import CacheError, open_cache, read_label, read_pixel_logits, read_query_outputs
from schemas.manifest import get_dataset_spec
from tests.factories import sigint_default

RUN = dict(progress=False, log=lambda m: None, device="cpu")


def _arrays(path):
    g = zarr.open_group(str(path), mode="r")
    return {k: np.asarray(g[k][:]) for k in sorted(g.array_keys())}


def _assert_same_cache(a, b):
    A, B = _arrays(a), _arrays(b)
    assert A.keys() == B.keys()
    for k in A:
        np.testing.assert_array_equal(A[k], B[k], err_msg=k)
    ga, gb = zarr.open_group(str(a), mode="r").attrs.asdict(), zarr.open_group(str(b), mode="r").attrs.asdict()
    ga["provenance"].pop("created"), gb["provenance"].pop("created")
    assert ga == gb


def test_erfnet_cache_equals_direct_model_outputs(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "erf.zarr"
    s = run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=cache, input_height=32, **RUN)
    assert s.frames_written == 5 and s.frames_skipped == 0
    root, spec = open_cache(cache)
    assert spec.kind == "pixel" and spec.void_channel == 19 and spec.n_channels == 20
    model, _ = load_model("erfnet", checkpoints["erfnet"])
    reader = DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data)
    for i, frame in enumerate(reader):
        with torch.inference_mode():
            direct = model(preprocess_erfnet(frame.image, 32)[None].contiguous())[0].half().numpy()
        np.testing.assert_array_equal(read_pixel_logits(root, spec, i), direct)
        np.testing.assert_array_equal(read_label(root, spec, i), frame.label)
    assert spec.provenance.checkpoint_sha256 != "0" * 64 and spec.provenance.dataset == "road_anomaly"
    assert root["done"][:].all()


def test_eomt_cache_equals_direct_model_outputs(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "eomt.zarr"
    run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=cache, workers=1, **RUN)
    root, spec = open_cache(cache)
    assert spec.kind == "query" and spec.crop_size == 64 and spec.n_queries == 10 and spec.mask_size == 16
    model, _ = load_model("eomt", checkpoints["eomt"])
    for i, frame in enumerate(DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data)):
        crops, geom = window_image(frame.image, 64)
        assert geom.n_crops == 2  # 48x96 -> 64x128: two crops
        with torch.inference_mode():
            masks, classes = model(crops.float() / 255.0)
        cl, ml = read_query_outputs(root, spec, i)
        np.testing.assert_array_equal(cl, classes.numpy())
        np.testing.assert_array_equal(ml, masks.half().numpy())


def test_resume_skips_done_frames_and_matches_full_run(tmp_path, anomaly_data, checkpoints):
    full = tmp_path / "full.zarr"
    run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=full, input_height=32, **RUN)
    part = tmp_path / "part.zarr"
    run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=part, input_height=32,
                   shard="0/2", **RUN)
    done_chunk = part / "logits" / "c" / "0" / "0" / "0" / "0"
    before = done_chunk.stat().st_mtime_ns
    s = run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=part, input_height=32, **RUN)
    assert (s.frames_skipped, s.frames_written) == (3, 2)
    assert done_chunk.stat().st_mtime_ns == before  # a done frame is not recomputed
    _assert_same_cache(full, part)


def test_two_shards_equal_one_run(tmp_path, anomaly_data, checkpoints):
    full, sharded = tmp_path / "full.zarr", tmp_path / "sharded.zarr"
    run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=full, **RUN)
    for shard in ("1/2", "0/2"):
        run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=sharded, shard=shard, **RUN)
    _assert_same_cache(full, sharded)


def test_resume_with_other_checkpoint_or_model_is_refused(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "c.zarr"
    run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=cache, input_height=32,
                   limit=2, **RUN)
    with pytest.raises(CacheError, match="different .*checkpoint_sha256"):
        run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=cache, limit=2, **RUN)
    with pytest.raises(CacheError, match="different .*preprocessing"):
        run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=cache, input_height=16,
                       limit=2, **RUN)
    ref = DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data).refs[4]
    ref.image_path.unlink(), ref.label_path.unlink()  # the dataset changed: another frame list
    with pytest.raises(CacheError, match="frame_ids"):
        run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=cache, input_height=32, **RUN)
    # --overwrite starts over
    s = run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=cache, input_height=32,
                       overwrite=True, **RUN)
    assert s.frames_written == 4


def test_corrupt_image_mid_run_keeps_done_frames(tmp_path, anomaly_data, checkpoints):
    refs = DatasetReader(get_dataset_spec("road_anomaly"), anomaly_data).refs
    data = refs[3].image_path.read_bytes()
    refs[3].image_path.write_bytes(data[: len(data) // 2])  # header intact, pixel data truncated
    cache = tmp_path / "c.zarr"
    res = CliRunner().invoke(extract_main, ["run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root",
                                            str(anomaly_data), "--checkpoint", str(checkpoints["erfnet"]), "--cache",
                                            str(cache), "--input-height", "32", "--no-progress"])
    assert res.exit_code == 1, res.output
    assert str(refs[3].image_path) in res.output and "Traceback" not in res.output
    done = zarr.open_group(str(cache), mode="r")["done"][:]
    np.testing.assert_array_equal(done, [True, True, True, False, False])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_then_resume_gives_identical_cache(tmp_path, checkpoints, seed):
    """Kill a real extraction process at a random moment, rerun, compare with a clean run."""
    from extract.datasets.synth import write_synth_dataset

    anomaly_data = tmp_path / "data"
    n = 48  # enough frames that the process is still running when 1..7 of them are done (16 finished first once)
    write_synth_dataset(get_dataset_spec("road_anomaly"), anomaly_data, n, (48, 96), seed=seed)
    full = tmp_path / "full.zarr"
    run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=full, **RUN)
    killed = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "extract.cli", "run", "--model", "eomt", "--dataset", "road_anomaly", "--data-root",
           str(anomaly_data), "--checkpoint", str(checkpoints["eomt"]), "--cache", str(killed), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = np.random.default_rng(seed)
    deadline = time.time() + 120
    target = int(rng.integers(1, 8))  # kill once 1..7 frames are done, plus a random delay
    while time.time() < deadline and proc.poll() is None:
        if (killed / "zarr.json").exists():
            done = zarr.open_group(str(killed), mode="r")["done"][:]
            if done.sum() >= target:
                time.sleep(float(rng.uniform(0, 0.2)))
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = int(zarr.open_group(str(killed), mode="r")["done"][:].sum())
    assert 1 <= n_done < n
    s = run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=killed, **RUN)
    assert s.frames_skipped == n_done
    _assert_same_cache(full, killed)


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_completes(tmp_path, checkpoints):
    from extract.datasets.synth import write_synth_dataset

    data = tmp_path / "data"
    # enough frames that the interrupt lands mid-run even when the polling below lags on a
    # loaded machine (with 16 frames a busy CI machine once saw the run finish first)
    n = 48
    write_synth_dataset(get_dataset_spec("road_anomaly"), data, n, (48, 96), seed=5)
    full = tmp_path / "full.zarr"
    run_extraction("eomt", "road_anomaly", data, checkpoints["eomt"], cache=full, **RUN)
    cache = tmp_path / "c.zarr"
    cmd = [sys.executable, "-m", "extract.cli", "run", "--model", "eomt", "--dataset", "road_anomaly", "--data-root",
           str(data), "--checkpoint", str(checkpoints["eomt"]), "--cache", str(cache), "--no-progress"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (cache / "zarr.json").exists() and zarr.open_group(str(cache), mode="r")["done"][:].sum() >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command" in err and "Traceback" not in err
    n_done = int(zarr.open_group(str(cache), mode="r")["done"][:].sum())
    assert 2 <= n_done < n
    s = run_extraction("eomt", "road_anomaly", data, checkpoints["eomt"], cache=cache, **RUN)
    assert s.frames_skipped == n_done
    _assert_same_cache(full, cache)


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_compression_presets_store_the_same_values(tmp_path, anomaly_data, checkpoints, compression):
    ref, other = tmp_path / "ref.zarr", tmp_path / "other.zarr"
    run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=ref, input_height=32,
                   limit=2, **RUN)
    run_extraction("erfnet", "road_anomaly", anomaly_data, checkpoints["erfnet"], cache=other, input_height=32,
                   limit=2, compression=compression, **RUN)
    np.testing.assert_array_equal(_arrays(ref)["logits"], _arrays(other)["logits"])
    codecs = [type(c).__name__ for c in zarr.open_group(str(other), mode="r")["logits"].compressors]
    assert codecs == (["BloscCodec", "Crc32cCodec"] if compression == "lz4" else ["Crc32cCodec"])


def test_limit_then_a_larger_limit_then_none_extends_one_cache(tmp_path, anomaly_data, checkpoints):
    """--limit bounds what a run extracts, not the cache: later runs continue it, no --overwrite."""
    full, grown = tmp_path / "full.zarr", tmp_path / "grown.zarr"
    run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=full, **RUN)
    logs = []
    s = run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=grown, limit=2,
                       **{**RUN, "log": logs.append})
    assert (s.frames_written, s.frames_total) == (2, 2)
    assert any("--limit 2: frames 1-2 of 5" in m for m in logs)
    root, spec = open_cache(grown)
    assert spec.n_frames == 5 and list(root["done"][:]) == [True, True, False, False, False]
    s = run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=grown, limit=3, shard="1/2",
                       **RUN)
    assert (s.frames_skipped, s.frames_written) == (1, 0)  # frame 1 done already; frame 3 is beyond --limit 3
    s = run_extraction("eomt", "road_anomaly", anomaly_data, checkpoints["eomt"], cache=grown, **RUN)
    assert (s.frames_skipped, s.frames_written) == (2, 3)
    _assert_same_cache(full, grown)


def test_a_cache_of_fewer_frames_than_the_dataset_is_refused_with_a_hint(tmp_path, checkpoints):
    from extract.datasets.synth import write_synth_dataset

    data = tmp_path / "data"
    write_synth_dataset(get_dataset_spec("road_anomaly"), data, 2, (48, 96), seed=0)
    cache = tmp_path / "c.zarr"
    run_extraction("erfnet", "road_anomaly", data, checkpoints["erfnet"], cache=cache, input_height=32, **RUN)
    write_synth_dataset(get_dataset_spec("road_anomaly"), data, 4, (48, 96), seed=0)  # the dataset gained frames
    with pytest.raises(CacheError, match="holds only the first 2 of these 4 frames"):
        run_extraction("erfnet", "road_anomaly", data, checkpoints["erfnet"], cache=cache, input_height=32, **RUN)


def test_device_auto_is_the_default_and_is_printed(tmp_path, anomaly_data, checkpoints):
    cache = tmp_path / "c.zarr"
    res = CliRunner().invoke(extract_main, ["run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root",
                                            str(anomaly_data), "--checkpoint", str(checkpoints["erfnet"]), "--cache",
                                            str(cache), "--input-height", "32", "--no-progress", "--limit", "1"])
    assert res.exit_code == 0, res.output
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"device: {expected}" in res.output and "(--device auto)" in res.output
    assert open_cache(cache)[1].provenance.device.startswith(expected)


def test_two_shard_processes_at_the_same_time_equal_one_run(tmp_path, checkpoints):
    """Two `extract run --shard i/2` processes started together on one (new) cache."""
    from extract.datasets.synth import write_synth_dataset

    data = tmp_path / "data"
    write_synth_dataset(get_dataset_spec("road_anomaly"), data, 8, (48, 96), seed=3)
    full, shared = tmp_path / "full.zarr", tmp_path / "shared.zarr"
    run_extraction("eomt", "road_anomaly", data, checkpoints["eomt"], cache=full, **RUN)
    cmd = [sys.executable, "-m", "extract.cli", "run", "--model", "eomt", "--dataset", "road_anomaly", "--data-root",
           str(data), "--checkpoint", str(checkpoints["eomt"]), "--cache", str(shared), "--no-progress",
           "--device", "cpu", "--writer-threads", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "4 frames written (0 already done)" in out
    _assert_same_cache(full, shared)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the loser's temporary cache is gone
