"""The semantic maps alone of an EoMT frame: what a semantic cache's pass (mIoU) reads.

The same mask tiles, class-score products and sums as :meth:`FrameComposer.row_blocks`, and the
same bits wherever they are read, without its (K + C, R, W) blocks: a column that one crop
covers holds that crop's product as it is (``(0 + x) / 1 == x``), so its class comes from the
product itself; the columns where crops overlap are summed from zero in crop order and divided
by their crop count, as ``row_blocks`` does. The class is the first maximal one of ``x / T``
(:func:`analyze.scorers.kernels.first_argmax`, the argmax of the scorers' pass). Landscape
frames, on the CPU (numpy's products). ``tests/test_products.py`` holds the maps to the fused
pass's semantic maps.

A pass that reads some pixels only (mIoU reads the labelled ones: Cityscapes' ego vehicle and
rectification border are void) composes only the tiles of rows that hold one, in tiles of
:data:`analyze.compose.queries.FINER_TILE_ROWS` rows where they give the composer's bits
(:meth:`FrameComposer.few_pixels_tile_rows`); the rows of the tiles left out hold class 0.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from analyze.compose.buffers import leased
from analyze.compose.crops import crop_counts, crop_region
from analyze.compose.queries import FrameComposer
from analyze.scorers.kernels import first_classes


def semantic_rows(composer: FrameComposer, temperatures: Sequence[float], argmax_temperature: float = 1.0,
                  rows_read: np.ndarray | None = None) -> Iterator[tuple[slice, dict[float, np.ndarray] | None]]:
    """``(rows, {T: (R, Wr) uint8})`` per block of complete rows of the resized frame: the first
    maximal class of ``s_T / argmax_temperature`` (target ``query``: ``s_T`` itself; ``pixel``:
    ``s_1`` at the first T). ``rows_read`` ((Hr,) bool): the blocks without such a row are
    ``(rows, None)``, not composed."""
    geom, k = composer.geom, composer.num_classes
    if geom.portrait:
        raise ValueError("semantic_rows needs side-by-side (landscape) crops")
    temps = tuple(dict.fromkeys(float(t) for t in temperatures))
    counts = crop_counts(geom)[0]  # (Wr,) float32
    regions = [crop_region(geom, j, 0, 1)[1] for j in range(geom.n_crops)]
    shared = np.flatnonzero(counts.numpy() > 1)  # the columns where crops overlap
    prepared = [composer.crop_products(j, temps) for j in range(geom.n_crops)]
    step = None if rows_read is None else composer.few_pixels_tile_rows(prepared[0])
    for tiles in zip(*(composer.mask_tiles(j, rows_read, step) for j in range(geom.n_crops))):
        r0, r1 = tiles[0][:2]
        if tiles[0][2] is None:  # every crop covers these rows: none of them is read
            yield slice(r0, r1), None
            continue
        rows = r1 - r0
        sem = {t: np.empty((rows, geom.resized[1]), np.uint8) for t in temps}
        over = {t: torch.zeros((k, rows, shared.size)) for t in temps}
        for j, (_, _, tile) in enumerate(tiles):
            cols = np.arange(regions[j].start, regions[j].stop)
            own = counts[cols].numpy() == 1
            at = np.searchsorted(shared, cols[~own])  # this crop's overlap columns among `shared`
            with leased("class products", prepared[j].memory(tile[0].numel()), torch.float32) as out:
                for t, x in zip(temps, prepared[j].class_products(tile, out.numpy())):
                    x = x.reshape(k, rows, -1)
                    mine = x if own.all() else x[:, :, own]
                    sem[t][:, cols[own]] = first_classes(mine.reshape(k, -1), argmax_temperature).reshape(rows, -1)
                    if at.size:
                        over[t][:, :, at] += torch.from_numpy(x[:, :, ~own])
        for t in temps:
            if shared.size:
                s = over[t].div_(counts[shared])
                sem[t][:, shared] = first_classes(s.numpy().reshape(k, -1), argmax_temperature).reshape(rows, -1)
        yield slice(r0, r1), sem


def semantic_maps(composer: FrameComposer, temperatures: Sequence[float], temp_target: str,
                  pixels: np.ndarray | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """``(T, (Hr, Wr) uint8)`` per temperature, as the fused pass yields its semantic maps: target
    ``query``: the first maximal class of ``s_T``; ``pixel``: of ``s_1 / T`` at the first T (that
    of ``s_1``), the same array for every T. ``pixels`` ((Hr, Wr) bool): the pixels read; the
    maps are exact there, and 0 in the blocks of rows without one."""
    temps = tuple(dict.fromkeys(float(t) for t in temperatures))
    query = temp_target == "query"
    composed = temps if query else (1.0,)
    if pixels is not None and tuple(pixels.shape) != tuple(composer.geom.resized):
        raise ValueError(f"pixels {tuple(pixels.shape)} for a resized frame of {tuple(composer.geom.resized)}")
    rows_read = None if pixels is None else np.asarray(pixels, bool).any(axis=1)
    maps = {t: np.empty(composer.geom.resized, np.uint8) for t in composed}
    for at, sem in semantic_rows(composer, composed, 1.0 if query else temps[0], rows_read):
        for t in composed:
            maps[t][at] = 0 if sem is None else sem[t]
    for t in temps:
        yield t, maps[t if query else 1.0]
