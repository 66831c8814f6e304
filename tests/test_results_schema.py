"""results.parquet: schema, atomic writes, replacement of matching rows, version check."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.results import RESULTS_SCHEMA, ResultsError, read_results, write_results


def rows(value=0.5, scorer="msp", temps=(1.0,)):
    return pd.DataFrame([
        dict(model="erfnet", dataset="road_anomaly", scorer=scorer, temperature=t, temp_target="logits",
             protocol="exact", metric=m, value=value, n_frames=3, n_pixels=100, cache_digest="abc")
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
    assert table.schema.metadata[b"results_schema_version"] == b"1"
    assert [p.name for p in tmp_path.iterdir()] == ["results.parquet"]  # no temp file left


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
