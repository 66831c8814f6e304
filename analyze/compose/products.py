"""EoMT's class-score products of one crop: every T's matrices times each sigmoid tile.

A crop's tile of upsampled, sigmoided masks (Q, R, crop) serves every temperature: at each T
the class probabilities (K, Q) times the tile give that T's ``s`` rows, the sum channels'
weights (C, Q) their channel rows, and each max channel is a reduction over its queries
(:func:`analyze.scorers.masks.max_channel`). A result is defined by one BLAS product per T and
matrix (:class:`CropProducts`), so that ``s_T`` has the same bits whichever other temperatures
and channels were asked for.

One product of all the matrices stacked (``(n_T * (K + C), Q) @ (Q, R * crop)``) takes about
half the time of the separate products on OpenBLAS (a 19-row product uses its kernels poorly),
but a BLAS is not bound to round a row the same whatever rows surround it: OpenBLAS does round
a column by where it falls among the columns. :func:`stacking_exact` therefore checks, once per
process for each shape and BLAS thread count, that this BLAS gives every row block of a stacked
product exactly the bits of that block's own product, on random inputs of the same shapes and
layout (a GEMM's order of operations depends on the shapes, the layout and the threads, never on
the values); the stacked product is used only where it does. ``tests/test_products.py`` holds
both to the separate products bit for bit.
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch

from analyze.compose.buffers import leased
from analyze.scorers.masks import QueryChannel, max_channel, peaks

_checked: dict[tuple, bool] = {}
_lock = threading.Lock()
_blas = None


def blas_threads() -> int:
    """The number of threads numpy's BLAS runs on now (threadpoolctl; 1 where it has none)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return max((c.get_num_threads() for c in _blas.lib_controllers), default=1)


def checked_once(key: tuple, check) -> bool:
    """``check()``'s answer for ``key``, computed once per process (threads may ask at once)."""
    with _lock:
        known = _checked.get(key)
    if known is None:
        known = bool(check())
        with _lock:
            _checked[key] = known
    return known


def stacking_exact(rows: Sequence[int], inner: int, columns: int) -> bool:
    """Whether ``np.concatenate(parts) @ b`` gives each part's rows exactly the bits of
    ``part @ b`` here (parts of ``rows`` rows each, float32, C order, ``inner`` columns;
    ``b`` (inner, columns)), on the BLAS threads of now: checked once per shape and thread count."""
    key = (tuple(int(r) for r in rows), int(inner), int(columns), blas_threads())

    def check() -> bool:
        rng = np.random.default_rng(list(key[0]) + list(key[1:]))
        parts = [rng.random((r, inner), dtype=np.float32) for r in key[0]]
        b = rng.random((inner, columns), dtype=np.float32)
        stacked = np.concatenate(parts) @ b
        starts = np.cumsum([0, *key[0]])
        return all(np.array_equal(stacked[s : s + p.shape[0]], p @ b) for s, p in zip(starts, parts))

    return checked_once(key, check)


def multiply(parts: Sequence, stacked: np.ndarray | None, flat, out: np.ndarray | None = None) -> list:
    """Each matrix of ``parts`` times ``flat`` (Q, N): in one product of ``stacked`` (the parts
    stacked; None: never) where that gives each part's bits (:func:`stacking_exact`). ``out``
    (the parts' rows, N) float32 C-order: the products' memory (numpy arrays; the BLAS writes
    there what it would return: the same bits), else new arrays."""
    starts = np.cumsum([0] + [p.shape[0] for p in parts])
    if stacked is not None and stacking_exact([p.shape[0] for p in parts], flat.shape[0], flat.shape[1]):
        whole = stacked @ flat if out is None else np.matmul(stacked, flat, out=out)
        return [whole[s:e] for s, e in zip(starts[:-1], starts[1:])]
    if out is None:
        return [p @ flat for p in parts]
    return [np.matmul(p, flat, out=out[s:e]) for p, s, e in zip(parts, starts[:-1], starts[1:])]


def _put(target: torch.Tensor, x: torch.Tensor, held: int | None) -> None:
    """Add ``x`` to ``target`` (views of the same shape, columns last): where ``held`` says the
    leading columns that hold sums (None: all of them); the other columns take ``x + 0`` (what
    adding to a zeroed target gives, -0.0 made +0.0) without being read."""
    if held is None:
        target += x
        return
    if held:
        target[..., :held] += x[..., :held]
    torch.add(x[..., held:], 0.0, out=target[..., held:])


def blocks_exact(rows: Sequence[int], inner: int, columns: int, block: int, stack: bool) -> bool:
    """Whether :func:`multiply` over each ``block``-column block of a ``columns``-column operand (at
    multiples of ``block``; the last may be shorter) gives every column the bits of
    :func:`multiply` over the whole operand: a pass may then compose finer tiles than the one
    that defines the maps (checked once per shape and BLAS thread count, as :func:`stacking_exact`)."""
    key = ("blocks", tuple(int(r) for r in rows), int(inner), int(columns), int(block), bool(stack), blas_threads())

    def check() -> bool:
        rng = np.random.default_rng([len(rows), inner, columns, block])
        parts = [rng.random((r, inner), dtype=np.float32) for r in rows]
        stacked = np.concatenate(parts) if stack and len(parts) > 1 else None
        b = rng.random((inner, columns), dtype=np.float32)
        whole = multiply(parts, stacked, b)
        return all(np.array_equal(w[:, start : start + block], x)
                   for start in range(0, columns, block)
                   for w, x in zip(whole, multiply(parts, stacked, np.ascontiguousarray(b[:, start : start + block]))))

    return checked_once(key, check)


