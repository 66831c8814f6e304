"""EoMT's mask upsampling in tiles of rows, its row pass compiled: each tile value written once.

:func:`crop_tiles` (behind :meth:`analyze.compose.queries.FrameComposer.mask_tiles`) upsamples a
crop's mask logits in tiles of rows and passes them through the sigmoid: first the width pass
(torch's 1-D linear interpolation of the few source rows a tile reads), then the rows: each output row is ``a1 * bottom + a0 * top`` of its two source rows
with torch's bilinear kernel's rounding, the product with ``a0`` fused into the sum (one
rounding, FMA). :func:`torch_rows` makes it with ``torch.mul`` and ``addcmul_``, each source row
broadcast over the output rows it serves: two passes over the tile. :func:`compiled_rows` makes
the same values in one (numba, LLVM's ``fma`` intrinsic), about 0.35x the time.

Whether a BLAS-free loop and torch's vectorised kernels round alike is a property of the
machine and torch's build (a CPU without FMA, a kernel that fuses nothing), not of the values:
:func:`compiled_exact` checks it once per process for each tile width, query count and torch
thread count, on random inputs against :func:`torch_rows` (the definition, which
``tests/test_compose.py`` holds to ``interpolate(bilinear)`` of the whole crop), and the tiles
are made by :func:`torch_rows` wherever it fails.
"""

from __future__ import annotations

from typing import Iterator

import numba as nb
import numpy as np
import torch
import torch.nn.functional as F
from numba import types
from numba.core.extending import intrinsic

from analyze.compose.crops import row_runs
from analyze.compose.products import checked_once


@intrinsic
def _fma32(typingctx, a, b, c):
    """``a * b + c`` in float32 with one rounding (LLVM's ``llvm.fma.f32``)."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@nb.njit(nogil=True, cache=True)
def _rows(cols, lo, i0, i1, a0, a1, r0, out):
    q, _, w = cols.shape
    for k in range(q):
        for r in range(out.shape[1]):
            top, bottom = i0[r0 + r] - lo, i1[r0 + r] - lo
            w0, w1 = a0[r0 + r], a1[r0 + r]
            for x in range(w):
                out[k, r, x] = _fma32(w0, cols[k, top, x], w1 * cols[k, bottom, x])


def compiled_rows(cols: torch.Tensor, lo: int, taps: tuple[np.ndarray, ...], r0: int, tile: torch.Tensor) -> None:
    """Rows ``r0 : r0 + R`` of the upsampled masks into ``tile`` (Q, R, crop), from ``cols`` (Q, n,
    crop): the width pass of source rows ``lo : lo + n``; ``taps``: (i0, i1, a0, a1) as numpy arrays
    (:func:`analyze.compose.resize.linear_taps`). CPU tensors, float32, contiguous."""
    i0, i1, a0, a1 = taps
    _rows(cols.numpy(), lo, i0, i1, a0, a1, r0, tile.numpy())


def torch_rows(cols: torch.Tensor, lo: int, taps: tuple, r0: int, tile: torch.Tensor) -> None:
    """:func:`compiled_rows` with torch's ``mul`` and ``addcmul_`` (weights ``a0``, ``a1`` as tensors
    on the tile's device; indices ``i0``, ``i1`` as numpy arrays or CPU tensors), each source row
    broadcast over the output rows it serves."""
    i0, i1, a0, a1 = taps
    r1 = r0 + tile.shape[1]
    for a, b, src in row_runs(np.asarray(i1[r0:r1])):
        torch.mul(cols[:, src - lo : src - lo + 1], a1[r0 + a : r0 + b, None], out=tile[:, a:b])
    for a, b, src in row_runs(np.asarray(i0[r0:r1])):
        tile[:, a:b].addcmul_(cols[:, src - lo : src - lo + 1], a0[r0 + a : r0 + b, None])


def crop_tiles(m: torch.Tensor, taps: tuple[torch.Tensor, ...], crop: int, step: int, wanted: np.ndarray | None,
               buf: torch.Tensor | None, kept: list | None) -> Iterator[tuple[int, int, torch.Tensor | None]]:
    """``(r0, r1, sigmoid(upsampled masks)[:, r0:r1, :])`` per ``step`` rows of one crop, from its mask
    logits ``m`` (Q, h, w) and row ``taps`` (:func:`analyze.compose.resize.linear_taps` to the crop's
    rows, on ``m``'s device) to ``crop`` columns: ``None`` for a tile without a ``wanted`` row; written
    into ``buf`` (one tile's memory, a contiguous prefix per tile) or new tensors (``None``),
    appended to ``kept`` when it is a list."""
    q, _, w = m.shape
    i0, i1 = (t.cpu().numpy() for t in taps[:2])
    one_pass = m.device.type == "cpu" and compiled_exact(q, crop, taps)
    rows_taps = (i0, i1, *(t.numpy() if one_pass else t for t in taps[2:]))
    for r0 in range(0, i0.size, step):
        r1 = min(r0 + step, i0.size)
        if wanted is not None and not wanted[r0:r1].any():
            yield r0, r1, None
            continue
        lo, hi = int(i0[r0]), int(i1[r1 - 1]) + 1  # source rows this tile reads
        # columns first, on the few source rows needed (1-D linear = torch's bilinear width pass)
        cols = F.interpolate(m[:, lo:hi].to(torch.float32).reshape(1, q * (hi - lo), w), size=crop, mode="linear",
                             align_corners=False).view(q, hi - lo, crop)  # (Q, hi-lo, crop)
        tile = torch.empty((q, r1 - r0, crop), device=m.device) if buf is None else (
            buf[: q * (r1 - r0) * crop].view(q, r1 - r0, crop))
        (compiled_rows if one_pass else torch_rows)(cols, lo, rows_taps, r0, tile)
        tile.sigmoid_()
        if kept is not None:
            kept.append((r0, r1, tile))
        yield r0, r1, tile


def compiled_exact(queries: int, width: int, taps: tuple[torch.Tensor, ...]) -> bool:
    """Whether :func:`compiled_rows` gives :func:`torch_rows`'s bits here for tiles ``width`` wide
    of ``queries`` queries (checked once per process and torch thread count, on random values)."""
    key = ("rows", int(queries), int(width), torch.get_num_threads())

    def check() -> bool:
        rows = min(8, taps[0].numel())
        n = int(taps[1][rows - 1]) - int(taps[0][0]) + 1
        rng = np.random.default_rng([queries, width])
        cols = torch.from_numpy((rng.standard_normal((queries, n, width)) * 4).astype(np.float32))
        want, got = (torch.empty((queries, rows, width)) for _ in range(2))
        lo = int(taps[0][0])
        torch_rows(cols, lo, tuple(t.cpu() for t in taps), 0, want)
        compiled_rows(cols, lo, tuple(t.cpu().numpy() for t in taps), 0, got)
        return torch.equal(want, got)

    return checked_once(key, check)
