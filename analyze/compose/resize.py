"""Bilinear resizing (``align_corners=False``, torch's semantics) of float32 maps, on any device:
ERFNet's logits to label resolution (:func:`pixel_logits_to_label_size`, and at sampled pixels
:func:`pixel_logits_at`), EoMT's class scores to the original size (:func:`resize_scores`),
the 1-D taps that :class:`analyze.compose.queries.FrameComposer` upsamples masks with
(:func:`linear_taps`), and the semantic map (:func:`semantic_prediction`). A tensor stays on
its device; semantic maps come back as uint8 numpy arrays on the CPU.
"""

from __future__ import annotations

from typing import Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F

from analyze.compose.buffers import leased
from analyze.scorers.pixel import first_argmax, row_tiles

ArrayLike = Union[np.ndarray, torch.Tensor]

def f32(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(x).to(dtype=torch.float32)


def bilinear(x: torch.Tensor, size: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """(C, h, w) -> (C, H, W), bilinear, ``align_corners=False`` (``F.interpolate``'s kernel; ``out``:
    written into that (C, H, W) tensor instead of a new one)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x  # the kernel's weights are exactly (1, 0) here: identity
    if out is None:
        return F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    # interpolate's own call, given a size (no scale factors), with an output (tests/test_resize_buffers.py)
    return torch._C._nn.upsample_bilinear2d(x[None], [int(v) for v in size], False, None, None, out=out[None])[0]


def resize_scores(s: ArrayLike, out_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of a (K, h, w) map to ``out_size``."""
    return bilinear(f32(s), out_size)


def linear_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of 1-D linear resizing, ``align_corners=False``.

    Same arithmetic as torch's CPU kernel: ``src = max(scale * (dst + 0.5) - 0.5, 0)`` with the
    float32 ``scale = n_in / n_out`` and one rounding (the kernel uses a fused multiply-add;
    the float64 product of a float32 and a half-integer is exact).
    """
    scale = float(np.float32(n_in / n_out))
    src = (scale * (torch.arange(n_out, dtype=torch.float64) + 0.5) - 0.5).to(torch.float32).clamp(min=0)
    i0 = src.floor().to(torch.int64).clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = (src - i0).clamp(0, 1)
    return i0, i1, 1 - w1, w1


def _class_channels(z: torch.Tensor, void_channel: int | None) -> list[int]:
    """The channels of ERFNet logits ``z`` (C, h, w) that are classes: all but ``void_channel``."""
    if z.ndim != 3:
        raise ValueError(f"pixel logits must be (C, h, w), got shape {tuple(z.shape)}")
    c = z.shape[0]
    if void_channel is not None and not 0 <= void_channel < c:
        raise ValueError(f"void_channel {void_channel} out of range for {c} channels")
    return [i for i in range(c) if i != void_channel]


def _classes(logits: ArrayLike, void_channel: int | None) -> torch.Tensor:
    """ERFNet logits (C, h, w) without the void channel (any dtype, on their device)."""
    z = torch.as_tensor(logits)
    keep = _class_channels(z, void_channel)
    return z if len(keep) == z.shape[0] else z[keep]


def pixel_logits_to_label_size(
    logits: ArrayLike, out_size: tuple[int, int], void_channel: int | None
) -> torch.Tensor:
    """ERFNet logits (C, h, w) -> (C - 1, H, W) float32 at ``out_size``, void channel dropped.

    ``void_channel=None`` keeps all C channels. Dropping before the bilinear resize gives the
    same numbers as after it (the resize acts per channel) and saves work.
    """
    return bilinear(_classes(logits, void_channel).to(torch.float32), out_size)  # (K, H, W)


def label_size_tiles(logits: ArrayLike, out_size: tuple[int, int], void_channel: int | None,
                     tile_rows: int = 16) -> Iterator[tuple[slice, torch.Tensor]]:
    """:func:`pixel_logits_to_label_size` in row tiles ``(rows, (K, R, W) float32)`` for ERFNet's
    fused pass (:func:`analyze.compose.frame_scores.iter_frame_scores`): the full resize, sliced.

    The one resize ``score``, ``fit``, ``maps`` and ``export`` share. Resizing each tile's few
    source rows with torch's kernel instead gave the full resize's bits only at some shapes
    (torch's vectorised loops round by the input's size: 28 of 1,080 small shapes differed in the
    last bit, at height factors 2 and 4 too), and the full-size logits cost about 160 MB at
    1024x2048, well within a frame task's memory: this thread's buffers, reused from frame to
    frame (:func:`analyze.compose.buffers.leased`), valid until the generator is done.
    """
    z = torch.as_tensor(logits)
    keep = _class_channels(z, void_channel)
    size = (int(out_size[0]), int(out_size[1]))
    with leased("logits", (len(keep), *z.shape[1:]), torch.float32, z.device) as src, \
            leased("resized", (len(keep), *size), torch.float32, z.device) as out:
        for i, c in enumerate(keep):  # the class channels as float32, into this thread's buffer
            src[i].copy_(z[c])
        full = bilinear(src, size, out=out)
        for r0 in range(0, size[0], tile_rows):
            yield slice(r0, min(r0 + tile_rows, size[0])), full[:, r0 : r0 + tile_rows]


def pixel_logits_at(logits: ArrayLike, out_size: tuple[int, int], void_channel: int | None,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, K) float64: :func:`pixel_logits_to_label_size` at the pixels (rows, cols) only (the same
    taps, :func:`_linear_taps`, in float32: equal to rounding), void channel dropped."""
    z = np.asarray(logits)  # (C, h, w)
    keep = [c for c in range(z.shape[0]) if c != void_channel]
    (h, w), (h_out, w_out) = z.shape[1:], out_size
    y0, y1, ay0, ay1 = (t.numpy()[rows] for t in linear_taps(h, h_out))
    x0, x1, ax0, ax1 = (t.numpy()[cols] for t in linear_taps(w, w_out))

    def at(y, x):
        return z[:, y, x][keep].astype(np.float32)  # (K, n)

    top = at(y0, x0) * ax0 + at(y0, x1) * ax1  # the width pass on both source rows
    bot = at(y1, x0) * ax0 + at(y1, x1) * ax1
    return (top * ay0 + bot * ay1).T.astype(np.float64)  # then the height pass


def semantic_prediction(x: ArrayLike) -> np.ndarray:
    """Argmax over classes of ``s`` or logits (K, H, W) -> (H, W) uint8 (first maximum on ties)."""
    t = torch.as_tensor(x)
    if t.shape[0] > 255:
        raise ValueError(f"{t.shape[0]} classes do not fit uint8 with 255 reserved for void")
    out = torch.empty(t.shape[1:], dtype=torch.uint8, device=t.device)
    for rows in row_tiles(t.shape):  # in cache-sized tiles; first_argmax == max(0).indices
        out[rows] = first_argmax(t[:, rows])
    return out.cpu().numpy()
