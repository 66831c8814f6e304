"""Scorer plugins (docs/plugins.md): a file recomputing MaxLogit gives `maxlogit`'s rows and maps on
both cache kinds and both temperature targets; declarations and parameters; an installed plugin
package (a real dist-info with an entry point) seen by a subprocess; each kind of broken plugin is
one line and loses nothing already written; the rows' record and a changed plugin."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from analyze.run.driver import score_cache
from analyze.scorers import plugin_load
from schemas.plugin_rows import PLUGIN_COLUMNS
from schemas.results import COLUMNS, read_results, results_frame
from tests.factories import pixel_cache, query_cache, signal_pixel_cache
from tests.test_smiyc_float16 import blob_cache

REPO = Path(__file__).resolve().parents[1]
MAXLOGIT = '''
import numpy as np


def maxlogit(x, temperature):
    """-max_k x_k / T"""
    assert x.dtype == np.float64 and x.ndim == 3
    return -np.max(x / temperature, axis=0)


def tiles(x, temperature):
    return -np.max(x / temperature, axis=0)


tiles.anomaly_scorer = {"display": "MaxLogit (tiles)", "pixelwise": True}


def divided(x):
    return -np.max(x, axis=0)


divided.anomaly_scorer = {"temperature": "divided"}
'''


def _an(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


def _write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugins")
    rng = np.random.default_rng(29)
    pixel_cache(d / "p.zarr", [(16, 20), (12, 18), (15, 9)], rng)  # ERFNet-like: logits at half size
    query_cache(d / "q.zarr", [(40, 60), (33, 50), (30, 30)], rng, n_classes=7, confident=0.3)  # EoMT-like
    _write(d / "ml.py", MAXLOGIT)
    return d


def _same_rows(rows: pd.DataFrame, a: str, b: str) -> None:
    """The rows of scorer ``b`` equal those of ``a`` in every column but the scorer and its record."""
    def part(name):
        out = rows[rows.scorer == name].drop(columns=["scorer", *PLUGIN_COLUMNS])
        return results_frame(out.assign(scorer="x", **dict.fromkeys(PLUGIN_COLUMNS, ""))).reset_index(drop=True)
    left, right = part(a), part(b)
    assert len(left) and len(left) == len(right)
    pd.testing.assert_frame_equal(left, right, check_exact=True)


@pytest.mark.parametrize("kind", ["p", "q"])
@pytest.mark.parametrize("target", ["query", "pixel"])
def test_a_file_recomputing_maxlogit_gives_maxlogit_rows(caches, kind, target):
    ml = caches / "ml.py"
    names = [f"{ml}:maxlogit", f"{ml}:tiles", f"{ml}:divided"]
    rows, _, _ = score_cache(caches / f"{kind}.zarr", ",".join(["maxlogit", *names]), (0.5, 1.0, 2.0),
                             temp_target=target, scheduler="sync")
    assert list(rows.columns) == list(COLUMNS)
    assert rows.dtypes.equals(results_frame(rows).dtypes)
    for name in names:
        _same_rows(rows, "maxlogit", name)
    digest = hashlib.sha256(ml.read_bytes()).hexdigest()[:16]
    rec = rows.drop_duplicates("scorer").set_index("scorer")[list(PLUGIN_COLUMNS)].astype(str)
    assert rec.loc[names[0]].tolist() == [f"{ml.resolve()}:maxlogit", "", digest]
    assert rec.loc["maxlogit"].tolist() == ["", "", ""]


@pytest.mark.parametrize("kind,target", [("p", "query"), ("q", "query"), ("q", "pixel")])
def test_maps_of_a_plugin_are_maxlogits(caches, tmp_path, kind, target):
    """The maps hold the scores themselves (not only their order): T enters as for the built-in."""
    ml = caches / "ml.py"
    res = _an("maps", "--cache", caches / f"{kind}.zarr", "--scorer", f"maxlogit,{ml}:maxlogit,{ml}:tiles",
              "--temp", "0.5", "--temp-target", target, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    ref = sorted(tmp_path.glob("f???_maxlogit_T0.5.npy"))
    assert len(ref) == 3
    for r in ref:
        for fn in ("maxlogit", "tiles"):
            (mine,) = [p for p in tmp_path.glob(f"{r.name.split('_')[0]}_*ml.py_{fn}_T0.5.npy")]
            np.testing.assert_array_equal(np.load(mine), np.load(r))


def test_export_of_a_plugin_is_that_of_maxlogit(tmp_path, caches):
    cache = blob_cache(tmp_path / "track.zarr", n_frames=2)  # a pixel cache with a SMIYC split
    for scorer, out in (("maxlogit", "a"), (f"{caches / 'ml.py'}:maxlogit", "b")):
        res = _an("export", "--cache", cache, "--scorer", scorer, "--temp", "0.5", "--method", "M",
                  "--out", tmp_path / out, "--no-progress")
        assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "a").rglob("*.hdf5"))
    assert len(files) == 2
    for f in files:
        with h5py.File(f, "r") as ha, h5py.File(tmp_path / "b" / f.relative_to(tmp_path / "a"), "r") as hb:
            assert list(ha) and sorted(ha) == sorted(hb)
            for key in ha:
                np.testing.assert_array_equal(ha[key][...], hb[key][...])


PARAMS = '''
import numpy as np


def scaled(x, temperature, scale=1.0, mode="max"):
    top = np.max(x, axis=0) if mode == "max" else np.min(x, axis=0)
    return -scale * top / temperature


scaled.anomaly_scorer = {"display": "Scaled", "kinds": ("pixel",),
                         "params": {"scale": (1.0, "factor"), "mode": "max"}}
'''


def test_declared_parameters_kinds_and_the_check_listing(caches, tmp_path):
    f = _write(tmp_path / "sc.py", PARAMS)
    rows, _, _ = score_cache(caches / "p.zarr", f"maxlogit,{f}:scaled,{f}:scaled:scale=2,mode=max",
                             (1.0,), scheduler="sync")
    assert sorted(set(rows.scorer)) == sorted({"maxlogit", f"{f}:scaled", f"{f}:scaled:scale=2"})
    auprc = rows[rows.metric == "auprc"].set_index("scorer")["value"]
    assert auprc[f"{f}:scaled:scale=2"] == auprc["maxlogit"] == auprc[f"{f}:scaled"]
    res = _an("score", "--cache", caches / "q.zarr", "--scorers", f"{f}:scaled", "--out", tmp_path / "r.parquet",
              "--no-progress")
    assert res.exit_code == 1 and "not defined for mask models" in res.output and f"{f}:scaled" in res.output
    res = _an("score", "--cache", caches / "p.zarr", "--scorers", f"{f}:scaled:scale=x", "--out",
              tmp_path / "r.parquet", "--no-progress")
    assert res.exit_code == 2 and "parameter scale='x' is not a number" in res.output
    res = _an("scorers", "--check", f"{f}:scaled:scale=2")
    assert res.exit_code == 0, res.output
    assert "Scaled" in res.output and "scale=2.0, mode=max" in res.output and "kinds pixel;" in res.output
    assert f"rows record {f}:scaled version - digest {hashlib.sha256(f.read_bytes()).hexdigest()[:16]}" in res.output


def _site(tmp_path: Path) -> Path:
    """An installed plugin distribution: a package and its dist-info with an entry point."""
    site = tmp_path / "site"
    pkg = site / "labscores"
    pkg.mkdir(parents=True)
    _write(pkg / "__init__.py", "")
    _write(pkg / "scores.py", MAXLOGIT)
    info = site / "labscores-1.2.3.dist-info"
    info.mkdir()
    _write(info / "METADATA", "Metadata-Version: 2.1\nName: labscores\nVersion: 1.2.3\n")
    _write(info / "entry_points.txt", "[anomaly_seg_cache.scorers]\nlab_maxlogit = labscores.scores:maxlogit\n"
                                      "msp = labscores.scores:tiles\n")
    _write(info / "top_level.txt", "labscores\n")
    _write(info / "RECORD", "")
    return site


def _run(site: Path, *args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "analyze.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)


def test_an_installed_plugin_is_listed_in_help_and_scored(tmp_path, caches):
    site = _site(tmp_path)
    listing = _run(site, "scorers")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.split()[:3] == ["lab_maxlogit", "plugin", "labscores.scores:maxlogit"]
               and "(labscores 1.2.3)" in line and line.endswith("maxlogit") for line in lines), lines
    assert any(line.startswith("msp ") and "shadowed by the built-in msp" in line for line in lines)
    assert lines[0].split()[:2] == ["msp", "built-in"]
    helped = _run(site, "score", "--help")
    assert "lab_maxlogit (labscores.scores:maxlogit)" in " ".join(helped.stdout.split())
    out = tmp_path / "r.parquet"
    for scorers in ("maxlogit,lab_maxlogit", "all"):
        res = _run(site, "score", "--cache", caches / "q.zarr", "--scorers", scorers, "--temps", "0.5", "--out", out,
                   "--no-progress", "--scheduler", "sync")
        assert res.returncode == 0, res.stderr
    rows = read_results(out)
    assert "lab_maxlogit" in set(rows.scorer)
    assert not set(rows.scorer) - {"lab_maxlogit", "msp", "maxlogit", "maxentropy", "energy", "rba", "gen", "eam",
                                   "noobject", "m2a", "semantic"}  # all: the built-ins only
    _same_rows(rows[rows.scorer.isin(["maxlogit", "lab_maxlogit"])], "maxlogit", "lab_maxlogit")
    rec = rows[rows.scorer == "lab_maxlogit"][list(PLUGIN_COLUMNS)].drop_duplicates()
    digest = hashlib.sha256((site / "labscores" / "scores.py").read_bytes()).hexdigest()[:16]
    assert rec.values.tolist() == [["labscores.scores:maxlogit", "1.2.3", digest]]
    msp = rows[rows.scorer == "msp"][list(PLUGIN_COLUMNS)].drop_duplicates()
    assert msp.values.tolist() == [["", "", ""]]  # the built-in, never the plugin of its name


BROKEN = {
    "import": ("import no_such_module_xyz\n\ndef f(x, temperature):\n    return x[0]\n",
               "cannot import", "ModuleNotFoundError", 2),
    "signature": ("def f(x):\n    return x[0]\n", "wrong signature f(x)", "fn(x, temperature)", 2),
    "shape": ("def f(x, temperature):\n    return x[:, :-1, :].sum(0)\n", "returned a map of shape", "the contract is",
              1),
    "nan": ("import numpy as np\n\ndef f(x, temperature):\n    m = x[0].copy()\n    m[0, 0] = np.nan\n"
            "    return m\n", "1 non-finite value(s) (NaN)", "every pixel needs a finite score", 1),
    "inf": ("import numpy as np\n\ndef f(x, temperature):\n    return np.where(x[0] > 0, np.inf, x[0])\n",
            "non-finite value(s) (inf)", "finite score", 1),
    "raises": ("def f(x, temperature):\n    raise KeyError('boom')\n", "raised KeyError: 'boom'", "f", 1),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_and_loses_nothing(tmp_path, caches, case):
    out = tmp_path / "r.parquet"
    res = _an("score", "--cache", caches / "p.zarr", "--scorers", "maxlogit", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.parquet")}
    body, *needles, code = BROKEN[case]
    bad = _write(tmp_path / f"bad_{case}.py", body)
    res = _an("score", "--cache", caches / "q.zarr", "--cache", caches / "p.zarr", "--scorers", f"msp,{bad}:f",
              "--out", out, "--no-progress", "--scheduler", "sync")
    assert res.exit_code == code, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert f"scorer plugin {bad}:f" in errors[0]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.parquet")} == before


def test_a_changed_plugin_is_a_new_scorer(tmp_path, caches):
    f = _write(tmp_path / "mine.py", MAXLOGIT)
    out = tmp_path / "r.parquet"
    name = f"{f}:maxlogit"
    res = _an("score", "--cache", caches / "p.zarr", "--scorers", f"maxlogit,{name}", "--temps", "0.5", "--out", out,
              "--no-progress")
    assert res.exit_code == 0, res.output
    first = read_results(out)
    old = set(first[first.scorer == name].scorer_digest)
    f.write_text(f.read_text() + "\n# a changed line\n")
    res = _an("score", "--cache", caches / "p.zarr", "--scorers", name, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"removed 6 row(s) of scorer plugin(s) {name} scored from an earlier version" in res.output
    rows = read_results(out)
    mine = rows[rows.scorer == name]
    assert set(mine.temperature) == {1.0} and len(set(mine.scorer_digest)) == 1
    assert set(mine.scorer_digest) != old
    assert (rows.scorer == "maxlogit").sum() == 6  # the built-in's rows stay


def test_results_written_before_the_plugin_columns_read(tmp_path, caches):
    rows, _, _ = score_cache(caches / "p.zarr", "maxlogit", (1.0,), scheduler="sync")
    old = pa.Table.from_pandas(rows.drop(columns=list(PLUGIN_COLUMNS)), preserve_index=False)
    path = tmp_path / "old.parquet"
    pq.write_table(old.replace_schema_metadata({b"results_schema_version": b"2"}), path)
    back = read_results(path)
    assert (back[list(PLUGIN_COLUMNS)] == "").all().all()
    pd.testing.assert_frame_equal(results_frame(back), rows, check_exact=True)


def test_the_docs_example_runs_as_printed(tmp_path, monkeypatch):
    """docs/plugins.md: its Python blocks are written to the files their first line names, its shell
    blocks run line by line in that folder; the file's MaxLogit gives maxlogit's rows."""
    page = (REPO / "docs" / "plugins.md").read_text()
    section = page.split("## Your own scorer", 1)[1].split("\n## ", 1)[0]
    files = [b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if b.startswith("# ")]
    assert files
    for block in files:
        (tmp_path / block.splitlines()[0][2:].strip()).write_text(block)
    (toml,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    assert f'[project.entry-points."{plugin_load.ENTRY_POINT_GROUP}"]' in toml
    signal_pixel_cache(tmp_path / "caches" / "erfnet" / "road_anomaly.zarr", 3, seed=7)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line)
            assert words[0] == "analyze", line
            res = _an(*words[1:])
            assert res.exit_code == 0, (line, res.output)
            outputs.append(res.output)
    rows = read_results(tmp_path / "results.parquet")
    _same_rows(rows, "maxlogit", "my_scores.py:maxlogit")
    assert set(rows.scorer) == {"maxlogit", "my_scores.py:maxlogit", "my_scores.py:margin:k=3"}
    assert len(list((tmp_path / "maps").glob("*my_scores.py_maxlogit_T1.npy"))) == 3
    assert "Top-k margin" in outputs[-1] and "parameters k=3" in outputs[-1]
    tables = "".join(f.read_text() for f in (tmp_path / "report").rglob("*.md"))
    assert "Top-k margin (k=3)" in tables and "MaxLogit" in tables


SML_RAW = '''
import numpy as np


def sml_raw(x, temperature, stats):
    z = x / temperature
    c = np.argmax(z, axis=0)  # the first maximum
    return -((np.max(z, axis=0) - stats.mean.numpy()[c]) / stats.std.numpy()[c])


sml_raw.anomaly_scorer = {"needs_stats": True, "pixelwise": True}
'''


@pytest.mark.parametrize("kind", ["p", "q"])
def test_a_plugin_that_needs_id_stats_gets_those_of_its_temperature(tmp_path, kind):
    from analyze.run.fit import fit_id_stats

    rng = np.random.default_rng(11)
    make = pixel_cache if kind == "p" else query_cache
    extra = {} if kind == "p" else dict(n_classes=7, confident=0.3)
    make(tmp_path / "city.zarr", [(16, 20), (20, 16)], rng, dataset="cityscapes_val", label_kind="semantic", **extra)
    make(tmp_path / "ra.zarr", [(16, 20), (12, 18)], rng, **extra)
    stats = fit_id_stats(str(tmp_path / "city.zarr"), (0.5, 1.0), scheduler="sync")
    f = _write(tmp_path / "st.py", SML_RAW)
    rows, _, _ = score_cache(tmp_path / "ra.zarr", f"sml_raw,{f}:sml_raw", (0.5, 1.0), scheduler="sync", warn=print,
                             id_stats=[stats])
    _same_rows(rows, "sml_raw", f"{f}:sml_raw")
    with pytest.raises(Exception, match=f"scorer {re.escape(str(f))}:sml_raw needs in-distribution statistics"):
        score_cache(tmp_path / "ra.zarr", f"{f}:sml_raw", (1.0,), scheduler="sync")
