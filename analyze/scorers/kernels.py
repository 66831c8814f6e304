"""Compiled loops of the scorers of ``x`` on one tile (numba), between numpy's SIMD transcendentals.

The scorer math of :func:`analyze.scorers.pixel.score_tile` (torch, any device: the reference)
runs on the CPU as these loops plus numpy's float64 ``exp``, ``log``, ``log1p`` and ``tanh``
(SIMD, 2-3x torch's here, and the functions the reference calls on the CPU), driven by
:class:`analyze.scorers.compiled.CompiledTile`. A tile is ``(K, P)``: K classes by P pixels,
each class's pixels contiguous. Every loop runs the reference's float64 operations in the
reference's order (sums over classes in class order, no fused multiply-add), so the two give
the same bits (tested); what the loops save are the reference's dozen full passes over
``(K, P)`` temporaries and its allocations.

``nogil`` lets frame tasks on threads run them in parallel; ``cache=True`` keeps the machine
code beside this file (compiled on the first call ever, loaded afterwards).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(nogil=True, cache=True)
def prepare(x, inv_t, divide, t, d, top, arg):
    """``t = x / T`` (float64; ``divide`` False: ``x`` as is), ``top = max_k t_k`` (NaN if any),
    ``arg`` = first maximal class (K - 1 where ``top`` is NaN), ``d = t - top``.

    ``x`` (K, P) any float; ``t``, ``d`` (K, P) float64; ``top`` (P,) float64; ``arg`` (P,) int64.
    ``inv_t`` is T itself (the reference divides, it does not multiply by 1 / T).
    """
    k, n = x.shape
    for c in range(k):
        for i in range(n):
            v = np.float64(x[c, i])
            t[c, i] = v / inv_t if divide else v
    for i in range(n):
        top[i] = t[0, i]
    for c in range(1, k):
        for i in range(n):
            v = t[c, i]
            m = top[i]
            top[i] = v if (v > m) or (v != v) else m
    for i in range(n):
        arg[i] = k - 1
    for c in range(k - 1, -1, -1):
        for i in range(n):
            if t[c, i] == top[i]:
                arg[i] = c
    for c in range(k):
        for i in range(n):
            d[c, i] = t[c, i] - top[i]


@nb.njit(nogil=True, cache=True)
def first_argmax(x, inv_t, divide, top, arg):
    """``arg`` of :func:`prepare` alone (the semantic map of a pass that scores nothing): the first
    maximal class of ``x / T`` per pixel (float64; ``divide`` False: ``x``), K - 1 where any is NaN.
    ``top`` (P,) float64 is scratch."""
    k, n = x.shape
    nan = np.zeros(n, np.bool_)
    for i in range(n):
        v = np.float64(x[0, i]) / inv_t if divide else np.float64(x[0, i])
        top[i] = v
        arg[i] = 0
        nan[i] = v != v
    for c in range(1, k):
        for i in range(n):
            v = np.float64(x[c, i]) / inv_t if divide else np.float64(x[c, i])
            up = v > top[i]
            top[i] = v if up else top[i]
            arg[i] = c if up else arg[i]
            nan[i] = nan[i] or v != v
    for i in range(n):
        if nan[i]:
            arg[i] = k - 1


def first_classes(x: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`first_argmax` of ``x`` (K, N) at ``temperature`` (1: no division), int64 (N,)."""
    arg = np.empty(x.shape[1], np.int64)
    first_argmax(np.ascontiguousarray(x), temperature, temperature != 1.0, np.empty(x.shape[1], np.float64), arg)
    return arg


@nb.njit(nogil=True, cache=True)
def others_sum(e, arg, r):
    """``e[arg] = 0`` per pixel, then ``r = sum_k e_k`` in class order (the non-maximal exps)."""
    for i in range(e.shape[1]):
        e[arg[i], i] = 0.0
    class_sum(e, r)


@nb.njit(nogil=True, cache=True)
def probabilities(e, r, arg, p):
    """``p = softmax(x / T)`` = ``e / (1 + r)``, with ``1 / (1 + r)`` at the maximal class."""
    k, n = e.shape
    inv = np.empty(n, np.float64)  # the reference's 1 / (1 + r), computed once per pixel
    for i in range(n):
        inv[i] = 1 / (1 + r[i])
    for c in range(k):
        for i in range(n):
            p[c, i] = e[c, i] * inv[i]
    for i in range(n):
        p[arg[i], i] = inv[i]


@nb.njit(nogil=True, cache=True)
def gen_terms(p, r, arg, g):
    """``g = p (1 - p)`` with ``r / (1 + r)^2`` at the maximal class (no cancellation near p = 1)."""
    k, n = p.shape
    for c in range(k):
        for i in range(n):
            g[c, i] = p[c, i] * (1 - p[c, i])
    for i in range(n):
        inv = 1 / (1 + r[i])
        g[arg[i], i] = r[i] * inv * inv


@nb.njit(nogil=True, cache=True)
def class_sum(g, out):
    """``out = sum_k g_k`` in class order."""
    k, n = g.shape
    for i in range(n):
        out[i] = g[0, i]
    for c in range(1, k):
        for i in range(n):
            out[i] += g[c, i]


