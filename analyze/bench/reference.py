"""The library-kernel reference of the study benchmark (:mod:`analyze.bench.study`).

One frame's composition and scorers at every temperature written with plain library kernels,
one thread, in row tiles, and nothing else: no cache reading, no metrics. It computes what
``analyze score`` computes for the frame (the same maps, checked against
:func:`analyze.compose.frame_scores.iter_frame_scores` by :func:`max_difference`):

* EoMT (``query``): per crop and row tile, torch bilinear upsampling of the mask logits (a
  slab of input rows with one row of margin, so the tile's rows equal the whole upsampling's)
  and their sigmoid; per temperature the class-score product ``softmax(c / T)[:, :K]^T @
  sigmoid(m)`` with numpy's GEMM (float32, as the tool); the scorers on it. The frames of the
  benchmark are 1024x2048 with two 1024 crops side by side, so the crops' overlap count and
  the resize to the original size are identities and are left out.
* ERFNet (``pixel``): the bilinear resize of the logits (void channel dropped) to the label
  size in row tiles; the scorers on ``z / T`` per temperature.

The scorers: ``max`` and ``argmax`` over classes (the semantic map), ``exp(x - max)``, its
class sum, ``log1p``, ``sum e (x - max)`` (MSP, MaxLogit, Energy, MaxEntropy) and, for EoMT,
``-sum tanh(x)`` (RbA): the exp and tanh over K values per pixel and temperature that dominate.
``dtype`` is the scorers' type: float32 (the reference the issue describes) or float64 (what
the tool's scorers compute in, :mod:`analyze.scorers`); composition and products stay float32
in both, as in the tool.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

TILE_ROWS = 32


def study_scorers(kind: str) -> list[str]:
    """The study's five scorers (:data:`analyze.scorers.registry.STUDY_SCORERS`, what ``--scorers all``
    meant when the study benchmark's bound was set) defined for caches of ``kind`` (RbA: mask
    models only): the scorers this reference computes. The later scorers' cost is the scorer
    benchmark's rule (:mod:`analyze.bench.scorers`)."""
    from analyze.scorers.registry import STUDY_SCORERS, get_scorer

    return [n for n in STUDY_SCORERS if get_scorer(n).supports(kind)]


def _upsampled_rows(x: torch.Tensor, scale: int, r0: int, r1: int) -> torch.Tensor:
    """Rows ``r0:r1`` of ``F.interpolate(x[None], scale_factor=scale, mode="bilinear")[0]`` (x: (C, h, w))."""
    a, b = r0 // scale, -(-r1 // scale)
    lo, hi = max(0, a - 1), min(x.shape[1], b + 1)
    up = F.interpolate(x[None, :, lo:hi], scale_factor=scale, mode="bilinear", align_corners=False)[0]
    return up[:, r0 - lo * scale : r1 - lo * scale]


CHUNK_ELEMENTS = 1 << 18  # the scorers run on (K, pixels) chunks of about this many values: in cache


