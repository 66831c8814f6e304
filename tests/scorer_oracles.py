"""Direct numpy transcriptions of the official scorer formulas (float64, no tiling, plain loops
where the official code has them), for the tests of :mod:`analyze.scorers`.

Each function names the official file it transcribes. Composition of the mask scorers' per-crop
quantities follows the official EoMT semantic inference (as ``s``; ``tests/oracles.py``):
masks upsampled per crop (torch bilinear, the official op), crops averaged where they overlap,
the result resized bilinearly (float32, as the official code) to the label size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tests.oracles import upsampled_mask_probs


def softmax(x, axis=0):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# --- scorers of x (K, H, W) ----------------------------------------------------------------

def gen(x, t=1.0, gamma=0.1, m=None):
    """XixiLiu95/GEN benchmark.py generalized_gamma_entropy, negated (higher = more anomalous):
    sort the probabilities ascending, keep the last M, sum p^g (1 - p)^g."""
    p = softmax(np.asarray(x, np.float64) / t)  # (K, H, W)
    k = p.shape[0]
    probs = np.sort(p.reshape(k, -1).T, axis=1)[:, -(m or k):]  # (N, M)
    return np.sum(probs**gamma * (1 - probs) ** gamma, axis=1).reshape(p.shape[1:])


def kl(x, t, count, mean_softmax):
    """GEN benchmark.py KL-Matching: min over classes of kl(p, d_k) = sum where(p != 0, p log(p / d_k), 0),
    over the classes with in-distribution pixels (the official mean of an empty class is NaN)."""
    p = softmax(np.asarray(x, np.float64) / t).reshape(len(count), -1).T  # (N, K)
    best = np.full(p.shape[0], np.inf)
    for c in range(len(count)):
        if count[c] == 0:
            continue
        d = np.asarray(mean_softmax[c], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p != 0, p * np.log(p / d), 0.0)
        best = np.minimum(best, terms.sum(1))
    return best.reshape(np.shape(x)[1:])


def sml_raw(x, t, mean, var):
    """Standardized-max-logits network/deepv3.py DeepV3Plus.forward (standardized_max_logit), as an
    anomaly score (eval.py takes -1 * the map): -(max - mean_c) / sqrt(var_c), c = first argmax."""
    u = np.asarray(x, np.float64) / t
    top, c = u.max(0), u.argmax(0)
    return -(top - np.asarray(mean)[c]) / np.sqrt(np.asarray(var)[c])


def effective_stats(v):
    """(mean, var) per class that SML standardises with, from one temperature of an `analyze fit`
    file: the pooled ones where a class has fewer than 2 fitted pixels or no variance (our
    documented choice: the official code would divide by NaN)."""
    count = np.asarray(v["count"])
    mean = np.array([np.nan if m is None else m for m in v["max_mean"]])
    var = np.array([np.nan if s is None else s for s in v["max_var"]])
    ok = (count >= 2) & np.isfinite(var) & (var > 0)
    return np.where(ok, mean, v["pooled"]["mean"]), np.where(ok, var, v["pooled"]["var"])


def stats_scores(x, t, v, **sml_params):
    """KL matching, SML raw and SML of x / t with the statistics v of an `analyze fit` file at this T."""
    mean, var = effective_stats(v)
    soft = [row if row is not None else [0.0] * len(v["count"]) for row in v["mean_softmax"]]
    return {"kl": kl(x, t, v["count"], soft), "sml_raw": sml_raw(x, t, mean, var),
            "sml": sml(x, t, mean, var, **sml_params)}


# --- SML's BoundarySuppressionWithSmoothing (network/deepv3.py), kornia morphology -----------
# Two kornia versions. "pinned": kornia at commit af948c5, the one SML's requirements.txt pins
# (kornia/morphology/basic_operators.py): one conv2d channel per kernel element with a one-hot
# filter where the element is >= 1 (an all-zero filter elsewhere), plus (kernel - 1); dilation
# zero-pads (conv2d padding) and takes the max, erosion pads with 1.0 (F.pad) and takes the min
# of the channels minus (kernel - 1). "geodesic": later kornia's default border_type: only the
# kernel's pixels inside the image count.

def _views(img, kernel, fill):
    """One (H, W) view of ``img`` padded by ``fill`` per element of the odd (kh, kw) ``kernel``, with the element."""
    kh, kw = kernel.shape
    cy, cx = kh // 2, kw // 2
    h, w = img.shape
    padded = np.full((h + 2 * cy, w + 2 * cx), fill, np.float64)
    padded[cy : cy + h, cx : cx + w] = img
    return [(padded[dy : dy + h, dx : dx + w], kernel[dy, dx]) for dy in range(kh) for dx in range(kw)]


def dilation_af948c5(img, kernel):
    """kornia af948c5 ``dilation``: max over elements of (zero-padded view if the element is >= 1, else 0) + element - 1."""
    return np.max([v * (k >= 1) + (k - 1.0) for v, k in _views(img, kernel, 0.0)], axis=0)


def erosion_af948c5(img, kernel):
    """kornia af948c5 ``erosion``: min over elements of (view padded by 1.0 if the element is >= 1, else 0) - (element - 1)."""
    return np.min([v * (k >= 1) - (k - 1.0) for v, k in _views(img, kernel, 1.0)], axis=0)


def dilation_geodesic(img, kernel):
    """Later kornia ``dilation`` (border_type 'geodesic', flat kernel): max over the kernel's pixels inside the image."""
    return np.max([v for v, k in _views(img, kernel, -np.inf) if k], axis=0)


