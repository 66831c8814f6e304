"""Compiled loops behind the exact pixel metrics (numba): one pass where numpy needs several.

numba compiles each loop for the argument types on its first call and caches the machine
code beside this file (``cache=True``); ``nogil=True`` lets the metric threads run them in
parallel. Each function has a slow numpy twin (in :mod:`analyze.metrics.exact` and
:mod:`analyze.metrics.ranks`), and the tests check that both give the same arrays. The sorts
live in :mod:`analyze.metrics.radix32` (float32) and :mod:`analyze.metrics.radix64` (float64).
The first call in a process loads the cached code (~0.25 s for the first kernel, most of it
numba's own set-up, then a few ms each, on top of ~0.15 s to import numba); the first call
ever compiles it (seconds).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from analyze.metrics.float_keys import Q_SHIFT  # float32 mantissa bits below float16 precision
from schemas.labels import VOID


@nb.njit(nogil=True, cache=True)
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


@nb.njit(nogil=True, cache=True)
def count_frame(s: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int]:
    """``(n_pos, n_neg, n_bad, n_nan)`` of :func:`scan_frame` for scores of any float type, in one
    branch-free (vectorisable) pass: what :func:`analyze.metrics.framed.split_sorted` needs."""
    n_pos = 0
    n_neg = 0
    n_bad = 0
    n_nan = 0
    for i in range(t.size):
        lab = t[i]
        is_neg = lab == 0
        is_pos = lab == 1
        n_neg += is_neg
        n_pos += is_pos
        n_nan += (s[i] != s[i]) & (is_neg | is_pos)
        n_bad += (not is_neg) & (not is_pos) & (lab != VOID)
    return n_pos, n_neg, n_bad, n_nan


@nb.njit(nogil=True, cache=True)
def scan_frame64(s: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int, int]:
    """:func:`scan_frame` for float64 scores: the same counts (:func:`count_frame`); ``low`` is
    nonzero when some negative is not a float32 value with at most 10 significant mantissa bits
    (``float32(x) != x``, or low mantissa bits of ``float32(x)`` set), i.e. when the negatives
    cannot be kept as a histogram of float32 keys. The search for ``low`` ends at the first such
    negative (usually the first negative of all)."""
    n_pos, n_neg, n_bad, n_nan = count_frame(s, t)
    low = 0
    f = np.empty(1, np.float32)
    bits = f.view(np.uint32)
    for i in range(t.size):
        if t[i] == 0:
            f[0] = s[i]
            if f[0] != s[i] or (bits[0] & np.uint32((1 << Q_SHIFT) - 1)) != 0:
                low = 1
                break
    return n_pos, n_neg, n_bad, n_nan, low


@nb.njit(nogil=True, cache=True)
def gather_into(s: np.ndarray, t: np.ndarray, label: int, out: np.ndarray) -> np.ndarray:
    """``out`` (as many as there are such scores) := the scores whose label is ``label``, in pixel
    order (``s[t == label]``)."""
    j = 0
    for i in range(t.size):
        if t[i] == label:
            out[j] = s[i]
            j += 1
    return out


@nb.njit(nogil=True, cache=True)
def gather_skip_into(s: np.ndarray, t: np.ndarray, label: int, skip: int, out: np.ndarray) -> np.ndarray:
    """``out`` := the scores whose label is ``label`` numbered ``skip`` to ``skip + out.size - 1``
    in pixel order (``s[t == label][skip : skip + out.size]``; there must be that many)."""
    i = 0
    k = 0
    while k < skip:  # the pixel after the skip-th such score
        k += t[i] == label
        i += 1
    n = out.size
    j = 0
    while j < n:
        if t[i] == label:
            out[j] = s[i]
            j += 1
        i += 1
    return out


@nb.njit(nogil=True, cache=True)
def gather(s: np.ndarray, t: np.ndarray, label: int, n: int) -> np.ndarray:
    """The ``n`` scores whose label is ``label``, in pixel order (``s[t == label]``), a new array."""
    return gather_into(s, t, label, np.empty(n, s.dtype))


@nb.njit(nogil=True, cache=True)
def gather_indexed(s: np.ndarray, t: np.ndarray, label: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gather` and the flat pixel index of each score (``np.flatnonzero(t == label)``, uint32)."""
    out = np.empty(n, s.dtype)
    idx = np.empty(n, np.uint32)
    j = 0
    for i in range(t.size):
        if t[i] == label:
            out[j] = s[i]
            idx[j] = i
            j += 1
    return out, idx


