"""The Python API as a notebook uses it: explicit, documented keyword parameters; the
DataFrame `score_cache` returns is what `pd.read_parquet` gives back from the file the CLI
writes; `save_results` merges with the CLI's rows."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.run.driver import score_cache
from analyze.export.submission import export_maps
from analyze.run.fit import fit_id_stats
from analyze.metrics import pixel_metrics
from analyze.scorers import score
from extract.models import load_model
from schemas.results import COLUMNS, ResultsError, read_results, results_frame, save_results
from schemas.side_tables import side_table_paths
from tests.factories import query_cache

API = (score_cache, fit_id_stats, export_maps, pixel_metrics, score, load_model, save_results)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "q.zarr"
    query_cache(path, [(30, 50), (20, 40), (25, 25)], np.random.default_rng(1), crop=32)
    return str(path)


def _cli_score(cache, out, scorers):
    res = CliRunner().invoke(analyze_main, ["score", "--cache", cache, "--scorers", scorers, "--temps", "0.5",
                                            "--out", str(out), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output


def _documented(doc: str) -> set[str]:
    """Parameter names of a numpy-style docstring's Parameters section."""
    section = doc.split("Parameters\n    ----------\n", 1)[1].split("\n    Returns", 1)[0]
    names = set()
    for line in section.splitlines():
        m = re.fullmatch(r" {4}([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*)", line)
        if m:
            names.update(m[1].split(", "))
    return names


@pytest.mark.parametrize("func", API, ids=lambda f: f.__name__)
def test_every_parameter_is_named_typed_and_documented(func):
    sig = inspect.signature(func)
    kinds = {p.kind for p in sig.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())
    assert sig.return_annotation is not inspect.Signature.empty
    assert _documented(func.__doc__) == set(sig.parameters)


def test_options_are_keyword_only(cache):
    with pytest.raises(TypeError):
        score_cache(cache, "msp", (1.0,), "pixel")  # temp_target by position: refused, not misread
    with pytest.raises(TypeError):
        score_cache(cache, "msp", (1.0,), max_memory_bytes=1)  # a misspelt option is an error


def test_score_cache_returns_the_file_columns_and_dtypes(cache, tmp_path):
    out = tmp_path / "results.parquet"
    _cli_score(cache, out, "msp,rba")
    results, per_frame, curves = score_cache(cache, "msp,rba", (0.5, 1.0), scheduler="sync")
    file = pd.read_parquet(out)
    assert list(results.columns) == list(file.columns) == list(COLUMNS)
    assert results.dtypes.to_dict() == file.dtypes.to_dict()
    assert isinstance(results["scorer"].dtype, pd.CategoricalDtype) and (results["selected_on"] == "").all()
    as_text = {c: str for c in results.columns if isinstance(results[c].dtype, pd.CategoricalDtype)}
    pd.testing.assert_frame_equal(results.astype(as_text), file.astype(as_text))  # the same rows, bit for bit
    assert results.sort_values("metric").metric.iloc[0] == "auprc"  # categories sort as strings
    frames_path, curves_path = side_table_paths(out)
    assert per_frame.dtypes.to_dict() == pd.read_parquet(frames_path).dtypes.to_dict()
    assert curves.dtypes.to_dict() == pd.read_parquet(curves_path).dtypes.to_dict()
    # the results file's own filter works on the returned frame as it does on the file
    rows = [d[(d.metric == "auprc") & (d.temperature == 1.0) & (d.protocol == "exact") & (d.frames == "all")
              & (d.selected_on == "")] for d in (results, file)]
    assert len(rows[0]) == 2
    pd.testing.assert_frame_equal(*(r.astype(as_text) for r in rows))


def test_save_results_then_the_cli_keeps_both_scorers(cache, tmp_path):
    out = tmp_path / "sub" / "results.parquet"
    msp, msp_frames, msp_curves = score_cache(cache, "msp", (0.5, 1.0), scheduler="sync")
    table = save_results(out, msp, msp_frames, msp_curves)
    assert len(table) == len(msp) and out.is_file()
    _cli_score(cache, out, "rba")  # the CLI merges its rows into the file the API wrote
    back = read_results(out)
    assert set(back.scorer) == {"msp", "rba"} and len(back) == 12  # 3 metrics x 2 T each
    mine = back[back.scorer == "msp"].sort_values(["temperature", "metric"])
    want = msp.sort_values(["temperature", "metric"])
    assert mine["value"].tolist() == want["value"].tolist()
    frames_path, curves_path = side_table_paths(out)
    assert set(pd.read_parquet(frames_path).scorer) == {"msp", "rba"}
    assert set(pd.read_parquet(curves_path).scorer) == {"msp", "rba"}
    # the API again after the CLI: its rows replace their own, the CLI's stay
    again = save_results(out, msp, msp_frames, msp_curves)
    assert len(again) == 12 and set(again.scorer) == {"msp", "rba"}


def test_save_results_refuses_two_rows_with_one_key_and_writes_nothing(cache, tmp_path):
    msp, per_frame, _ = score_cache(cache, "msp", (1.0,), scheduler="sync")
    out = tmp_path / "r.parquet"
    with pytest.raises(ResultsError, match="two rows with one key"):
        save_results(out, pd.concat([msp, msp], ignore_index=True), per_frame)
    assert not out.exists() and not side_table_paths(out)[0].exists()


def test_results_frame_of_no_rows_has_the_file_dtypes(cache, tmp_path):
    empty = results_frame(pd.DataFrame())
    one = score_cache(cache, "msp", (1.0,), scheduler="sync")[0]
    assert list(empty.columns) == list(COLUMNS) and empty.empty
    assert [str(t) for t in empty.dtypes] == [str(t) for t in one.dtypes]
