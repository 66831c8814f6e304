"""Every results row says what produced it: run identity, one row per key, one row per cell,
one cache per (run, model, dataset), schema version 2. Through the real CLIs."""

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas.results import read_results, write_results
from tests.factories import signal_pixel_cache

README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"


def _an(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


def _ok(res):
    assert res.exit_code == 0, res.output
    return res


def _one_line_error(res, *needles, code=1):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("Error")]) == 1, res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)


def _score(*args):
    return _an("score", *args, "--no-progress", "--scheduler", "sync")


def _sha8(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_two_checkpoints_of_one_model_are_two_runs(tmp_path, checkpoints, anomaly_data):
    from extract.models import save_official_checkpoint
    from extract.models.erfnet import ERFNet

    torch.manual_seed(1)
    ft = save_official_checkpoint(ERFNet(20).eval(), tmp_path / "erfnet_finetuned.pth", "erfnet")
    base = checkpoints["erfnet"]
    caches = {}
    for name, ckpt in (("base", base), ("ft", ft)):
        caches[name] = tmp_path / f"{name}.zarr"
        res = CliRunner().invoke(extract_main, [
            "run", "--model", "erfnet", "--dataset", "road_anomaly", "--data-root", str(anomaly_data),
            "--checkpoint", str(ckpt), "--cache", str(caches[name]), "--input-height", "32", "--no-progress"])
        _ok(res)
        attrs = json.loads((caches[name] / "zarr.json").read_text())["attributes"]
        assert attrs["provenance"]["checkpoint_file"] == ckpt.name
    run_base, run_ft = f"erfnet_pretrained-{_sha8(base)}", f"erfnet_finetuned-{_sha8(ft)}"
    out = tmp_path / "results.parquet"
    _ok(_score("--cache", caches["base"], "--cache", caches["ft"], "--scorers", "msp,maxlogit", "--out", out))
    df = read_results(out)
    assert sorted(set(df.run)) == sorted([run_base, run_ft]) and len(df) == 2 * 2 * 3
    before = df[df.run == run_base].reset_index(drop=True)
    # re-scoring one run replaces its rows only
    _ok(_score("--cache", caches["ft"], "--scorers", "msp,maxlogit", "--temps", "0.5", "--out", out))
    df = read_results(out)
    assert len(df) == 2 * 2 * 3 + 2 * 3
    pd.testing.assert_frame_equal(df[df.run == run_base].reset_index(drop=True), before)
    assert sorted(set(df[df.run == run_ft].temperature)) == [0.5, 1.0]
    # Table 1: a row per (model, run), labelled by run, values from the parquet
    rep = tmp_path / "report"
    _ok(_an("report", "--results", out, "--out", rep))
    table = (rep / "table1.md").read_text()
    for run in (run_base, run_ft):
        for scorer, label in (("msp", "MSP"), ("maxlogit", "MaxLogit")):
            v = df[(df.run == run) & (df.scorer == scorer) & (df.metric == "auprc") & (df.temperature == 1.0)]
            rows = [[c.strip() for c in x.strip().strip("|").split("|")] for x in table.splitlines() if x.startswith("|")]
            line = next(r for r in rows if r[:2] == [f"ERFNet ({run})", label])
            assert f"{100 * v.value.item():.2f}" in " ".join(line)
    figures = {p.name for p in rep.glob("temperature_*.png")}
    assert figures == {f"temperature_erfnet_{run_ft}_road_anomaly.png"}  # one figure per (model, run, dataset)
    # two checkpoints under one name would write rows with one key: refused before any work
    data = out.read_bytes()
    res = _score("--cache", caches["base"], "--cache", caches["ft"], "--scorers", "msp", "--name", "same", "--out", out)
    _one_line_error(res, "would both write the rows of run same (erfnet, road_anomaly)", "base.zarr", "ft.zarr",
                    "--name")
    assert "scoring" not in res.output
    assert out.read_bytes() == data


def test_cache_without_checkpoint_file_is_read_and_named_by_model(tmp_path):
    path = tmp_path / "old.zarr"
    signal_pixel_cache(path, 3, checkpoint_sha256="ab" * 32)
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["provenance"]["checkpoint_file"]  # as caches written before it existed
    (path / "zarr.json").write_text(json.dumps(meta))
    _ok(_an("inspect", path))
    out = tmp_path / "r.parquet"
    _ok(_score("--cache", path, "--scorers", "msp", "--out", out))
    assert set(read_results(out).run) == {"erfnet-abababab"}
    _ok(_score("--cache", path, "--scorers", "msp", "--name", "baseline", "--out", out))
    assert set(read_results(out).run) == {"erfnet-abababab", "baseline"}
    _one_line_error(_score("--cache", path, "--name", "two words", "--out", out), "run name", code=2)


def test_rows_of_one_run_from_two_caches_are_refused(tmp_path):
    a_ra, a_fs, b_ra = (tmp_path / f"{n}.zarr" for n in ("a_ra", "a_fs", "b_ra"))
    signal_pixel_cache(a_ra, 4, seed=1, dataset="road_anomaly", checkpoint_sha256="a" * 64)
    signal_pixel_cache(a_fs, 4, seed=2, dataset="fs_static", checkpoint_sha256="a" * 64)
    signal_pixel_cache(b_ra, 4, seed=3, dataset="road_anomaly", checkpoint_sha256="b" * 64)
    out = tmp_path / "results.parquet"
    _ok(_score("--cache", a_ra, "--cache", a_fs, "--scorers", "msp", "--temps", "0.5,1.1", "--name", "r",
               "--out", out))
    # another checkpoint scored under the same name at T = 1 only: its rows replace those at T = 1
    res = _ok(_score("--cache", b_ra, "--scorers", "msp", "--name", "r", "--out", out))
    assert "come from 2 caches" in res.output
    digests = set(read_results(out).query("dataset == 'road_anomaly'").cache_digest)
    assert len(digests) == 2
    res = _an("report", "--results", out, "--out", tmp_path / "rep")
    _one_line_error(res, "run r (erfnet, road_anomaly) come from 2 caches", *digests)
    for on in ("road_anomaly", "fs_static"):
        res = _an("temperature", "--results", out, "--select-on", on)
        _one_line_error(res, "come from 2 caches", *digests)
    assert set(read_results(out).selected_on) == {""}


def test_two_rows_for_one_cell_name_both(tmp_path):
    base = dict(run="r", model="eomt", dataset="road_anomaly", scorer="msp", temperature=1.0, protocol="exact",
                frames="all", n_frames=3, n_pixels=100, cache_digest="d")
    rows = [dict(base, temp_target=t, metric=m, value=v) for t, v in (("query", 0.4), ("pixel", 0.4))
            for m in ("auprc", "fpr95")]
    out = tmp_path / "results.parquet"
    write_results(pd.DataFrame(rows), out)
    _ok(_an("report", "--results", out, "--out", tmp_path / "rep"))  # T = 1: one computation, merged
    rows[0]["value"] = 0.5  # the pixel-target row no longer agrees
    write_results(pd.DataFrame(rows), out)
    res = _an("report", "--results", out, "--out", tmp_path / "rep2")
    _one_line_error(res, "two rows would fill one Table 1 cell", "query", "pixel", "value 0.5", "value 0.4")


def test_results_of_schema_version_1_get_a_clear_message(tmp_path):
    v1 = pd.DataFrame([dict(model="erfnet", dataset="road_anomaly", scorer="msp", temperature=1.0,
                            temp_target="logits", protocol="exact", metric="auprc", value=0.5, ci_low=np.nan,
                            ci_high=np.nan, n_frames=3, n_pixels=10, cache_digest="d", selected_on="")])
    out = tmp_path / "results.parquet"
    pq.write_table(pa.Table.from_pandas(v1).replace_schema_metadata({b"results_schema_version": b"1"}), out)
    data = out.read_bytes()
    cache = tmp_path / "c.zarr"
    signal_pixel_cache(cache, 2)
    for res in (_an("report", "--results", out, "--out", tmp_path / "rep"),
                _an("temperature", "--results", out, "--select-on", "road_anomaly"),
                _score("--cache", cache, "--out", out)):
        _one_line_error(res, "results.parquet: results schema version 1 is not supported", "no run",
                        "--out NEW.parquet")
        assert "scoring" not in res.output  # refused before any work
    assert out.read_bytes() == data


def _readme_example() -> str:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if "read_parquet" in b]
    return block


