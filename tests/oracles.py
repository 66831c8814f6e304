"""Slow, obviously correct references that fast production code is tested against.

The EoMT composition untiled, one whole crop at a time, as the official semantic inference
writes it (``tue-mps/eomt``, ``training/lightning_module.py``: ``to_per_pixel_logits_semantic``,
``revert_window_logits_semantic``): every crop's masks upsampled at once, one einsum per crop,
the crops summed into the resized frame and divided by the per-pixel count, one resize to the
original size. :class:`analyze.compose.queries.FrameComposer` (tiled, all temperatures at once, and
evaluated at sampled pixels by its ``pixel_weights``) and the model's own
:func:`extract.models.eomt.semantic_map` are both held to it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from schemas.windows import FrameWindows


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W), torch bilinear, ``align_corners=False`` (identity when the size is kept)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def upsampled_mask_probs(mask_logits, crop: int) -> torch.Tensor:
    """``sigmoid(bilinear(m, (crop, crop)))`` of one crop's mask logits (Q, h, w) -> (Q, crop, crop), float32."""
    m = torch.as_tensor(np.asarray(mask_logits, np.float32))
    return torch.sigmoid(_bilinear(m, (crop, crop)))


def merge_crops(crop_scores: Sequence[torch.Tensor], geom: FrameWindows) -> torch.Tensor:
    """Per-crop maps (K, crop, crop) -> (K, Hr, Wr): summed in order where each window lies, divided
    by the number of windows covering each pixel."""
    assert len(crop_scores) == geom.n_crops
    k = crop_scores[0].shape[0]
    sums = torch.zeros((k, *geom.resized), dtype=torch.float32)
    counts = torch.zeros(geom.resized, dtype=torch.float32)
    for cs, win in zip(crop_scores, geom.windows, strict=True):
        where = np.s_[win.start : win.end, :] if geom.portrait else np.s_[:, win.start : win.end]
        sums[(slice(None), *where)] += cs
        counts[where] += 1
    assert bool((counts > 0).all())
    return sums / counts


def compose_frame(mask_logits, class_logits, geom: FrameWindows, temperature: float = 1.0,
                  out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-pixel class scores ``s`` (K, H, W) of one frame, untiled: mask logits (n_crops, Q, h, w),
    class logits (n_crops, Q, K+1); ``temperature`` divides the class logits (target 'query');
    ``out_size`` defaults to ``geom.original``."""
    crop_scores = []
    for m, c in zip(mask_logits, class_logits, strict=True):
        probs = torch.softmax(torch.as_tensor(np.asarray(c, np.float32)) / temperature, dim=-1)[:, :-1]  # (Q, K)
        crop_scores.append(torch.einsum("qhw,qk->khw", upsampled_mask_probs(m, geom.crop), probs))
    return _bilinear(merge_crops(crop_scores, geom), out_size or geom.original)


def dense_frame_components(pred_mask, gt_mask, roi_mask, rules):
    """``analyze.metrics.components.frame_components`` as it was before its sparse form: every step on the
    whole frame (labelling, size rules, per-pixel component ids over the region of interest)."""
    from scipy import ndimage

    from analyze.metrics.components import FrameComponents, get_track

    rules = get_track(rules)
    s = np.ones((3, 3), bool)
    p_lab, n_p = ndimage.label(pred_mask & roi_mask, structure=s)
    g_lab, n_g = ndimage.label(gt_mask, structure=s)
    drop_p = np.bincount(p_lab.ravel(), minlength=n_p + 1) < rules.min_pred_size
    drop_p[0] = True
    small_g = np.bincount(g_lab.ravel(), minlength=n_g + 1) < rules.min_gt_size
    small_g[0] = False
    roi = roi_mask & ~small_g[g_lab]
    g = g_lab[roi].astype(np.int64)
    p = p_lab[roi].astype(np.int64)
    p[drop_p[p]] = 0
    g_size = np.bincount(g, minlength=n_g + 1)
    p_size = np.bincount(p, minlength=n_p + 1)
    both = (g > 0) & (p > 0)
    keys, overlap = np.unique(g[both] * (n_p + 1) + p[both], return_counts=True)
    pair_g, pair_p = np.divmod(keys, n_p + 1)
    g_hit = np.zeros(n_g + 1, np.int64)
    p_hit = np.zeros(n_p + 1, np.int64)
    np.add.at(g_hit, pair_g, overlap)
    np.add.at(p_hit, pair_p, overlap)
    g_union = g_size.copy()
    p_union = p_size.copy()
    np.add.at(g_union, pair_g, (p_size - p_hit)[pair_p])
    np.add.at(p_union, pair_p, (g_size - g_hit)[pair_g])
    gi = np.flatnonzero(g_size[1:]) + 1
    pj = np.flatnonzero(p_size[1:]) + 1
    return FrameComponents(g_hit[gi] / g_union[gi], p_hit[pj] / p_size[pj], p_hit[pj] / p_union[pj])