@nb.njit(nogil=True, cache=True)
def top_m_sum(g, p, m, out):
    """``out = sum of g_k over the m largest p_k``, largest first (``topk`` then a sum in its
    order; equal p: lower class first)."""
    k, n = g.shape
    taken = np.zeros(k, np.bool_)
    for i in range(n):
        taken[:] = False
        acc = 0.0
        for j in range(m):
            best = -1
            for c in range(k):
                if not taken[c] and (best < 0 or p[c, i] > p[best, i]):
                    best = c
            taken[best] = True
            acc = g[best, i] if j == 0 else acc + g[best, i]
        out[i] = acc


@nb.njit(nogil=True, cache=True)
def entropy(e, d, r, log_z, out):
    """``out = log_z - sum_k e_k d_k / (1 + r)`` (= ``-sum p log p``); a product ``e_k d_k`` that
    is NaN counts as 0 and an infinite one as the largest finite float (``nan_to_num``)."""
    k, n = e.shape
    big = np.finfo(np.float64).max
    for i in range(n):
        out[i] = 0.0
    for c in range(k):
        for i in range(n):
            v = e[c, i] * d[c, i]
            if v != v:
                v = 0.0
            elif v == np.inf:
                v = big
            elif v == -np.inf:
                v = -big
            out[i] = v if c == 0 else out[i] + v
    for i in range(n):
        out[i] = log_z[i] - out[i] / (1 + r[i])


@nb.njit(nogil=True, cache=True)
def kl_matching(p, ent, log_d, d_zero, has_zero, out, dots):
    """``out = -ent - max_a sum_j log_d[a, j] p_j`` (the sum in class order, elementwise); the sum
    is -inf where ``d_zero[a, j]`` and ``p_j > 0`` (a divergence of infinity). ``dots`` (P,) scratch."""
    ka, k = log_d.shape
    n = p.shape[1]
    for a in range(ka):
        for i in range(n):
            dots[i] = log_d[a, 0] * p[0, i]
        j = 1
        while j + 3 < k:  # four classes per sweep over the pixels, each added in turn: the same order
            w0, w1, w2, w3 = log_d[a, j], log_d[a, j + 1], log_d[a, j + 2], log_d[a, j + 3]
            p0, p1, p2, p3 = p[j], p[j + 1], p[j + 2], p[j + 3]
            for i in range(n):
                dots[i] = (((dots[i] + w0 * p0[i]) + w1 * p1[i]) + w2 * p2[i]) + w3 * p3[i]
            j += 4
        while j < k:
            w = log_d[a, j]
            for i in range(n):
                dots[i] = dots[i] + w * p[j, i]
            j += 1
        if has_zero:
            for j in range(k):
                if d_zero[a, j]:
                    for i in range(n):
                        if p[j, i] > 0:
                            dots[i] = -np.inf
        for i in range(n):
            v = dots[i]
            m = out[i]
            out[i] = v if a == 0 or (v > m) or (v != v) else m
    for i in range(n):
        out[i] = -ent[i] - out[i]


@nb.njit(nogil=True, cache=True)
def negated_sum(t, out):
    """``out = -sum_k t_k`` in class order."""
    k, n = t.shape
    for i in range(n):
        out[i] = t[0, i]
    for c in range(1, k):
        for i in range(n):
            out[i] += t[c, i]
    for i in range(n):
        out[i] = -out[i]


@nb.njit(nogil=True, cache=True)
def first_scores(top, r, log_z, temperature, msp, maxlogit, energy):
    """MSP ``r / (1 + r)``, MaxLogit ``-top``, Energy ``(top + log_z) * -T`` (arrays of size 0 skip)."""
    for i in range(msp.size):
        msp[i] = r[i] / (1 + r[i])
    for i in range(maxlogit.size):
        maxlogit[i] = -top[i]
    for i in range(energy.size):
        energy[i] = (top[i] + log_z[i]) * -temperature


@nb.njit(nogil=True, cache=True)
def standardized(top, arg, mean, std, out):
    """SML raw: ``-((top - mean[arg]) / std[arg])``."""
    for i in range(top.size):
        out[i] = -((top[i] - mean[arg[i]]) / std[arg[i]])


@nb.njit(nogil=True, cache=True)
def suppress_step(old, boundary, new):
    """One iteration of SML's boundary suppression (:func:`analyze.scorers.sml.suppress_and_smooth`,
    its torch twin): ``new = old`` except at ``boundary`` pixels whose 3x3 neighbourhood (rows and
    columns clamped at the border, as ``ReplicationPad2d(1)``) holds a non-boundary pixel: the sum
    of ``old * keep`` over it divided by the count of ``keep`` (``keep`` = not boundary, 0 / 1),
    each 3x3 sum taken as the torch code takes it: ``(left + centre) + right`` per row, then
    ``(up + middle) + down``. ``old``, ``new`` (H, W) float64, ``boundary`` (H, W) bool."""
    h, w = old.shape
    for y in range(h):
        for x in range(w):
            if not boundary[y, x]:
                new[y, x] = old[y, x]
                continue
            total = 0.0
            count = 0.0
            for dy in range(-1, 2):
                yy = min(max(y + dy, 0), h - 1)
                row_v = 0.0
                row_c = 0.0
                for dx in range(-1, 2):
                    xx = min(max(x + dx, 0), w - 1)
                    keep = 0.0 if boundary[yy, xx] else 1.0
                    v = old[yy, xx] * keep
                    row_v = v if dx == -1 else row_v + v
                    row_c = keep if dx == -1 else row_c + keep
                total = row_v if dy == -1 else total + row_v
                count = row_c if dy == -1 else count + row_c
            new[y, x] = total / count if count > 0 else old[y, x]
