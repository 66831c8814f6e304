"""The cache digest covers every setting that changes the stored outputs: a re-extraction with
other settings never passes for the old cache (its old rows are flagged and refused)."""

import dataclasses
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from analyze.cli.main import main as analyze_main
from schemas.cache import cache_digest
from tests.factories import pixel_cache, provenance, query_cache


def _an(*args):
    return CliRunner().invoke(analyze_main, [str(a) for a in args])


@pytest.fixture
def spec(tmp_path):
    return query_cache(tmp_path / "q.zarr", [(24, 44), (32, 32)], np.random.default_rng(0))[1]


@pytest.mark.parametrize("change", [
    dict(provenance=provenance(model="eomt", dtype="bf16")),  # autocast precision
    dict(provenance=provenance(model="eomt", preprocessing={"height": 32})),  # input size
    dict(provenance=provenance(model="eomt", model_config={"num_classes": 20, "crop": 64})),
    dict(hflip=True),  # the flipped pass
    dict(mask_size=16),  # the stored output geometry
    dict(labelled=(True, False)),
])
def test_every_output_setting_changes_the_digest(spec, change):
    assert cache_digest(dataclasses.replace(spec)) == cache_digest(spec)  # a pure function of the settings
    assert cache_digest(dataclasses.replace(spec, **change)) != cache_digest(spec)


def test_reextraction_in_another_precision_flags_the_old_rows(tmp_path):
    cache, out = tmp_path / "c.zarr", tmp_path / "r.parquet"
    pixel_cache(cache, [(16, 24)] * 2, np.random.default_rng(0))
    res = _an("score", "--cache", cache, "--scorers", "msp,maxlogit", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    shutil.rmtree(cache)  # as `extract run --overwrite --dtype bf16`: the same frames, other outputs
    pixel_cache(cache, [(16, 24)] * 2, np.random.default_rng(1), dtype="bf16")
    res = _an("score", "--cache", cache, "--scorers", "msp", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "come from 2 caches" in res.output  # the maxlogit rows are those of the fp32 cache
    res = _an("report", "--results", out, "--out", tmp_path / "report")
    assert res.exit_code == 1 and "come from 2 caches" in res.output