def test_readme_pandas_example_with_several_runs_protocols_and_frames(tmp_path, monkeypatch):
    caches = []
    for sha, ds, seed in (("a", "road_anomaly", 1), ("b", "road_anomaly", 2), ("a", "fs_static", 3),
                          ("b", "fs_static", 4)):
        caches += ["--cache", tmp_path / f"{sha}_{ds}.zarr"]
        signal_pixel_cache(caches[-1], 4, seed=seed, dataset=ds, checkpoint_sha256=sha * 64,
                           checkpoint_file=f"ckpt_{sha}.pth", no_anomaly=(1,))
    out = tmp_path / "results.parquet"
    for protocol in ("exact", "smiyc"):
        for frames in ("all", "with-anomaly"):
            _ok(_score(*caches, "--scorers", "msp,energy", "--temps", "0.5", "--protocol", protocol,
                       "--frames", frames, "--out", out))
    _ok(_an("temperature", "--results", out, "--select-on", "fs_static"))
    df = read_results(out)
    assert len(set(df.run)) == 2 and len(set(df.protocol)) == 2 and len(set(df.frames)) == 2
    sel = df[df.selected_on != ""]
    assert set(sel.run) == set(df.run) and set(sel.dataset) == {"road_anomaly"}
    # one T chosen per (run, model, scorer, target, protocol, frames): each run on its own rows
    assert (sel.groupby(["run", "model", "scorer", "temp_target", "protocol", "frames"],
                        observed=True).temperature.nunique() == 1).all()
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(_readme_example(), ns)  # as a user would paste it
    table = ns["table"]
    want = df[(df.metric == "auprc") & (df.temperature == 1.0) & (df.protocol == "exact") & (df.frames == "all")
              & (df.selected_on == "")]
    assert table.shape == (2 * 2, 2)  # (model, run, scorer) x dataset
    for r in want.itertuples():
        assert table.loc[(r.model, r.run, r.scorer), r.dataset] == r.value
    # without its filters the same pivot refuses instead of picking one of several rows
    with pytest.raises(ValueError, match="duplicate"):
        df[df.metric == "auprc"].pivot(index=["model", "run", "scorer"], columns="dataset", values="value")
