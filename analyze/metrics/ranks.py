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
from typing import Callable, NamedTuple, Sequence

import numpy as np

from analyze.metrics import kernels as K
from analyze.metrics.radix32 import sort_f32
from analyze.metrics.radix64 import sort_f64
from analyze.metrics.scratch import thread_buffer

_FAST_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def rank_counts(neg: np.ndarray, u: np.ndarray, hist: np.ndarray, ties: np.ndarray) -> None:
    """Adds the ranks of ascending ``neg`` among ascending distinct ``u`` to ``hist`` (``m + 1``)
    and ``ties`` (``m``): :func:`analyze.metrics.kernels.rank_counts` for float32/float64."""
    if neg.dtype in _FAST_FLOATS and u.dtype in _FAST_FLOATS:
        K.rank_counts(neg, u, hist, ties)
    else:
        rank_counts_numpy(neg, u, hist, ties)


class Runs(NamedTuple):
    """:func:`rank_counts` of one piece as runs (:func:`rank_runs`): ``hist[slots] += counts`` and
    ``ties[tie_slots] += tie_counts``, each slot once."""

    slots: np.ndarray
    counts: np.ndarray
    tie_slots: np.ndarray
    tie_counts: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)


def rank_runs(neg: np.ndarray, u: np.ndarray) -> Runs:
    """The :class:`Runs` of ascending ``neg`` among ascending distinct ``u``: the compiled walk of
    :func:`rank_counts` (:func:`analyze.metrics.kernels.rank_runs`) into this thread's buffers,
    kept at their length (int32 slots and counts while they fit)."""
    if not (neg.dtype in _FAST_FLOATS and u.dtype in _FAST_FLOATS):
        hist, ties = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
        rank_counts_numpy(neg, u, hist, ties)
        slots, tie_slots = np.flatnonzero(hist), np.flatnonzero(ties)
        return Runs(slots, hist[slots], tie_slots, ties[tie_slots])
    n = min(neg.size, u.size + 1)
    slot_t = np.int32 if u.size < 2**31 - 1 else np.int64
    count_t = np.int32 if neg.size < 2**31 else np.int64
    s, ts = (thread_buffer(role, slot_t, n) for role in ("run slots", "tie slots"))
    c, tc = (thread_buffer(role, count_t, n) for role in ("run counts", "tie counts"))
    r, t = K.rank_runs(neg, u, s, c, ts, tc)
    return Runs(s[:r].copy(), c[:r].copy(), ts[:t].copy(), tc[:t].copy())


def rank_counts_numpy(neg: np.ndarray, u: np.ndarray, hist: np.ndarray, ties: np.ndarray) -> None:
    """:func:`rank_counts` with ``np.searchsorted`` and ``np.bincount`` (the twin of the compiled walk)."""
    slot = np.searchsorted(u, neg, side="left")
    hist += np.bincount(slot, minlength=u.size + 1)
    inside = slot < u.size
    ties += np.bincount(slot[inside][u[slot[inside]] == neg[inside]], minlength=u.size)


def below_counts(hist: np.ndarray, ties: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) from the int64 arrays of :func:`rank_counts` (reused as the output;
    ``ties`` None: no negative equals a ``u_k``, and the two are one array)."""
    below_eq = np.cumsum(hist[:-1], out=hist[:-1])
    return (below_eq if ties is None else np.subtract(below_eq, ties, out=ties)), below_eq


def rank_sorted(neg: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for sorted ``neg`` and ascending distinct ``u`` (int64 arrays like ``u``)."""
    hist, ties = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
    rank_counts(neg, u, hist, ties)
    return below_counts(hist, ties)


#: dtype -> the compiled radix sort of its scores: ``sort(a, scratch)`` in place
_RADIX: dict[np.dtype, Callable[[np.ndarray, np.ndarray], None]] = {np.dtype(np.float32): sort_f32,
                                                                    np.dtype(np.float64): sort_f64}


def radix_sort(a: np.ndarray, scratch: np.ndarray) -> None:
    """Sorts NaN-free float32/float64 scores ``a`` in place with the compiled radix sort of
    their type; ``scratch``: same dtype, at least as long, overwritten."""
    _RADIX[a.dtype](a, scratch)


