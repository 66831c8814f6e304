"""EoMT's class-score products (analyze.compose.products): every T's matrices stacked into one
BLAS product give each T exactly the bits of its own product, and the semantic map of a pass
that scores nothing is the first maximal class the scorers' pass gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyze.compose import products as P
from analyze.compose.queries import _full_probs
from analyze.scorers import SCORERS, get_scorers, kernels
from analyze.scorers.masks import channels_for
from analyze.scorers.pixel import MapScorer


def _targets(n_temps: int, rows: int, r: int, crop: int) -> list[torch.Tensor]:
    return [torch.zeros((rows, r, crop), dtype=torch.float32) for _ in range(n_temps)]


@pytest.mark.parametrize("temps", [(1.0,), (0.5, 0.75, 1.0, 1.1), (0.75, 2.0)])
@pytest.mark.parametrize("with_channels", [False, True])
@pytest.mark.parametrize("r", [7, 64])
def test_stacked_products_equal_separate_ones(temps, with_channels, r):
    rng = np.random.default_rng([len(temps), with_channels, r])
    q, k, crop = 50, 19, 96
    class_logits = (rng.normal(size=(q, k + 1)) * 2).astype(np.float32)
    tile = torch.from_numpy(rng.random((q, r, crop), dtype=np.float32))
    chans = [c for n in ("eam", "noobject", "m2a") for c in channels_for(SCORERS[n])] if with_channels else []
    sums = [c for c in chans if c.reduce == "sum"]
    maxes = [c for c in chans if c.reduce == "max"]
    full = [_full_probs(class_logits, t) for t in temps]
    rows = k + len(chans)
    stacked, separate = _targets(len(temps), rows, r, crop), _targets(len(temps), rows, r, crop)
    P.CropProducts(full, k, sums, maxes, numpy=True).add(tile, stacked)
    P.CropProducts(full, k, sums, maxes, numpy=True, stack=False).add(tile, separate)
    for a, b in zip(stacked, separate):
        assert torch.equal(a, b)
    # and each T alone: no T's bits depend on which others were asked for
    for i in range(len(temps)):
        alone = _targets(1, rows, r, crop)
        P.CropProducts([full[i]], k, sums, maxes, numpy=True).add(tile, alone)
        assert torch.equal(alone[0], stacked[i])


def test_stacking_exact_is_checked_once_per_shape():
    P._checked.clear()
    first = P.stacking_exact((19, 19, 2), 100, 333)
    assert isinstance(first, bool)
    assert list(P._checked) == [((19, 19, 2), 100, 333, P.blas_threads())]
    assert P.stacking_exact((19, 19, 2), 100, 333) is first
    P._checked[((3,), 4, 5, P.blas_threads())] = False  # a BLAS that rounds a stacked row otherwise
    products = P.CropProducts([np.full((4, 4), 0.25, np.float32)], 3, [], [], numpy=True)
    products.stacked = np.ones((3, 4), np.float32) * 7  # would show if it were used
    out = _targets(1, 3, 1, 5)
    products.add(torch.ones((4, 1, 5)), out)
    assert torch.equal(out[0], torch.full((3, 1, 5), 1.0))  # the separate product: 4 x 0.25 x 1


def _prepare_arg(x: np.ndarray, t: float) -> np.ndarray:
    k, n = x.shape
    arg = np.empty(n, np.int64)
    kernels.prepare(x, t, t != 1.0, np.empty((k, n)), np.empty((k, n)), np.empty(n), arg)
    return arg


@pytest.mark.parametrize("seed", range(6))
def test_first_argmax_is_the_scorers_argmax(seed):
    """Ties, -0, NaN: the lean kernel's class is the one the scorers' pass gives."""
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(1, 25)), int(rng.integers(1, 500))
    x = rng.integers(-3, 4, size=(k, n)).astype(np.float32) * rng.choice([1, 0.5, 1e-30], size=(k, n)).astype(np.float32)
    x[rng.random((k, n)) < 0.05] = -0.0
    if seed % 2:
        x[rng.random((k, n)) < 0.03] = np.nan
    for t in (1.0, 0.75, 1.1):
        arg = np.empty(n, np.int64)
        kernels.first_argmax(x, t, t != 1.0, np.empty(n), arg)
        np.testing.assert_array_equal(arg, _prepare_arg(x, t))


def test_semantic_only_map_scorer_equals_the_scorers_pass():
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, size=(19, 40, 70)).astype(np.float32) * np.float32(0.37)  # many ties
    for t in (1.0, 0.75):
        alone = MapScorer([], t, (40, 70), semantic=True)
        scored = MapScorer(["msp", "maxlogit"], t, (40, 70), semantic=True)
        for rows in (slice(0, 13), slice(13, 40)):
            alone.add(x[:, rows], rows)
            scored.add(x[:, rows], rows)
        np.testing.assert_array_equal(alone.finish()[1], scored.finish()[1])


# (original H, W, crop): overlapping, side by side, four crops (tests/test_compose.py CASES)
GEOMETRIES = [(45, 80, 64), (50, 100, 64), (40, 150, 32)]


@pytest.mark.parametrize("hw_crop", GEOMETRIES)
@pytest.mark.parametrize("temp_target", ["query", "pixel"])
@pytest.mark.parametrize("tile_rows", [5, 64])
def test_semantic_only_pass_equals_the_fused_passes_semantic_maps(hw_crop, temp_target, tile_rows):
    """A semantic cache's pass (no scorer: analyze.compose.semantic) gives the semantic maps of the
    fused pass that scores (the blocks of row_blocks, the scorers' argmax), bit for bit, also
    where crops overlap and with classes tied."""
    from analyze.compose.frame_scores import FrameInputs, Scoring, iter_frame_scores
    from schemas.windows import frame_windows

    h, w, crop = hw_crop
    g = frame_windows(h, w, crop)
    rng = np.random.default_rng([h, w, tile_rows])
    q, k = 9, 5
    masks = (rng.standard_normal((g.n_crops, q, 13, 11)) * 3).astype(np.float16)
    classes = (rng.standard_normal((g.n_crops, q, k + 1)) * 2).astype(np.float32)
    classes[:, :, 1] = classes[:, :, 0]  # classes 0 and 1 tie everywhere: the first maximum is taken
    frame = FrameInputs(kind="query", mask_logits=masks, class_logits=classes, geom=g, out_size=g.resized)
    temps = (0.5, 1.0, 1.1)
    alone = list(iter_frame_scores(frame, Scoring((), temps, temp_target, tile_rows=tile_rows)))
    scored = list(iter_frame_scores(frame, Scoring(tuple(get_scorers("msp", "query")), temps, temp_target,
                                                   tile_rows=tile_rows)))
    assert [a.temperature for a in alone] == list(temps)
    for a, b in zip(alone, scored):
        assert a.scores == {}
        np.testing.assert_array_equal(a.semantic, b.semantic)
    assert len({a.semantic.tobytes() for a in alone}) == (len(temps) if temp_target == "query" else 1)


@pytest.mark.parametrize("hw_crop", GEOMETRIES)
@pytest.mark.parametrize("temp_target", ["query", "pixel"])
@pytest.mark.parametrize("tile_rows", [5, 64])
def test_semantic_pass_of_the_labelled_pixels_equals_the_whole_frames_there(hw_crop, temp_target, tile_rows):
    """A semantic cache's pass composes only the row blocks that hold a labelled pixel (the rows
    of Cityscapes' ego vehicle are void): the same classes at every labelled pixel as the whole
    frame's pass, 0 in the blocks left out, for EoMT and ERFNet frames."""
    from analyze.compose.frame_scores import FrameInputs, Scoring, iter_frame_scores
    from schemas.windows import frame_windows

    h, w, crop = hw_crop
    g = frame_windows(h, w, crop)
    rng = np.random.default_rng([h, w, tile_rows, 7])
    masks = (rng.standard_normal((g.n_crops, 9, 13, 11)) * 3).astype(np.float16)
    classes = (rng.standard_normal((g.n_crops, 9, 6)) * 2).astype(np.float32)
    logits = (rng.standard_normal((6, h // 2, w // 2)) * 2).astype(np.float32)
    read = rng.random(g.resized) < 0.5
    read[: g.resized[0] // 3] = False  # void rows at the top and the bottom, void pixels between
    read[-6:] = False
    temps = (0.5, 1.0, 1.1)
    frames = [FrameInputs(kind="query", mask_logits=masks, class_logits=classes, geom=g, out_size=g.resized),
              FrameInputs(kind="pixel", logits=logits, out_size=g.resized, void_channel=5)]
    for frame in frames:
        scoring = Scoring((), temps, temp_target, tile_rows=tile_rows)
        whole = list(iter_frame_scores(frame, scoring))
        part = list(iter_frame_scores(frame, scoring, read))
        assert [p.temperature for p in part] == list(temps)
        for a, b in zip(whole, part):
            np.testing.assert_array_equal(a.semantic[read], b.semantic[read])
        if frame.kind == "query" and tile_rows == 5:  # the blocks of the first third's rows were not composed
            first = part[0].semantic[: (g.resized[0] // 3) // 5 * 5]
            assert not first.any() and whole[0].semantic[: first.shape[0]].any()


@pytest.mark.parametrize("held", [None, 0, 3, 7])
def test_put_writes_what_adding_to_a_zeroed_target_gives(held):
    """A crop's columns that no crop before it covers take ``0 + x`` unread (-0.0 becomes +0.0, NaN
    and inf stay); the others add as before."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 3, 7)).astype(np.float32))
    x[0, 0, :4] = torch.tensor([-0.0, float("nan"), float("inf"), 0.0])
    x[1, 2, 5:] = -0.0
    target = torch.from_numpy(rng.standard_normal((2, 3, 9)).astype(np.float32))[:, :, 1:8]  # a strided view
    want = target.clone()
    if held is not None:
        want[..., held:] = 0.0
    want += x
    P._put(target, x, held)
    assert torch.equal(target.isnan(), want.isnan())
    ok = ~want.isnan()
    assert torch.equal(target[ok], want[ok])
    assert torch.equal(torch.signbit(target[ok]), torch.signbit(want[ok]))


@pytest.mark.parametrize("hw_crop", GEOMETRIES + [(16, 64, 16)])
@pytest.mark.parametrize("tile_rows", [4, 64])
def test_row_blocks_equal_the_whole_maps_with_query_channels(hw_crop, tile_rows):
    """The fused pass's blocks (crops written where no crop before covers, added where one does,
    divided only where several do) are the whole maps' values (zeroed, every crop added, divided
    whole) bit for bit, with sum and max query channels, overlapping crops, and in a pass that
    reads some pixels (a crop without a read pixel in a block adds nothing there)."""
    from analyze.compose.buffers import leased
    from analyze.compose.frame_scores import _channels
    from analyze.compose.queries import FrameComposer
    from schemas.windows import frame_windows

    h, w, crop = hw_crop
    g = frame_windows(h, w, crop)
    rng = np.random.default_rng([h, w, crop, tile_rows])
    masks = (rng.standard_normal((g.n_crops, 7, 9, 9)) * 4).astype(np.float16)
    masks[:, 0] = -60  # a query whose sigmoid underflows to 0 everywhere
    classes = (rng.standard_normal((g.n_crops, 7, 6)) * 3).astype(np.float32)
    channels = _channels(get_scorers("eam,noobject,m2a", "query"))
    comp = lambda: FrameComposer(masks, classes, g, tile_rows=tile_rows, channels=channels)  # noqa: E731
    temps = (0.5, 1.0)
    whole = comp().resized_maps(temps)
    assert whole[1.0].shape[0] > 5  # the classes and the channels
    read = np.zeros(g.resized, bool)
    read[rng.integers(0, g.resized[0], 3), rng.integers(0, g.resized[1], 3)] = True
    for pixels in (None, read):
        for i in range(len(temps)):  # this thread's block buffers, as a frame before may leave them
            with leased(f"row block {i}", (whole[1.0].numel(),), torch.float32) as buf:
                buf.fill_(float("nan"))
        seen = np.zeros(g.resized, bool)
        for rows, block in comp().row_blocks(temps, pixels):
            seen[rows] = block is not None
            for t in temps if block is not None else ():
                assert not block[t].isnan().any()  # unread pixels hold partial sums, not what was there
                mine = np.ones(g.resized, bool) if pixels is None else pixels
                at = mine[rows]
                assert torch.equal(block[t][:, torch.from_numpy(at)], whole[t][:, rows][:, torch.from_numpy(at)])
        assert seen[read].all() and (pixels is not None or seen.all())


def test_a_few_pixels_pass_takes_finer_tiles_only_where_they_are_exact():
    """The positives pass composes FINER_TILE_ROWS-row tiles where their products give the
    composer's tiles' bits (tests/test_positive_rows.py holds the maps to the whole frame's);
    where this BLAS would round them otherwise, the composer's own tiles."""
    from analyze.compose.queries import FINER_TILE_ROWS, FrameComposer
    from schemas.windows import frame_windows

    g = frame_windows(64, 128, 64)
    rng = np.random.default_rng(0)
    masks = rng.standard_normal((g.n_crops, 6, 16, 16)).astype(np.float16)
    classes = rng.standard_normal((g.n_crops, 6, 4)).astype(np.float32)
    comp = FrameComposer(masks, classes, g, tile_rows=32)
    products = comp.crop_products(0, (0.5, 1.0))
    exact = P.blocks_exact((3, 3), 6, 32 * 64, FINER_TILE_ROWS * 64, True)
    assert comp.few_pixels_tile_rows(products) == (FINER_TILE_ROWS if exact else 32)
    P._checked[("blocks", (3, 3), 6, 32 * 64, FINER_TILE_ROWS * 64, True, P.blas_threads())] = False
    assert comp.few_pixels_tile_rows(products) == 32
    assert FrameComposer(masks, classes, g, tile_rows=24).few_pixels_tile_rows(products) == 24  # 24 % 16 != 0
    P._checked.clear()
