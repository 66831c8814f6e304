"""One path from a cache to maps (issue 26): the scorer inputs of ``analyze fit``
(:func:`analyze.compose.frame_scores.iter_scorer_inputs`, the full composition then the full
resize) are, bit for bit, what the fused, tiled pass of ``analyze score``, ``maps`` and ``export``
(:func:`analyze.compose.frame_scores.iter_frame_scores`) hands its scorers, at every shape: both
kinds, both temperature targets, landscape and portrait frames, label sizes equal to the resized
frame (the fused row blocks) or not (the whole-map path), any tile height.

The inputs the scorers receive are recorded where they enter them (``MapScorer.add`` for the row
tiles and blocks, ``score_many`` for whole maps) and assembled per temperature."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyze.compose import frame_scores as FS
from analyze.compose.frame_scores import FrameInputs, Scoring, iter_frame_scores, iter_scorer_inputs
from analyze.scorers import get_scorers
from schemas.windows import frame_windows


PATHS: list[str] = []  # which path each check took: "tiles" (fused) or "whole"


def _received(monkeypatch, frame: FrameInputs, scoring: Scoring) -> list[tuple[float, torch.Tensor]]:
    """``(t, x)`` per temperature of ``scoring``, in its order: what the scorers were handed (``x``,
    to be divided by ``t``), assembled from the tiles, blocks or whole maps they received."""
    made: list = []  # each MapScorer: [t, shape, {rows: x}]
    whole: list = []  # each score_many call on a whole map: (t, x)
    real_map, real_many = FS.MapScorer, FS.score_many

    class Recording(real_map):
        def __init__(self, names, temperature, shape, **kw):
            super().__init__(names, temperature, shape, **kw)
            self._record = [float(temperature), tuple(shape), []]
            made.append(self._record)

        def add(self, x, rows, cols=slice(None), channels=None):
            self._record[2].append((rows, cols, torch.as_tensor(x).clone()))
            return super().add(x, rows, cols, channels)

    def recording_many(x, t, names, **kw):
        whole.append((float(t), torch.as_tensor(x).clone()))
        return real_many(x, t, names, **kw)

    monkeypatch.setattr(FS, "MapScorer", Recording)
    monkeypatch.setattr(FS, "score_many", recording_many)
    try:
        for _ in iter_frame_scores(frame, scoring):
            pass
    finally:
        monkeypatch.setattr(FS, "MapScorer", real_map)
        monkeypatch.setattr(FS, "score_many", real_many)
    PATHS.append("whole" if whole else "tiles")
    if whole:
        assert not made
        return whole
    out = []
    for t, shape, parts in made:
        k = parts[0][2].shape[0]
        full = torch.full((k, *shape), float("nan"), dtype=parts[0][2].dtype)
        for rows, cols, x in parts:
            full[:, rows, cols] = x
        out.append((t, full))
    return out


def _assert_one_path(monkeypatch, frame: FrameInputs, temps: tuple[float, ...], target: str, tile_rows: int) -> None:
    scorers = get_scorers("msp,maxlogit,energy", frame.kind)
    got = _received(monkeypatch, frame, Scoring(scorers, temps, target, tile_rows=tile_rows))
    want = list(iter_scorer_inputs(frame, temps, target, tile_rows=tile_rows))
    assert len(got) == len(want) == len(temps)
    for (t_got, x_got), (t, x_want, t_want) in zip(got, want):
        assert t_got == t_want, t
        x_want = torch.as_tensor(x_want)
        assert x_got.shape == x_want.shape and x_got.dtype == x_want.dtype
        assert torch.equal(x_got, x_want), f"T={t}: {int((x_got != x_want).sum())} values differ"


TEMPS = st.lists(st.sampled_from([0.5, 0.75, 1.0, 1.1, 2.0]), min_size=1, max_size=3, unique=True).map(tuple)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(12, 40), w=st.integers(12, 40), crop=st.sampled_from([8, 12, 16]), mask=st.sampled_from([4, 6]),
       same_size=st.booleans(), temps=TEMPS, target=st.sampled_from(["query", "pixel"]),
       tile_rows=st.sampled_from([1, 3, 64]), seed=st.integers(0, 2**16))
def test_query_inputs_are_one_path(monkeypatch, h, w, crop, mask, same_size, temps, target, tile_rows, seed):
    """EoMT: landscape frames whose label size is the resized frame take the fused row blocks,
    the rest (portrait crops, other label sizes) the whole-map path; either hands the scorers
    exactly ``iter_scorer_inputs``'s ``s``."""
    geom = frame_windows(h, w, crop)
    rng = np.random.default_rng(seed)
    n, q, k = geom.n_crops, 5, 4
    masks = (rng.standard_normal((n, q, mask, mask)) * 4).astype(np.float16)
    classes = (rng.standard_normal((n, q, k + 1)) * 3).astype(np.float32)
    size = geom.resized if same_size else geom.original
    frame = FrameInputs("query", tuple(size), mask_logits=masks, class_logits=classes, geom=geom)
    _assert_one_path(monkeypatch, frame, temps, target, tile_rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(2, 24), w=st.integers(2, 24), out_h=st.integers(2, 60), out_w=st.integers(2, 60),
       void=st.sampled_from([None, 0, 3]), temps=TEMPS, seed=st.integers(0, 2**16))
