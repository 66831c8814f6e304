"""Model outputs -> per-pixel class scores or logits at label resolution, one frame at a time.

The one composition path: :mod:`analyze.compose.frame_scores` (and through it ``analyze score``,
``analyze maps`` and ``analyze export``) composes whole frames with :class:`FrameComposer`
and :func:`analyze.compose.resize.pixel_logits_to_label_size`; the temperature fit evaluates the same chains at
sampled pixels only (:meth:`FrameComposer.pixel_weights`, :func:`analyze.compose.resize.pixel_logits_at`), from
the same taps, crop regions and crop counts (the resizing itself: :mod:`analyze.compose.resize`). The
untiled, obviously correct composition is the tests' oracle (``tests/oracles.py``), as is the model's own semantic inference
(:func:`extract.models.eomt.semantic_map`) tested against it.

Mask model (EoMT), following the official semantic inference (``tue-mps/eomt``,
``training/lightning_module.py``: ``to_per_pixel_logits_semantic``,
``revert_window_logits_semantic``; ``training/mask_classification_semantic.py``):

1. per crop, the mask logits ``m_q`` (Q, h, w) are bilinearly upsampled (``align_corners=False``,
   ``torch.nn.functional.interpolate`` semantics) to the crop size and passed through a sigmoid;
2. per crop, ``s_k(x) = sum_q softmax(c_q / T)_k * sigmoid(m_q(x))`` for ``k < K``: the
   no-object class is dropped *after* the softmax over ``K + 1``;
3. the crops are summed into the resized frame and divided by the per-pixel crop count;
4. ``s`` (K, Hr, Wr) is bilinearly resized (``align_corners=False``) to the original size.

Mask2Former caches compose the same way with one crop per frame that covers the whole "resized"
frame (:mod:`schemas.inference`, chosen by the cache's ``semantic_inference``): transformers'
``post_process_semantic_segmentation`` upsamples the masks to a fixed 384 x 384 (the crop), detectron2's
``sem_seg_postprocess`` to the model input's size (a non-square crop, ``FrameWindows.tile``); step 3
is then the identity. ``CacheSpec.windows`` is the one dispatch: nothing below depends on the model.

Resizing is linear and the scorers are not, so the order is: ``s`` on the resized frame ->
resize ``s`` -> scorer (the official code likewise resizes ``s`` before its argmax).

Temperature on a mask model has two targets (REFERENCE.md section 4):

* ``'query'`` (default): ``T`` divides the query class logits ``c_q`` before their softmax.
  This changes ``s`` and hence the semantic map (mIoU); the scorer then sees ``s`` at T = 1.
* ``'pixel'``: ``s`` is computed at T = 1 and the scorer's input is ``s / T``; the
  semantic map does not depend on ``T``.

Both targets coincide at ``T = 1``. Everything is float32; mask logits stored as float16
are upcast before the upsampling.

Memory: a 1024 crop with 100 queries has 400 MB of upsampled masks. :class:`FrameComposer`
never holds them: it upsamples one tile of crop rows at a time (``tile_rows``), applies the
sigmoid once, and multiplies the tile by the class probabilities of *every* requested
temperature in one matrix product, accumulating into one float32 ``(K, Hr, Wr)`` map per
temperature (19 x 1024 x 2048 x 4 B = 160 MB). The resize to the original size, which needs
neighbouring rows, runs on the complete map, so tiling does not change the result beyond
float32 rounding of the summation (verified against the untiled oracle to 1e-6).

Pixel model (ERFNet): the logits (C, h, w) at model resolution are bilinearly resized
(``align_corners=False``) to the label size *before* scoring; the void channel is dropped
before any softmax (dropping it before the resize is identical: the resize acts per
channel). The semantic map is the argmax over the remaining classes and does not depend
on ``T``; for a pixel model both temperature targets mean ``z / T``.

Tensors are torch float32 on the CPU; semantic maps are uint8 numpy arrays
(:func:`analyze.compose.resize.semantic_prediction`). The scorers (:mod:`analyze.scorers`) take it from there.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Iterator, Sequence

import numpy as np
import torch

from analyze.compose.resize import ArrayLike, f32 as _f32, linear_taps as _linear_taps
from analyze.compose.resize import resize_scores
from analyze.compose.buffers import leased
from analyze.compose.crops import check_geometry, crop_counts, crop_region, held_columns, shared_runs
from analyze.compose.products import CropProducts
from analyze.compose.row_pass import crop_tiles
from analyze.scorers.masks import QueryChannel
from schemas.windows import FrameWindows

TEMP_TARGETS = ("query", "pixel")
DEFAULT_TEMP_TARGET = "query"
DEFAULT_TILE_ROWS = 64
FINER_TILE_ROWS = 16  # a pass that reads a few pixels composes tiles this tall where exact (row_blocks)


def positive_temperature(t: float) -> float:
    """``t`` as a float when it is finite and > 0 (any such T composes; the CLIs' narrower range
    is :func:`analyze.scorers.check_temperature`)."""
    t = float(t)
    if not t > 0 or t == float("inf"):
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")
    return t


def parse_temp_target(target: str) -> str:
    if target not in TEMP_TARGETS:
        raise ValueError(f"temp_target must be one of {', '.join(TEMP_TARGETS)}; got {target!r}")
    return target


# ---------------------------------------------------------------------------------------
# EoMT building blocks


def class_probs(class_logits: ArrayLike, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(c / T)`` over the K + 1 classes with the last (no-object) dropped: (Q, K+1) -> (Q, K)."""
    c = _f32(class_logits)  # (Q, K+1)
    t = positive_temperature(temperature)
    return torch.softmax(c if t == 1.0 else c / t, dim=-1)[:, :-1]  # (Q, K)