def sort_in_place(a: np.ndarray) -> None:
    """Sorts NaN-free scores in place: radix sort for float32 and float64
    (:func:`analyze.metrics.radix32.sort_f32`, :func:`analyze.metrics.radix64.sort_f64`),
    numpy's sort for other types."""
    if a.dtype in _RADIX:
        radix_sort(a, np.empty_like(a))
    else:
        a.sort()


def distinct_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, return_counts=True)`` of NaN-free scores; ``x`` may be reordered.

    float32 and float64: sorted in place by :func:`sort_in_place` (radix), then the same
    boundary mask as numpy's (``s[1:] != s[:-1]``); of ``-0.0`` and ``+0.0`` the first in the
    sorted order stands for both, as in numpy, whose order among them is arbitrary.
    """
    if x.dtype not in _RADIX:
        return np.unique(x, return_counts=True)
    sort_in_place(x)
    first = np.empty(x.size, bool)
    first[:1] = True
    np.not_equal(x[1:], x[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return x[starts], np.diff(starts, append=x.size)


class FrameScores:
    """The scores of one label in a frame's maps, read where they are ranked (:func:`rank_raw`)
    rather than copied when the frame is added (``ExactState(borrow=True)``): the ``size`` scores
    after the first ``skip`` of those whose label is ``label``, in pixel order. ``s`` and ``t``
    (1-D, same size) are kept by reference and must stay unchanged until then. Has the
    ``size``, ``dtype`` and slicing (``[a:b]``) that :func:`groups_of` uses to cut chunks."""

    def __init__(self, s: np.ndarray, t: np.ndarray, label: int, size: int, skip: int = 0) -> None:
        self.s, self.t, self.label, self.size, self.skip = s, t, label, size, skip

    @property
    def dtype(self) -> np.dtype:
        return self.s.dtype

    def __getitem__(self, cut: slice) -> "FrameScores":
        a, b, step = cut.indices(self.size)
        if step != 1:
            raise ValueError("FrameScores slices have step 1")
        return FrameScores(self.s, self.t, self.label, max(0, b - a), self.skip + a)

    def into(self, out: np.ndarray) -> np.ndarray:
        """``out`` (``size`` long) := these scores (:func:`analyze.metrics.kernels.gather_skip_into`)."""
        return K.gather_skip_into(self.s, self.t, self.label, self.skip, out)

    def copy(self) -> np.ndarray:
        """These scores, a new array."""
        return self.into(np.empty(self.size, self.dtype))


Chunk = np.ndarray | FrameScores  # raw scores to rank: an array, or a frame's scores where they are


def fill(chunks: Sequence[Chunk], out: np.ndarray) -> np.ndarray:
    """``out`` := the scores of ``chunks`` (arrays and :class:`FrameScores`) one after another."""
    a = 0
    for c in chunks:
        if isinstance(c, FrameScores):
            c.into(out[a : a + c.size])
        else:
            out[a : a + c.size] = c
        a += c.size
    return out


SORT_GROUP = 1 << 22  # raw negatives ranked in groups of 4 M float32 scores (2 M float64): 2 x 16 MiB per thread


def group_size(dtype: np.dtype, size: int) -> int:
    """Scores of ``dtype`` in a group of ``size`` float32 scores' bytes (at least 1)."""
    return max(1, size * 4 // np.dtype(dtype).itemsize)


def groups_of(chunks: Sequence[Chunk], size: int) -> list[list[Chunk]]:
    """Chunks of one dtype in groups of :func:`group_size` scores (``size`` float32 scores'
    bytes), the last of each dtype holding the rest: a chunk that does not fit in a group's
    room is cut into views at the group's end. Every group ranks among all of ``u``
    (:func:`rank_raw`), a walk that at a million distinct anomaly scores costs as much as
    sorting 2 M scores, so full groups save walks (12 rather than 15 groups of the 45 M
    float32 negatives of the ``pixel_metrics`` benchmark)."""
    groups: list[list[Chunk]] = []
    for dtype in dict.fromkeys(c.dtype for c in chunks):
        size_d = group_size(dtype, size)
        room = 0
        for chunk in (c for c in chunks if c.dtype == dtype):
            a = 0
            while a < chunk.size:
                if not room:
                    groups.append([])
                    room = size_d
                piece = chunk[a : a + room]
                groups[-1].append(piece)
                room -= piece.size
                a += piece.size
    return groups


def rank_raw(chunks: Sequence[Chunk], u: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for raw negative scores in ``chunks`` (arrays, left as they are, and
    :class:`FrameScores`, read from their maps).

    The scores go in groups of at most :data:`SORT_GROUP` float32 scores' bytes (:func:`groups_of`);
    each group is copied into a buffer of its thread, sorted there (float32 and float64: radix
    sort through a second buffer, :func:`radix_sort`) and ranked among ``u`` (:func:`rank_counts`)
    into counts shared by the threads: ``u`` is cut into ranges, each with a lock, which a
    thread walks in order, so threads rarely wait. The kernels release the GIL. Memory: two
    buffers per thread and the counts, never a copy of all the scores. The integer counts are
    summed, so the result depends neither on the grouping nor on ``threads``.
    """
    groups = groups_of([c for c in chunks if c.size], SORT_GROUP)
    n = max(1, min(threads, len(groups)))
    counts = _SharedCounts(u, n)
    buffers: dict[np.dtype, queue.SimpleQueue] = {}
    for dtype in _RADIX:  # allocated here: worker threads allocate in heaps of their own
        sizes = [sum(p.size for p in g) for g in groups if g[0].dtype == dtype]
        if sizes:
            buffers[dtype] = queue.SimpleQueue()
            for _ in range(n):
                buffers[dtype].put((np.empty(max(sizes), dtype), np.empty(max(sizes), dtype)))

    add = counts.add

    def rank(group: list[Chunk]) -> None:
        if group[0].dtype not in buffers:
            joined = fill(group, np.empty(sum(p.size for p in group), group[0].dtype))  # a copy: the state's scores stay
            joined.sort()
            return add(joined)
        pool = buffers[group[0].dtype]
        buf, scratch = pool.get()
        try:
            joined = fill(group, buf[: sum(p.size for p in group)])
            radix_sort(joined, scratch)
            add(joined)
        finally:
            pool.put((buf, scratch))

    _run(rank, groups, n)
    return counts.result()


def rank_presorted(chunks: list[np.ndarray], u: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(#neg < u, #neg <= u) for negative scores in ``chunks``, each already sorted: the walk of
    :func:`rank_raw` without its copies and sorts, one chunk at a time on ``threads`` threads."""
    chunks = [c for c in chunks if c.size]
    n = max(1, min(threads, len(chunks)))
    counts = _SharedCounts(u, n)
    _run(counts.add, chunks, n)
    return counts.result()


class _SharedCounts:
    """The rank counts of :func:`rank_counts` shared by threads: ``u`` cut into ranges with a lock each."""

    def __init__(self, u: np.ndarray, n_threads: int) -> None:
        self.u = u
        self.hist, self.ties = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
        cuts = np.unique(np.linspace(0, u.size, 4 * n_threads + 1).astype(np.int64))
        self.ranges = [(int(lo), int(hi), threading.Lock()) for lo, hi in zip(cuts[:-1], cuts[1:])]

    def add(self, neg: np.ndarray) -> None:
        """Adds sorted ``neg``: slots lo..hi-1 hold the scores in (u[lo-1], u[hi-1]]."""
        u, a = self.u, 0
        for lo, hi, lock in self.ranges:
            b = neg.size if hi == u.size else int(np.searchsorted(neg, u[hi - 1], side="right"))
            if b > a:
                with lock:
                    rank_counts(neg[a:b], u[lo:hi], self.hist[lo : hi + 1], self.ties[lo:hi])
            a = b

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return below_counts(self.hist, self.ties)


def _run(fn, items: list, n: int) -> None:
    """``fn`` on every item, on ``n`` threads (in order on this one when ``n == 1``)."""
    if n == 1:
        for item in items:
            fn(item)
    else:
        with ThreadPoolExecutor(n, thread_name_prefix="exact-sort") as pool:
            for _ in pool.map(fn, items):
                pass
