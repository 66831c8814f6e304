"""The package as installed: the manifest is found without a checkout, read only when a command
needs it, overridable by $ANOMSEG_MANIFEST; one version, printed and recorded. (The built wheel
itself runs the whole pipeline in CI: .ci/wheel_pipeline.sh.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas import manifest
from schemas.results import read_results
from schemas.version import __version__
from tests.factories import pixel_cache

REPO = Path(__file__).resolve().parents[1]


def _cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A CLI in a fresh interpreter (the manifest must not be read while the module loads)."""
    entry = {"extract": "extract.cli", "analyze": "analyze.cli.main"}[module]  # the console scripts' modules
    code = f"import sys; from {entry} import main; sys.exit(main(prog_name='{module}'))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("module, args", [
    ("extract", ["--help"]), ("extract", ["--version"]), ("extract", ["run", "--help"]),
    ("extract", ["datasets", "synth", "--help"]), ("analyze", ["--help"]), ("analyze", ["--version"]),
    ("analyze", ["report", "--help"])])
def test_help_and_version_never_read_the_manifest(module, args, tmp_path):
    res = _cli(module, *args, env={"ANOMSEG_MANIFEST": str(tmp_path / "missing.yaml")})
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    if "--version" in args:
        assert __version__ in res.stdout


@pytest.mark.parametrize("content", [None, "datasets: [not, a, mapping]\n", b"\xff\xfe bytes"])
def test_a_missing_or_unreadable_manifest_is_one_line_naming_the_file(tmp_path, content):
    bad = tmp_path / "m.yaml"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    elif content is not None:
        bad.write_text(content)
    res = _cli("extract", "datasets", "synth", "--dataset", "road_anomaly", "--out", str(tmp_path / "d"),
               env={"ANOMSEG_MANIFEST": str(bad)})
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "d").exists()


def test_the_default_manifest_and_its_override(tmp_path, monkeypatch):
    monkeypatch.delenv(manifest.MANIFEST_ENV, raising=False)
    # a checkout (or an editable install): the top-level file, the one people edit
    assert manifest.default_manifest() == REPO / "data_manifest.yaml"
    variant = tmp_path / "m.yaml"
    text = (REPO / "data_manifest.yaml").read_text()
    variant.write_text(text.replace("road_anomaly:", "road_anomaly_copy:", 1))
    monkeypatch.setenv(manifest.MANIFEST_ENV, str(variant))
    assert manifest.default_manifest() == variant
    res = CliRunner().invoke(extract_main, ["datasets", "list"])
    assert res.exit_code == 0 and "road_anomaly_copy" in res.output
    res = CliRunner().invoke(extract_main, ["datasets", "synth", "--dataset", "road_anomaly", "--out",
                                            str(tmp_path / "d")])
    assert res.exit_code == 2 and "not a dataset of the manifest" in res.output


def test_one_version_printed_and_recorded(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    for main in (extract_main, analyze_main):
        res = CliRunner().invoke(main, ["--version"])
        assert res.exit_code == 0 and __version__ in res.output
    pixel_cache(tmp_path / "c.zarr", [(8, 8)] * 2, np.random.default_rng(0))
    out = tmp_path / "r.parquet"
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(tmp_path / "c.zarr"), "--scorers", "msp",
                                            "--out", str(out), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    assert pq.read_schema(out).metadata[b"tool_version"].decode() == __version__
    assert len(read_results(out))
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## {__version__}" in changelog  # every released version has its entry


def test_the_locks_pin_every_package_for_both_pythons():
    for v in ("311", "312"):
        lines = [ln for ln in (REPO / f"lock-py{v}.txt").read_text().splitlines()
                 if ln and not ln.lstrip().startswith("#")]
        assert lines and all("==" in ln for ln in lines), v
        pinned = {ln.split("==")[0].lower() for ln in lines}
        needed = {"torch", "timm", "zarr", "numcodecs", "dask", "numpy", "scikit-learn", "pandas", "click", "pyarrow"}
        assert needed <= pinned, (v, needed - pinned)


def test_license_is_the_declared_mit_text():
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert yaml.safe_load((REPO / "data_manifest.yaml").read_text())["schema_version"] == manifest.SCHEMA_VERSION
