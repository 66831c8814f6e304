"""The two-pass exact plan's first pass composes only what the anomaly pixels need (issue 27,
goal 1), and every other pass only the labelled pixels (void is in no metric): the pixels a
pass reads score as in the whole frame, bit for bit (SML's smoothing widens them by its
reach), the rest is not composed, and the rows equal those of whole frames exactly, one pass
or two, on both cache kinds, with and without SML, with and without the bootstrap intervals
and the component metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from analyze import metrics as M
from analyze.bench.caches import build_cache
from analyze.bench.reference import study_scorers
from analyze.compose import frame_scores as FS
from analyze.compose.frame_scores import Scoring, frame_inputs, score_frame
from analyze.compose.partial import compose_mask
from analyze.run import tasks
from analyze.run.driver import score_cache
from analyze.run.fit import fit_id_stats
from analyze.scorers import get_scorers, sml
from schemas import cache as C

TEMPS = (0.5, 1.0)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Per kind: three 256x512 anomaly frames (EoMT: four row blocks of 64) and the statistics
    of a semantic cache (SML)."""
    tmp = tmp_path_factory.mktemp("rows")
    out = {}
    for kind in ("pixel", "query"):
        build_cache(tmp / f"{kind}.zarr", kind, 3, scale=4, dataset="smiyc_ro21", seed=5)
        build_cache(tmp / f"{kind}_sem.zarr", kind, 2, scale=4, label_kind="semantic", seed=6)
        out[kind] = (str(tmp / f"{kind}.zarr"), fit_id_stats(str(tmp / f"{kind}_sem.zarr"), TEMPS, scheduler="sync"))
    return out


def _scorers(kind: str, with_sml: bool) -> str:
    return ",".join(study_scorers(kind) + (["sml"] if with_sml else []))


def _frame(cache: str, i: int):
    root, spec = C.open_cache(cache, mode="r")
    return frame_inputs(root, spec, i), C.read_label(root, spec, i)


def _scoring(cache: str, kind: str, stats, with_sml: bool) -> Scoring:
    target = "logits" if kind == "pixel" else "query"
    st = stats.class_stats(C.open_cache(cache, mode="r")[1], cache, target, TEMPS) if with_sml else None
    return Scoring(get_scorers(_scorers(kind, with_sml), kind, {"id_stats"}), TEMPS, stats=st)