def erosion_geodesic(img, kernel):
    """Later kornia ``erosion`` (border_type 'geodesic', flat kernel): min over the kernel's pixels inside the image."""
    return np.min([v for v, k in _views(img, kernel, np.inf) if k], axis=0)


MORPHOLOGY = {"pinned": (dilation_af948c5, erosion_af948c5), "geodesic": (dilation_geodesic, erosion_geodesic)}
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])  # ndi.generate_binary_structure(2, 1)
SQUARE = np.ones((3, 3))


def find_boundaries(prediction, border="pinned"):
    """deepv3.py find_boundaries: dilation(label, cross) != erosion(label, square), kornia as ``border`` says."""
    dilate, erode = MORPHOLOGY[border]
    pred = np.asarray(prediction, np.float64)
    return dilate(pred, CROSS) != erode(pred, SQUARE)


def diamond(r, border="pinned"):
    """The official d_ks[r]: a point at the centre of a (2r+1)^2 kernel dilated r times by the cross."""
    v = np.zeros((2 * r + 1, 2 * r + 1))
    v[r, r] = 1
    for _ in range(r):
        v = MORPHOLOGY[border][0](v, CROSS)
    return v


def _replicate(x, n):
    return np.pad(x, n, mode="edge")


def boundary_suppression_smoothing(score, prediction, width=4, iterations=4, dilation=6, border="pinned"):
    """BoundarySuppressionWithSmoothing.forward with boundary suppression and dilated smoothing on,
    kornia's morphology as ``border`` says: "pinned" (default) = kornia af948c5 as SML's
    requirements.txt pins it, "geodesic" = later kornia."""
    boundaries = find_boundaries(prediction, border).astype(np.float64)
    out = np.asarray(score, np.float64)
    h, w = out.shape
    diff = width // iterations if iterations else 0
    for it in range(iterations):
        prev = out
        r = 0 if width == 0 or it == iterations - 1 else width - diff * it - 1
        expanded = boundaries if r == 0 else MORPHOLOGY[border][0](boundaries, diamond(r, border))
        non_boundary = 1.0 * (expanded == 0)
        xp = _replicate(out * non_boundary, 1)
        mp = _replicate(non_boundary, 1)
        y = sum(xp[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
        n = sum(mp[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            avg = np.where(n == 0, prev, y / np.maximum(n, 1))
        out = np.where(non_boundary == 0, avg, prev)
    size, sigma = 7, 1.0
    g = np.fromfunction(lambda a, b: (1 / (2 * math.pi * sigma**2))
                        * math.e ** (-((a - (size - 1) / 2) ** 2 + (b - (size - 1) / 2) ** 2) / (2 * sigma**2)),
                        (size, size))
    g /= g.sum()
    xp = _replicate(out, dilation * 3)
    return sum(g[a, b] * xp[a * dilation : a * dilation + h, b * dilation : b * dilation + w]
               for a in range(size) for b in range(size))


def sml(x, t, mean, var, **kw):
    u = np.asarray(x, np.float64) / t
    return boundary_suppression_smoothing(sml_raw(x, t, mean, var), u.argmax(0), **kw)


# --- mask scorers: per crop, then composed like s ----------------------------------------------

def m2a_kept(p, conf=0.95, first=2, last=10):
    """Mask2Anomaly maskformer_model.py semantic_inference: scores, labels = softmax(c).max(-1);
    keep = labels != K & scores > conf & labels < 11 & labels > 1 (first=2, last=10)."""
    labels, scores = p.argmax(1), p.max(1)
    return (labels != p.shape[1] - 1) & (scores > conf) & (labels >= first) & (labels <= last)


def crop_maps(sig, p, conf=0.95, first=2, last=10):
    """One crop's quantities from sigmoid masks (Q, c, c) and softmax(c_q / T) (Q, K+1), float64:
    s (K, c, c); EAM's v; no-object; Mask2Anomaly's extra channels' max A and, when more than one
    query is kept (the official ``shape[0] > 1``), B = A, else 0."""
    k = p.shape[1] - 1
    s = np.einsum("qhw,qk->khw", sig, p[:, :k])
    v = np.einsum("qhw,q->hw", sig, p[:, :k].max(1))  # Open-set-M2F: max per query, then the sum
    noobj = np.einsum("qhw,q->hw", sig, p[:, k])
    keep = m2a_kept(p, conf, first, last)
    extras = p.max(1)[keep][:, None, None] * sig[keep]  # cur_scores * cur_masks
    a = extras.max(0) if keep.any() else np.zeros(sig.shape[1:])
    b = a if keep.sum() > 1 else np.zeros(sig.shape[1:])
    return np.concatenate([s, v[None], noobj[None], a[None], b[None]])  # (K + 4, c, c)


def compose_quantities(mask_logits, class_logits, geom, t=1.0, out_size=None, **m2a):
    """(K + 4, H, W): s, v, no-object, A, B composed like the official semantic inference."""
    maps = []
    for m, c in zip(mask_logits, class_logits, strict=True):
        sig = upsampled_mask_probs(m, geom.crop).numpy().astype(np.float64)
        maps.append(crop_maps(sig, softmax(np.asarray(c, np.float64) / t, axis=1), **m2a))
    sums = np.zeros((maps[0].shape[0], *geom.resized))
    counts = np.zeros(geom.resized)
    for cm, win in zip(maps, geom.windows, strict=True):
        where = np.s_[win.start : win.end, :] if geom.portrait else np.s_[:, win.start : win.end]
        sums[(slice(None), *where)] += cm
        counts[where] += 1
    merged = torch.from_numpy((sums / counts).astype(np.float32))
    size = tuple(out_size or geom.original)
    if tuple(merged.shape[1:]) != size:
        merged = F.interpolate(merged[None], size=size, mode="bilinear", align_corners=False)[0]
    return merged.numpy().astype(np.float64)


def mask_scores(q):
    """EAM, no-object and Mask2Anomaly from composed quantities (K + 4, H, W) (see crop_maps)."""
    s, v, noobj, a, b = q[:-4], q[-4], q[-3], q[-2], q[-1]
    m2a = 1 - np.maximum(s.max(0), a)  # anomaly_inference.py: 1 - max over every sem_seg channel
    m2a = np.where(b >= 0.5, 0.0, m2a)  # ... times the inverted binarised max of the extras
    return {"eam": 1 - v, "noobject": noobj, "m2a": m2a}
