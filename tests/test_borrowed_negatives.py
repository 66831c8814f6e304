"""The exact state's borrowed negatives: ``pixel_metrics`` reads the raw in-distribution scores of
the maps it is given where it sorts them (``ExactState(borrow=True)``, ``ranks.FrameScores``),
rather than copying every one of them when a frame is added. Oracles: numpy's boolean indexing
for the gather, scikit-learn and the copying state for the metrics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analyze import metrics as M
from analyze.metrics import kernels as K
from analyze.metrics import ranks as R


def frames(seed: int = 0, n: int = 7, dtype=np.float32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ragged frames of full-precision scores (kept raw, not as histograms), ties, void, one
    frame without anomaly and one without in-distribution pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = rng.integers(5, 40), rng.integers(5, 60)
        y = (rng.random((h, w)) < 0.2).astype(np.uint8)
        y[rng.random((h, w)) < 0.1] = 255
        if i == 1:
            y[y == 1] = 0
        if i == 2:
            y[y == 0] = 1
        s = rng.random((h, w)) + 0.4 * (y == 1)
        s[rng.random((h, w)) < 0.2] = 0.5  # ties between the classes
        out.append((s.astype(dtype), y))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_skip_into_equals_boolean_indexing(dtype):
    rng = np.random.default_rng(1)
    s = rng.random(997).astype(dtype)
    t = rng.integers(0, 3, 997).astype(np.uint8)
    for label in (0, 1):
        want = s[t == label]
        for skip, n in ((0, want.size), (0, 5), (7, 30), (want.size - 4, 4), (want.size, 0), (13, want.size - 13)):
            got = K.gather_skip_into(s, t, label, skip, np.full(n, -1, dtype))
            np.testing.assert_array_equal(got, want[skip : skip + n])


def test_frame_scores_slice_like_the_array_they_stand_for():
    rng = np.random.default_rng(2)
    s, t = rng.random(300).astype(np.float32), rng.integers(0, 2, 300).astype(np.uint8)
    want = s[t == 0]
    fs = R.FrameScores(s, t, 0, want.size)
    assert fs.dtype == np.float32 and fs.size == want.size
    np.testing.assert_array_equal(fs.copy(), want)
    for a, b in ((0, 10), (10, 50), (50, 200), (120, 400)):
        np.testing.assert_array_equal(fs[a:b].copy(), want[a:b])
        np.testing.assert_array_equal(fs[a:b][3:9].copy(), want[a:b][3:9])
    with pytest.raises(ValueError, match="step"):
        fs[::2]


@pytest.mark.parametrize("threads", [1, 3])
def test_rank_raw_of_borrowed_scores_equals_the_copies(threads, monkeypatch):
    # float32 and float64 frames, cut across groups of 50 scores: the same counts as the copies
    chunks, borrowed = [], []
    for s, y in frames(3) + frames(4, dtype=np.float64):
        s, y = s.ravel(), y.ravel()
        chunks.append(s[y == 0])
        borrowed.append(R.FrameScores(s, y, 0, chunks[-1].size))
    every = np.sort(np.concatenate([c.astype(np.float64) for c in chunks]))
    u = np.unique(np.concatenate((every[::11], [0.5, 2.0]))).astype(np.float32)
    monkeypatch.setattr(R, "SORT_GROUP", 50)
    assert any(sum(1 for p in g if isinstance(p, R.FrameScores)) > 1 for g in R.groups_of(borrowed, 50))
    want = R.rank_raw(chunks, u, threads)
    mixed = [c if i % 2 else b for i, (c, b) in enumerate(zip(chunks, borrowed))]
    for got in (R.rank_raw(borrowed, u, threads), R.rank_raw(mixed, u, threads)):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(want[0], np.searchsorted(every, u.astype(np.float64), side="left"))


@pytest.mark.parametrize("seed", range(3))
def test_borrowing_state_holds_references_and_gives_the_same_numbers(seed, monkeypatch):
    data = frames(seed)
    monkeypatch.setattr(R, "SORT_GROUP", 64)
    copied, borrowed = M.ExactState(), M.ExactState(borrow=True)
    for s, y in data:
        copied.update(s, y)
        borrowed.update(s, y)
    kept = borrowed._borrowed
    assert kept and not borrowed._neg and not copied._borrowed
    assert all(any(np.shares_memory(n.s, s) for s, _ in data) for n in kept)  # no copy of the negatives
    assert borrowed.compute(threads=2) == copied.compute(threads=1)
    for a, b in zip(borrowed.threshold_counts(), copied.threshold_counts()):
        np.testing.assert_array_equal(a, b)
    # pickling copies what the state borrows: the maps may then change
    shipped = pickle.loads(pickle.dumps(borrowed))
    assert not shipped._borrowed and len(shipped._neg) == len(kept)
    merged = M.merge_states([M.ExactState(borrow=True).update(s, y) for s, y in data])
    assert merged.borrow and merged.compute() == copied.compute()
    for s, _ in data:
        s[...] = 0
    assert shipped.compute() == copied.compute()


def test_pixel_metrics_borrows_sequences_and_copies_what_an_iterator_gives(monkeypatch):
    data = frames(5)
    pooled_s = np.concatenate([s[y != 255] for s, y in data]).astype(np.float64)
    pooled_y = np.concatenate([y[y != 255] for s, y in data])
    states = []
    real = M.ExactState.update

    def spy(self, y_score, y_true):
        states.append(self)
        return real(self, y_score, y_true)

    monkeypatch.setattr(M.ExactState, "update", spy)
    got = M.pixel_metrics([s for s, _ in data], tuple(y for _, y in data))
    assert states[-1].borrow
    assert got["auprc"] == pytest.approx(average_precision_score(pooled_y, pooled_s), abs=1e-12)
    assert got["auroc"] == pytest.approx(roc_auc_score(pooled_y, pooled_s), abs=1e-12)

    block = np.empty(max(s.size for s, _ in data), np.float32)

    def one_buffer():  # a generator that writes every frame's scores into one block
        for s, _ in data:
            block[: s.size] = s.ravel()
            yield block[: s.size].reshape(s.shape)

    again = M.pixel_metrics(one_buffer(), (y for _, y in data))
    assert not states[-1].borrow
    assert again == got