def test_compose_mask_widens_by_the_reach_of_sml():
    pixels = np.zeros((200, 300), bool)
    pixels[50, 100] = pixels[120, 250] = True
    plain = get_scorers("msp,energy", "pixel")
    assert compose_mask(None, plain) is None and (compose_mask(pixels, plain) == pixels).all()
    far = sml.reach()  # the defaults: 3 x 6 (Gaussian) + 4 iterations + radius 3 + 1 (boundaries)
    assert far == 26

    def square(r, c, d):
        y, x = np.ogrid[:200, :300]
        return (np.abs(y - r) <= d) & (np.abs(x - c) <= d)

    wide = compose_mask(pixels, get_scorers("msp,sml", "pixel"))
    assert (wide == (square(50, 100, far) | square(120, 250, far))).all()
    narrow = compose_mask(pixels, get_scorers("sml:width=0,iterations=0,dilation=2", "pixel"))
    assert (narrow == (square(50, 100, 6) | square(120, 250, 6))).all()


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("with_sml", [False, True])
def test_pixels_read_score_as_in_the_whole_frame_and_the_rest_is_not_composed(caches, monkeypatch, kind, with_sml):
    """A patch of pixels in the left crop: the maps there equal the whole frame's bit for bit; far
    from it they are 0, and EoMT composes only the left crop's tiles that cover the patch."""
    cache, stats = caches[kind]
    frame, _ = _frame(cache, 0)
    scoring = _scoring(cache, kind, stats, with_sml)
    whole = score_frame(frame, scoring)
    added = []
    real = FS.FrameComposer._add_tile
    monkeypatch.setattr(FS.FrameComposer, "_add_tile", lambda self, *a: added.append(1) or real(self, *a))
    pixels = np.zeros(frame.out_size, bool)  # (256, 512): EoMT's crops are its halves, its blocks 64 rows
    pixels[150:155, 100:120] = True
    parts = {ts.temperature: ts.scores for ts in FS.iter_frame_scores(frame, scoring, pixels)}
    for (name, t), full in whole.scores.items():
        part = parts[t][name]
        assert np.array_equal(part[pixels], full[pixels]), (name, t)
        # nothing composed in the first block, nor scored right of the patch (SML's smoothing reaches 26 pixels)
        for far in (part[:32], part[:, 200:]):
            assert (far == 0).all()
        assert (full[:32] != 0).all()
    if kind == "query":  # of the left crop's tiles, those that cover rows 150-154 (SML: 26 more either side)
        comp = FS.FrameComposer(frame.mask_logits, frame.class_logits, frame.geom)
        step = comp.few_pixels_tile_rows(comp.crop_products(0, tuple(scoring.temperatures)))
        assert step in (16, 64)  # FINER_TILE_ROWS where its products are exact on this BLAS, else the 64 of the tiles
        first, last = (124, 180) if with_sml else (150, 154)
        assert len(added) == last // step - first // step + 1


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("with_sml", [False, True])
@pytest.mark.parametrize("later", [False, True])
def test_two_pass_rows_equal_one_pass_rows_exactly(caches, monkeypatch, kind, with_sml, later):
    cache, stats = caches[kind]
    asked: list = []  # the rows each frame task of each pass asked for
    real = tasks.iter_frame_scores

    def record(frame, scoring, pixels=None):
        asked.append(None if pixels is None else pixels.any(axis=1).mean())
        return real(frame, scoring, pixels)

    monkeypatch.setattr(tasks, "iter_frame_scores", record)
    opts = dict(scheduler="sync", warn=lambda m: None, id_stats=[stats] if with_sml else [],
                **(dict(bootstrap=30, component_metrics=True, seed=1) if later else {}))
    with monkeypatch.context() as m:  # every pass composes whole frames, void rows too (the reference)
        for name, phase in tasks.PHASES.items():
            m.setitem(tasks.PHASES, name, dataclasses.replace(phase, labelled_pixels=False))
        whole = score_cache(cache, _scorers(kind, with_sml), TEMPS, **opts)
    assert len(asked) >= 3 and all(a is None for a in asked)
    asked[:] = []
    one = score_cache(cache, _scorers(kind, with_sml), TEMPS, **opts)
    void_top = 1 - 0.08  # the rows below build_cache's void band
    assert len(asked) >= 3 and all(a == pytest.approx(void_top, abs=0.01) for a in asked)  # the labelled rows
    asked[:] = []
    two = score_cache(cache, _scorers(kind, with_sml), TEMPS, max_memory=2**16, **opts)
    assert len(asked) >= 6 and all(0 < f < 0.8 for f in asked[:3])  # positives: the anomaly pixels' rows
    assert asked[3:6] == [pytest.approx(void_top, abs=0.01)] * 3  # negatives: the labelled rows
    for a, b, c in zip(whole, one, two):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        pd.testing.assert_frame_equal(a, c, check_exact=True)
    assert len(one[0]) and len(one[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_positive_state_reads_the_same_scores_from_labels_read_once(dtype):
    """The positives pass reads each frame's labels once for every key (M.anomaly_pixels): the
    state holds the same anomaly scores, in the same order, and the same counts as update()."""
    rng = np.random.default_rng(5)
    a, b = M.PositiveState(), M.PositiveState()
    for _ in range(3):
        label = rng.choice(np.array([0, 1, 255], np.uint8), size=(30, 40), p=[0.7, 0.1, 0.2])
        score = (rng.standard_normal((30, 40)) * 10).astype(dtype)
        a.update(score, label)
        b.update_at(score, M.anomaly_pixels(label))
    assert (a.n_pos, a.n_neg) == (b.n_pos, b.n_neg) and a.n_pos > 0
    assert len(a._pos) == len(b._pos)
    for x, y in zip(a._pos, b._pos):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.distinct(), b.distinct())


def test_labels_read_once_reject_what_update_rejects():
    label = np.zeros((4, 5), np.uint8)
    label[0, 0] = 7
    with pytest.raises(ValueError, match="may hold only 0, 1 and 255"):
        M.anomaly_pixels(label)
    label[0, 0] = 1
    score = np.zeros((4, 5))
    score[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.PositiveState().update_at(score, M.anomaly_pixels(label))
    with pytest.raises(ValueError, match="shape"):
        M.PositiveState().update_at(np.zeros((5, 4)), M.anomaly_pixels(label))
