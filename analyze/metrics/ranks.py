"""Ranks of scores among thresholds, the core of the exact metrics (:mod:`analyze.metrics.exact`).

For ascending distinct thresholds ``u`` (the anomaly scores) and a multiset of scores (the
in-distribution scores), ``rank_raw`` / ``rank_sorted`` count the scores below and at every
``u_k`` (int64): sort, then one walk through ``u`` (:mod:`analyze.metrics.kernels`). ``rank_raw``
sorts copies in groups on several threads and never changes its input.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from analyze.metrics import kernels as K

_FAST_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def rank_counts(neg: np.ndarray, u: np.ndarray, hist: np.ndarray, ties: np.ndarray) -> None:
    """Adds the ranks of ascending ``neg`` among ascending distinct ``u`` to ``hist`` (``m + 1``)
    and ``ties`` (``m``): :func:`analyze.metrics.kernels.rank_counts` for float32/float64."""
    if neg.dtype in _FAST_FLOATS and u.dtype in _FAST_FLOATS:
        K.rank_counts(neg, u, hist, ties)
    else:
        rank_counts_numpy(neg, u, hist, ties)


def rank_counts_numpy(neg: np.ndarray, u: np.ndarray, hist: np.ndarray, ties: np.ndarray) -> None:
    """:func:`rank_counts` with ``np.searchsorted`` and ``np.bincount`` (the twin of the compiled walk)."""
    slot = np.searchsorted(u, neg, side="left")
    hist += np.bincount(slot, minlength=u.size + 1)
    inside = slot < u.size
    ties += np.bincount(slot[inside][u[slot[inside]] == neg[inside]], minlength=u.size)


def below_counts(hist: np.ndarray, ties: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) from the arrays of :func:`rank_counts` (reused as the output)."""
    below_eq = np.cumsum(hist[:-1], out=hist[:-1])
    return np.subtract(below_eq, ties, out=ties), below_eq


def rank_sorted(neg: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for sorted ``neg`` and ascending distinct ``u`` (int64 arrays like ``u``)."""
    hist, ties = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
    rank_counts(neg, u, hist, ties)
    return below_counts(hist, ties)


def sort_in_place(a: np.ndarray) -> None:
    """Sorts NaN-free scores in place: radix sort for float32 (:func:`analyze.metrics.kernels.sort_f32`)."""
    if a.dtype == np.float32:
        K.sort_f32(a, np.empty_like(a))
    else:
        a.sort()


def distinct_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, return_counts=True)`` of NaN-free scores; ``x`` may be reordered.

    float32: sorted in place by :func:`sort_in_place` (radix), then the same boundary mask as
    numpy's (``s[1:] != s[:-1]``); of ``-0.0`` and ``+0.0`` the first in the sorted order
    stands for both, as in numpy, whose order among them is arbitrary.
    """
    if x.dtype != np.float32:
        return np.unique(x, return_counts=True)
    sort_in_place(x)
    first = np.empty(x.size, bool)
    first[:1] = True
    np.not_equal(x[1:], x[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return x[starts], np.diff(starts, append=x.size)


SORT_GROUP = 1 << 22  # raw negatives ranked in groups of 4 M scores: 2 x 16 MiB of buffers per thread


def groups_of(chunks: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    """Chunks of one dtype in groups of at most ``size`` scores; a larger chunk is cut into views."""
    groups: list[list[np.ndarray]] = []
    for dtype in dict.fromkeys(c.dtype for c in chunks):
        filled = size
        for chunk in (c for c in chunks if c.dtype == dtype):
            for a in range(0, chunk.size, size):
                piece = chunk[a : a + size]
                if filled + piece.size > size:
                    groups.append([])
                    filled = 0
                groups[-1].append(piece)
                filled += piece.size
    return groups


def rank_raw(chunks: list[np.ndarray], u: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for raw negative scores in ``chunks`` (left as they are).

    The scores go in groups of at most :data:`SORT_GROUP` (:func:`groups_of`); each group is
    copied into a buffer of its thread, sorted there (float32: radix sort through a second
    buffer, :func:`analyze.metrics.kernels.sort_f32`) and ranked among ``u`` (:func:`rank_counts`)
    into counts shared by the threads: ``u`` is cut into ranges, each with a lock, which a
    thread walks in order, so threads rarely wait. The kernels release the GIL. Memory: two
    buffers per thread and the counts, never a copy of all the scores. The integer counts are
    summed, so the result depends neither on the grouping nor on ``threads``.
    """
    groups = groups_of([c for c in chunks if c.size], SORT_GROUP)
    hist, ties = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
    n = max(1, min(threads, len(groups)))
    cuts = np.unique(np.linspace(0, u.size, 4 * n + 1).astype(np.int64))
    ranges = [(int(lo), int(hi), threading.Lock()) for lo, hi in zip(cuts[:-1], cuts[1:])]
    f32 = [sum(p.size for p in g) for g in groups if g[0].dtype == np.float32]
    buffers: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(n if f32 else 0):  # allocated here: worker threads allocate in heaps of their own
        buffers.put((np.empty(max(f32), np.float32), np.empty(max(f32), np.float32)))

    def add(neg: np.ndarray) -> None:  # sorted neg: slots lo..hi-1 hold the scores in (u[lo-1], u[hi-1]]
        a = 0
        for lo, hi, lock in ranges:
            b = neg.size if hi == u.size else int(np.searchsorted(neg, u[hi - 1], side="right"))
            if b > a:
                with lock:
                    rank_counts(neg[a:b], u[lo:hi], hist[lo : hi + 1], ties[lo:hi])
            a = b

    def rank(group: list[np.ndarray]) -> None:
        if group[0].dtype != np.float32:
            joined = np.concatenate(group)  # a copy: the state's scores stay as they are
            joined.sort()
            return add(joined)
        buf, scratch = buffers.get()
        try:
            joined = np.concatenate(group, out=buf[: sum(p.size for p in group)])
            K.sort_f32(joined, scratch)
            add(joined)
        finally:
            buffers.put((buf, scratch))

    if n == 1:
        for g in groups:
            rank(g)
    else:
        with ThreadPoolExecutor(n, thread_name_prefix="exact-sort") as pool:
            for _ in pool.map(rank, groups):
                pass
    return below_counts(hist, ties)