@nb.njit(nogil=True, cache=True)
def gather_indexed_at_least(s: np.ndarray, t: np.ndarray, label: int, low: float, n: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gather_indexed` of the ``n`` scores with label ``label`` and ``score >= low``, in pixel order."""
    out = np.empty(n, s.dtype)
    idx = np.empty(n, np.uint32)
    j = 0
    for i in range(t.size):
        if t[i] == label and s[i] >= low:
            if j == n:
                raise ValueError("gather_indexed_at_least: more scores than n")
            out[j] = s[i]
            idx[j] = i
            j += 1
    if j != n:
        raise ValueError("gather_indexed_at_least: fewer scores than n")
    return out, idx


@nb.njit(nogil=True, cache=True)
def negative_key_histogram(s: np.ndarray, t: np.ndarray, n_bins: int) -> np.ndarray:
    """Counts of the negatives' float32 keys ``bits >> Q_SHIFT`` (``np.bincount`` of them)."""
    bits = s.view(np.uint32)
    hist = np.zeros(n_bins, np.int64)
    for i in range(t.size):
        if t[i] == 0:
            hist[bits[i] >> Q_SHIFT] += 1
    return hist


@nb.njit(inline="always")
def _slot_of(u: np.ndarray, j: int, x) -> int:
    """The first ``k > j`` with ``u[k] >= x`` (``m`` where none) for ascending ``u`` with ``u[j] < x``:
    galloping search from ``j``, so a few negatives between two far ``u`` cost O(log m), not O(m)."""
    m = u.size
    lo, hi, step = j, j + 1, 1  # invariant: u[lo] < x; hi == m or u[hi] >= x once found
    while hi < m and u[hi] < x:
        lo = hi
        step *= 2
        hi = lo + step
    hi = min(hi, m)
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if u[mid] < x:
            lo = mid
        else:
            hi = mid
    return hi


@nb.njit(nogil=True, cache=True)
def rank_counts(neg: np.ndarray, u: np.ndarray, hist: np.ndarray, ties: np.ndarray) -> None:
    """Adds the ranks of ascending ``neg`` among strictly ascending ``u`` (``m`` values):
    ``hist[j] +=`` #negatives with exactly ``j`` values of ``u`` below them (``j = 0 .. m``,
    ``np.bincount(np.searchsorted(u, neg))``), ``ties[j] +=`` #negatives equal to ``u[j]``.

    Then #neg <= u_k is ``cumsum(hist)[k]`` and #neg < u_k that minus ``ties[k]``. One walk
    through ``neg``; the position in ``u`` moves by :func:`_slot_of`. Comparisons in the wider
    of the two types.
    """
    m = u.size
    if hist.size < m + 1 or ties.size < m:
        raise ValueError("rank_counts: hist needs len(u) + 1 entries, ties len(u)")
    j = 0  # values of u below the current negative
    run = 0  # negatives at slot j not yet added to hist
    for i in range(neg.size):
        x = neg[i]
        if j < m and u[j] < x:
            hist[j] += run
            run = 0
            j = _slot_of(u, j, x)
        run += 1
        if j < m and u[j] == x:
            ties[j] += 1
    hist[j] += run


@nb.njit(nogil=True, cache=True)
def rank_runs(neg: np.ndarray, u: np.ndarray, slots: np.ndarray, counts: np.ndarray, tie_slots: np.ndarray,
              tie_counts: np.ndarray) -> tuple[int, int]:
    """:func:`rank_counts` as runs, for a frame whose negatives reach few of ``u``'s slots: the
    ``r`` slots ``slots[:r]`` (ascending) where ``hist`` would grow, by ``counts[:r]``, and the
    ``t`` slots ``tie_slots[:t]`` where ``ties`` would, by ``tie_counts[:t]``; returns ``(r, t)``.
    Each buffer needs ``min(len(neg), m + 1)`` entries."""
    m = u.size
    j, run, tie, r, t = 0, 0, 0, 0, 0
    for i in range(neg.size):
        x = neg[i]
        if j < m and u[j] < x:
            r, t = _put_run(slots, counts, r, j, run), _put_run(tie_slots, tie_counts, t, j, tie)
            run, tie = 0, 0
            j = _slot_of(u, j, x)
        run += 1
        if j < m and u[j] == x:
            tie += 1
    return _put_run(slots, counts, r, j, run), _put_run(tie_slots, tie_counts, t, j, tie)


@nb.njit(inline="always")
def _put_run(slots: np.ndarray, counts: np.ndarray, r: int, j: int, n: int) -> int:
    """Run ``r`` := ``n`` at slot ``j`` where ``n > 0``; the next run's index."""
    if n:
        slots[r], counts[r] = j, n
        return r + 1
    return r
