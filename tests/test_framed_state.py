"""FramedExactState (the one pass of `analyze score`): the numbers of ExactState bit for bit, each
frame's AP equal to frame_ap, and per-frame sorted scores with the pixels they came from."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from analyze import metrics as M
from analyze.metrics.framed import FramedExactState, distinct_sorted, split_sorted


def _frames(seed: int, n: int = 6, dtype=np.float64):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = rng.integers(3, 40, size=2)
        y = rng.choice(np.array([0, 1, 255], np.uint8), size=(h, w), p=[0.7, 0.2, 0.1])
        s = rng.normal(size=(h, w)) + y * 0.8
        if i % 3 == 1:
            s = np.round(s, 1)  # ties within and across frames
        if i == 2:
            y[y == 1] = 0  # a frame without anomaly
        if i == 4:
            s[0, 0], y[0, 0] = -0.0, 0
            s[-1, -1], y[-1, -1] = 0.0, 1
        out.append((s.astype(dtype), y))
    return out


@pytest.mark.parametrize("positions", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_framed_state_equals_exact_state_bit_for_bit(positions, dtype):
    for seed in range(4):
        frames = _frames(seed, dtype=dtype)
        framed = [FramedExactState(positions) for _ in frames]
        aps = [st.add(s, y, frame=i) for i, (st, (s, y)) in enumerate(zip(framed, frames))]
        for ap, (s, y) in zip(aps, frames):
            want = M.frame_ap(s, y)
            assert (np.isnan(ap) and np.isnan(want)) or ap == want
        merged = M.merge_states(framed)
        exact = M.merge_states([M.ExactState().update(s, y) for s, y in frames])
        for threads in (1, 3):
            merged._c = None
            assert merged.compute(threads=threads) == exact.compute(threads=threads)
        for a, b in zip(merged.threshold_counts(), exact.threshold_counts()):
            np.testing.assert_array_equal(a, b)
        for k, v in M.curves(merged, 50).items():
            np.testing.assert_array_equal(v, M.curves(exact, 50)[k])
        assert [f.frame for f in merged.frames] == list(range(len(frames)))
        again = pickle.loads(pickle.dumps(merged))
        assert again.compute() == exact.compute() and len(again.frames) == len(frames)


def test_split_sorted_keeps_the_scores_and_their_pixels():
    for s, y in _frames(7):
        split = split_sorted(s, y, frame=3, positions=True)
        flat_s, flat_y = s.ravel(), y.ravel()
        for x, idx, label in ((split.pos, split.pos_index, 1), (split.neg, split.neg_index, 0)):
            assert x.dtype == np.float64 and idx.dtype == np.uint32
            np.testing.assert_array_equal(x, np.sort(flat_s[flat_y == label]))
            np.testing.assert_array_equal(flat_s[idx], x)  # each score's own pixel
            assert (flat_y[idx] == label).all() and np.unique(idx).size == idx.size
        plain = split_sorted(s, y)
        assert plain.pos_index is None and plain.neg_index is None
        np.testing.assert_array_equal(plain.neg, split.neg)


def test_a_split_into_the_threads_buffers_is_the_same_and_reuses_them():
    big = np.random.default_rng(9).normal(size=(50, 60)), np.zeros((50, 60), np.uint8)
    big[1][::7, ::3] = 1
    frames = [big, *_frames(8, dtype=np.float32)]  # the largest first: the buffers never grow after it
    ptrs = set()
    for s, y in frames:
        w = split_sorted(s, y)
        got = split_sorted(s, y, frame=2, scratch=True)
        np.testing.assert_array_equal(got.pos, w.pos)
        np.testing.assert_array_equal(got.neg, w.neg)
        assert got.frame == 2 and got.neg.dtype == np.float64
        ptrs.add(got.neg.__array_interface__["data"][0])
    assert len(ptrs) == 1  # the thread's one buffer, not new memory per frame


def test_split_sorted_rejects_what_exact_state_rejects():
    s, y = _frames(1)[0]
    bad = y.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="only 0, 1"):
        split_sorted(s, bad)
    with pytest.raises(ValueError, match="only 0, 1"):
        split_sorted(s, bad.astype(np.int32))
    nan = s.copy()
    nan[y != 255] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        split_sorted(nan, y)
    with pytest.raises(ValueError, match="shape"):
        split_sorted(s[:1], y)
    ok = split_sorted(s.astype(np.int64), y.astype(np.int64))  # integer scores and labels: cast
    np.testing.assert_array_equal(ok.neg, np.sort(s.astype(np.int64)[y == 0]).astype(np.float64))


def test_distinct_sorted_equals_np_unique():
    rng = np.random.default_rng(2)
    for size in (0, 1, 5, 1000):
        x = np.sort(np.round(rng.normal(size=size), 1))
        u, c = distinct_sorted(x)
        want_u, want_c = np.unique(x, return_counts=True)
        np.testing.assert_array_equal(u, want_u)
        np.testing.assert_array_equal(c, want_c)


def test_compiled_indexed_sort_equals_stable_argsort():
    from analyze.metrics import kernels as K
    from analyze.metrics.radix64 import sort_f64_indexed

    rng = np.random.default_rng(11)
    for size in (0, 1, 9, 4000):
        x = np.round(rng.normal(size=size) * 10.0 ** rng.integers(-5, 5, size=size), 2)
        x[: size // 4] = 1.5  # ties keep their order
        if size > 3:
            x[:2], x[2] = -0.0, 0.0
        idx = rng.permutation(size).astype(np.uint32)
        y, i = x.copy(), idx.copy()
        sort_f64_indexed(y, i, np.empty(size + 2), np.empty(size + 2, np.uint32))
        order = np.argsort(x.view(np.uint64) ^ np.where(np.signbit(x), np.uint64(2**64 - 1), np.uint64(2**63)), kind="stable")
        np.testing.assert_array_equal(y.view(np.uint64), x[order].view(np.uint64))  # -0.0 before +0.0
        np.testing.assert_array_equal(i, idx[order])
        labels = rng.choice(np.array([0, 1, 255], np.uint8), size=size)
        vals, where = K.gather_indexed(x, labels, 1, int((labels == 1).sum()))
        np.testing.assert_array_equal(where, np.flatnonzero(labels == 1))
        np.testing.assert_array_equal(vals, x[labels == 1])


def test_sorted_histograms_equal_frame_histograms():
    from analyze.metrics.bootstrap import FrameHistograms, edges_from_counts, frame_histograms, sorted_histogram

    rng = np.random.default_rng(12)
    for trial in range(100):
        s, y = _frames(trial, n=1)[0]
        if trial % 4 == 0:
            s[0, :2] = np.inf, -np.inf
        u, count = np.unique(s[y == 1], return_counts=True)
        edges = edges_from_counts(u[::-1], np.cumsum(count[::-1]), n_bins=int(rng.integers(2, 12)))
        want = frame_histograms(s, y, edges)
        split = split_sorted(s, y)
        got = FrameHistograms(edges).add_sorted(split.pos, split.neg).frames[0]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype == np.int64
        np.testing.assert_array_equal(sorted_histogram(np.sort(s[y != 255]), edges), want[0] + want[1])


@pytest.mark.parametrize("fraction", [1.0, 0.3, 1e-9])
def test_pixels_above_a_threshold_are_the_maps_or_none(fraction):
    rng = np.random.default_rng(13)
    for s, y in _frames(5, n=4):
        split = split_sorted(s, y, positions=fraction)
        k = split.neg_index.size
        assert k >= min(split.neg.size, np.ceil(fraction * split.neg.size))
        np.testing.assert_array_equal(s.ravel()[split.neg_index], split.neg[split.neg.size - k:])
        cand = split.candidates()
        np.testing.assert_array_equal(cand.neg, split.neg[split.neg.size - k:])
        for t in [*rng.choice(s.ravel(), 5), -np.inf, np.inf, split.neg_cut, np.nan]:
            for inclusive in (False, True):
                got = cand.pixels_above(t, inclusive)
                want = np.flatnonzero(((s >= t) if inclusive else (s > t)) & (y != 255))
                covered = split.neg_cut < t or (split.neg_cut == t and not inclusive) or np.isnan(t)
                if not covered:
                    assert got is None
                else:
                    np.testing.assert_array_equal(np.sort(got), want)
    assert split_sorted(s, y).pixels_above(0.5) is None  # nothing kept
