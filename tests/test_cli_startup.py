"""`analyze`'s help, version and option errors answer without importing the scoring stack.

Each command imports torch, numba, Zarr and pandas only where it does work: `analyze --help`
took 0.8 s to import them; now it imports click and the catalogue of scorers alone. Real
processes (a fresh interpreter each), the real command line."""

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
