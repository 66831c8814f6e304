"""The README works as printed: its Python API block runs on a real cache and gives the numbers
the command line gives, every command of its shell blocks exists with the options it uses, and
every page it links to exists. (The pandas block is run by tests/test_runs.py.)"""

import re
import shlex
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from extract.cli import main as extract_main
from schemas.results import read_results
from tests.factories import signal_pixel_cache

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_api_block_matches_the_command_line(tmp_path, monkeypatch):
    (block,) = [b for b in _blocks("python") if "score_cache" in b]
    cache = tmp_path / "caches" / "erfnet" / "road_anomaly.zarr"
    signal_pixel_cache(cache, 3, seed=5, dataset="road_anomaly")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(block, ns)  # as a user would paste it
    auprc = ns["auprc"]
    saved = read_results(tmp_path / "results.parquet")  # save_results wrote what score_cache returned
    assert len(saved) == len(ns["results"]) and set(saved.scorer) == {"msp", "energy"}
    assert sorted(auprc.index) == [("energy", 0.5), ("energy", 1.0), ("msp", 0.5), ("msp", 1.0)]
    assert ((auprc > 0) & (auprc <= 1)).all()
    # the same scorers and temperatures through `analyze score`
    out = tmp_path / "cli.parquet"
    res = CliRunner().invoke(analyze_main, ["score", "--cache", str(cache), "--scorers", "msp,energy", "--temps",
                                            "0.5", "--out", str(out), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    df = read_results(out)
    cli = df[df.metric == "auprc"].set_index(["scorer", "temperature"])["value"]
    for key, value in auprc.items():
        assert cli[key] == pytest.approx(value, abs=1e-12), key
    # the per-map scorer: MSP of the printed logits is 1 - max softmax, one value per pixel
    logits, msp_map = ns["logits"], ns["msp_map"]
    assert msp_map.shape == logits.shape[1:]
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(0)) / np.exp(x - x.max(0)).sum(0)
    np.testing.assert_allclose(msp_map, 1 - p.max(0), rtol=1e-6, atol=1e-7)


def _commands() -> list[list[str]]:
    """Each `extract ...` / `analyze ...` line of the README's shell blocks, continuations joined."""
    out = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(("extract ", "analyze ")):
                out.append(shlex.split(line))
    return out


def test_readme_shell_blocks_use_real_commands_and_options():
    commands = _commands()
    assert any(c[:2] == ["extract", "run"] and "cityscapes_val" in c for c in commands)  # the ID cache analyze fit needs
    assert any(c[:2] == ["analyze", "fit"] for c in commands)
    for argv in commands:
        cmd = {"extract": extract_main, "analyze": analyze_main}[argv[0]]
        words = argv[1:]
        while isinstance(cmd, click.Group):
            cmd = cmd.commands[words.pop(0)]
        known = {o for p in cmd.params for o in p.opts + p.secondary_opts}
        used = {w for w in words if w.startswith("--")}
        assert used <= known, (argv, sorted(used - known))


def test_readme_links_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert "docs/install.md" in local and "CITATION.cff" in local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 250
    for page in (REPO / "docs").glob("*.md"):
        assert f"docs/{page.name}" in README, page.name  # every page of the guide is reachable from it
