"""`analyze`'s help, version and option errors answer without importing the scoring stack.

Each command imports torch, numba, Zarr and pandas only where it does work: `analyze --help`
took 0.8 s to import them; now it imports click and the catalogue of scorers alone. Where a
command does import them, it does so with the garbage collector paused
(`schemas.cli.heavy_imports`). Real processes (a fresh interpreter each), the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numba", "zarr", "pandas", "pyarrow", "dask", "scipy", "sklearn", "matplotlib")

_RUN = """
import json, sys
from click.testing import CliRunner
from analyze.cli.main import main
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(main, args)
    out.append([r.exit_code, r.output, sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)])
print(json.dumps(out))
"""


def _invoke(*commands: list[str]) -> list:
    proc = subprocess.run([sys.executable, "-c", _RUN, json.dumps(commands), json.dumps(HEAVY)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_help_version_and_option_errors_import_nothing_heavy():
    subcommands = ["score", "fit", "report", "compare", "export", "maps", "temperature", "inspect", "scorers"]
    commands = [["--help"], ["--version"], *([c, "--help"] for c in subcommands),
                ["score", "--cache", "c.zarr", "--temps", "abc"], ["score", "--cache", "c.zarr", "--scorers", "bogus"]]
    results = _invoke(*commands)
    for args, (code, output, heavy) in zip(commands, results):
        assert heavy == [], (args, heavy)
        if args[-1] in ("abc", "bogus"):
            assert code == 2 and ("'abc'" in output or "'bogus'" in output), output
        else:
            assert code == 0, (args, output)
    # the choices the help lists come from the light modules (analyze.export.formats, schemas.pooling)
    assert "smiyc: SegmentMeIfYouCan" in results[commands.index(["export", "--help"])][1]
    assert "with-anomaly" in results[commands.index(["score", "--help"])][1]


def test_a_missing_cache_is_refused_before_the_models_and_metrics_are_imported(tmp_path):
    [(code, output, heavy)] = _invoke(["score", "--cache", str(tmp_path / "missing.zarr"),
                                       "--out", str(tmp_path / "r.parquet")])
    assert code == 1 and "missing.zarr" in output
    assert not {"torch", "numba", "dask"} & set(heavy), heavy


_GC = """
import gc, json, sys
from schemas.cli import heavy_imports
full = lambda: gc.get_stats()[2]["collections"]
out = {}
before = full()
with heavy_imports():
    out["inside"] = gc.isenabled()
    import analyze.run.driver  # noqa: F401  (torch, numba, pandas, Zarr)
out["collections"], out["frozen"], out["after"] = full() - before, gc.get_freeze_count(), gc.isenabled()
with heavy_imports():
    import analyze.run.driver  # noqa: F401,F811  (nothing new: nothing more frozen)
out["frozen_again"] = gc.get_freeze_count()
gc.disable()
with heavy_imports():
    import json  # noqa: F401,F811
out["left_disabled"] = not gc.isenabled()
print(json.dumps(out))
"""


def test_heavy_imports_run_without_full_collections_and_freeze_what_they_made():
    # importing the scoring stack triggers full collections of its ~million objects (0.4-0.8 s)
    # unless the collector is paused; the collector comes back as it was
    out = json.loads(subprocess.run([sys.executable, "-c", _GC], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["collections"] == 0 and not out["inside"] and out["after"], out
    assert out["frozen"] > 100_000 and out["frozen_again"] == out["frozen"], out
    assert out["left_disabled"], out
    plain = subprocess.run([sys.executable, "-c", "import gc, analyze.run.driver; print(gc.get_stats()[2]['collections'])"],
                           capture_output=True, text=True, check=True)
    assert int(plain.stdout) > 0  # without the pause the same import runs full collections


_SCORE = """
import gc, json, sys
from click.testing import CliRunner
from analyze.cli.main import main
r = CliRunner().invoke(main, ["score", "--cache", sys.argv[1], "--out", sys.argv[2], "--scorers", "msp",
                              "--no-progress"])
print(json.dumps([r.exit_code, r.output, gc.get_freeze_count(), gc.isenabled()]))
"""


def test_analyze_score_imports_its_stack_with_the_collector_paused(tmp_path):
    from tests.factories import pixel_cache

    import numpy as np

    pixel_cache(tmp_path / "c.zarr", [(16, 24)], np.random.default_rng(0))
    proc = subprocess.run([sys.executable, "-c", _SCORE, str(tmp_path / "c.zarr"), str(tmp_path / "r.parquet")],
                          capture_output=True, text=True, check=True)
    code, output, frozen, enabled = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0, output
    assert frozen > 100_000 and enabled  # the command's imports went through heavy_imports
