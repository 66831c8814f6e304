"""A frame task's work buffers, reused from frame to frame on its thread (analyze.compose.buffers):
the same bits as fresh tensors, and never one buffer for two live leases."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analyze.compose.buffers import leased
from analyze.compose.resize import bilinear, label_size_tiles, pixel_logits_to_label_size


@pytest.mark.parametrize("src,size", [((7, 13), (1024, 2048)), ((512, 1024), (720, 1280)), ((33, 65), (100, 31))])
def test_bilinear_into_a_buffer_is_interpolate(src, size):
    x = torch.randn(5, *src, generator=torch.Generator().manual_seed(0))
    out = torch.full((5, *size), float("nan"))
    got = bilinear(x, size, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0])


def _tiles(logits, size, void):
    return torch.cat([t.clone() for _, t in label_size_tiles(logits, size, void, tile_rows=5)], dim=1)


def test_label_size_tiles_reuse_their_buffers_and_keep_the_bits():
    rng = np.random.default_rng(1)
    frames = [(rng.standard_normal((6, 9, 14)) * 4).astype(np.float16) for _ in range(3)]
    want = [pixel_logits_to_label_size(z, (23, 41), 5) for z in frames]
    ptrs = []
    for z, w in zip(frames, want):  # frame after frame on this thread: the same memory, the right values
        gen = label_size_tiles(z, (23, 41), 5, tile_rows=5)
        _, first = next(gen)
        ptrs.append(first.data_ptr())
        assert torch.equal(torch.cat([first.clone()] + [t.clone() for _, t in gen], dim=1), w)
    assert len(set(ptrs)) == 1
    # two live generators (a frame and its flipped pass): each its own buffer
    a, b = label_size_tiles(frames[0], (23, 41), 5, tile_rows=5), label_size_tiles(frames[1], (23, 41), 5, tile_rows=5)
    pairs = [(x.clone(), y.clone()) for (_, x), (_, y) in zip(a, b)]
    assert torch.equal(torch.cat([x for x, _ in pairs], 1), want[0]) and torch.equal(torch.cat([y for _, y in pairs], 1), want[1])
    assert torch.equal(_tiles(frames[2], (23, 41), 5), want[2])  # and the kept buffer still serves afterwards


def test_leases_grow_change_dtype_and_stay_per_thread():
    with leased("t", (4, 5), torch.float32) as a:
        pa = a.data_ptr()
        with leased("t", (4, 5), torch.float32) as b:  # held twice: a new tensor
            assert b.data_ptr() != pa
    with leased("t", (2, 3), torch.float32) as c:  # smaller: the same memory, a contiguous prefix
        assert c.data_ptr() == pa and c.is_contiguous() and c.shape == (2, 3)
    with leased("t", (40, 50), torch.float32) as d:  # larger: grown
        assert d.numel() == 2000
    with leased("t", (4, 5), torch.float64) as e:  # another dtype: replaced
        assert e.dtype == torch.float64
    with leased("u", (40, 50), torch.float32) as f:
        mine = f.data_ptr()  # kept by this thread after the block
    seen = []

    def other():
        with leased("u", (40, 50), torch.float32) as g:
            seen.append(g.data_ptr())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen and seen[0] != mine  # another thread: its own buffers
    with leased("u", (40, 50), torch.float32) as h:
        assert h.data_ptr() == mine


def test_row_blocks_of_two_live_composers_keep_their_own_buffers():
    """EoMT's mask tiles and row blocks use this thread's buffers: two frames composed side by side
    (a frame and its flipped pass) give what each gives alone, bit for bit, as do later frames."""
    from analyze.compose.queries import FrameComposer
    from schemas.windows import frame_windows

    rng = np.random.default_rng(2)
    g = frame_windows(45, 80, 64)
    frames = [(rng.standard_normal((2, 7, 16, 16)).astype(np.float32), rng.standard_normal((2, 7, 20)).astype(np.float32))
              for _ in range(3)]
    alone = [[(at, {t: b.clone() for t, b in blocks.items()})
              for at, blocks in FrameComposer(m, c, g, tile_rows=9).row_blocks((0.5, 1.0))] for m, c in frames]
    side = zip(FrameComposer(*frames[0], g, tile_rows=9).row_blocks((0.5, 1.0)),
               FrameComposer(*frames[1], g, tile_rows=9).row_blocks((0.5, 1.0)))
    for (x, y), (a_at, a), (b_at, b) in zip(side, alone[0], alone[1]):
        assert x[0] == a_at and y[0] == b_at
        for t in (0.5, 1.0):
            assert torch.equal(x[1][t], a[t]) and torch.equal(y[1][t], b[t])
            assert x[1][t].data_ptr() != y[1][t].data_ptr()
    again = [(at, {t: b.clone() for t, b in blocks.items()}) for at, blocks in
             FrameComposer(*frames[2], g, tile_rows=9).row_blocks((0.5, 1.0))]
    assert all(torch.equal(x[t], y[t]) for (_, x), (_, y) in zip(again, alone[2]) for t in (0.5, 1.0))
