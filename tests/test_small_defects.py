"""Issue 25 (9): files honour the umask, option errors are one line, warnings name the cache,
reports tell undefined from not computed, stale temperature selections go, the planner counts
the frames it scores, non-checkpoints get our message, Ctrl-C says what was written."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas.results import read_results, write_results
from schemas.side_tables import write_side_table
from tests.factories import pixel_cache, sigint_default, signal_pixel_cache

ROOT = Path(__file__).resolve().parents[1]


def _an(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


def _row(**over):
    base = dict(run="r1", model="erfnet", dataset="fs_static", scorer="msp", temperature=1.0, temp_target="logits",
                protocol="exact", frames="all", metric="auprc", value=0.5, n_frames=3, n_pixels=100,
                cache_digest="d", selected_on="")
    return base | over


@pytest.mark.parametrize("umask", [0o002, 0o022])
def test_written_files_honour_the_umask(tmp_path, umask):
    from analyze.run.fit import fit_id_stats

    pixel_cache(tmp_path / "city.zarr", [(8, 12)], np.random.default_rng(0), dataset="cityscapes_val",
                label_kind="semantic")
    old = os.umask(umask)
    try:
        write_results(pd.DataFrame([_row()]), tmp_path / "r.parquet")
        write_side_table(pd.DataFrame([_row()]), tmp_path / "r_curves.parquet")
        fit_id_stats(str(tmp_path / "city.zarr"), (1.0,), scheduler="sync").write(tmp_path / "s.json")
    finally:
        os.umask(old)
    for name in ("r.parquet", "r_curves.parquet", "s.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_overflowing_max_memory_is_a_one_line_option_error(tmp_path):
    pixel_cache(tmp_path / "c.zarr", [(8, 8)], np.random.default_rng(0))
    res = _an("score", "--cache", tmp_path / "c.zarr", "--max-memory", "1e999", "--out", tmp_path / "r.parquet")
    assert res.exit_code == 2 and "--max-memory" in res.output and "unexpected" not in res.output, res.output


def test_undefined_component_metrics_name_the_cache(tmp_path):
    cache = tmp_path / "c.zarr"
    signal_pixel_cache(cache, 2, size=(8, 12), no_anomaly=(0, 1))  # no ground-truth component at all
    res = _an("score", "--cache", cache, "--scorers", "msp", "--component-metrics", "--scheduler", "sync",
              "--no-progress", "--out", tmp_path / "r.parquet")
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "ground-truth" in ln or "best-F1" in ln]
    assert len(lines) >= 2 and all(ln.startswith(f"warning: {cache}: msp T=1") for ln in lines), res.output
    assert "UndefinedMetricWarning" not in res.output


def test_report_tells_undefined_from_not_computed(tmp_path):
    rows = [_row(dataset=d, metric=m, value=v) for d, m, v in (
        ("fs_static", "auprc", 0.4), ("fs_static", "fpr95", 0.3), ("road_anomaly", "auprc", np.nan))]
    write_results(pd.DataFrame(rows), tmp_path / "r.parquet")  # road_anomaly has no fpr95 row: not computed
    res = _an("report", "--results", tmp_path / "r.parquet", "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "table1.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| ") and "40.00" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[-2:] == ["n/a", "–"]  # road_anomaly: AuPRC undefined, FPR95 never computed
    assert "n/a: undefined (the value is NaN" in md and "–: not computed" in md
    assert "n/a: undefined" in (tmp_path / "rep" / "table1.tex").read_text()


def test_rescoring_a_run_removes_its_stale_temperature_selection(tmp_path):
    out = tmp_path / "r.parquet"
    caches = {d: tmp_path / f"{d}.zarr" for d in ("fs_static", "road_anomaly")}
    for seed, (d, path) in enumerate(caches.items()):
        signal_pixel_cache(path, 2, size=(8, 12), seed=seed, dataset=d)
    args = ("--scorers", "msp", "--temps", "0.5", "--scheduler", "sync", "--no-progress", "--out", out)
    assert _an("score", "--cache", caches["fs_static"], "--cache", caches["road_anomaly"], *args).exit_code == 0
    res = _an("temperature", "--results", out, "--select-on", "fs_static")
    assert res.exit_code == 0, res.output
    assert (read_results(out)["selected_on"] == "fs_static").sum() > 0
    res = _an("score", "--cache", caches["road_anomaly"], *args)  # the run scored again: the selection is stale
    assert res.exit_code == 0, res.output
    assert "removed" in res.output and "analyze temperature --select-on" in res.output
    assert (read_results(out)["selected_on"] == "").all()


def test_planner_counts_only_the_frames_it_scores(tmp_path):
    from analyze.plan.passes import SCORE_BYTES, PlanOptions, plan_for

    _, spec = pixel_cache(tmp_path / "c.zarr", [(10, 10), (100, 100), (10, 10)], np.random.default_rng(0))
    budget = 2 * 10 * 10 * SCORE_BYTES  # the two small frames' scores of one key
    options = PlanOptions("exact", budget)
    assert plan_for(spec, "c.zarr", [("msp", 1.0)], (1.0,), [0, 2], options).mode == "one-pass"
    assert plan_for(spec, "c.zarr", [("msp", 1.0)], (1.0,), [0, 1, 2], options).mode == "two-pass"


def test_a_readme_given_as_checkpoint_gets_our_message(tmp_path, anomaly_data):
    readme = tmp_path / "README.md"
    readme.write_text("# not a checkpoint\n")
    res = CliRunner().invoke(extract_main, [
        "run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root", str(anomaly_data), "--checkpoint",
        str(readme), "--cache", str(tmp_path / "c.zarr"), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 1, res.output
    assert "README.md is not a PyTorch checkpoint" in res.output
    assert "Please file an issue" not in res.output and "weights_only" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("Error")]) == 1


@pytest.mark.slow
def test_ctrl_c_says_which_rows_were_written_and_how_to_continue(tmp_path):
    small, big = tmp_path / "small.zarr", tmp_path / "big.zarr"
    signal_pixel_cache(small, 2, size=(8, 12), dataset="fs_static")
    signal_pixel_cache(big, 200, size=(96, 128), dataset="road_anomaly")  # scoring it outlasts the signal's way
    out = tmp_path / "r.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "analyze.cli", "score", "--cache", str(small), "--cache", str(big),
                             "--scorers", "all", "--temps", "0.5,0.75,2", "--scheduler", "sync", "--no-progress",
                             "--out", str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=sigint_default)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(f"scoring {big}"):
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "Aborted!" not in rest and "Traceback" not in rest
    assert f"the rows of {small} are in {out}" in rest and f"--cache {big}" in rest
    assert set(read_results(out)["dataset"]) == {"fs_static"}
