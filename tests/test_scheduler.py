"""`score_cache` as a library: any scheduler a Dask user would pass, the caller's thread
settings untouched; `analyze score` labels each pass and shows frames per second."""

import dask
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_info, threadpool_limits

from analyze.cli.main import main as analyze_main
from analyze.run.driver import Scheduler, score_cache
from analyze.run.spill import SpillPolicy
from tests.factories import pixel_cache, query_cache

SIZES = [(30, 50), (20, 40), (25, 25)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("sched") / "q.zarr"
    query_cache(path, SIZES, np.random.default_rng(0), crop=32)
    return str(path)


@pytest.fixture(scope="module")
def reference(cache):
    return score_cache(cache, "msp,rba", (0.5, 1.0), scheduler=Scheduler("sync", progress=False))[0]


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_scheduler_by_name(cache, reference, scheduler):
    got = score_cache(cache, "msp,rba", (0.5, 1.0), scheduler=scheduler)[0]
    pd.testing.assert_frame_equal(got, reference)


def test_distributed_client_address_and_active_client(cache, reference, capsys):
    from distributed import Client, LocalCluster, get_task_stream

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            with get_task_stream(client) as stream:
                got = score_cache(cache, "msp,rba", (0.5, 1.0), scheduler=client)[0]
            pd.testing.assert_frame_equal(got, reference)
            assert any(str(t["key"]).startswith("frame_task") for t in stream.data)
            assert client.status == "running"  # the caller's client is not closed
            capsys.readouterr()
            got = score_cache(cache, "msp,rba", (0.5, 1.0), scheduler=Scheduler.from_client(client, progress=True),
                              max_memory=0)[0]  # two passes, each with a bar fed by the workers' frame futures
            pd.testing.assert_frame_equal(got, reference)
            err = capsys.readouterr().err
            assert "pass 1/2 anomaly-pixel scores: 100%" in err and "pass 2/2 in-distribution counts: 100%" in err
            assert "3/3 frames" in err
        got = score_cache(cache, "msp,rba", (0.5, 1.0), scheduler=cluster.scheduler_address)[0]
        pd.testing.assert_frame_equal(got, reference)
        with Client(cluster) as active:  # the default client: used when no scheduler is given
            with get_task_stream(active) as stream:
                got = score_cache(cache, "msp,rba", (0.5, 1.0))[0]
            pd.testing.assert_frame_equal(got, reference)
            assert len(stream.data) > 0


def test_default_follows_dask_config(cache, reference):
    with dask.config.set(scheduler="sync"):
        assert Scheduler.dask_default().spec == "sync"
        pd.testing.assert_frame_equal(score_cache(cache, "msp,rba", (0.5, 1.0))[0], reference)
    with dask.config.set(scheduler="processes"):
        assert Scheduler.dask_default().spec == "processes"
    assert Scheduler.dask_default().spec == "threads"
    with pytest.raises(TypeError, match="scheduler must be"):
        score_cache(cache, "msp", (1.0,), scheduler=3)


def _blas_threads():
    return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_caller_thread_settings_are_left_as_they_were(cache, scheduler):
    before_torch = torch.get_num_threads()
    with threadpool_limits(2, user_api="blas"):
        torch.set_num_threads(3)
        try:
            blas = _blas_threads()
            score_cache(cache, "msp", (1.0,), scheduler=scheduler)
            assert torch.get_num_threads() == 3
            assert _blas_threads() == blas
        finally:
            torch.set_num_threads(before_torch)


def test_tasks_run_on_one_thread(tmp_path):
    """Inside a frame task torch and BLAS use one thread (Dask provides the parallelism)."""
    from analyze.run.scheduler import single_threaded_tasks

    torch.set_num_threads(2)
    try:
        with single_threaded_tasks():
            with single_threaded_tasks():  # overlapping tasks (threads scheduler)
                assert torch.get_num_threads() == 1 and set(_blas_threads()) <= {1}
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_progress_bars_label_each_pass(tmp_path, capsys):
    cache = tmp_path / "c.zarr"
    pixel_cache(cache, [(16, 24)] * 4, np.random.default_rng(0))
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(cache), "--scorers", "msp", "--out",
                                            str(tmp_path / "r.parquet"), "--max-memory", "0", "--bootstrap", "20",
                                            "--component-metrics", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    err = res.stderr
    # the intervals read the second pass's histograms (analyze.run.later_passes); with no memory for the
    # pixels of the highest scores, the second pass spills its scores for the component metrics
    # (analyze.run.spill): two passes
    for i, n, label in ((1, 2, "anomaly-pixel scores"), (2, 2, "in-distribution counts")):
        assert f"pass {i}/{n} {label}: 100%" in err, err
        assert f"pass {i}/{n} {label}: 100%|██████████| 4/4 frames" in err
    assert "frames/s]" in err and "component metrics:" not in err  # no such pass (its bar's label)
    assert "component metrics' spill takes up to" in err  # the note that says where the spill goes
    # without room on disk either, the component metrics compose the frames again: a pass known
    # only after the first one counted the anomaly pixels
    score_cache(str(cache), "msp", max_memory=0, bootstrap=20, component_metrics=True,
                scheduler=Scheduler("sync", progress=True), spill=SpillPolicy(free=lambda folder: 0),
                warn=lambda message: None)
    err = capsys.readouterr().err
    for i, n, label in ((1, 2, "anomaly-pixel scores"), (2, 3, "in-distribution counts"), (3, 3, "component metrics")):
        assert f"pass {i}/{n} {label}: 100%|██████████| 4/4 frames" in err, err
    quiet = CliRunner().invoke(analyze_main, ["score", "--cache", str(cache), "--scorers", "msp", "--out",
                                              str(tmp_path / "r.parquet"), "--no-progress"])
    assert "pass 1/1" not in quiet.output


def test_no_frame_task_outlives_a_failed_pass(tmp_path):
    """A frame task that fails ends the pass: the command returns only once no other frame task
    runs or will start (Dask's threads scheduler raises at once and leaves the rest running in its
    pool), and the caller's BLAS limit holds afterwards."""
    import threading

    from analyze.run import scheduler

    root, _ = pixel_cache(tmp_path / "c.zarr", [(8, 8)] * 6, np.random.default_rng(0))
    logits = root["logits"][1]
    logits[3, 1, 1] = np.inf
    root["logits"][1] = logits
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--out",
                                            str(tmp_path / "r.parquet"), "--no-progress", "--scheduler", "threads"])
    assert res.exit_code == 1 and "Inf" in res.output
    assert scheduler._active_tasks == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("frame-task")]
    with threadpool_limits(1, user_api="blas"):
        assert set(_blas_threads()) <= {1}
