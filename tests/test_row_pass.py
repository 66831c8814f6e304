"""The compiled row pass of EoMT's mask upsampling (analyze.compose.row_pass) gives torch's bits:
against torch's ``mul`` + ``addcmul_`` (which tests/test_compose.py holds to ``interpolate``), at
widths with and without a vector tail, many query counts and upsampling ratios; its fused
multiply-add rounds once; and where the check fails, the tiles come from torch's ops."""

from __future__ import annotations

import numba as nb
import numpy as np
import pytest
import torch

from analyze.compose import products as P
from analyze.compose import row_pass as RP
from analyze.compose.queries import FrameComposer
from analyze.compose.resize import linear_taps
from schemas.windows import frame_windows
from tests.oracles import upsampled_mask_probs


@nb.njit
def _fma(a, b, c):
    return RP._fma32(a, b, c)


def test_the_fused_multiply_add_rounds_once():
    """float32 ``a * b + c`` with one rounding: the float64 product is exact, and its sum with c
    rounds to float32 once here (no tie); two roundings differ on these values."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(2000).astype(np.float32) for _ in range(3))
    fused = np.array([_fma(x, y, z) for x, y, z in zip(a, b, c)], np.float32)
    exact = (a.astype(np.float64) * b + c).astype(np.float32)
    assert np.array_equal(fused, exact)
    assert not np.array_equal(fused, a * b + c)


@pytest.mark.parametrize("queries", [1, 7, 100])
@pytest.mark.parametrize("src, out", [(13, 96), (16, 64), (11, 37), (64, 1024), (256, 1024), (5, 5)])
def test_compiled_rows_equal_torch_rows(queries, src, out):
    rng = np.random.default_rng([queries, src, out])
    taps = linear_taps(src, out)
    width = out
    for r0, rows in ((0, min(out, 9)), (out - min(out, 5), min(out, 5)), (out // 3, 1)):
        lo, hi = int(taps[0][r0]), int(taps[1][r0 + rows - 1]) + 1
        cols = torch.from_numpy((rng.standard_normal((queries, hi - lo, width)) * 5).astype(np.float32))
        want, got = torch.empty((queries, rows, width)), torch.empty((queries, rows, width))
        RP.torch_rows(cols, lo, taps, r0, want)
        RP.compiled_rows(cols, lo, tuple(t.numpy() for t in taps), r0, got)
        assert torch.equal(want, got), (r0, rows)


def test_tiles_fall_back_to_torch_where_the_check_fails(monkeypatch):
    """A machine where the compiled pass rounds otherwise (faked: the check answers False) makes its
    tiles with torch's ops, still torch's bilinear upsampling bit for bit; where it passes, the
    compiled pass runs."""
    g = frame_windows(100, 250, 96)  # test_compose's shape, where torch's ops are interpolate's bits
    rng = np.random.default_rng(2)
    masks = [(rng.standard_normal((6, 13, 11)) * 4).astype(np.float16) for _ in range(g.n_crops)]
    classes = [rng.standard_normal((6, 4)).astype(np.float32) for _ in range(g.n_crops)]
    calls = []
    real = RP.compiled_rows
    monkeypatch.setattr(RP, "compiled_rows", lambda *a: calls.append(1) or real(*a))
    for exact in (False, True):
        calls.clear()
        key = ("rows", 6, g.tile[1], torch.get_num_threads())
        monkeypatch.setitem(P._checked, key, exact)
        fc = FrameComposer(masks, classes, g, tile_rows=7)
        for j in range(g.n_crops):
            got = torch.cat([t.clone() for _, _, t in fc.mask_tiles(j)], dim=1)
            assert torch.equal(got, upsampled_mask_probs(masks[j], g.crop))
        assert bool(calls) == exact
