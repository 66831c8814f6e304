"""analyze.metrics.components: hand-built frames with answers worked out by hand, and a slow oracle.

The oracle transcribes the SMIYC definitions (``instance_segmentation.py``: threshold with
``>``, void removed before labelling, 8-connected components, small predictions dropped and
small ground-truth components made void, then per-component loops with the *unsimplified*
adjusted union ``|G u P(S)| - |P(S) on other GT|``); the fast code uses sparse overlaps.
"""

from __future__ import annotations

import math
import pickle
import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from analyze.metrics.best_f1 import best_f1_threshold_from_counts
from analyze.metrics.components import (
    TAUS,
    TRACKS,
    ComponentState,
    TrackRules,
    f1_per_tau,
    frame_components,
    get_track,
    ground_truth,
    predicted_components,
    prediction_components,
    track_for_dataset,
)
from analyze.metrics import UndefinedMetricWarning
from tests.oracles import dense_frame_components

def component_stats(pred_mask, gt_mask, roi_mask, rules):
    """``(siou_per_gt, ppv_per_pred)`` of one frame (:func:`frame_components`)."""
    fc = frame_components(pred_mask, gt_mask, roi_mask, rules)
    return fc.siou_gt, fc.ppv_pred


NO_SIZE_RULE = TrackRules("test", min_pred_size=0, min_gt_size=0)
THR = 0.5


def make_frame(shape, gt=(), pred=(), void=()):
    """(score, label): boxes are (r0, r1, c0, c1), half-open; score 1 on ``pred``, else 0."""
    score = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    for r0, r1, c0, c1 in pred:
        score[r0:r1, c0:c1] = 1.0
    for r0, r1, c0, c1 in gt:
        label[r0:r1, c0:c1] = 1
    for r0, r1, c0, c1 in void:
        label[r0:r1, c0:c1] = 255
    return score, label


