"""results.parquet: schema, atomic writes, replacement of matching rows, version check."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.results import (RESULTS_SCHEMA, ResultsError, cache_conflicts, default_run, parse_run, read_results,
                             write_results)


def rows(value=0.5, scorer="msp", temps=(1.0,), run="erfnet_pretrained-00000000", digest="abc"):
    return pd.DataFrame([
        dict(run=run, model="erfnet", dataset="road_anomaly", scorer=scorer, frames="all", temperature=t,
             temp_target="logits", protocol="exact", metric=m, value=value, n_frames=3, n_pixels=100,
             cache_digest=digest)
        for t in temps for m in ("auprc", "fpr95")
    ])


def test_write_read_and_replace(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(rows(0.5, temps=(0.5, 1.0)), path)
    write_results(rows(0.5, scorer="maxlogit"), path)
    write_results(rows(0.7, temps=(1.0,)), path)  # replaces the msp T=1 rows only
    df = read_results(path)
    assert len(df) == 6
    msp1 = df[(df.scorer == "msp") & (df.temperature == 1.0)]
    assert (msp1.value == 0.7).all() and len(msp1) == 2
    assert (df[(df.scorer == "msp") & (df.temperature == 0.5)].value == 0.5).all()
    table = pq.read_table(path)
    assert table.schema.field("scorer").type == RESULTS_SCHEMA.field("scorer").type  # categorical
    assert table.schema.metadata[b"results_schema_version"] == b"2"
    # no temp file left; the writers' lock file stays (deleting it could race with a waiting writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results.parquet.lock", "results.parquet"]


def test_rejects_out_of_range_and_unknown_metric(tmp_path):
    with pytest.raises(ResultsError, match="not a fraction"):
        write_results(rows(value=46.38), tmp_path / "r.parquet")
    bad = rows()
    bad.loc[0, "metric"] = "accuracy"
    with pytest.raises(ResultsError, match="unknown metrics"):
        write_results(bad, tmp_path / "r.parquet")
    assert not (tmp_path / "r.parquet").exists()


def test_nan_values_allowed(tmp_path):
    write_results(rows(value=np.nan), tmp_path / "r.parquet")
    assert read_results(tmp_path / "r.parquet").value.isna().all()


def test_older_schema_version_is_refused(tmp_path):
    path = tmp_path / "old.parquet"
    table = pa.table({"model": ["erfnet"], "value": [0.1]}).replace_schema_metadata({b"results_schema_version": b"0"})
    pq.write_table(table, path)
    with pytest.raises(ResultsError, match="schema version 0 is not supported"):
        read_results(path)
    with pytest.raises(ResultsError, match="old.parquet"):
        write_results(rows(), path)  # an old file is never silently overwritten
    assert pq.read_table(path).num_rows == 1


def test_version_1_file_gets_a_message_that_says_why(tmp_path):
    # a file as version 1 wrote it: no run, no frames column
    path = tmp_path / "v1.parquet"
    v1 = rows().drop(columns=["run", "frames"]).assign(ci_low=np.nan, ci_high=np.nan, selected_on="")
    pq.write_table(pa.Table.from_pandas(v1).replace_schema_metadata({b"results_schema_version": b"1"}), path)
    with pytest.raises(ResultsError) as err:
        read_results(path)
    msg = str(err.value)
    assert "v1.parquet" in msg and "version 1" in msg and "no run" in msg and "--out" in msg and "\n" not in msg
    with pytest.raises(ResultsError, match="version 1"):
        write_results(rows(), path)
    assert pq.read_table(path).num_rows == len(v1)


def test_runs_coexist_and_rescoring_a_run_replaces_only_its_rows(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(pd.concat([rows(0.1, run="base-11111111"), rows(0.2, run="ft-22222222")]), path)
    assert len(read_results(path)) == 4
    write_results(rows(0.3, run="ft-22222222"), path)
    df = read_results(path)
    assert len(df) == 4
    assert set(df[df.run == "base-11111111"].value) == {0.1}
    assert set(df[df.run == "ft-22222222"].value) == {0.3}


def test_one_write_with_two_rows_of_one_key_is_refused(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(rows(0.1), path)
    before = path.read_bytes()
    both = pd.concat([rows(0.2, digest="aaa"), rows(0.3, digest="bbb")])  # two checkpoints, one run name
    with pytest.raises(ResultsError) as err:
        write_results(both, path)
    msg = str(err.value)
    assert "two rows with one key" in msg and "cache aaa" in msg and "cache bbb" in msg and "--name" in msg
    assert path.read_bytes() == before


def test_cache_conflicts_name_both_caches():
    df = pd.concat([rows(0.1, temps=(1.0,), digest="aaa"), rows(0.2, temps=(0.5,), digest="bbb")])
    (msg,) = cache_conflicts(df)
    assert "erfnet_pretrained-00000000" in msg and "aaa" in msg and "bbb" in msg
    assert cache_conflicts(rows(0.1, temps=(0.5, 1.0))) == []


def test_default_and_given_run_names():
    sha = "0123456789abcdef" * 4
    assert default_run("erfnet", sha, "erfnet_pretrained.pth") == "erfnet_pretrained-01234567"
    assert default_run("eomt", sha, None) == "eomt-01234567"  # caches older than checkpoint_file
    assert default_run("eomt", sha, "my model (v2).bin") == "my_model_v2-01234567"
    assert parse_run("ft.lr-1e4") == "ft.lr-1e4"
    for bad in ("", " x", "a b", "-x", "x" * 101):
        with pytest.raises(ValueError, match="run name"):
            parse_run(bad)