def test_pixel_inputs_are_one_path(monkeypatch, h, w, out_h, out_w, void, temps, seed):
    """ERFNet: the row tiles the fused pass scores are slices of the one full resize."""
    logits = (np.random.default_rng(seed).standard_normal((5, h, w)) * 3).astype(np.float16)
    frame = FrameInputs("pixel", (out_h, out_w), logits=logits, void_channel=void)
    _assert_one_path(monkeypatch, frame, temps, "query", 16)


def test_both_query_paths_are_checked(monkeypatch):
    """A landscape frame at the resized size takes the fused blocks; a portrait one the whole maps."""
    rng = np.random.default_rng(1)
    for h, w, want in ((16, 30, "tiles"), (30, 16, "whole")):
        geom = frame_windows(h, w, 16)
        masks = (rng.standard_normal((geom.n_crops, 5, 4, 4)) * 4).astype(np.float16)
        classes = (rng.standard_normal((geom.n_crops, 5, 5)) * 3).astype(np.float32)
        frame = FrameInputs("query", geom.resized, mask_logits=masks, class_logits=classes, geom=geom)
        _assert_one_path(monkeypatch, frame, (0.5, 1.0), "query", 3)
        assert PATHS[-1] == want


def test_the_recorder_sees_a_difference(monkeypatch):
    """The check above can fail: a fused pass fed from a composition one ulp off is caught."""
    geom = frame_windows(16, 30, 16)
    rng = np.random.default_rng(0)
    masks = (rng.standard_normal((geom.n_crops, 5, 4, 4)) * 4).astype(np.float16)
    classes = (rng.standard_normal((geom.n_crops, 5, 5)) * 3).astype(np.float32)
    frame = FrameInputs("query", geom.resized, mask_logits=masks, class_logits=classes, geom=geom)
    real = FS.FrameComposer.row_blocks

    def off_by_one_ulp(self, temperatures=(1.0,), pixels=None):
        for rows, block in real(self, temperatures, pixels):
            yield rows, {t: torch.nextafter(b, torch.full_like(b, np.inf)) for t, b in block.items()}

    monkeypatch.setattr(FS.FrameComposer, "row_blocks", off_by_one_ulp)
    try:
        _assert_one_path(monkeypatch, frame, (1.0,), "query", 4)
    except AssertionError as exc:
        assert "values differ" in str(exc)
    else:
        raise AssertionError("a one-ulp difference went unnoticed")
