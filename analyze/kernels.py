"""Compiled loops behind the exact pixel metrics (numba): one pass where numpy needs several.

numba compiles each loop for the argument types on its first call and caches the machine
code beside this file (``cache=True``); ``nogil=True`` lets the metric threads run them in
parallel. Each function has a slow numpy twin in :mod:`analyze.metrics`, and the tests check
that both give the same arrays.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = dict(nogil=True, cache=True)

VOID = 255
Q_SHIFT = 13  # float32 mantissa bits below float16 precision (see metrics._short_mantissa_histogram)


@nb.njit(**_JIT)
def scan_frame(s: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int, int]:
    """One pass over a frame: float32 scores ``s`` and uint8 labels ``t`` (1-D, same size).

    Returns ``(n_pos, n_neg, n_bad, n_nan, low)``: pixel counts of labels 1 and 0, of labels
    other than 0, 1 and 255, and of NaN scores at non-void pixels; the OR of the low
    ``Q_SHIFT`` mantissa bits of the negatives (0: every negative has float16 precision).
    Branch-free, so the compiler can vectorise it.
    """
    bits = s.view(np.uint32)
    n_pos = 0
    n_neg = 0
    n_bad = 0
    n_nan = 0
    low = np.uint32(0)
    for i in range(t.size):
        lab = t[i]
        is_neg = lab == 0
        is_pos = lab == 1
        n_neg += is_neg
        n_pos += is_pos
        low |= bits[i] & np.uint32(((1 << Q_SHIFT) - 1) if is_neg else 0)
        n_nan += (s[i] != s[i]) & (is_neg | is_pos)
        n_bad += (not is_neg) & (not is_pos) & (lab != VOID)
    return n_pos, n_neg, n_bad, n_nan, int(low)


@nb.njit(**_JIT)
def gather(s: np.ndarray, t: np.ndarray, label: int, n: int) -> np.ndarray:
    """The ``n`` scores whose label is ``label``, in pixel order (``s[t == label]``)."""
    out = np.empty(n, s.dtype)
    j = 0
    for i in range(t.size):
        if t[i] == label:
            out[j] = s[i]
            j += 1
    return out


@nb.njit(**_JIT)
def negative_key_histogram(s: np.ndarray, t: np.ndarray, n_bins: int) -> np.ndarray:
    """Counts of the negatives' float32 keys ``bits >> Q_SHIFT`` (``np.bincount`` of them)."""
    bits = s.view(np.uint32)
    hist = np.zeros(n_bins, np.int64)
    for i in range(t.size):
        if t[i] == 0:
            hist[bits[i] >> Q_SHIFT] += 1
    return hist


@nb.njit(**_JIT)
def rank_sorted(neg: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(#neg < u_k, #neg <= u_k)`` for ascending ``neg`` and strictly ascending ``u``.

    One merge-like walk through both arrays (``np.searchsorted`` with ``side='left'`` and
    ``'right'`` does a binary search per ``u_k``); comparisons in the wider of the two types.
    """
    n = neg.size
    below = np.empty(u.size, np.int64)
    below_eq = np.empty(u.size, np.int64)
    i = 0
    for k in range(u.size):
        x = u[k]
        while i < n and neg[i] < x:
            i += 1
        below[k] = i
        while i < n and neg[i] == x:  # ties; they are below every later u
            i += 1
        below_eq[k] = i
    return below, below_eq