def run(frames, rules=NO_SIZE_RULE, threshold=THR, **kw) -> dict:
    state = ComponentState(rules, threshold, **kw)
    for score, label in frames:
        state.update(score, label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return state.compute()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


# --------------------------------------------------------------------------------------
# hand-built frames


def test_exact_match():
    # one 3x3 blob predicted exactly: intersection 9, adjusted union 9 + 0 -> sIoU 1; PPV 9/9
    m = run([make_frame((10, 10), gt=[(2, 5, 2, 5)], pred=[(2, 5, 2, 5)])])
    assert (m["siou"], m["ppv"], m["mean_f1"], m["siou_pred"]) == (1.0, 1.0, 1.0, 1.0)
    assert (m["n_gt"], m["n_pred"], m["n_frames"]) == (1, 1, 1)


def test_split_prediction():
    # GT rows 2-3 x cols 1-6 (12 px); predictions cols 1-2 and cols 5-6 (4 px each), two
    # columns apart, hence two components. sIoU = 8 / (12 + 0 off-GT px) = 2/3 ~ 0.667;
    # PPV 1 and 1. TP for the 9 taus 0.25..0.65, FN for 0.70 and 0.75; never FP.
    # F1 = 1 (9 times), 0 (twice) -> mean 9/11.
    fr = make_frame((6, 9), gt=[(2, 4, 1, 7)], pred=[(2, 4, 1, 3), (2, 4, 5, 7)])
    siou, ppv = component_stats(fr[0] > THR, fr[1] == 1, fr[1] != 255, NO_SIZE_RULE)
    np.testing.assert_array_equal(siou, [8 / 12])
    np.testing.assert_array_equal(ppv, [1.0, 1.0])
    m = run([fr])
    assert m["siou"] == 8 / 12 and m["ppv"] == 1.0 and m["n_pred"] == 2
    assert m["mean_f1"] == pytest.approx(9 / 11, abs=1e-15)
    assert (m["f1_25"], m["f1_50"], m["f1_75"]) == (1.0, 1.0, 0.0)


def test_merged_prediction_is_adjusted_for_the_other_object():
    # GT A rows 2-3 x cols 1-2 (4 px), GT B rows 2-3 x cols 6-7 (4 px); one prediction rows
    # 2-3 x cols 1-7 (14 px: 4 on A, 4 on B, 6 on the background between them).
    # sIoU(A) = 4 / (|A u P| - |P on B|) = 4 / (14 - 4) = 0.4 (plain IoU would be 4/14 ~ 0.29),
    # same for B; PPV = 8/14 = 4/7 ~ 0.571; sIoU_pred = 8 / 14.
    # tau 0.25..0.40 (4 taus; 0.4 >= 0.4 counts): TP 2, FP 0 -> F1 1
    # tau 0.45..0.55 (3): FN 2, FP 0 -> 0;  tau 0.60..0.75 (4): FN 2, FP 1 (4/7 < tau) -> 0
    # mean F1 = 4/11.
    fr = make_frame((6, 9), gt=[(2, 4, 1, 3), (2, 4, 6, 8)], pred=[(2, 4, 1, 8)])
    m = run([fr])
    assert m["siou"] == 0.4 and m["n_gt"] == 2 and m["n_pred"] == 1
    assert m["ppv"] == 8 / 14 and m["siou_pred"] == 8 / 14
    assert m["mean_f1"] == pytest.approx(4 / 11, abs=1e-15)
    counts = f1_per_tau([0.4, 0.4], [8 / 14])
    np.testing.assert_array_equal(counts["tp"], [2] * 4 + [0] * 7)
    np.testing.assert_array_equal(counts["fp"], [0] * 7 + [1] * 4)


def test_missed_object():
    # no prediction: sIoU 0 -> FN at every tau, F1 0; PPV undefined (no predicted component)
    fr = make_frame((8, 8), gt=[(1, 4, 1, 4)])
    state = ComponentState(NO_SIZE_RULE, THR).update(*fr)
    with pytest.warns(UndefinedMetricWarning, match="ppv"):
        m = state.compute()
    assert m["siou"] == 0.0 and math.isnan(m["ppv"]) and m["mean_f1"] == 0.0
    c = f1_per_tau([0.0], [])
    np.testing.assert_array_equal(c["fn"], [1] * 11)
    np.testing.assert_array_equal(c["tp"], [0] * 11)


def test_false_positive():
    # GT matched exactly (sIoU 1, PPV 1) plus a prediction on the background (PPV 0):
    # TP 1, FN 0, FP 1 at every tau -> F1 = 2 / (2 + 0 + 1) = 2/3; mean PPV (1 + 0) / 2
    fr = make_frame((10, 10), gt=[(1, 3, 1, 3)], pred=[(1, 3, 1, 3), (6, 9, 6, 9)])
    m = run([fr])
    assert (m["siou"], m["ppv"], m["n_pred"]) == (1.0, 0.5, 2)
    assert m["mean_f1"] == pytest.approx(2 / 3, abs=1e-15)


def test_false_positive_without_any_object():
    # no GT component anywhere: sIoU undefined (NaN + warning), F1 = 0 / (0 + 0 + 1) = 0
    state = ComponentState(NO_SIZE_RULE, THR).update(*make_frame((6, 6), pred=[(0, 2, 0, 2)]))
    with pytest.warns(UndefinedMetricWarning, match="siou"):
        m = state.compute()
    assert math.isnan(m["siou"]) and m["ppv"] == 0.0 and m["mean_f1"] == 0.0


def test_nothing_at_all_is_nan():
    state = ComponentState(NO_SIZE_RULE, THR).update(*make_frame((4, 4)))
    with pytest.warns(UndefinedMetricWarning, match="mean_f1"):
        m = state.compute()
    assert all(math.isnan(m[k]) for k in ("siou", "ppv", "mean_f1", "f1_50"))
    assert (m["n_gt"], m["n_pred"]) == (0, 0)


def test_void_predictions_do_not_count():
    # a prediction entirely on void: no predicted component at all
    fr = make_frame((8, 8), gt=[(0, 2, 0, 2)], pred=[(0, 2, 0, 2), (5, 8, 5, 8)], void=[(4, 8, 4, 8)])
    m = run([fr])
    assert (m["n_pred"], m["ppv"], m["mean_f1"]) == (1, 1.0, 1.0)
    # void is removed before labelling: a void column (col 4) splits the predicted bar
    # (row 1, cols 0-8; GT at cols 0-2) into two components
    score, label = make_frame((3, 9), gt=[(1, 2, 0, 3)], pred=[(1, 2, 0, 9)], void=[(0, 3, 4, 5)])
    siou, ppv = component_stats(score > THR, label == 1, label != 255, NO_SIZE_RULE)
    # left piece cols 0-3 (3 on GT, 1 off) PPV 3/4; right piece cols 5-8 (0 on GT) PPV 0;
    # sIoU(GT) = 3 / (3 + 1): the right piece does not touch the GT, so it is not in the union
    np.testing.assert_array_equal(ppv, [3 / 4, 0.0])
    np.testing.assert_array_equal(siou, [3 / 4])


def test_small_components_obstacle_track():
    rules = TRACKS["obstacle"]
    assert (rules.min_pred_size, rules.min_gt_size) == (50, 10)
    # GT 3x3 = 9 px (< 10: made void) and 2x5 = 10 px (kept, predicted exactly but that
    # prediction has 10 px < 50: dropped -> sIoU 0); predictions 7x7 = 49 px (< 50: dropped)
    # and 5x10 = 50 px (kept, on the background: PPV 0)
    fr = make_frame((40, 40), gt=[(0, 3, 0, 3), (10, 12, 0, 5)],
                    pred=[(0, 3, 0, 3), (10, 12, 0, 5), (20, 27, 0, 7), (30, 35, 20, 30)])
    siou, ppv = component_stats(fr[0] > THR, fr[1] == 1, fr[1] != 255, rules)
    np.testing.assert_array_equal(siou, [0.0])
    np.testing.assert_array_equal(ppv, [0.0])
    # a 50 px prediction holding a 9 px GT: its size counts before the GT becomes void (kept),
    # but only its 41 px left in the region of interest count: PPV 0, no GT component
    fr = make_frame((20, 20), gt=[(1, 4, 1, 4)], pred=[(0, 5, 0, 10)])
    siou, ppv = component_stats(fr[0] > THR, fr[1] == 1, fr[1] != 255, rules)
    assert siou.size == 0
    np.testing.assert_array_equal(ppv, [0.0])


def test_small_components_anomaly_track():
    rules = get_track("anomaly")
    assert (rules.min_pred_size, rules.min_gt_size) == (500, 100)
    # GT A 25x25 = 625 px predicted exactly (625 >= 500: kept, sIoU 1, PPV 1);
    # GT B 9x11 = 99 px (< 100: void, not reported); GT E 10x10 = 100 px (kept, missed: sIoU 0);
    # prediction C 10x50 = 500 px on the background (kept: PPV 0);
    # prediction D 9x50 + 49 = 499 px on the background (dropped)
    score, label = make_frame((80, 80), gt=[(0, 25, 0, 25), (40, 49, 0, 11), (65, 75, 0, 10)],
                              pred=[(0, 25, 0, 25), (30, 40, 30, 80), (50, 59, 30, 80), (59, 60, 30, 79)])
    siou, ppv = component_stats(score > THR, label == 1, label != 255, rules)
    np.testing.assert_array_equal(siou, [1.0, 0.0])
    np.testing.assert_array_equal(ppv, [1.0, 0.0])
    score[59, 79] = 1.0  # D now has 500 px: kept, a second false positive
    siou, ppv = component_stats(score > THR, label == 1, label != 255, rules)
    np.testing.assert_array_equal(ppv, [1.0, 0.0, 0.0])


def test_eight_connectivity():
    # diagonal neighbours form one component, for GT and prediction alike
    score = np.zeros((5, 5), np.float32)
    label = np.zeros((5, 5), np.uint8)
    idx = np.arange(4)
    label[idx, idx] = 1  # a diagonal line of 4 px: one GT component
    score[idx, idx] = 1.0
    score[3, 0] = score[4, 1] = 1.0  # another diagonal pair off the GT: one more component
    fc = frame_components(score > THR, label == 1, label != 255, NO_SIZE_RULE)
    np.testing.assert_array_equal(fc.siou_gt, [1.0])
    np.testing.assert_array_equal(fc.ppv_pred, [1.0, 0.0])


def test_threshold_is_strict_by_default():
    # the benchmark predicts score > threshold: a pixel equal to it is not predicted
    score = np.array([[0.5, 0.5], [0.2, 0.2]], np.float32)
    label = np.array([[1, 1], [0, 0]], np.uint8)
    assert run([(score, label)])["siou"] == 0.0
    assert run([(score, label)], inclusive=True)["siou"] == 1.0


def test_siou_equal_to_a_tau_counts_as_tp_but_linspace_rounding_matters():
    # sIoU 3/5 = 0.6 while linspace gives 0.6000000000000001: FN there, as in the benchmark
    assert TAUS[7] > 0.6 and TAUS[3] == 0.4
    c = f1_per_tau([0.6], [])
    assert c["tp"][6] == 1 and c["tp"][7] == 0


# --------------------------------------------------------------------------------------
# merging, pickling, validation


def _frames():
    return [
        make_frame((10, 10), gt=[(2, 5, 2, 5)], pred=[(2, 5, 2, 5)]),
        make_frame((6, 9), gt=[(2, 4, 1, 7)], pred=[(2, 4, 1, 3), (2, 4, 5, 7)]),
        make_frame((6, 9), gt=[(2, 4, 1, 3), (2, 4, 6, 8)], pred=[(2, 4, 1, 8)]),
        make_frame((8, 8), gt=[(1, 4, 1, 4)]),
        make_frame((10, 10), gt=[(1, 3, 1, 3)], pred=[(1, 3, 1, 3), (6, 9, 6, 9)]),
        make_frame((7, 11)),
    ]


def test_merge_order_does_not_matter():
    frames = _frames()
    states = [ComponentState(NO_SIZE_RULE, THR).update(*f) for f in frames]
    sequential = run(frames)
    rng = random.Random(0)
    for _ in range(20):
        pool = states[:]
        rng.shuffle(pool)
        while len(pool) > 1:  # random tree
            i = rng.randrange(len(pool) - 1)
            pool[i: i + 2] = [pool[i].merge(pool[i + 1])]
        assert same(pool[0].compute(), sequential)
    # by hand: sIoU over 6 GT components (1, 2/3, 0.4, 0.4, 0, 1); 6 predictions
    assert sequential["n_gt"] == 6 and sequential["n_pred"] == 6
    assert sequential["siou"] == pytest.approx((1 + 2 / 3 + 0.4 + 0.4 + 0 + 1) / 6, abs=1e-15)
    assert sequential["ppv"] == pytest.approx((1 + 1 + 1 + 8 / 14 + 1 + 0) / 6, abs=1e-15)
    # merge leaves its inputs unchanged
    assert states[0].compute()["n_gt"] == 1


def test_merge_refuses_other_settings():
    a = ComponentState("anomaly", 0.5)
    with pytest.raises(ValueError, match="different settings"):
        a.merge(ComponentState("obstacle", 0.5))
    with pytest.raises(ValueError, match="different settings"):
        a.merge(ComponentState("anomaly", 0.6))
    nan = ComponentState("anomaly", float("nan"))
    assert nan.merge(ComponentState("anomaly", float("nan"))).n_frames == 0


def test_picklable():
    state = ComponentState("obstacle", 0.25)
    for f in _frames():
        state.update(*f)
    clone = pickle.loads(pickle.dumps(state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        assert same(clone.compute(), state.compute())
    assert clone.rules is not state.rules and clone.rules == state.rules


def test_input_validation():
    state = ComponentState(NO_SIZE_RULE, THR)
    with pytest.raises(ValueError, match="only 0, 1"):
        state.update(np.zeros((2, 2)), np.full((2, 2), 2, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        state.update(np.zeros((2, 3)), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        state.update(np.full((2, 2), np.nan), np.zeros((2, 2), np.uint8))
    state.update(np.full((2, 2), np.nan), np.full((2, 2), 255, np.uint8))  # NaN on void is fine
    with pytest.raises(ValueError, match="unknown component track"):
        ComponentState("nope", 0.5)


def test_tracks_for_datasets():
    assert track_for_dataset("smiyc_ra21") == "anomaly"
    assert track_for_dataset("smiyc_ro21") == "obstacle"
    assert track_for_dataset("fs_lost_found") == "anomaly"
    assert track_for_dataset("something_else") == "anomaly"


# --------------------------------------------------------------------------------------
# best-F1 pixel threshold


def test_best_f1_threshold_by_hand():
    # positives score 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2 (n_pos = 3)
    # threshold: 0.9  0.8  0.7  0.4  0.3  0.2
    # TP:        1    2    2    3    3    3
    # FP:        0    0    1    1    2    3
    # F1 = 2TP/(TP+FP+3): 2/4, 4/5, 4/6, 6/7 (best), 6/8, 6/9
    thr = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    tp = np.array([1, 2, 2, 3, 3, 3])
    fp = np.array([0, 0, 1, 1, 2, 3])
    assert best_f1_threshold_from_counts(thr, tp, fp, 3) == 0.4


def test_best_f1_threshold_ties_and_edges():
    # F1 2/3 at both thresholds (2*1/(1+0+2) and 2*2/(2+2+2)): the higher threshold wins
    assert best_f1_threshold_from_counts(np.array([3.0, 1.0]), np.array([1, 2]), np.array([0, 2]), 2) == 3.0
    # only negatives predicted: every F1 is 0, the benchmark's prepended (0, 0) point at max + 1 wins
    assert best_f1_threshold_from_counts(np.array([2.0, 1.0]), np.array([0, 0]), np.array([1, 2]), 5) == 3.0
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(best_f1_threshold_from_counts(np.array([1.0]), np.array([0]), np.array([4]), 0))
    with pytest.raises(ValueError, match="decreasing"):
        best_f1_threshold_from_counts(np.array([1.0, 2.0]), np.array([1, 2]), np.array([0, 0]), 2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=30))
def test_best_f1_threshold_is_the_best_on_the_pixels(pixels):
    scores = np.array([s for s, _ in pixels], np.float64)
    pos = np.array([p for _, p in pixels])
    if not pos.any():
        return
    thr = np.unique(scores)[::-1]
    tp = np.array([np.count_nonzero(pos & (scores >= t)) for t in thr])
    fp = np.array([np.count_nonzero(~pos & (scores >= t)) for t in thr])
    best = best_f1_threshold_from_counts(thr, tp, fp, int(pos.sum()))

    def f1(t):
        pred = scores >= t
        p = np.count_nonzero(pred & pos) / max(np.count_nonzero(pred), 1)
        r = np.count_nonzero(pred & pos) / np.count_nonzero(pos)
        return 2 * p * r / (p + r) if p + r else 0.0

    f1s = [f1(t) for t in thr]
    assert f1(best) == pytest.approx(max(f1s), abs=1e-12)
    assert best == max(t for t, v in zip(thr, f1s) if v >= max(f1s) - 1e-12)


# --------------------------------------------------------------------------------------
# against a slow oracle on random frames


def oracle_frame(score, label, thr, min_pred, min_gt):
    """Per-component loops on the SMIYC definitions (see the module docstring)."""
    eight = np.ones((3, 3), int)
    roi = label != 255
    g_lab, n_g = ndimage.label(label == 1, eight)
    p_lab, n_p = ndimage.label((score > thr) & roi, eight)
    for c in range(1, n_p + 1):
        if np.count_nonzero(p_lab == c) < min_pred:
            p_lab[p_lab == c] = 0
    for c in range(1, n_g + 1):
        if np.count_nonzero(g_lab == c) < min_gt:
            roi[g_lab == c] = False
    g, p = g_lab[roi], p_lab[roi]
    siou = []
    for i in np.unique(g[g > 0]):
        in_s = np.isin(p, np.unique(p[(g == i) & (p > 0)]))
        inter = np.count_nonzero((g == i) & in_s)
        union = np.count_nonzero((g == i) | in_s)
        adjustment = np.count_nonzero(in_s & (g > 0) & (g != i))
        siou.append(inter / (union - adjustment))
    ppv = [np.count_nonzero((p == j) & (g > 0)) / np.count_nonzero(p == j) for j in np.unique(p[p > 0])]
    return siou, ppv


def random_frame(rng: np.random.Generator, shape):
    """Blobby labels (0/1/255) and scores with ties (a few levels)."""
    blobs = ndimage.uniform_filter(rng.random(shape), 3) > rng.uniform(0.45, 0.6)
    label = np.where(blobs, 1, 0).astype(np.uint8)
    label[ndimage.uniform_filter(rng.random(shape), 3) > 0.62] = 255
    other = ndimage.uniform_filter(rng.random(shape), 3)  # blobs of its own: splits, merges, misses
    score = np.round(0.3 * blobs + other + 0.3 * rng.random(shape) - 0.2, 1).astype(np.float32)
    return score, label


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_against_oracle(seed):
    rng = np.random.default_rng(seed)
    rules = TrackRules("r", int(rng.integers(0, 6)), int(rng.integers(0, 6)))
    thr = float(rng.choice([0.3, 0.5, 0.6, 0.7]))
    state = ComponentState(rules, thr)
    all_siou, all_ppv = [], []
    for _ in range(3):
        shape = tuple(int(x) for x in rng.integers(4, 14, size=2))
        score, label = random_frame(rng, shape)
        want_siou, want_ppv = oracle_frame(score, label, thr, rules.min_pred_size, rules.min_gt_size)
        got_siou, got_ppv = component_stats(score > thr, label == 1, label != 255, rules)
        np.testing.assert_array_equal(got_siou, want_siou)
        np.testing.assert_array_equal(got_ppv, want_ppv)
        state.update(score, label)
        all_siou += want_siou
        all_ppv += want_ppv
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        m = state.compute()
    assert (m["n_gt"], m["n_pred"]) == (len(all_siou), len(all_ppv))
    if all_siou:
        assert m["siou"] == pytest.approx(sum(all_siou) / len(all_siou), abs=1e-12)
    if all_ppv:
        assert m["ppv"] == pytest.approx(sum(all_ppv) / len(all_ppv), abs=1e-12)
    f1s = []
    for t in np.linspace(0.25, 0.75, 11):
        tp = sum(s >= t for s in all_siou)
        fn = sum(s < t for s in all_siou)
        fp = sum(v < t for v in all_ppv)
        f1s.append(2 * tp / (2 * tp + fn + fp) if 2 * tp + fn + fp else float("nan"))
    if all_siou or all_ppv:
        assert m["mean_f1"] == pytest.approx(float(np.mean(f1s)), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_prediction_on_its_bounding_box_equals_the_whole_frame(seed):
    """The prediction's bounding box alone (as a mask or as flat indices) gives the numbers of every
    step on the whole frame, bit for bit: from nothing predicted to every pixel."""
    rng = np.random.default_rng(seed)
    rules = TrackRules("r", int(rng.integers(0, 6)), int(rng.integers(0, 6)))
    shape = tuple(int(x) for x in rng.integers(4, 24, size=2))
    score, label = random_frame(rng, shape)
    gt = ground_truth(label == 1, label != 255, rules)
    for thr in (-1.0, 0.3, 0.6, float(score.max()), float(rng.uniform(-0.3, 1.5))):
        pred = (score > thr) & (label != 255)
        want = dense_frame_components(score > thr, label == 1, label != 255, rules)
        for got in (prediction_components(pred, gt, rules), predicted_components(np.flatnonzero(pred), gt, rules)):
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
