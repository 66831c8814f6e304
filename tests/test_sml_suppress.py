"""SML's compiled boundary suppression (:func:`analyze.scorers.kernels.suppress_step`) against its
torch reference (:func:`analyze.scorers.sml.suppress_reference`): the same bits (NaN where NaN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyze.scorers import sml


def _bits(t: torch.Tensor) -> np.ndarray:
    """The float64 bits, every NaN as one (the sign of a NaN is not kept by either: the
    compiler may swap the operands of a sum, so which NaN propagates is unspecified)."""
    return np.where(np.isnan(t.numpy()), np.nan, t.numpy()).view(np.int64)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (2, 2), (37, 53)])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.9, 1.0])
def test_suppress_step_equals_the_torch_reference_bit_for_bit(shape, density):
    """Random maps with NaN, infinities and signed zeros; boundaries on the image border, in
    clusters where no neighbour is kept (count 0), and nowhere or everywhere."""
    rng = np.random.default_rng(shape[0] * 100 + shape[1] + int(density * 10))
    score = rng.normal(size=shape) * 10.0 ** rng.integers(-3, 4, size=shape)
    special = rng.random(shape)
    score[special < 0.03] = np.nan
    score[(special >= 0.03) & (special < 0.05)] = np.inf
    score[(special >= 0.05) & (special < 0.07)] = -np.inf
    score[(special >= 0.07) & (special < 0.09)] = -0.0
    boundary = torch.from_numpy(rng.random(shape) < density)
    s = torch.from_numpy(score)
    got = sml._suppress(s, boundary)
    want = sml.suppress_reference(s, boundary)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_suppress_and_smooth_equals_the_torch_path_on_a_prediction_map():
    """The whole post-processing on a blocky prediction (the boundaries SML sees), with the
    compiled step and with the torch reference in its place."""
    rng = np.random.default_rng(3)
    pred = torch.from_numpy(rng.integers(0, 19, (12, 16)).astype(np.uint8).repeat(6, 0).repeat(7, 1))
    score = torch.from_numpy(rng.normal(size=pred.shape))
    got = sml.suppress_and_smooth(score, pred)
    original = sml._suppress
    try:
        sml._suppress = sml.suppress_reference
        want = sml.suppress_and_smooth(score, pred)
    finally:
        sml._suppress = original
    np.testing.assert_array_equal(_bits(got), _bits(want))
    assert not np.array_equal(_bits(got), _bits(sml.dilated_smoothing(score, 6)))  # the suppression did something
