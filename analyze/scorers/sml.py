"""SML's post-processing: boundary suppression and dilated smoothing of a whole score map.

Follows ``shjung13/Standardized-max-logits``, ``network/deepv3.py``:
``BoundarySuppressionWithSmoothing.forward`` with the defaults of ``eval.py`` (boundary width
4, 4 iterations, 7x7 Gaussian of sigma 1 with dilation 6), ``find_boundaries`` and
``expand_boundaries``:

1. boundaries of the prediction ``c`` (the first maximal class): pixels where the dilation of
   ``c`` by the 3x3 cross differs from its erosion by the 3x3 square, with kornia's
   ``dilation`` and ``erosion`` at the image border as chosen by ``border``:

   - ``"pinned"`` (the default): kornia at commit ``af948c5``, the one SML's
     ``requirements.txt`` pins (``kornia/morphology/basic_operators.py``): ``dilation``
     pads with 0 (``conv2d(..., padding=...)``) and ``erosion`` with 1.0
     (``F.pad(..., value=1.)``). Class ids are >= 0, so the dilation is unchanged by its
     padding, but the erosion of an image-border pixel is at most 1: every border pixel
     whose predicted class id is >= 2 is a boundary;
   - ``"geodesic"``: later kornia's default ``border_type="geodesic"``: only pixels inside
     the image count (``sml:border=geodesic``; it differs from ``"pinned"`` only on border
     pixels of class >= 2). The expansion below dilates a 0/1 map, the same under either border;

2. iteration ``i`` of ``n``: the boundaries dilated by the L1 ball of radius
   ``width - (width // n) * i - 1`` (radius 0 in the last iteration) are the pixels updated;
   each gets the mean of the 3x3 neighbourhood's non-boundary values (the neighbourhood taken
   on the map padded by replication, as ``ReplicationPad2d(1)``), or keeps its value when the
   neighbourhood has no non-boundary pixel;
3. a 7x7 Gaussian (sigma 1, normalised to sum 1) with dilation 6 on the map padded by
   replication by 18 pixels.

The steps are linear in the map, so smoothing the anomaly score (the official code smooths
the in-distribution score, its negative) gives exactly the negative. Differences: float64
instead of float32 on the GPU; the 7x7 Gaussian applied as two 7-tap passes (the kernel is
the outer product of a normalised 1-D Gaussian with itself: equal up to rounding).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from analyze.scorers import kernels as K

def _shift_reduce(x: torch.Tensor, offsets, fill, reduce) -> torch.Tensor:
    """``reduce`` over ``x`` (H, W) shifted by each (dy, dx) of ``offsets`` (|dy|, |dx| <= 1),
    pixels outside the image counting as ``fill``."""
    h, w = x.shape
    padded = F.pad(x[None, None], (1, 1, 1, 1), value=fill)[0, 0]
    out = None
    for dy, dx in offsets:
        view = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        out = view.clone() if out is None else reduce(out, view, out=out)
    if out is None:
        raise ValueError("_shift_reduce needs at least one offset")
    return out


_CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
_ROW = ((0, -1), (0, 0), (0, 1))
_COL = ((-1, 0), (0, 0), (1, 0))


BORDERS = ("pinned", "geodesic")
"""``sml:border`` values: kornia af948c5 as SML pins it (constant padding), later kornia (geodesic)."""
#: (dilation fill, erosion fill) outside the image: kornia af948c5 pads with 0 and 1.0; the
#: geodesic border lets no outside pixel win (class ids lie in [0, 255])
_FILLS = {"pinned": (0, 1), "geodesic": (-1, 1 << 14)}


def find_boundaries(prediction: torch.Tensor, border: str = "pinned") -> torch.Tensor:
    """(H, W) bool: dilation of ``prediction`` by the 3x3 cross != its erosion by the 3x3 square,
    pixels outside the image counting as ``border`` says (module docstring, step 1; the
    square's erosion taken as rows then columns)."""
    if border not in _FILLS:
        raise ValueError(f"SML border must be one of {', '.join(BORDERS)}; got {border!r}")
    dil_fill, ero_fill = _FILLS[border]
    c = prediction.to(torch.int16)
    dil = _shift_reduce(c, _CROSS, dil_fill, torch.maximum)
    ero = _shift_reduce(_shift_reduce(c, _ROW, ero_fill, torch.minimum), _COL, ero_fill, torch.minimum)
    return dil != ero


def expand_boundaries(boundaries: torch.Tensor, radius: int) -> torch.Tensor:
    """``boundaries`` dilated by the L1 ball of ``radius`` (the official diamond kernels, built by
    dilating a point ``radius`` times with the cross): ``radius`` cross dilations."""
    out = boundaries.to(torch.uint8)
    for _ in range(radius):
        out = _shift_reduce(out, _CROSS, 0, torch.maximum)
    return out.bool()


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 neighbourhood of ``x`` padded by replication (``ReplicationPad2d(1)`` + 3x3 ones)."""
    h, w = x.shape
    p = F.pad(x[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    rows = p[:, 0:w] + p[:, 1 : w + 1]
    rows += p[:, 2 : w + 2]  # (H + 2, W)
    out = rows[0:h] + rows[1 : h + 1]
    return out.add_(rows[2 : h + 2])


def gaussian_taps(sigma: float = 1.0, size: int = 7) -> list[float]:
    """The 1-D factor of the official 7x7 kernel ``exp(-((x-3)^2 + (y-3)^2) / (2 sigma^2))``, normalised."""
    g = [math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)]
    return [v / math.fsum(g) for v in g]


def dilated_smoothing(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """The 7x7 Gaussian with ``dilation`` on ``x`` padded by replication by ``3 * dilation``."""
    h, w = x.shape
    pad = 3 * dilation
    p = F.pad(x[None, None], (pad, pad, pad, pad), mode="replicate")[0, 0]
    g = gaussian_taps()
    cols = p[:, 0:w] * g[0]  # (H + 2 pad, W)
    for i in range(1, 7):
        cols.add_(p[:, i * dilation : i * dilation + w], alpha=g[i])
    out = cols[0:h] * g[0]
    for i in range(1, 7):
        out.add_(cols[i * dilation : i * dilation + h], alpha=g[i])
    return out


def reach(width: int = 4, iterations: int = 4, dilation: int = 6) -> int:
    """How far (in rows or columns) :func:`suppress_and_smooth` reads: a pixel's smoothed score
    depends on the score and the prediction within this distance only (the image border
    aside, where both pad). The Gaussian reads ``3 * dilation`` away; each suppression
    iteration one more (its 3x3 mean, over the boundary mask there); the boundary mask of
    radius ``rho`` reads the boundaries ``rho`` away, and a boundary the prediction one further."""
    radii = [0 if width == 0 or i == iterations - 1 else width - (width // iterations) * i - 1
             for i in range(iterations)]
    return 3 * dilation + (iterations + max(radii) + 1 if iterations else 0)


def suppress_and_smooth(score: torch.Tensor, prediction: torch.Tensor, width: int = 4, iterations: int = 4,
                        dilation: int = 6, border: str = "pinned") -> torch.Tensor:
    """SML's boundary suppression (``width``, ``iterations``, ``border``) then dilated smoothing
    (``dilation``) of an (H, W) score map, given the (H, W) prediction; see the module docstring."""
    out = score
    if iterations:
        expanded = [find_boundaries(prediction, border)]  # radius 0, 1, 2, ...: each one more cross dilation
        step = width // iterations
        for i in range(iterations):
            radius = 0 if width == 0 or i == iterations - 1 else width - step * i - 1
            while len(expanded) <= radius:
                expanded.append(_shift_reduce(expanded[-1].to(torch.uint8), _CROSS, 0, torch.maximum).bool())
            out = _suppress(out, expanded[radius])
    return dilated_smoothing(out, dilation)


def _suppress(out: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """One suppression iteration (:func:`suppress_reference`). A float64 CPU map goes through the
    compiled loop :func:`analyze.scorers.kernels.suppress_step`, which forms the means at the
    boundary pixels only (the reference forms them everywhere and keeps those): the same
    operations in the same order, so the same bits (tested)."""
    if out.device.type == "cpu" and out.dtype == torch.float64:
        new = np.empty(tuple(out.shape), np.float64)
        K.suppress_step(np.ascontiguousarray(out.numpy()), np.ascontiguousarray(boundary.numpy()), new)
        return torch.from_numpy(new)
    return suppress_reference(out, boundary)


def suppress_reference(out: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """One suppression iteration in torch (any device): ``boundary`` pixels with a non-boundary
    pixel in their 3x3 neighbourhood take the mean of those neighbours' values in ``out``; the
    others keep theirs."""
    keep = (~boundary).to(out.dtype)  # the non-boundary mask, 0 / 1
    total = _box3(out * keep)
    count = _box3(keep)
    return torch.where(boundary & (count > 0), total.div_(count), out)
