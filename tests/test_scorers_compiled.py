"""The compiled CPU scorers (analyze/scorers/compiled.py, numba loops) against the torch reference
(analyze/scorers/tile_math.py, the code a GPU runs): the same bits on every scorer, parameter
and temperature, with ties, underflowing exponentials, infinite and NaN logits, statistics
with zero mean probabilities, and chunk and tile boundaries that cut through rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import analyze.scorers.compiled as compiled_mod
import analyze.scorers.pixel as pixel_mod
from analyze.scorers import SCORERS, ClassStats, score_many
from analyze.scorers.pixel import MapScorer

NAMES = [n for n in SCORERS if n != "m2a_flip"] + [
    "gen:gamma=0.5,m=4", "gen:gamma=0.3", "gen:m=1", "gen:gamma=0.5,m=19", "sml:width=2,iterations=1,dilation=2",
    "sml:border=geodesic"]
CHANNELS = ("eam", "noobject", "m2a/kept", "m2a/gate")


def _stats(k, rng, zeros=True):
    d = rng.dirichlet(np.ones(k), size=k)
    if zeros:  # mean probabilities of exactly 0: KL(p || d) = inf where p > 0
        d[1, 3] = d[4, 0] = d[4, 7] = 0.0
    count = np.full(k, 50)
    count[2] = 0  # a class never predicted: left out of KL's minimum, pooled moments for SML
    return ClassStats.from_moments(count, rng.normal(size=k), rng.uniform(0.5, 2, k), d, 0.1, 1.3)


def _logits(k, h, w, rng, dtype=np.float32):
    x = (rng.normal(size=(k, h, w)) * 4).astype(dtype)
    x[:, 0, :5] = np.round(x[:, 0, :5])  # ties between classes
    x[:, 1, 0] = 0.0  # every class tied
    x[3, 1, 1] = 900.0  # every other exponential underflows to 0
    x[5, 1, 2] = -np.inf
    x[:, 1, 3] = -np.inf  # all -inf: NaN softmax
    x[6, 1, 4] = np.inf
    x[7, 1, 5] = np.nan
    return x


def _both(x, t, names, stats, ch):
    sem_c = np.zeros(x.shape[1:], np.uint8)
    sem_r = np.zeros(x.shape[1:], np.uint8)
    got = score_many(x, t, names, sem_c, stats=stats, channels=ch, compiled=True)
    ref = score_many(x, t, names, sem_r, stats=stats, channels=ch, compiled=False)
    return got, ref, sem_c, sem_r


@pytest.mark.parametrize("t", [0.5, 0.75, 1.0, 1.1, 3.0])
def test_compiled_scorers_equal_the_torch_reference_bit_for_bit(t):
    rng = np.random.default_rng(int(t * 100))
    k, h, w = 19, 23, 37
    x = _logits(k, h, w, rng)
    ch = {c: torch.from_numpy(rng.random((h, w), dtype=np.float32)) for c in CHANNELS}
    got, ref, sem_c, sem_r = _both(x, t, NAMES, _stats(k, rng), ch)
    assert set(got) == set(NAMES)
    for n in NAMES:
        assert got[n].dtype == np.float64
        np.testing.assert_array_equal(got[n], ref[n], err_msg=n)
    np.testing.assert_array_equal(sem_c, sem_r)
    finite = np.isfinite(x).all(0)
    assert np.isfinite(got["msp"][finite]).all() and np.isnan(got["msp"][1, 5])  # the NaN pixel stays NaN


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_compiled_scorers_take_every_float_dtype_as_the_reference(dtype):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(7, 9, 11)) * 3).astype(dtype)
    names = ["msp", "maxlogit", "maxentropy", "energy", "rba", "gen", "gen:m=2", "kl", "sml_raw"]
    got, ref, sem_c, sem_r = _both(x, 0.75, names, _stats(7, rng, zeros=False), None)
    for n in names:
        np.testing.assert_array_equal(got[n], ref[n], err_msg=n)
    np.testing.assert_array_equal(sem_c, sem_r)


@pytest.mark.parametrize("k", [3, 4, 5, 6, 8])
def test_kl_matching_at_every_remainder_of_its_four_class_sweeps(k):
    """KL matching's loop adds four classes per sweep over the pixels and the rest one by one:
    every count of classes left over (and none swept four at a time) gives the reference's bits."""
    rng = np.random.default_rng(k)
    x = _logits(k, 6, 9, rng) if k >= 8 else (rng.normal(size=(k, 6, 9)) * 4).astype(np.float32)
    got, ref, _, _ = _both(x, 0.75, ["kl", "maxentropy"], _stats(k, rng, zeros=k >= 8), None)
    np.testing.assert_array_equal(got["kl"], ref["kl"])
    assert np.isfinite(got["kl"]).any()


def test_chunks_and_tiles_that_cut_rows_change_no_bit(monkeypatch):
    rng = np.random.default_rng(5)
    k, h, w = 19, 41, 53
    x = _logits(k, h, w, rng)
    stats = _stats(k, rng)
    ch = {c: torch.from_numpy(rng.random((h, w), dtype=np.float32)) for c in CHANNELS}
    whole = score_many(x, 0.5, NAMES, stats=stats, channels=ch)
    monkeypatch.setattr(compiled_mod, "CHUNK_PIXELS", 60)  # chunks of one row: a full chunk and a short last one
    monkeypatch.setattr(pixel_mod, "CHUNK_PIXELS", 60)
    monkeypatch.setattr(pixel_mod, "TILE_ELEMENTS", k * w * 4)  # 4-row tiles, the last one short
    small = score_many(x, 0.5, NAMES, stats=stats, channels=ch)
    for n in NAMES:
        np.testing.assert_array_equal(small[n], whole[n], err_msg=n)


def test_map_scorer_takes_tiles_in_any_order_and_column_blocks():
    """The fused passes hand MapScorer tiles as they compose them: row and column blocks in any
    order give the maps of the whole frame at once."""
    rng = np.random.default_rng(7)
    k, h, w = 19, 30, 40
    x = _logits(k, h, w, rng)
    stats = _stats(k, rng)
    ch = {c: rng.random((h, w), dtype=np.float32) for c in CHANNELS}
    want_sem = np.zeros((h, w), np.uint8)
    want = score_many(x, 1.1, NAMES, want_sem, stats=stats, channels={c: torch.from_numpy(v) for c, v in ch.items()})
    for compiled in (True, False):
        ms = MapScorer(NAMES, 1.1, (h, w), stats=stats, semantic=True, compiled=compiled)
        for rows, cols in [(slice(20, 30), slice(0, 40)), (slice(0, 20), slice(25, 40)), (slice(0, 20), slice(0, 25))]:
            ms.add(x[:, rows, cols], rows, cols, {c: v[rows, cols] for c, v in ch.items()})
        maps, sem = ms.finish()
        for n in NAMES:
            np.testing.assert_array_equal(maps[n], want[n], err_msg=f"{n} compiled={compiled}")
        np.testing.assert_array_equal(sem, want_sem)


def test_the_compiled_path_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="compiled scorers run on the CPU only"):
        MapScorer(["msp"], 1.0, (2, 2), device="meta", compiled=True)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MapScorer(["msp"], 0.0, (2, 2))
