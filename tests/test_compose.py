"""EoMT composition and ERFNet resizing against explicit per-crop float64 oracles and the untiled
composition (tests/oracles.py), whole frames and sampled pixels."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analyze.compose.queries import FrameComposer, class_probs
from analyze.compose.resize import pixel_logits_at, pixel_logits_to_label_size, resize_scores, semantic_prediction
from analyze.compose.frame_scores import FrameInputs, Scoring, score_frame
from analyze.scorers import SCORERS, get_scorers, score
from schemas.windows import frame_windows
from tests.oracles import compose_frame

Q, K = 7, 4  # queries, classes (class logits have K + 1 columns)
#: the scorers of x that need nothing else (the mask and statistics scorers: tests/test_scorer_oracles.py)
X_SCORERS = {n: partial(score, n) for n, s in SCORERS.items() if not s.needs_queries and not s.needs_stats}

# (original H, W, crop, resized, portrait, crop starts): the windows worked out by hand from
# the official formula, so the oracle does not depend on schemas.windows
CASES = {
    "overlap": (45, 80, 64, (64, 114), False, (0, 50)),  # 114 = round(80 * 64 / 45); overlap 14
    "portrait": (80, 45, 64, (114, 64), True, (0, 50)),
    "no_overlap": (50, 100, 64, (64, 128), False, (0, 64)),
    "four_crops": (40, 150, 32, (32, 120), False, (0, 29, 58, 88)),  # overlap 8, 8/3 per crop
}


def bilinear(x, size):
    """The official resize: torch bilinear, align_corners=False, in float32, of (C, h, w) -> float64.

    Float32 on purpose: torch's kernel places source pixels with a float32 scale, so a float64
    resize differs from the official float32 one by up to ~4e-6 * |neighbour difference|.
    """
    t = torch.from_numpy(np.asarray(x, np.float32))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy().astype(np.float64)


def oracle_s(mask_logits, class_logits, crop, resized, portrait, starts, out_size, t_query=1.0):
    """s (K, H, W) by the book: one crop at a time, plain loops, float64 between the resizes."""
    sums = np.zeros((K, *resized))
    counts = np.zeros(resized)
    for j, start in enumerate(starts):
        sig = 1.0 / (1.0 + np.exp(-bilinear(mask_logits[j].astype(np.float32), (crop, crop))))  # (Q, c, c)
        c = class_logits[j].astype(np.float64) / t_query
        p = np.exp(c - c.max(1, keepdims=True))
        p = (p / p.sum(1, keepdims=True))[:, :K]  # no-object dropped after the softmax
        crop_s = np.zeros((K, crop, crop))
        for q in range(Q):
            for k in range(K):
                crop_s[k] += p[q, k] * sig[q]
        if portrait:
            sums[:, start : start + crop, :] += crop_s
            counts[start : start + crop, :] += 1
        else:
            sums[:, :, start : start + crop] += crop_s
            counts[:, start : start + crop] += 1
    return bilinear(sums / counts, out_size)


def assert_argmax(semantic, s, margin=1e-5):
    """``semantic == argmax(s)`` wherever the top two classes of ``s`` are not within ``margin``."""
    assert semantic.dtype == np.uint8
    top2 = np.sort(s, axis=0)[-2:]
    clear = top2[1] - top2[0] > margin
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(semantic[clear], s.argmax(0)[clear])


def make_outputs(n_crops, mask_hw, seed=0, dtype=np.float16):
    rng = np.random.default_rng(seed)
    masks = (rng.standard_normal((n_crops, Q, *mask_hw)) * 4).astype(dtype)
    classes = (rng.standard_normal((n_crops, Q, K + 1)) * 3).astype(np.float32)
    return masks, classes


@pytest.mark.parametrize("case", sorted(CASES))
def test_geometry_matches_hand_worked_windows(case):
    h, w, crop, resized, portrait, starts = CASES[case]
    g = frame_windows(h, w, crop)
    assert g.resized == resized and g.portrait == portrait
    assert [(win.start, win.end) for win in g.windows] == [(s, s + crop) for s in starts]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("t", [1.0, 0.5])
def test_compose_frame_matches_oracle(case, t):
    h, w, crop, resized, portrait, starts = CASES[case]
    g = frame_windows(h, w, crop)
    masks, classes = make_outputs(len(starts), (crop // 4, crop // 4))
    want = oracle_s(masks, classes, crop, resized, portrait, starts, (h, w), t)
    got = compose_frame(masks, classes, g, temperature=t)
    assert got.dtype == torch.float32 and tuple(got.shape) == (K, h, w)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tile_rows", [1, 5, 64])
@pytest.mark.parametrize("mask_hw", [(16, 16), (13, 11)])  # integer and odd upsampling ratios
def test_frame_composer_matches_oracle(case, tile_rows, mask_hw):
    h, w, crop, resized, portrait, starts = CASES[case]
    g = frame_windows(h, w, crop)
    masks, classes = make_outputs(len(starts), mask_hw, seed=1)
    fc = FrameComposer(masks, classes, g, tile_rows=tile_rows)
    got = fc.resized_scores((0.5, 1.0, 1.1))
    for t in (0.5, 1.0, 1.1):
        want = oracle_s(masks, classes, crop, resized, portrait, starts, (h, w), t)
        np.testing.assert_allclose(resize_scores(got[t], (h, w)).numpy(), want, rtol=0, atol=1e-6)


def test_frame_composer_agrees_with_untiled_reference():
    g = frame_windows(45, 80, 64)
    masks, classes = make_outputs(2, (16, 16), seed=2)
    ref = compose_frame(masks, classes, g)
    got = FrameComposer(masks, classes, g, tile_rows=7).scores(1.0)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES) + ["kept_size"])
def test_pixel_weights_equal_the_full_composition(case):
    """``A @ P_T`` at sampled pixels equals the untiled composition there, at several T."""
    h, w, crop = (64, 128, 64) if case == "kept_size" else CASES[case][:3]  # kept_size: resized == original
    g = frame_windows(h, w, crop)
    masks, classes = make_outputs(g.n_crops, (13, 11), seed=8)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, h, 500), rng.integers(0, w, 500)
    rows[:4], cols[:4] = (0, h - 1, 0, h - 1), (0, 0, w - 1, w - 1)  # the corners: clamped taps
    a = FrameComposer(masks, classes, g).pixel_weights(rows, cols)
    assert a.shape == (500, g.n_crops * Q) and a.dtype == np.float64
    for t in (0.5, 1.0, 2.0):
        p = torch.cat([class_probs(c, t) for c in classes]).numpy()  # (n_crops * Q, K)
        want = compose_frame(masks, classes, g, temperature=t).numpy()[:, rows, cols].T
        np.testing.assert_allclose(a @ p, want, rtol=0, atol=2e-6)


def test_pixel_logits_at_equals_the_full_resize():
    rng = np.random.default_rng(0)
    for (h, w), (H, W) in (((8, 15), (20, 30)), ((16, 16), (16, 16)), ((23, 41), (48, 96))):
        z = (rng.normal(size=(20, h, w)) * 3).astype(np.float16)
        full = pixel_logits_to_label_size(z, (H, W), 19).numpy()
        rows, cols = rng.integers(0, H, 400), rng.integers(0, W, 400)
        np.testing.assert_allclose(pixel_logits_at(z, (H, W), 19, rows, cols), full[:, rows, cols].T, atol=2e-6)


def test_frame_composer_same_across_temperatures_as_from_scratch():
    g = frame_windows(45, 80, 64)
    masks, classes = make_outputs(2, (16, 16), seed=3)
    temps = (0.5, 0.75, 1.0, 1.1)
    kept = FrameComposer(masks, classes, g, tile_rows=9, keep_masks=True)
    together = kept.resized_scores(temps)
    again = kept.resized_scores(temps[::-1])  # second call reuses the kept sigmoid tiles
    for t in temps:
        fresh = FrameComposer(masks, classes, g, tile_rows=9).resized_scores((t,))[t]
        np.testing.assert_allclose(together[t].numpy(), fresh.numpy(), rtol=0, atol=1e-6)
        assert torch.equal(again[t], together[t])
    # temperature changes s (and can change the argmax), not just its scale
    assert not torch.allclose(together[0.5], together[1.0])


def test_float16_masks_are_upcast_first():
    g = frame_windows(50, 100, 64)
    masks, classes = make_outputs(2, (16, 16), seed=4)
    a = FrameComposer(masks, classes, g).scores(1.0)
    b = FrameComposer(masks.astype(np.float32), classes, g).scores(1.0)
    assert torch.equal(a, b)


def test_class_probs_drop_no_object_after_softmax():
    c = np.array([[0.0, 0.0, 0.0, np.log(5.0)]], np.float32)  # K = 3 plus no-object
    np.testing.assert_allclose(class_probs(c).numpy(), [[1 / 8, 1 / 8, 1 / 8]], rtol=1e-6)
    np.testing.assert_allclose(class_probs(c, 2.0).numpy(), softmax_rows(c / 2.0)[:, :3], rtol=1e-6)


def softmax_rows(c):
    e = np.exp(c - c.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_scores_are_taken_after_resizing_s():
    h, w, crop, resized, portrait, starts = CASES["overlap"]
    g = frame_windows(h, w, crop)
    masks, classes = make_outputs(2, (16, 16), seed=5)
    fs = score_frame(FrameInputs("query", mask_logits=masks, class_logits=classes, geom=g),
                     Scoring(get_scorers("all", "query", ())))
    s = oracle_s(masks, classes, crop, resized, portrait, starts, (h, w))
    s_resized = FrameComposer(masks, classes, g).resized_scores()[1.0]
    for name, scorer in X_SCORERS.items():
        got = fs.scores[(name, 1.0)]
        assert got.dtype == np.float64 and got.shape == (h, w)
        np.testing.assert_allclose(got, scorer(s.astype(np.float32)), rtol=1e-5, atol=2e-6)
        wrong_order = bilinear(scorer(s_resized)[None], (h, w))[0]  # score, then resize the score
        assert np.abs(wrong_order - got).max() > 1e-4, name
    assert_argmax(fs.semantic[1.0], s)


def test_temperature_targets():
    h, w, crop, resized, portrait, starts = CASES["portrait"]
    g = frame_windows(h, w, crop)
    masks, classes = make_outputs(2, (16, 16), seed=6)
    temps = (0.5, 1.0, 1.5)
    scorers = get_scorers("all", "query", ())
    frame = FrameInputs("query", mask_logits=masks, class_logits=classes, geom=g)
    query = score_frame(frame, Scoring(scorers, temps, "query"))
    pixel = score_frame(frame, Scoring(scorers, temps, "pixel"))
    assert query.scores.keys() == {(s.name, t) for s in scorers for t in temps}
    # the mask scorers see T only through the query softmax: with the pixel target, T = 1 only
    assert pixel.scores.keys() == {(s.name, t) for s in scorers for t in temps if t == 1.0 or not s.needs_queries}
    for s in scorers:  # T = 1: both targets are the same computation
        np.testing.assert_array_equal(query.scores[(s.name, 1.0)], pixel.scores[(s.name, 1.0)])
    s1 = oracle_s(masks, classes, crop, resized, portrait, starts, (h, w)).astype(np.float32)
    for t in temps:
        s_t = oracle_s(masks, classes, crop, resized, portrait, starts, (h, w), t).astype(np.float32)
        for name, scorer in X_SCORERS.items():
            np.testing.assert_allclose(query.scores[(name, t)], scorer(s_t, 1.0), rtol=1e-5, atol=2e-6)
            np.testing.assert_allclose(pixel.scores[(name, t)], scorer(s1, t), rtol=1e-5, atol=2e-6)
        assert_argmax(query.semantic[t], s_t)
        np.testing.assert_array_equal(pixel.semantic[t], pixel.semantic[1.0])
    assert not np.array_equal(query.semantic[0.5], query.semantic[1.5])  # T on the queries moves the argmax


def test_pixel_logits_resized_before_scoring_without_void():
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((5, 6, 10)) * 3).astype(np.float16)  # channel 2 = void
    got = pixel_logits_to_label_size(z, (9, 17), void_channel=2)
    want = bilinear(z.astype(np.float32)[[0, 1, 3, 4]], (9, 17))
    assert got.dtype == torch.float32 and tuple(got.shape) == (4, 9, 17)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)
    fs = score_frame(FrameInputs("pixel", (9, 17), logits=z, void_channel=2), Scoring(get_scorers("msp,energy"), (0.5, 1.0)))
    for t in (0.5, 1.0):
        want_msp = score("msp", want.astype(np.float32), t)
        np.testing.assert_allclose(fs.scores[("msp", t)], want_msp, atol=1e-5)
        np.testing.assert_array_equal(fs.semantic[t], want.argmax(0))  # T never moves a pixel model's argmax
    with pytest.raises(ValueError, match="void_channel"):
        pixel_logits_to_label_size(z, (9, 17), void_channel=5)


def test_semantic_prediction_uint8_first_maximum():
    x = np.zeros((3, 2, 2), np.float32)
    x[2, 0, 0] = 1.0
    x[1, 1, 1] = x[2, 1, 1] = 2.0
    got = semantic_prediction(x)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [[2, 0], [0, 1]])


def test_inputs_are_checked():
    g = frame_windows(45, 80, 64)
    masks, classes = make_outputs(2, (16, 16))
    with pytest.raises(ValueError, match="2 crops"):
        FrameComposer(masks[:1], classes[:1], g)
    with pytest.raises(ValueError, match="temperature"):
        FrameComposer(masks, classes, g).resized_scores((0.0,))
    with pytest.raises(ValueError, match="temp_target"):
        score_frame(FrameInputs("query", mask_logits=masks, class_logits=classes, geom=g),
                    Scoring(get_scorers("msp"), temp_target="logits"))
    with pytest.raises(ValueError, match="needs"):
        score_frame(FrameInputs("query"), Scoring(get_scorers("msp")))


@pytest.mark.parametrize("tile_rows", [1, 5, 64, 1000])
@pytest.mark.parametrize("mask_hw", [(16, 16), (13, 11), (64, 64)])
def test_mask_tiles_are_torch_bilinear_then_sigmoid_bit_for_bit(tile_rows, mask_hw):
    """The tiles (the width pass, then each source row broadcast over the output rows it serves)
    are exactly ``sigmoid(interpolate(m, bilinear))`` of the whole crop, torch's official op;
    each tile read before the next is made (tiles share memory)."""
    from tests.oracles import upsampled_mask_probs

    g = frame_windows(100, 250, 96)
    masks, classes = make_outputs(g.n_crops, mask_hw, seed=4)
    masks = [m * 4 for m in masks]  # logits far from 0: the sigmoid's rounding shows
    fc = FrameComposer(masks, classes, g, tile_rows=tile_rows)
    for j in range(g.n_crops):
        got = torch.cat([t.clone() for _, _, t in fc.mask_tiles(j)], dim=1)
        assert torch.equal(got, upsampled_mask_probs(masks[j], g.crop))
