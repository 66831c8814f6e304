"""analyze.metrics against slow, obviously correct oracles.

Oracles: scikit-learn on the concatenated non-void pixels; ``ood_metrics.fpr_at_95_tpr``
transcribed below (roc_curve + np.interp with its edge rules; the package itself is not
imported); a loop-based re-implementation of the SMIYC procedure; a per-class loop for mIoU.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analyze import metrics as M
from analyze.metrics.best_f1 import best_f1_threshold
from analyze.metrics import counts as MC
from analyze.metrics import exact as ME
from analyze.metrics import float_keys as FK
from analyze.metrics import kernels as K
from analyze.metrics import ranks as R
from analyze.metrics.radix32 import sort_f32
from analyze.metrics.radix64 import sort_f64
from analyze.metrics import smiyc as MS

TOL = 1e-12


# --------------------------------------------------------------------------------------
# oracles


def fpr_at_95_tpr_oracle(preds, labels) -> float:
    """``ood_metrics.fpr_at_95_tpr`` (0.2.9 .. 1.1.2), transcribed."""
    fpr, tpr, _ = roc_curve(labels, preds)
    if all(tpr < 0.95):
        return 0
    elif all(tpr >= 0.95):
        idxs = [i for i, x in enumerate(tpr) if x >= 0.95]
        return min(fpr[i] for i in idxs)
    return np.interp(0.95, tpr, fpr)


def pooled(frames):
    s = np.concatenate([np.asarray(a, np.float64).ravel() for a, _ in frames])
    y = np.concatenate([np.asarray(b).ravel() for _, b in frames])
    keep = y != 255
    return s[keep], y[keep].astype(np.int64)


def sklearn_oracle(frames) -> dict:
    s, y = pooled(frames)
    return {
        "auprc": average_precision_score(y, s),
        "auroc": roc_auc_score(y, s),
        "fpr95": fpr_at_95_tpr_oracle(s, y),
        "n_pos": int((y == 1).sum()),
        "n_neg": int((y == 0).sum()),
    }


def exact(frames) -> dict:
    state = M.ExactState()
    for s, y in frames:
        state.update(s, y)
    return state.compute()


def assert_metrics_close(got, want, tol=TOL):
    for k in ("auprc", "auroc", "fpr95"):
        assert got[k] == pytest.approx(want[k], abs=tol, nan_ok=True), k
    assert (got["n_pos"], got["n_neg"]) == (want["n_pos"], want["n_neg"])


def smiyc_oracle(frames, num_bins=768) -> dict:
    """SMIYC 2023 (road-anomaly-benchmark) written out with loops: per-frame percentile bins
    on float16 scores; at every distinct bin lower edge t (high to low), TP(t) = sum over
    frames of the positives in that frame's bins whose lower edge is >= t."""
    kept, n_pos, n_neg = [], 0, 0
    for s, y in frames:
        p16 = np.asarray(s).astype(np.float16)
        roi = np.asarray(y) != 255
        prob, gt = p16[roi], np.asarray(y)[roi] == 1
        if prob.size == 0:
            continue
        pos, neg = prob[gt], prob[~gt]
        vmin, vmax = prob.min(), prob.max()
        eps = max(float(vmax - vmin) * 0.01, 0.01)
        edges = {float(vmin) - eps, float(vmax) + eps}
        for x in (pos, neg):
            if x.size:
                edges |= set(np.quantile(x, np.linspace(0, 1, min(num_bins // 2, x.size))).tolist())
        lower = np.array(sorted(edges)[:-1])
        kept.append((lower, pos.astype(np.float64), neg.astype(np.float64)))
        n_pos += pos.size
        n_neg += neg.size
    thresholds = sorted({t for lower, _, _ in kept for t in lower.tolist()}, reverse=True)
    tp, fp = [], []
    for t in thresholds:
        a = b = 0
        for lower, pos, neg in kept:
            i = np.searchsorted(lower, t)  # first lower edge >= t
            if i < lower.size:
                a += int(np.sum(pos >= lower[i]))
                b += int(np.sum(neg >= lower[i]))
        tp.append(a)
        fp.append(b)
    if tp[0] != 0 or fp[0] != 0:
        tp, fp = [0] + tp, [0] + fp
    if tp[-1] != n_pos or fp[-1] != n_neg:
        tp, fp = tp + [n_pos], fp + [n_neg]
    precision = [a / (a + b) if a + b > 0 else 1.0 for a, b in zip(tp, fp)]
    tpr = [a / n_pos for a in tp]
    fpr = [b / n_neg for b in fp]
    ap = sum((tpr[i] - tpr[i - 1]) * precision[i] for i in range(1, len(tp)))
    auroc = sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(tp)))
    fpr95 = next((fpr[i] for i in range(len(tp)) if tpr[i] >= 0.95), 1.0)
    return {"auprc": ap, "auroc": auroc, "fpr95": fpr95, "n_pos": n_pos, "n_neg": n_neg}


# --------------------------------------------------------------------------------------
# data


def make_frames(seed=0, n_frames=6, levels=7, void=0.15, anomaly=0.2):
    """Ragged frames, scores rounded to a few levels (ties), void pixels, frame 1 without
    anomaly, dtypes cycling float32 / float64 / float16 / float16-valued float32."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        h, w = rng.integers(1, 40), rng.integers(1, 50)
        y = (rng.random((h, w)) < anomaly).astype(np.uint8)
        if i == 1:
            y[:] = 0
        y[rng.random((h, w)) < void] = 255
        s = np.round((rng.random((h, w)) + 0.5 * (y == 1)) * levels) / levels
        dtype = (np.float32, np.float64, np.float16, "q")[i % 4]
        s = s.astype(np.float16).astype(np.float32) if dtype == "q" else s.astype(dtype)
        frames.append((s, y))
    return frames


# --------------------------------------------------------------------------------------
# exact protocol


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [3, 50, 10**6])
def test_exact_matches_sklearn(seed, levels):
    frames = make_frames(seed, levels=levels)
    assert_metrics_close(exact(frames), sklearn_oracle(frames))


def test_exact_continuous_and_quantised_paths_agree():
    rng = np.random.default_rng(3)
    y = (rng.random((64, 64)) < 0.1).astype(np.uint8)
    y[:5] = 255
    s16 = (rng.random((64, 64)) + 0.3 * y).astype(np.float16)
    frames = [(s16.astype(np.float32), y), (s16.astype(np.float64), y), (s16, y)]
    states = [M.ExactState().update(s, yy) for s, yy in frames]
    assert states[0]._neg_q and not states[0]._neg  # float16 values in float32: histogram
    assert states[1]._neg_q and not states[1]._neg  # and in float64
    kept = [M.ExactState(histograms=False).update(s, yy) for s, yy in frames]
    assert all(st._neg and not st._neg_q for st in kept)  # kept as given
    results = [st.compute() for st in states + kept]
    assert all(r == results[0] for r in results)
    assert_metrics_close(exact(frames), sklearn_oracle(frames))


def test_value_order_tables_cover_every_non_nan_pattern_in_order():
    for (order, values), _n_patterns in ((FK.q_table(), FK.Q_BINS), (FK.f16_table(), 1 << 16)):
        v = values.astype(np.float64)
        assert np.all(np.diff(v) >= 0) and not np.isnan(v).any()
        assert np.bincount(order).max() == 1
    all_q = (np.arange(FK.Q_BINS, dtype=np.uint32) << FK.Q_SHIFT).view(np.float32)
    assert FK.q_table()[0].size == FK.Q_BINS - np.isnan(all_q).sum()
    np.testing.assert_array_equal(np.sort(FK.q_nan_keys()), np.flatnonzero(np.isnan(all_q)))
    all_16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    assert FK.f16_table()[0].size == (1 << 16) - np.isnan(all_16).sum()


def test_exact_does_not_round_float32():
    # two scores that float16 would merge must stay distinct
    s = np.array([0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.2, 0.9], np.float32)
    y = np.array([0, 1, 0, 1], np.uint8)
    assert exact([(s, y)])["auprc"] == pytest.approx(1.0)
    assert average_precision_score(y, s) == pytest.approx(1.0)


def test_extreme_and_signed_values():
    s = np.array([-np.inf, -0.0, 0.0, 1e30, np.inf, -5.0, 65504.0, 1e-8], np.float32)
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1], np.uint8)
    for dtype in (np.float32, np.float64):
        frames = [(s.astype(dtype), y)]
        s64, y64 = pooled(frames)
        s64 = np.nan_to_num(s64, posinf=1e300, neginf=-1e300)  # sklearn refuses inf; same order
        want = {
            "auprc": average_precision_score(y64, s64),
            "auroc": roc_auc_score(y64, s64),
            "fpr95": fpr_at_95_tpr_oracle(s64, y64),
            "n_pos": 4,
            "n_neg": 4,
        }
        assert_metrics_close(exact(frames), want)


@pytest.mark.parametrize("protocol", ["exact", "smiyc"])
def test_merge_order_and_chunking_do_not_matter(protocol):
    frames = make_frames(7, n_frames=9, levels=5)
    rng = np.random.default_rng(0)
    reference = M.pixel_metrics([s for s, _ in frames], [y for _, y in frames], protocol=protocol)
    for trial in range(4):
        perm = rng.permutation(len(frames))
        states = [M.new_state(protocol).update(*frames[i]) for i in perm]
        if trial % 2:
            merged = M.merge_states(states)
        else:
            merged = states[0]
            for other in states[1:]:
                merged = other.merge(merged)
        got = merged.compute()
        for k in ("auprc", "auroc", "fpr95"):
            assert abs(got[k] - reference[k]) <= TOL
    if protocol == "exact":
        # a frame cut into row chunks is the same pixels
        chunked = M.ExactState()
        for s, y in frames:
            for rows in np.array_split(np.arange(s.shape[0]), 3):
                chunked = chunked.merge(M.ExactState().update(s[rows], y[rows]))
        got = chunked.compute()
        for k in ("auprc", "auroc", "fpr95"):
            assert abs(got[k] - reference[k]) <= TOL


@pytest.mark.parametrize("protocol", ["exact", "smiyc"])
def test_threads_never_change_the_numbers(protocol, monkeypatch):
    # > 3 M raw float32 negatives, so the compute sort runs in 1, 2 and 3 slices; ties from
    # rounding to 1e-3 and float16 frames; results must be bit-identical
    rng = np.random.default_rng(3)
    frames = []
    for i in range(6):
        y = (rng.random((600, 1600)) < 0.03).astype(np.uint8)
        y[:40] = 255
        s = np.where(y == 1, rng.random(y.shape) + 0.3, rng.random(y.shape)).astype(np.float32)
        if i % 3 == 1:
            s = np.round(s, 3)
        elif i % 3 == 2:
            s = s.astype(np.float16).astype(np.float32)
        frames.append((s, y))
    scores, labels = [s for s, _ in frames], [y for _, y in frames]
    one = M.pixel_metrics(scores, labels, protocol, threads=1)
    for n in (2, 3):
        assert M.pixel_metrics(iter(scores), iter(labels), protocol, threads=n) == one
    monkeypatch.setattr(R, "SORT_GROUP", 700_000)  # many sort groups, frames cut into views
    for n in (1, 3):
        assert M.pixel_metrics(scores, labels, protocol, threads=n) == one
    monkeypatch.setenv("ANALYZE_THREADS", "3")
    assert M.num_threads() == 3
    state = M.merge_states([M.new_state(protocol).update(s, y) for s, y in frames])
    assert state.compute() == one  # compute's own slicing (3 threads) too
    if protocol == "exact":
        pooled_s = np.concatenate([s[y != 255] for s, y in frames])
        pooled_y = np.concatenate([y[y != 255] for s, y in frames])
        assert abs(one["auprc"] - average_precision_score(pooled_y, pooled_s)) <= TOL
    monkeypatch.setenv("ANALYZE_THREADS", "two")
    with pytest.raises(ValueError, match="ANALYZE_THREADS"):
        M.num_threads()


def test_sort_groups_are_full_views_of_the_chunks_in_order():
    rng = np.random.default_rng(3)
    chunks = [rng.random(n).astype(dt) for n, dt in ((5, np.float32), (3, np.float32), (7, np.float64), (9, np.float32),
                                                      (2, np.float32), (4, np.float64), (12, np.float32))]
    groups = R.groups_of(chunks, 4)
    for dtype, size in ((np.float32, 4), (np.float64, 2)):
        mine = [g for g in groups if g[0].dtype == dtype]
        assert all(p.dtype == dtype for g in mine for p in g)
        sizes = [sum(p.size for p in g) for g in mine]
        total = sum(c.size for c in chunks if c.dtype == dtype)
        assert sizes == [size] * (total // size) + ([total % size] if total % size else [])  # full but the last
        joined = np.concatenate([p for g in mine for p in g])
        np.testing.assert_array_equal(joined, np.concatenate([c for c in chunks if c.dtype == dtype]))
    assert all(any(p.base is c for c in chunks) for g in groups for p in g)  # views of the chunks, no copies


def test_compute_keeps_its_counts_until_the_next_update(monkeypatch):
    frames = make_frames(4, n_frames=5, levels=10**6)
    state = M.merge_states([M.ExactState().update(s, y) for s, y in frames])
    monkeypatch.setattr(R, "SORT_GROUP", 1000)
    first = state.compute()
    calls = []
    monkeypatch.setattr(R, "rank_raw", lambda *a: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    assert state.compute() == first and state.threshold_counts()[1].size > 0 and not calls  # cached
    monkeypatch.undo()
    # compute left the scores as they were: the state still holds the same pixels
    again = M.merge_states([M.ExactState().update(s, y) for s, y in frames[:2]])
    both = state.merge(again)
    want = M.merge_states([M.ExactState().update(s, y) for s, y in frames + frames[:2]]).compute()
    assert both.compute() == want
    state.update(*frames[0])  # an update drops the kept counts
    want = M.merge_states([M.ExactState().update(s, y) for s, y in frames + frames[:1]]).compute()
    assert state.compute() == want
    assert pickle.loads(pickle.dumps(state)).compute() == want


def _same_split(a, b):
    assert a[3] == b[3]
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].dtype == b[0].dtype and (a[1] is None or a[1].dtype == b[1].dtype)
    assert (a[1] is None) == (b[1] is None) and (a[2] is None) == (b[2] is None)
    if a[1] is not None:
        np.testing.assert_array_equal(a[1], b[1])
    if a[2] is not None:
        for x, y in zip(a[2], b[2]):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype


def test_compiled_split_equals_numpy_split():
    rng = np.random.default_rng(5)
    for trial in range(30):
        h, w = rng.integers(1, 60, size=2)
        y = rng.choice(np.array([0, 1, 255], np.uint8), size=(h, w), p=rng.dirichlet([1, 1, 1]))
        s = (rng.normal(size=(h, w)) * 10).astype(np.float32)
        if trial % 3 == 1:
            s = s.astype(np.float16).astype(np.float32)  # float16-valued: histogram path
        if trial % 5 == 2:
            s[0, 0], y[0, 0] = -0.0, 0
        if trial % 7 == 3:
            y[:] = (0, 1, 255)[trial % 3]  # one label only
        for x in (s, s.astype(np.float64), s.astype(np.float64) + 1e-9 * (trial % 2)):  # float64: continuous too
            _same_split(ME.split_exact_fast(x, y), ME.split_exact(x, y))
            _same_split(ME.split_exact_fast(x.T, y.T), ME.split_exact(x.T, y.T))  # not C-contiguous
            _same_split(ME.split_exact_fast(x, y, histogram=False), ME.split_exact(x, y, histogram=False))
            assert ME.split_exact_fast(x, y, histogram=False)[2] is None
    assert ME.split_exact_fast(s.astype(np.float16), y) is None
    bad = y.copy()
    bad[0, 0] = 7
    assert ME.split_exact_fast(s, bad) is None
    with pytest.raises(ValueError, match="only 0, 1"):
        M.ExactState().update(s, bad)
    nan = s.copy()
    nan[y != 255] = np.nan
    if (y != 255).any():
        with pytest.raises(ValueError, match="NaN"):
            M.ExactState().update(nan, y)


def test_frame_scans_equal_numpy_counts_and_short_mantissa_test():
    """count_frame's counts and scan_frame64's ``low`` (some negative is not a float32 value with
    float16 precision) against numpy, where the first negatives are short and a later one is not,
    and at NaN, inf, float32 subnormals and values beyond float32."""
    rng = np.random.default_rng(11)
    short = rng.normal(size=400).astype(np.float16).astype(np.float64)
    odd = [np.nan, np.inf, -np.inf, 2.0 ** -140, 1e300, 2.0 ** 500, 1 + 2.0 ** -20, 0.1, -0.0]
    lows = set()
    for trial in range(60):
        p = [0.6, 0.2, 0.18, 0.02] if trial % 2 else [0.7, 0.2, 0.1, 0.0]
        t = rng.choice(np.array([0, 1, 255, 3], np.uint8), size=400, p=p)
        s = short.copy()
        if trial % 3:
            s[rng.integers(200, 400)] = odd[trial % len(odd)]  # one late odd value, maybe at a negative
        neg, pos = t == 0, t == 1
        f = s.astype(np.float32)
        fine = (f.astype(np.float64) != s) | ((f.view(np.uint32) & ((1 << FK.Q_SHIFT) - 1)) != 0)
        low = int((neg & fine).any())
        lows.add(low)
        expect = (int(pos.sum()), int(neg.sum()), int((~neg & ~pos & (t != 255)).sum()))
        assert K.count_frame(s, t) == expect + (int((np.isnan(s) & (neg | pos)).sum()),)
        assert K.count_frame(f, t) == expect + (int((np.isnan(f) & (neg | pos)).sum()),)
        assert K.scan_frame64(s, t) == expect + (int((np.isnan(s) & (neg | pos)).sum()), low)
    assert lows == {0, 1}


@pytest.mark.parametrize("dn,du", [(np.float32, np.float32), (np.float32, np.float64), (np.float64, np.float64),
                                   (np.float64, np.float32)])
def test_compiled_rank_equals_searchsorted(dn, du):
    rng = np.random.default_rng(6)
    for size in (0, 1, 7, 1000):
        neg = np.sort(np.round(rng.normal(size=size) * 4, 1).astype(dn))
        if size == 1000:
            neg[:5], neg[5:10] = -0.0, 0.0  # equal values, different bits
            neg.sort()
        for n_u in (0, 3, 50, 3000):  # from far fewer thresholds than scores to far more
            pick = neg[: min(3, size)]
            u = np.unique(np.concatenate((np.round(rng.normal(size=n_u) * 5, 1), pick, [-1e9, 1e9])).astype(du))
            hist, ties = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
            K.rank_counts(neg, u, hist, ties)
            twin = np.zeros(u.size + 1, np.int64), np.zeros(u.size, np.int64)
            R.rank_counts_numpy(neg, u, *twin)
            np.testing.assert_array_equal(hist, twin[0])
            np.testing.assert_array_equal(ties, twin[1])
            below, below_eq = R.rank_sorted(neg, u)
            np.testing.assert_array_equal(below, np.searchsorted(neg, u, side="left"))
            np.testing.assert_array_equal(below_eq, np.searchsorted(neg, u, side="right"))
            assert below.dtype == below_eq.dtype == np.int64


def test_compiled_sort_equals_numpy_sort():
    rng = np.random.default_rng(7)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -1.0], np.float32)
    for size in (0, 1, 2, 10, 257, 5000, 300_000):
        x = (rng.normal(size=size) * 10.0 ** rng.integers(-3, 4, size=size)).astype(np.float32)
        if size >= 10:
            x[rng.integers(0, size, 10)] = special
            x[: size // 3] = np.round(x[: size // 3])  # ties
        y = x.copy()
        sort_f32(y, np.empty(size + 3, np.float32))  # a scratch longer than needed is fine
        np.testing.assert_array_equal(y, np.sort(x))
        # the same bit patterns, only reordered (-0.0 and +0.0 kept apart)
        np.testing.assert_array_equal(np.sort(y.view(np.uint32)), np.sort(x.view(np.uint32)))


def test_compiled_sort_f64_equals_numpy_sort():
    rng = np.random.default_rng(17)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 1.7e308, -1.7e308, 1.0, -1.0,
                        np.nextafter(1.0, 2.0), np.nextafter(1.0, 0.0)])
    for size in (0, 1, 2, 10, 257, 5000, 300_000):
        x = rng.normal(size=size) * 10.0 ** rng.integers(-30, 30, size=size)
        if size >= 12:
            x[rng.integers(0, size, 12)] = special
            x[: size // 3] = np.round(x[: size // 3])  # ties
        for v in (x, np.abs(np.where(np.isfinite(x), x, 0.5)) % 1.0, 1.0 + rng.integers(0, 256, size=size) * 2.0**-52,  # one byte differs
                  1.0 + rng.integers(0, 1 << 16, size=size) * 2.0**-52, np.full(size, 3.5)):  # two bytes; none
            y = v.copy()
            sort_f64(y, np.empty(size + 3))  # a scratch longer than needed is fine
            np.testing.assert_array_equal(y, np.sort(v))
            np.testing.assert_array_equal(np.sort(y.view(np.uint64)), np.sort(v.view(np.uint64)))  # same bits


def test_distinct_counts_equal_np_unique():
    rng = np.random.default_rng(9)
    for size in (0, 1, 2, 50, 20_000):
        for dtype in (np.float32, np.float64, np.float16):
            x = np.round(rng.normal(size=size) * 20).astype(dtype)
            x[: size // 7] = np.inf if size % 2 else -np.inf
            x[size // 7 : size // 5] = -0.0
            want_u, want_c = np.unique(x, return_counts=True)
            u, c = R.distinct_counts(x.copy())
            assert u.dtype == want_u.dtype and c.dtype == want_c.dtype
            np.testing.assert_array_equal(u, want_u)
            np.testing.assert_array_equal(c, want_c)


@pytest.mark.parametrize("threads", [1, 3])
def test_rank_raw_equals_searchsorted_and_leaves_the_scores(threads, monkeypatch):
    # float32 and float64 chunks, -0.0 and +0.0, thresholds equal to scores; groups of 50 scores
    rng = np.random.default_rng(8)
    chunks = []
    for i in range(9):
        x = np.round(rng.normal(size=int(rng.integers(0, 130))) * 3, 1)
        x[: x.size // 10] = -0.0 if i % 2 else 0.0
        chunks.append(x.astype(np.float64 if i % 3 == 2 else np.float32))
    every = np.sort(np.concatenate([c.astype(np.float64) for c in chunks]))
    before = [c.copy() for c in chunks]
    monkeypatch.setattr(R, "SORT_GROUP", 50)
    for du in (np.float32, np.float64):
        u = np.unique(np.concatenate((np.round(rng.normal(size=40) * 4, 1), every[::17], [0.0])).astype(du))
        below, below_eq = R.rank_raw(chunks, u, threads)
        np.testing.assert_array_equal(below, np.searchsorted(every, u, side="left"))
        np.testing.assert_array_equal(below_eq, np.searchsorted(every, u, side="right"))
    for a, b in zip(chunks, before):  # sorted in buffers, not in place
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def full_array_metrics(c, level=0.95):
    """AP, AUROC and FPR95 from the whole corner-point arrays of the ROC, as they were formed
    before the memory-lean forms of analyze.metrics (which must give the same bits)."""
    fp, tp = MC._roc_points(c)
    ap = float(max(0.0, np.sum(np.diff(c.tp / c.n_pos, prepend=0.0) * (c.tp / (c.tp + c.fp_ge)))))
    auroc = int(np.dot(tp[1:] + tp[:-1], np.diff(fp))) / (2 * c.n_pos * c.n_neg)
    tpr, fpr = tp / c.n_pos, fp / c.n_neg
    if np.all(tpr < level):
        fpr95 = 0.0
    elif np.all(tpr >= level):
        fpr95 = float(np.min(fpr[tpr >= level]))
    else:
        fpr95 = float(np.interp(level, tpr, fpr))
    return ap, auroc, fpr95


def test_lean_metric_forms_equal_the_full_arrays_bit_for_bit(monkeypatch):
    frame_sets = [make_frames(seed, n_frames=5, levels=levels) for seed in range(6) for levels in (2, 9, 10**6)]
    # flat stretches at TPR exactly 0.95, a tie segment ending there, one positive, one negative
    scores = np.r_[np.arange(100, 81, -1), [50, 49, 48], [40], np.arange(6, 0, -1)].astype(np.float64)
    labels = np.r_[np.ones(19), np.zeros(3), [1], np.zeros(6)].astype(np.uint8)
    tied = scores.copy()
    tied[19] = tied[18]
    frame_sets += [[(scores, labels)], [(tied, labels)], [(np.array([0.3, 0.1]), np.array([1, 0], np.uint8))]]
    for block in (MC._BLOCK, 3):
        monkeypatch.setattr(MC, "_BLOCK", block)  # the integer AUROC sum in blocks of 3 values
        for frames in frame_sets:
            state = M.merge_states([M.ExactState().update(s, y) for s, y in frames])
            c = state._counts()
            if not (c.n_pos and c.n_neg):
                continue
            ap, auroc, fpr95 = full_array_metrics(c)
            assert (MC._average_precision(c), MC._roc_auc(c), MC._fpr_at_tpr(c)) == (ap, auroc, fpr95)
            for level in (1e-9, 0.05, 0.5, 0.9, 1.0, 0.0, -1.0, 1.5):
                assert MC._fpr_at_tpr(c, level) == full_array_metrics(c, level)[2], level


def test_distinct_benchmark_scores_are_distinct_and_exact():
    from analyze.bench.pixels import synthetic_frames

    frames = list(synthetic_frames(300_000, seed=2, distinct=True))
    values = np.concatenate([s.ravel() for s, _ in frames])
    assert values.dtype == np.float32 and np.unique(values).size == values.size and np.isfinite(values).all()
    state = M.ExactState()
    for s, y in frames:
        state.update(s, y)
    assert state._neg and not state._neg_q  # no frame has float16 precision: every score kept as given
    assert_metrics_close(state.compute(), sklearn_oracle(frames))


def test_bench_cold_worker_gives_the_in_process_numbers():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from analyze.bench.pixels import synthetic_frames

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "analyze.bench", "--worker", "cold", "--pixels", "300000", "--seed", "3"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=True).stdout)
    frames = list(synthetic_frames(300_000, seed=3))
    want = M.pixel_metrics([s for s, _ in frames], [y for _, y in frames])
    assert out["result"] == {k: (float(v) if k in ("auprc", "auroc", "fpr95") else int(v)) for k, v in want.items()}
    assert set(out["times"]) == {"import", "first call"}


def test_two_pass_equals_one_pass():
    frames = make_frames(8, n_frames=8, levels=9) + make_frames(9, n_frames=4, levels=10**6)
    one = M.merge_states([M.ExactState().update(s, y) for s, y in frames])
    first = M.merge_states([M.PositiveState().update(s, y) for s, y in frames])
    u = first.distinct()
    assert np.all(np.diff(u) > 0)
    rng = np.random.default_rng(0)
    second = M.merge_states([M.NegativeCountState(u).update(*frames[i]) for i in rng.permutation(len(frames))])
    two = first.with_negatives(second)
    assert two.compute() == one.compute()
    for a, b in zip(two.threshold_counts(), one.threshold_counts()):
        np.testing.assert_array_equal(a, b)
    for k, v in M.curves(two, 50).items():
        np.testing.assert_array_equal(v, M.curves(one, 50)[k])
    with pytest.raises(ValueError, match="two passes"):
        first.with_negatives(M.NegativeCountState(u).update(*frames[0]))


def test_negative_counts_are_compact_and_equal_searchsorted():
    """The second pass's per-frame counts: int32 (4 bytes per anomaly score), no tie array where
    no negative equals an anomaly score, and #neg < u / <= u as np.searchsorted of all the
    negatives gives them, merged in any order."""
    rng = np.random.default_rng(3)
    u = np.unique(rng.random(500))
    for levels in (None, 64):  # continuous scores (no ties), then scores on a grid shared with u
        negs = [rng.random(n) for n in (1000, 0, 2500)]
        if levels:
            u = np.unique(np.round(u * levels) / levels)
            negs = [np.round(x * levels) / levels for x in negs]
        states = [M.NegativeCountState(u).add_sorted(np.sort(x), 3) for x in negs]
        for state, x in zip(states, negs):
            assert state.n_neg == x.size and state.n_pos == 3
            assert _held(state) <= 8 * (u.size + 1)  # never more than two int32 arrays of u's slots
            if x.size:  # int32 counts; ties only where the scores share a grid with u
                assert all(a.dtype == np.int32 for r in state.runs for a in r[1::2])
                assert all(a.dtype == np.int32 for a in (state.hist, state.ties) if a is not None)
                ties = state.ties is not None or any(r.tie_slots.size for r in state.runs)
                assert ties == (levels is not None)
        merged = M.merge_states([states[i] for i in rng.permutation(3)])
        everything = np.sort(np.concatenate(negs))
        np.testing.assert_array_equal(merged.below, np.searchsorted(everything, u, side="left"))
        np.testing.assert_array_equal(merged.below_eq, np.searchsorted(everything, u, side="right"))
        assert merged.below.dtype == merged.below_eq.dtype == np.int64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rank_runs_are_the_searchsorted_counts_slot_by_slot(dtype):
    from analyze.metrics.ranks import rank_runs

    rng = np.random.default_rng(6)
    for m, n in [(0, 5), (7, 0), (40, 300), (300, 40), (1, 1), (64, 1000)]:
        u = np.unique(np.round(rng.normal(size=m), 1)).astype(dtype)
        neg = np.sort(np.round(rng.normal(size=n), 1)).astype(dtype)  # ties with u, and runs of equal scores
        slot = np.searchsorted(u, neg, side="left")
        want = np.bincount(slot, minlength=u.size + 1)
        tie = slot[(slot < u.size) & (u[np.minimum(slot, max(u.size - 1, 0))] == neg)] if u.size else slot[:0]
        runs = rank_runs(neg, u)
        np.testing.assert_array_equal(runs.slots, np.flatnonzero(want))
        np.testing.assert_array_equal(runs.counts, want[want > 0])
        np.testing.assert_array_equal(runs.tie_slots, np.unique(tie))
        np.testing.assert_array_equal(runs.tie_counts, np.unique(tie, return_counts=True)[1])


def _held(state) -> int:
    """The bytes of counts a NegativeCountState holds (its runs and arrays)."""
    return sum(r.nbytes for r in state.runs) + sum(a.nbytes for a in (state.hist, state.ties) if a is not None)


def test_a_frame_that_reaches_few_anomaly_scores_holds_runs_not_arrays_of_them():
    rng = np.random.default_rng(5)
    u = np.unique(rng.random(1_000_000))  # a study's every anomaly score
    neg = np.sort(rng.random(1000))
    state = M.NegativeCountState(u).add_sorted(neg, 0)
    assert state.hist is None and _held(state) <= 8 * neg.size  # 8 KB, not two 4 MB arrays
    merged = M.merge_states([state, M.NegativeCountState(u).add_sorted(np.sort(rng.random(3000)), 0)])
    assert merged.hist is None and _held(merged) <= 8 * 4000
    many = M.merge_states([M.NegativeCountState(u).add_sorted(np.sort(rng.random(400_000)), 0) for _ in range(6)])
    assert many.hist is not None and _held(many) <= 8 * (u.size + 1) + 8 * 400_000  # arrays once runs outgrow them
    np.testing.assert_array_equal(state.below_eq, np.searchsorted(neg, u, side="right"))


def test_merged_negative_counts_widen_to_int64_past_two_to_the_31():
    u = np.array([0.25, 0.5, 0.75])
    a = M.NegativeCountState(u).add_sorted(np.array([0.1, 0.5, 0.9]), 0)
    b = M.NegativeCountState(u).add_sorted(np.array([0.6]), 0)
    b.n_neg = 2**31 - 1  # as if b had counted that many negatives: the sum no longer fits int32
    out = a.merge(b)
    out.counts_below()  # the runs added to the arrays
    assert out.hist.dtype == np.int64 and out.n_neg == 2**31 + 2
    np.testing.assert_array_equal(out.hist, [1, 1, 1, 1])  # slot j: u_{j-1} < x <= u_j
    small = a.merge(M.NegativeCountState(u).add_sorted(np.array([0.6]), 0))
    small.counts_below()
    assert small.hist.dtype == np.int32
    assert a.merge(M.NegativeCountState(u.copy())).n_neg == 3  # equal thresholds in another array
    with pytest.raises(ValueError, match="different thresholds"):
        a.merge(M.NegativeCountState(u + 0.01))


def test_positive_state_sorts_its_scores_once_and_then_takes_no_frames():
    rng = np.random.default_rng(4)
    frames = [(rng.random((6, 7)), rng.choice(np.array([0, 1], np.uint8), size=(6, 7))) for _ in range(3)]
    state = M.merge_states([M.PositiveState().update(s, y) for s, y in frames])
    u, count = state.distinct_counts()
    want_u, want_count = np.unique(np.concatenate([s[y == 1] for s, y in frames]), return_counts=True)
    np.testing.assert_array_equal(u, want_u)
    np.testing.assert_array_equal(count, want_count)
    assert count.dtype == np.int32 and state.distinct_counts()[0] is u
    with pytest.raises(ValueError, match="no more frames"):
        state.update(*frames[0])
    with pytest.raises(ValueError, match="no more frames"):
        state.merge(M.PositiveState())


def test_best_f1_threshold_exact_is_the_best_pixel_threshold():
    frames = make_frames(12, levels=6)
    state = M.merge_states([M.ExactState().update(s, y) for s, y in frames])
    s, y = pooled(frames)
    pos = y == 1

    def f1(t):
        pred = s >= t
        tp = np.count_nonzero(pred & pos)
        return 2 * tp / (np.count_nonzero(pred) + pos.sum())

    best = best_f1_threshold(state)
    assert best in set(s[pos].tolist())
    assert f1(best) == max(f1(t) for t in np.unique(s))
    assert all(f1(t) < f1(best) for t in np.unique(s) if t > best)  # the highest among ties
    smiyc = M.merge_states([M.SmiycState().update(a, b) for a, b in frames])
    thr, tp, fp, n_pos = smiyc.threshold_counts()
    assert np.all(np.diff(thr) < 0) and n_pos == pos.sum() and tp[-1] == n_pos
    assert np.isfinite(best_f1_threshold(smiyc))


def test_frame_without_anomaly_contributes_negatives():
    frames = make_frames(1)
    extra = (np.full((5, 5), 0.99, np.float32), np.zeros((5, 5), np.uint8))
    with_extra = exact(frames + [extra])
    assert with_extra["n_neg"] == exact(frames)["n_neg"] + 25
    assert_metrics_close(with_extra, sklearn_oracle(frames + [extra]))


def test_no_anomaly_anywhere_is_nan_with_warning():
    frames = [(np.random.default_rng(0).random((4, 4)), np.zeros((4, 4), np.uint8))] * 2
    for protocol in M.PROTOCOLS:
        with pytest.warns(M.UndefinedMetricWarning, match="no anomaly"):
            got = M.pixel_metrics([s for s, _ in frames], [y for _, y in frames], protocol=protocol)
        assert np.isnan(got["auprc"]) and np.isnan(got["auroc"]) and np.isnan(got["fpr95"])
        assert (got["n_pos"], got["n_neg"]) == (0, 32)


def test_no_negative_pixel():
    s, y = np.array([0.2, 0.7, 0.1]), np.array([1, 1, 255], np.uint8)
    with pytest.warns(M.UndefinedMetricWarning, match="no negative"):
        got = exact([(s, y)])
    assert got["auprc"] == 1.0 and np.isnan(got["auroc"]) and np.isnan(got["fpr95"])


def test_fpr95_at_tpr_exactly_095_takes_right_end_of_flat_stretch():
    # 20 anomaly pixels: 19 score high, then 3 negatives, then the last positive, then 6 more
    # negatives. TPR = 19/20 = 0.95 exactly on a flat stretch from FPR 0 to 3/9.
    scores = np.r_[np.arange(100, 81, -1), [50, 49, 48], [40], np.arange(6, 0, -1)].astype(np.float64)
    labels = np.r_[np.ones(19), np.zeros(3), [1], np.zeros(6)].astype(np.uint8)
    assert 19 / 20 == 0.95
    got = exact([(scores, labels)])
    assert got["fpr95"] == pytest.approx(3 / 9, abs=TOL)
    assert got["fpr95"] == pytest.approx(fpr_at_95_tpr_oracle(scores, labels), abs=TOL)
    # the same with the 19th positive tied with a negative (diagonal segment ending at 0.95)
    scores2 = scores.copy()
    scores2[19] = scores2[18]
    got2 = exact([(scores2, labels)])
    assert got2["fpr95"] == pytest.approx(fpr_at_95_tpr_oracle(scores2, labels), abs=TOL)
    assert got2["fpr95"] == pytest.approx(3 / 9, abs=TOL)


def test_fpr95_interpolates_between_roc_points():
    # P = 10, N = 5: nine positives, then one positive tied with two negatives, then three
    # negatives. The tie is a diagonal ROC segment from (0, 0.9) to (0.4, 1.0): FPR95 = 0.2.
    scores = np.r_[np.arange(20, 11, -1), [10, 10, 10], [9, 8, 7]].astype(np.float64)
    labels = np.r_[np.ones(9), [1, 0, 0], [0, 0, 0]].astype(np.uint8)
    got = exact([(scores, labels)])
    assert got["fpr95"] == pytest.approx(0.2, abs=TOL)
    assert got["fpr95"] == pytest.approx(fpr_at_95_tpr_oracle(scores, labels), abs=TOL)


def test_invalid_input_raises():
    s = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="only 0, 1"):
        M.ExactState().update(s, np.array([[0, 1], [2, 255]], np.uint8))
    with pytest.raises(ValueError, match="shape"):
        M.ExactState().update(s, np.zeros((2, 3), np.uint8))
    y = np.array([[0, 1], [0, 255]], np.uint8)
    for dtype in (np.float32, np.float64, np.float16):
        bad = np.array([[np.nan, 0.5], [0.1, 0.2]], dtype)
        for protocol in M.PROTOCOLS:
            with pytest.raises(ValueError, match="NaN"):
                M.new_state(protocol).update(bad, y)
    with pytest.raises(ValueError, match="float16"):
        M.SmiycState().update(np.array([[1e5, 0.5], [0.1, 0.2]]), y)
    # NaN on a void pixel is ignored
    ok = np.array([[0.3, 0.5], [0.1, np.nan]], np.float32)
    assert M.ExactState().update(ok, y).compute()["auprc"] == 1.0
    with pytest.raises(ValueError):
        M.pixel_metrics([s, s], [y])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 6), st.sampled_from([0, 0, 0, 1, 1, 255])), min_size=0, max_size=40),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["float16", "float32", "float64"]),
    st.floats(0.01, 100),
)
def test_exact_property_vs_sklearn(frames_spec, dtype, scale):
    frames = []
    for spec in frames_spec:
        vals = np.array([v for v, _ in spec], np.float64) * scale
        labels = np.array([lab for _, lab in spec], np.uint8)
        frames.append((vals.astype(dtype), labels))
    s, y = pooled(frames)
    if not ((y == 1).any() and (y == 0).any()):
        return
    assert_metrics_close(exact(frames), sklearn_oracle(frames), tol=1e-9)


def test_frame_ap():
    s, y = make_frames(2)[0]
    keep = y != 255
    assert M.frame_ap(s, y) == pytest.approx(average_precision_score(y[keep], s[keep].astype(np.float64)), abs=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(M.frame_ap(s, np.zeros_like(y)))


def test_curves():
    frames = make_frames(5, levels=10**6, n_frames=8)
    state = M.merge_states([M.ExactState().update(s, y) for s, y in frames])
    full = M.curves(state, n_points=10**9)
    s, y = pooled(frames)
    # PR: the full curve carries sklearn's AP as its step sum
    ap = np.sum(np.diff(full["recall"]) * full["precision"][1:])
    assert ap == pytest.approx(average_precision_score(y, s), abs=TOL)
    assert np.trapezoid(full["tpr"], full["fpr"]) == pytest.approx(roc_auc_score(y, s), abs=TOL)
    small = M.curves(state, n_points=20)
    for a, b in (("precision", "recall"), ("fpr", "tpr")):
        assert small[a].shape == small[b].shape and 2 <= small[a].size <= 20
    assert small["recall"][0] == 0 and small["recall"][-1] == 1 and np.all(np.diff(small["recall"]) >= 0)
    assert (small["fpr"][0], small["tpr"][0], small["fpr"][-1], small["tpr"][-1]) == (0, 0, 1, 1)
    sm = M.curves(M.merge_states([M.SmiycState().update(s, y) for s, y in frames]), n_points=50)
    assert sm["recall"].size <= 50 and sm["tpr"][-1] == 1


# --------------------------------------------------------------------------------------
# SMIYC protocol


@pytest.mark.parametrize("seed", range(3))
def test_smiyc_matches_loop_reimplementation(seed):
    rng = np.random.default_rng(seed)
    frames = make_frames(seed, n_frames=5, levels=40)
    # an unbounded-score frame and a frame that is all void
    h, w = 20, 30
    y = (rng.random((h, w)) < 0.2).astype(np.uint8)
    frames.append(((rng.normal(size=(h, w)) * 40 + 10 * y).astype(np.float32), y))
    frames.append((rng.random((3, 3)), np.full((3, 3), 255, np.uint8)))
    got = M.pixel_metrics([s for s, _ in frames], [y for _, y in frames], protocol="smiyc")
    assert_metrics_close(got, smiyc_oracle(frames))


def test_smiyc_subsampled_quantiles_and_shared_top_threshold():
    # more pixels than num_bins // 2 per class; every frame saturates at 1.0 (top threshold shared)
    rng = np.random.default_rng(11)
    frames = []
    for _ in range(4):
        y = (rng.random((40, 50)) < 0.1).astype(np.uint8)
        s = np.clip(rng.normal(0.3, 0.3, (40, 50)) + 0.5 * y, 0, 1).astype(np.float32)
        s[0, 0], y[0, 0] = 1.0, 1
        frames.append((s, y))
    for num_bins in (16, 768):
        state = M.merge_states([M.SmiycState(num_bins).update(s, y) for s, y in frames])
        assert_metrics_close(state.compute(), smiyc_oracle(frames, num_bins))


def test_smiyc_quantiles_and_bins_equal_numpy():
    # the O(n) float16 route must give np.quantile's and np.histogram's exact values
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(1, 40)) if trial % 2 else int(rng.integers(1, 3000))
        x = (rng.normal(size=n) * rng.choice([1e-3, 1.0, 300.0])).astype(np.float16)
        if trial % 3 == 0:
            x = (np.round(x.astype(np.float64) * 4) / 4).astype(np.float16)
        values, counts = MS._f16_distinct(x)
        for k in (1, 2, 7, min(384, n), n):
            q = np.linspace(0, 1, k)
            want = np.quantile(x, q)
            got = MS._quantile_linear(values, counts, q)
            assert got.dtype == want.dtype and np.array_equal(got, want)
        edges = np.unique(np.r_[np.quantile(x, np.linspace(0, 1, min(5, n))), float(x.min()) - 1, float(x.max()) + 1])
        idx = np.minimum(np.searchsorted(edges, values.astype(np.float64), side="right") - 1, edges.size - 2)
        got_hist = np.bincount(idx, weights=counts, minlength=edges.size - 1)
        np.testing.assert_array_equal(got_hist, np.histogram(x, bins=edges)[0])


def test_smiyc_casts_to_float16():
    s = np.array([0.30001, 0.30002, 0.1, 0.9])  # the first two collapse in float16
    y = np.array([1, 0, 0, 1], np.uint8)
    a = M.SmiycState().update(s, y).compute()
    b = M.SmiycState().update(s.astype(np.float16), y).compute()
    assert a == b
    assert_metrics_close(a, smiyc_oracle([(s, y)]))


# --------------------------------------------------------------------------------------
# mIoU


def miou_oracle(pairs, k=19):
    iou = []
    for c in range(k):
        tp = fp = fn = 0
        for p, t in pairs:
            keep = t != 255
            tp += np.sum((p == c) & (t == c) & keep)
            fp += np.sum((p == c) & (t != c) & keep)
            fn += np.sum((p != c) & (t == c) & keep)
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    return np.nanmean(iou), np.array(iou)


def test_miou_against_loop():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(4):
        shape = tuple(rng.integers(5, 30, 2))
        t = rng.integers(0, 15, shape).astype(np.uint8)  # classes 15..18 never in gt
        t[rng.random(shape) < 0.2] = 255
        p = np.where(rng.random(shape) < 0.6, t, rng.integers(0, 17, shape)).astype(np.int64)
        p[t == 255] = rng.integers(0, 19, int((t == 255).sum()))  # ignored anyway
        pairs.append((p, t))
    state = M.merge_states([M.ConfusionState().update(p, t) for p, t in pairs])
    got = state.compute()
    want_miou, want_iou = miou_oracle(pairs)
    np.testing.assert_allclose(got["iou"], want_iou, rtol=0, atol=TOL)
    assert np.isnan(got["iou"][17]) and np.isnan(got["iou"][18])  # absent in gt and prediction
    assert got["miou"] == pytest.approx(want_miou, abs=TOL)
    assert state.confusion.sum() == sum(int((t != 255).sum()) for _, t in pairs)


def test_confusion_rejects_bad_ids():
    with pytest.raises(ValueError):
        M.ConfusionState().update(np.array([0, 19]), np.array([0, 1]))
    with pytest.raises(ValueError):
        M.ConfusionState().update(np.array([0, 1]), np.array([0, 20]))


# --------------------------------------------------------------------------------------
# registry and plumbing


def test_registry_and_merge_rules():
    assert set(M.PROTOCOLS) == {"exact", "smiyc"}
    for name, cls in M.PROTOCOLS.items():
        assert cls.protocol == name and isinstance(cls.definition, str) and len(cls.definition) > 40
        assert isinstance(M.new_state(name), cls)
    with pytest.raises(ValueError, match="unknown protocol"):
        M.new_state("nope")
    with pytest.raises(ValueError):
        M.merge_states([])
    with pytest.raises(TypeError):
        M.ExactState().merge(M.SmiycState())


def test_states_pickle_round_trip():
    frames = make_frames(4)
    for protocol in M.PROTOCOLS:
        state = M.merge_states([M.new_state(protocol).update(s, y) for s, y in frames])
        again = pickle.loads(pickle.dumps(state))
        assert again.compute() == state.compute()