def _scorers(x: torch.Tensor, dtype: torch.dtype, temperature: float, rba: bool) -> dict[str, torch.Tensor]:
    """The five scorers (four without ``rba``) and the semantic map of ``x / T`` (x: (K, P)), in
    ``dtype``, chunk by chunk of pixels."""
    names = ["semantic", "msp", "maxlogit", "energy", "maxentropy"] + (["rba"] if rba else [])
    out = {n: torch.empty(x.shape[1], dtype=torch.int64 if n == "semantic" else dtype) for n in names}
    step = max(1, CHUNK_ELEMENTS // x.shape[0])
    for p0 in range(0, x.shape[1], step):
        c = x[:, p0 : p0 + step].to(dtype)
        if temperature != 1.0:
            c = c / temperature
        top, arg = c.max(0)
        d = c - top
        e = torch.exp(d)
        r = e.sum(0) - 1.0  # the maximal class's exp(0) left out
        log_z = torch.log1p(r)
        part = {"semantic": arg, "msp": r / (1 + r), "maxlogit": -top, "energy": -temperature * (top + log_z),
                "maxentropy": log_z - (e * d).sum(0) / (1 + r)}
        if rba:
            part["rba"] = -torch.tanh(c).sum(0)
        for n in names:
            out[n][p0 : p0 + step] = part[n]
    return out


def eomt_frame(mask_logits: np.ndarray, class_logits: np.ndarray, temperatures: Sequence[float], crop: int,
               dtype=torch.float64, keep_rows: int = 0) -> tuple[dict[str, float], dict]:
    """Seconds per part (``upsample + sigmoid``, ``class-score product``, ``scorers``) for one frame;
    with ``keep_rows``, the maps of the first ``keep_rows`` rows of each crop (for the check)."""
    clock = {"upsample + sigmoid": 0.0, "class-score product": 0.0, "scorers": 0.0}
    kept: dict = {}
    n_crops, q, m, _ = mask_logits.shape
    k = class_logits.shape[-1] - 1
    for c in range(n_crops):
        masks = torch.from_numpy(mask_logits[c]).to(torch.float32)
        probs = {t: np.ascontiguousarray(torch.softmax(torch.from_numpy(class_logits[c]) / t, -1)[:, :k].T.numpy())
                 for t in temperatures}  # (K, Q)
        for r0 in range(0, crop, TILE_ROWS):
            r1 = min(crop, r0 + TILE_ROWS)
            t0 = time.perf_counter()
            sig = torch.sigmoid(_upsampled_rows(masks, crop // m, r0, r1)).numpy().reshape(q, -1)  # (Q, R * crop)
            t1 = time.perf_counter()
            clock["upsample + sigmoid"] += t1 - t0
            for t in temperatures:
                t1 = time.perf_counter()
                s = probs[t] @ sig  # (K, R * crop) float32 GEMM
                t2 = time.perf_counter()
                maps = _scorers(torch.from_numpy(s), dtype, 1.0, rba=True)  # T is in the class softmax
                t3 = time.perf_counter()
                clock["class-score product"] += t2 - t1
                clock["scorers"] += t3 - t2
                if r0 < keep_rows:
                    kept[(c, t, r0)] = {n: v.reshape(r1 - r0, crop) for n, v in maps.items()}
    return clock, kept


def erfnet_frame(logits: np.ndarray, void_channel: int, out_size: tuple[int, int], temperatures: Sequence[float],
                 dtype=torch.float64, keep_rows: int = 0) -> tuple[dict[str, float], dict]:
    """Seconds per part (``resize``, ``scorers``) for one frame; with ``keep_rows``, the first rows' maps."""
    clock = {"resize": 0.0, "scorers": 0.0}
    kept: dict = {}
    keep = [i for i in range(logits.shape[0]) if i != void_channel]
    z = torch.from_numpy(logits[keep]).to(torch.float32)
    scale = out_size[0] // z.shape[1]
    for r0 in range(0, out_size[0], TILE_ROWS):
        r1 = min(out_size[0], r0 + TILE_ROWS)
        t0 = time.perf_counter()
        tile = _upsampled_rows(z, scale, r0, r1).reshape(len(keep), -1)
        t1 = time.perf_counter()
        clock["resize"] += t1 - t0
        for t in temperatures:
            t1 = time.perf_counter()
            maps = _scorers(tile, dtype, t, rba=False)
            clock["scorers"] += time.perf_counter() - t1
            if r0 < keep_rows:
                kept[(0, t, r0)] = {n: v.reshape(r1 - r0, out_size[1]) for n, v in maps.items()}
    return clock, kept


def max_difference(kept: dict, tool_maps: dict, crop: int | None) -> float:
    """The largest |reference - tool| / (1 + |tool|) of the anomaly maps over the kept rows
    (``tool_maps``: (scorer, T) -> (H, W) map from :func:`analyze.compose.frame_scores.score_frame`)."""
    worst = 0.0
    for (c, t, r0), maps in kept.items():
        cols = slice(c * crop, (c + 1) * crop) if crop else slice(None)
        for name, ref in maps.items():
            if name == "semantic":
                continue
            tool = np.asarray(tool_maps[(name, t)])[r0 : r0 + ref.shape[0], cols]
            ref = ref.to(torch.float64).numpy()
            worst = max(worst, float(np.max(np.abs(ref - tool) / (1 + np.abs(tool)))))
    return worst