def _full_probs(class_logits: ArrayLike, temperature: float) -> np.ndarray:
    """``softmax(c / T)`` over all K + 1 classes, no-object last: (Q, K+1) float32 numpy."""
    c = _f32(class_logits)
    t = positive_temperature(temperature)
    return torch.softmax(c if t == 1.0 else c / t, dim=-1).numpy()


# ---------------------------------------------------------------------------------------
# EoMT: tiled, all temperatures in one pass


class FrameComposer:
    """Per-pixel class scores ``s`` of one EoMT frame for any set of temperatures.

    Holds the frame's raw outputs (mask logits (n_crops, Q, h, w), float16 or float32, and
    class logits (n_crops, Q, K+1)) and its window geometry. :meth:`resized_scores` walks every
    crop in tiles of ``tile_rows`` crop rows: each tile is upsampled and passed through the
    sigmoid *once* and then serves all requested temperatures in one matrix product. With
    ``keep_masks=True`` the sigmoid tiles are also kept (Q x crop^2 floats per crop) so that
    later calls with other temperatures skip the upsampling; by default memory stays at one
    tile plus one (K, Hr, Wr) accumulator per temperature.

    ``channels`` (:class:`analyze.scorers.masks.QueryChannel`) are per-query quantities the mask
    scorers need, ``sum_q w_q sigmoid(m_q)`` or ``max_q w_q sigmoid(m_q)`` with weights from the
    class probabilities at each T: the sum channels are the rows of a second matrix product
    of the same sigmoid tile (one row per channel and T), a max channel a reduction over the
    queries with ``w_q > 0`` of that tile. :meth:`resized_maps` stacks them after the K class rows (in the order of
    :attr:`channel_keys`), so they are composed exactly like ``s``.

    ``device``: where the masks are upsampled and the maps accumulated (torch; ``analyze score
    --device``). On the CPU the class-score products are numpy's (OpenBLAS, faster here);
    ``compiled=False`` takes torch's there too: the code a GPU runs, tested on the CPU.
    """

    def __init__(
        self,
        mask_logits: Sequence[ArrayLike] | ArrayLike,
        class_logits: Sequence[ArrayLike] | ArrayLike,
        geom: FrameWindows,
        *,
        tile_rows: int = DEFAULT_TILE_ROWS,
        keep_masks: bool = False,
        channels: Sequence[QueryChannel] = (),
        device: str | torch.device = "cpu",
        compiled: bool | None = None,
    ):
        check_geometry(geom)
        if len(mask_logits) != geom.n_crops or len(class_logits) != geom.n_crops:
            raise ValueError(
                f"geometry has {geom.n_crops} crops; got {len(mask_logits)} mask and "
                f"{len(class_logits)} class-logit crops"
            )
        if tile_rows < 1:
            raise ValueError(f"tile_rows must be >= 1, got {tile_rows}")
        q, h, w = tuple(mask_logits[0].shape)
        if tuple(class_logits[0].shape[:1]) != (q,) or len(class_logits[0].shape) != 2:
            raise ValueError(f"class logits {tuple(class_logits[0].shape)} do not match {q} queries")
        self.geom = geom
        self.num_queries = q
        self.num_classes = int(class_logits[0].shape[1]) - 1  # K
        self._mask_logits = mask_logits
        self._class_logits = class_logits
        self._tile_rows = int(tile_rows)
        self.device = torch.device(device)
        # the CPU's fast path multiplies with numpy's BLAS; elsewhere (or compiled=False) torch's
        self._numpy = self.device.type == "cpu" if compiled is None else bool(compiled)
        if self._numpy and self.device.type != "cpu":
            raise ValueError("the compiled composition runs on the CPU only")
        self._row_taps = tuple(t.to(self.device) for t in _linear_taps(h, geom.tile[0]))
        self._kept: list[list[tuple[int, int, torch.Tensor]]] | None = (
            [[] for _ in range(geom.n_crops)] if keep_masks else None
        )
        unique = list({c.key: c for c in channels}.values())
        self._sum = [c for c in unique if c.reduce == "sum"]
        self._max = [c for c in unique if c.reduce == "max"]
        if len(self._sum) + len(self._max) != len(unique):
            raise ValueError(f"channel reductions must be 'sum' or 'max'; got {sorted({c.reduce for c in unique})}")
        #: the order of the channels after the K class rows of :meth:`resized_maps`
        self.channel_keys: tuple[str, ...] = tuple(c.key for c in self._sum + self._max)
        self._n_maps = self.num_classes + len(self.channel_keys)

    @property
    def numpy_products(self) -> bool:
        """Whether the class-score products are numpy's (the CPU's compiled path)."""
        return self._numpy

    def mask_tiles(self, j: int, wanted: np.ndarray | None = None, tile_rows: int | None = None
                    ) -> Iterator[tuple[int, int, torch.Tensor | None]]:
        """``(r0, r1, sigmoid(upsampled masks)[:, r0:r1, :])`` (Q, r1 - r0, crop) for crop ``j``;
        ``wanted`` ((crop rows,) bool): the tiles without a wanted row are ``None``, not made
        (each tile is made from the mask logits alone: skipping one changes no other's bits).
        Tiles share memory: each is valid until the next is asked for (``keep_masks``: kept).
        ``tile_rows``: other than the composer's (each row's values do not depend on it)."""
        if self._kept is not None and self._kept[j]:
            yield from self._kept[j]
            return
        rows, crop = self.geom.tile  # (crop, crop) for EoMT's windows (the taps span the rows)
        m = torch.as_tensor(self._mask_logits[j]).to(self.device)  # (Q, h, w), float32 by tile (exact)
        step = tile_rows or self._tile_rows
        if self._kept is not None:  # keep_masks: new tiles, kept once the crop is complete (whole crops only)
            kept: list | None = [] if wanted is None else None
            yield from crop_tiles(m, self._row_taps, crop, step, wanted, None, kept)
            if kept is not None:
                self._kept[j] = kept
            return
        # one tile's memory, reused by every tile of the crop (fresh pages cost more than the
        # arithmetic) and by this thread's next frames: each tile is a contiguous prefix, as a fresh one would be
        with leased(f"mask tiles {j}", (m.shape[0] * min(step, rows) * crop,), torch.float32, self.device) as buf:
            yield from crop_tiles(m, self._row_taps, crop, step, wanted, buf, None)

    def resized_maps(self, temperatures: Sequence[float] = (1.0,)) -> dict[float, torch.Tensor]:
        """``{T: maps}`` on the resized frame, (K + C, Hr, Wr) each: ``s_T`` (``T`` divides the class
        logits), then the C channels of :attr:`channel_keys` at that T.

        Masks are upsampled once per call whatever the number of temperatures and channels.
        """
        temps = tuple(dict.fromkeys(positive_temperature(t) for t in temperatures))
        sums = {t: torch.zeros((self._n_maps, *self.geom.resized), dtype=torch.float32, device=self.device)
                for t in temps}
        for j in range(self.geom.n_crops):
            prepared = self.crop_products(j, temps)
            for r0, r1, tile in self.mask_tiles(j):
                rows, cols = crop_region(self.geom, j, r0, r1)
                if tile is not None:  # every tile: no rows were left out
                    self._add_tile(prepared, tile, [sums[t][:, rows, cols] for t in temps])
        counts = crop_counts(self.geom).to(self.device)
        for t in temps:
            sums[t].div_(counts)
        return sums

    def row_blocks(self, temperatures: Sequence[float] = (1.0,), pixels: np.ndarray | None = None
                   ) -> Iterator[tuple[slice, dict[float, torch.Tensor] | None]]:
        """:meth:`resized_maps` in blocks of complete rows, ``(rows, {T: (K + C, R, Wr)})``, each yielded
        as soon as every crop has added its tile (EoMT's fused pass: the scorers take a block
        while it is in cache, and no full-size map exists). The same tiles, products and
        additions in the same order, so the same bits. Landscape frames only (side-by-side
        crops share their rows). ``pixels`` ((Hr, Wr) bool): a pass that reads a few pixels
        (e.g. the anomaly pixels): each crop adds only its tiles that cover a wanted pixel, so
        a block's wanted pixels are exact and its other pixels partial sums; the blocks without
        a wanted pixel are yielded as ``(rows, None)``. Such a pass takes tiles of
        :data:`FINER_TILE_ROWS` rows where they give the wanted pixels the bits of the
        composer's tiles (:meth:`CropProducts.finer_rows_exact`): fewer rows left to compose."""
        if self.geom.portrait:
            raise ValueError("row_blocks needs side-by-side (landscape) crops")
        if pixels is not None and tuple(pixels.shape) != tuple(self.geom.resized):
            raise ValueError(f"pixels {tuple(pixels.shape)} for a resized frame of {tuple(self.geom.resized)}")
        temps = tuple(dict.fromkeys(positive_temperature(t) for t in temperatures))
        prepared = [self.crop_products(j, temps) for j in range(self.geom.n_crops)]
        counts = crop_counts(self.geom).to(self.device)
        width = self.geom.resized[1]
        wanted = [None if pixels is None else pixels[:, crop_region(self.geom, j, 0, 1)[1]].any(axis=1)
                  for j in range(self.geom.n_crops)]  # per crop: its rows that cover a wanted pixel
        step = None if pixels is None else self.few_pixels_tile_rows(prepared[0])
        most = self._n_maps * min(step or self._tile_rows, self.geom.tile[0]) * width  # a block's values at most
        with ExitStack() as stack:  # each T's block: this thread's memory, zeroed for each block
            bufs = {t: stack.enter_context(leased(f"row block {i}", (most,), torch.float32, self.device))
                    for i, t in enumerate(temps)}
            yield from self._blocks(prepared, temps, wanted, step, counts, bufs)

    def _blocks(self, prepared: list[CropProducts], temps: tuple[float, ...], wanted: list, step: int | None,
                counts: torch.Tensor, bufs: dict[float, torch.Tensor]
                ) -> Iterator[tuple[slice, dict[float, torch.Tensor] | None]]:
        """The blocks of :meth:`row_blocks` in prefixes of ``bufs[T]``: the bits of zeroing a block,
        adding each crop and dividing by the counts, but each crop writes ``0 + x`` where no crop
        before it adds (:func:`analyze.compose.products._put`) and only shared columns are divided."""
        width = self.geom.resized[1]
        held = held_columns(self.geom)  # None: zero the block and add every crop
        shared = [(0, width)] if held is None else shared_runs(counts)
        for tiles in zip(*(self.mask_tiles(j, wanted[j], step) for j in range(self.geom.n_crops))):
            r0, r1 = tiles[0][:2]
            if all(tile is None for _, _, tile in tiles):
                yield slice(r0, r1), None
                continue
            block = {t: bufs[t][: self._n_maps * (r1 - r0) * width].view(self._n_maps, r1 - r0, width) for t in temps}
            for j, (_, _, tile) in enumerate(tiles):
                cols = crop_region(self.geom, j, r0, r1)[1]
                targets = [block[t][:, :, cols] for t in temps]
                for b in block.values() if held is None and j == 0 else ():
                    b.zero_()
                if tile is not None:  # every crop's but those that cover no wanted pixel
                    self._add_tile(prepared[j], tile, targets, None if held is None else held[j])
                elif held is not None:  # a crop that covers no wanted pixel adds nothing
                    for target in targets:
                        target[:, :, held[j] :].zero_()
            for t in temps:
                for a, b in shared:
                    block[t][:, :, a:b].div_(counts[:, a:b])
            yield slice(r0, r1), block

    def few_pixels_tile_rows(self, products: CropProducts) -> int:
        """The tile height of a pass that reads a few pixels (:meth:`row_blocks` with ``pixels``):
        :data:`FINER_TILE_ROWS` where that gives every pixel the bits of the composer's tiles
        for these matrices (:meth:`CropProducts.finer_rows_exact`), else the composer's."""
        rows, crop = self.geom.tile
        if products.finer_rows_exact(self._tile_rows, crop, FINER_TILE_ROWS, rows):
            return FINER_TILE_ROWS
        return self._tile_rows

    def crop_products(self, j: int, temps: Sequence[float]) -> CropProducts:
        """Crop ``j``'s matrices, one set per T (:class:`analyze.compose.products.CropProducts`):
        each T's products are its own, so no ``s_T`` depends on which other temperatures or
        channels were asked for."""
        full = [_full_probs(self._class_logits[j], t) for t in temps]  # (Q, K+1) each
        return CropProducts(full, self.num_classes, self._sum, self._max, self._numpy, self.device)

    def _add_tile(self, prepared: CropProducts, tile: torch.Tensor, targets: Sequence[torch.Tensor],
                  held: int | None = None) -> None:
        """:meth:`CropProducts.add` (a seam for the tests)."""
        prepared.add(tile, targets, held)

    def resized_scores(self, temperatures: Sequence[float] = (1.0,)) -> dict[float, torch.Tensor]:
        """``{T: s_T}`` on the resized frame, (K, Hr, Wr) each; ``T`` divides the class logits."""
        return {t: m[: self.num_classes] for t, m in self.resized_maps(temperatures).items()}

    def scores(self, temperature: float = 1.0, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``s`` (K, H, W) at ``out_size`` (default: original size) for one temperature."""
        t = positive_temperature(temperature)
        return resize_scores(self.resized_scores((t,))[t], out_size or self.geom.original)

    def pixel_weights(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Linear weights ``A`` (n, n_crops * Q), float64, with ``s_T[:, rows, cols].T = A @ P_T``
        at ``n`` pixels of the original frame.

        ``P_T`` stacks :func:`class_probs` ``(c_j, T)`` of every crop ``j`` (n_crops * Q, K). ``s``
        is linear in the class probabilities, so :meth:`scores` at a few pixels is the same chain
        evaluated there: the bilinear taps of the resize to the original size
        (:func:`_linear_taps`) pick four points of the resized frame; each point takes, from
        every crop whose region covers it (:func:`crop_region`), the sigmoid of that crop's
        bilinearly upsampled masks (the taps of :meth:`mask_tiles`), divided by the point's
        crop count (:func:`crop_counts`). Every T is then a small matrix product instead of a
        full composition (the temperature fit evaluates many T at sampled pixels).
        """
        geom = self.geom
        rows, cols = np.asarray(rows), np.asarray(cols)
        (h_out, w_out), (h_res, w_res) = geom.original, geom.resized

        def taps(n_in: int, n_out: int, idx: np.ndarray) -> tuple[np.ndarray, ...]:
            if n_in == n_out:  # resize_scores leaves the map as it is
                return idx, idx, np.ones(idx.size, np.float32), np.zeros(idx.size, np.float32)
            return tuple(t.numpy()[idx] for t in _linear_taps(n_in, n_out))

        ry0, ry1, wy0, wy1 = taps(h_res, h_out, rows)
        rx0, rx1, wx0, wx1 = taps(w_res, w_out, cols)
        # the four resized-frame points of each pixel and their weights: (4, n)
        pr = np.stack([ry0, ry0, ry1, ry1])
        pc = np.stack([rx0, rx1, rx0, rx1])
        pw = np.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1]).astype(np.float64)
        along = crop_counts(geom).numpy().astype(np.float64).ravel()  # crops per position of the long side
        count = along[pr if geom.portrait else pc]  # (4, n)
        q = self.num_queries
        out = np.zeros((rows.size, geom.n_crops * q), np.float64)
        m_all = [np.asarray(_f32(m)) for m in self._mask_logits]
        h, w = m_all[0].shape[1:]
        ty = [t.cpu().numpy() for t in self._row_taps]
        tx = [t.numpy() for t in _linear_taps(w, geom.tile[1])]
        for j in range(geom.n_crops):
            m = m_all[j]  # (Q, h, w)
            region_rows, region_cols = crop_region(geom, j, 0, geom.tile[0])
            for k in range(4):  # one resized point per pixel at a time: no repeated pixel in `p`
                inside = ((pr[k] >= region_rows.start) & (pr[k] < region_rows.stop)
                          & (pc[k] >= region_cols.start) & (pc[k] < region_cols.stop))
                p = np.flatnonzero(inside)
                if not p.size:
                    continue
                y0, y1, ay0, ay1 = (t[pr[k, p] - region_rows.start] for t in ty)
                x0, x1, ax0, ax1 = (t[pc[k, p] - region_cols.start] for t in tx)
                # torch's order: the width pass on both source rows, then the height pass
                top = m[:, y0, x0] * ax0 + m[:, y0, x1] * ax1  # (Q, M)
                bot = m[:, y1, x0] * ax0 + m[:, y1, x1] * ax1
                val = 1.0 / (1.0 + np.exp(-(bot * ay1 + top * ay0)))  # (Q, M): sigmoid of the upsampled mask
                out[p, j * q : (j + 1) * q] += (val * (pw[k, p] / count[k, p])).T  # (M, Q)
        return out