class CropProducts:
    """One crop's matrices at each T (from the softmax over the K + 1 classes of its class logits
    at that T, no-object last): the class probabilities (K, Q), the sum channels' weights (C, Q)
    and the max channels' queries; :meth:`add` adds their products with a tile to each T's target.

    ``numpy``: multiply with numpy's BLAS (the CPU's fast path, where stacking may apply);
    else with torch on ``device``. ``stack=False``: never stack (the definition, for tests)."""

    def __init__(self, full_probs: Sequence[np.ndarray], num_classes: int, sums: Sequence[QueryChannel],
                 maxes: Sequence[QueryChannel], numpy: bool, device: torch.device | str = "cpu",
                 stack: bool = True) -> None:
        k = num_classes
        probs = [np.ascontiguousarray(p[:, :k].T) for p in full_probs]  # (K, Q) per T
        weights = [np.stack([c.weights(p) for c in sums]) for p in full_probs] if sums else None  # (C, Q) per T
        self.num_classes, self.n_sum = k, len(sums)
        self.peaks = [peaks([c.weights(p) for c in maxes]) for p in full_probs]  # per T: (queries, weights, same as)
        self.numpy = numpy
        parts = [m for i in range(len(probs)) for m in ([probs[i]] + ([weights[i]] if weights else []))]
        self.parts = parts if numpy else [torch.from_numpy(m).to(device) for m in parts]
        self.stacked = np.concatenate(parts) if stack and numpy and len(parts) > 1 else None

    def _products(self, flat, out: np.ndarray | None = None) -> list:
        return multiply(self.parts, self.stacked, flat, out)

    def memory(self, n: int) -> tuple[int, int]:
        """The shape of :meth:`class_products`'s ``out`` for tiles of ``n`` pixels (every matrix's rows)."""
        return sum(int(p.shape[0]) for p in self.parts), n

    def finer_rows_exact(self, tile_rows: int, crop: int, finer: int, crop_rows: int) -> bool:
        """Whether tiles of ``finer`` rows give every pixel the bits of tiles of ``tile_rows`` rows
        (of a crop of ``crop_rows`` x ``crop``), on these matrices' shapes: see :func:`blocks_exact`."""
        heights = {min(tile_rows, crop_rows)} | ({crop_rows % tile_rows} - {0})
        rows = tuple(p.shape[0] for p in self.parts)
        q = self.parts[0].shape[1]
        return (self.numpy and tile_rows % finer == 0
                and all(blocks_exact(rows, q, h * crop, finer * crop, self.stacked is not None) for h in heights))

    def class_products(self, tile: torch.Tensor, out: np.ndarray | None = None) -> list[np.ndarray]:
        """Each T's class rows times the tile (Q, R, crop): (K, R * crop) per T, the bits :meth:`add`
        adds; ``out``: their memory (:meth:`memory`), valid until it is used again."""
        if not self.numpy:
            raise ValueError("class_products multiplies with numpy's BLAS (numpy=True)")
        products = self._products(tile.reshape(tile.shape[0], -1).numpy(), out)
        return products[:: 2 if self.n_sum else 1]

    def add(self, tile: torch.Tensor, targets: Sequence[torch.Tensor], held: int | None = None) -> None:
        """Add one sigmoid tile (Q, R, crop) times each T's matrices to that T's target view (K + C, R, crop).
        ``held``: only the target's first ``held`` columns hold sums, the others are written
        (:func:`_put`; None: every column is added to)."""
        q = tile.shape[0]
        if not self.numpy:
            self._add_all(tile, iter(self._products(tile.reshape(q, -1))), targets, held)
            return
        with leased("class products", self.memory(tile[0].numel()), torch.float32) as out:
            self._add_all(tile, iter(self._products(tile.reshape(q, -1).numpy(), out.numpy())), targets, held)

    def _add_all(self, tile: torch.Tensor, products, targets: Sequence[torch.Tensor], held: int | None) -> None:
        k, n_sum, r = self.num_classes, self.n_sum, tile.shape[1]
        for i, target in enumerate(targets):
            _put(target[:k], torch.as_tensor(next(products)).view(k, r, -1), held)
            if n_sum:
                _put(target[k : k + n_sum], torch.as_tensor(next(products)).view(n_sum, r, -1), held)
            done: list[torch.Tensor | None] = []
            for c, (idx, w, same) in enumerate(self.peaks[i]):
                peak = done[same] if same is not None else max_channel(tile, idx, w)  # (R, crop) or None
                done.append(peak)
                if peak is not None:
                    _put(target[k + n_sum + c], peak, held)
                elif held is not None:  # nothing added: the sums start from zero
                    target[k + n_sum + c][..., held:].zero_()
