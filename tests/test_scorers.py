"""Scorers against direct float64 numpy transcriptions of their formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyze.frame_scores import score_frame
import analyze.scorers as scorers_mod
from analyze.scorers import SCORERS, check_supported, first_argmax, get_scorers, parse_temperatures, score_many

# --- slow, obviously correct oracles (float64, one formula each) -----------------------


def softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def logsumexp64(x):
    x = np.asarray(x, np.float64)
    m = x.max(0)
    return m + np.log(np.exp(x - m).sum(0))


def _f64(x, t):
    return np.asarray(x, np.float64) / t


ORACLES = {
    "msp": lambda x, t: 1.0 - softmax64(_f64(x, t)).max(0),
    "maxlogit": lambda x, t: -_f64(x, t).max(0),
    "maxentropy": lambda x, t: -np.where(
        softmax64(_f64(x, t)) > 0, softmax64(_f64(x, t)) * np.log(np.maximum(softmax64(_f64(x, t)), 1e-300)), 0.0
    ).sum(0),
    "energy": lambda x, t: -t * logsumexp64(_f64(x, t)),
    "rba": lambda x, t: -np.tanh(_f64(x, t)).sum(0),
}


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((6, 5, 7)) * 3).astype(np.float32)  # (K, H, W)


def test_registry_covers_every_oracle():
    assert set(SCORERS) == set(ORACLES)


@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("t", [0.5, 1.0, 1.1, 3.0])
def test_scorer_matches_oracle(name, t, logits):
    got = SCORERS[name](logits, t)
    assert got.dtype == np.float64 and got.shape == logits.shape[1:]
    np.testing.assert_allclose(got, ORACLES[name](logits, t), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_numpy_and_torch_inputs_agree(name, logits):
    a = SCORERS[name](logits, 0.7)
    b = SCORERS[name](torch.from_numpy(logits), 0.7)
    np.testing.assert_array_equal(a, b)


def test_temperature_divides_logits(logits):
    t = 0.6
    for name, s in SCORERS.items():
        scaled = s(logits / np.float32(t), 1.0)
        factor = t if name == "energy" else 1.0  # energy is -T logsumexp(x / T)
        np.testing.assert_allclose(s(logits, t), factor * scaled, rtol=1e-5, atol=1e-6, err_msg=name)


def test_energy_at_t1_is_negative_logsumexp(logits):
    np.testing.assert_allclose(SCORERS["energy"](logits), -logsumexp64(logits), rtol=1e-6)


def test_extreme_logits_stay_finite():
    x = np.zeros((4, 1, 5), np.float32)
    x[0, 0] = [1e4, 1e3, 100.0, 50.0, 0.0]  # p of the others underflows in float32 (and float64)
    x[1, 0] = [-1e4, -1e3, -100.0, -50.0, 0.0]
    x[2, 0, 4] = -np.inf  # one class with p exactly 0 by construction
    for name, s in SCORERS.items():
        got = s(x)
        assert np.isfinite(got).all(), name
    ent = SCORERS["maxentropy"](x)[0]
    assert (ent >= 0).all()
    np.testing.assert_allclose(ent[:3], 0.0, atol=1e-30)
    np.testing.assert_allclose(SCORERS["msp"](x)[0, :3], 0.0, atol=1e-30)
    # x[:, 0, 4] = [0, 0, -inf, 0]: uniform over three classes
    np.testing.assert_allclose(ent[4], np.log(3), rtol=1e-6)
    np.testing.assert_allclose(SCORERS["msp"](x)[0, 4], 2 / 3, rtol=1e-6)


def test_msp_keeps_resolution_for_confident_pixels():
    # 1 - max softmax is ~2e-13 and ~4e-13 here: "1 - p" in float32 would give two zeros (a tie)
    x = np.zeros((3, 1, 2), np.float32)
    x[0, 0] = [30.0, 30.0 - np.log(2.0)]
    got = SCORERS["msp"](x)[0]
    r = 2 * np.exp(-x[0, 0].astype(np.float64))  # the other two classes, relative to the top one
    np.testing.assert_allclose(got, r / (1 + r), rtol=1e-5)  # exactly 1 - max softmax
    assert got[1] > got[0] > 0


def test_void_channel_never_enters_a_score():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 6, 8)).astype(np.float32)  # channel 4 = void
    kw = dict(scorers=get_scorers("all", "pixel"), temperatures=(0.5, 1.0), out_size=(9, 13), void_channel=4)
    a = score_frame("pixel", logits=z, **kw)
    z2 = z.copy()
    z2[4] = 1e3  # a void channel this strong would dominate every softmax
    b = score_frame("pixel", logits=z2, **kw)
    assert a.scores.keys() == b.scores.keys()
    for key in a.scores:
        np.testing.assert_array_equal(a.scores[key], b.scores[key])
    for t in a.semantic:
        np.testing.assert_array_equal(a.semantic[t], b.semantic[t])
    assert int(a.semantic[1.0].max()) < 4


def test_first_argmax_is_the_first_maximum():
    rng = np.random.default_rng(0)
    for x in (rng.normal(size=(19, 37, 41)), rng.integers(0, 3, size=(19, 37, 41)), rng.integers(0, 2, size=(5, 300))):
        t = torch.as_tensor(x, dtype=torch.float32)
        want = np.argmax(x, axis=0)  # numpy: first occurrence on ties
        np.testing.assert_array_equal(first_argmax(t).numpy(), want)
    x = rng.normal(size=(19, 37, 41)).astype(np.float32)
    sem = np.full((37, 41), 99, np.uint8)
    plain = score_many(x, 1.0, ["rba"])
    assert np.array_equal(score_many(x, 1.0, ["rba"], argmax_out=sem)["rba"], plain["rba"])
    np.testing.assert_array_equal(sem, np.argmax(x, axis=0))
    with pytest.raises(ValueError, match="argmax_out"):
        score_many(x, 1.0, ["msp"], argmax_out=np.zeros((37, 40), np.uint8))
    nan = torch.zeros(4, 2)
    nan[2, 1] = float("nan")
    assert first_argmax(nan).tolist() == [0, 3]


def test_a_pixels_scores_depend_on_its_logits_only(monkeypatch):
    # the same pixel gets the same bits whatever the map size and the tiling
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(19, 90, 130)) * 4).astype(np.float32)
    names = list(SCORERS)
    for t in (1.0, 0.5):
        whole = score_many(x, t, names)
        part = score_many(x[:, 17:61, 5:99], t, names)
        monkeypatch.setattr(scorers_mod, "TILE_ELEMENTS", 19 * 130 * 7)  # 7-row tiles
        retiled = score_many(x, t, names)
        monkeypatch.undo()
        for n in names:
            np.testing.assert_array_equal(part[n], whole[n][17:61, 5:99], err_msg=n)
            np.testing.assert_array_equal(retiled[n], whole[n], err_msg=n)


def test_get_scorers_spec():
    assert [s.name for s in get_scorers("all")] == list(SCORERS)
    assert [s.name for s in get_scorers("MSP, maxlogit,msp")] == ["msp", "maxlogit"]
    assert [s.name for s in get_scorers("all", "pixel")] == ["msp", "maxlogit", "maxentropy", "energy"]
    assert "rba" in [s.name for s in get_scorers("all", "query")]
    with pytest.raises(ValueError, match=r"unknown scorer 'nope'.*msp, maxlogit, maxentropy, energy, rba"):
        get_scorers("msp,nope")


def test_rba_refused_for_pixel_models():
    with pytest.raises(ValueError, match="rba.*pixel"):
        get_scorers("msp,rba", "pixel")
    with pytest.raises(ValueError, match="rba"):
        check_supported([SCORERS["rba"]], "pixel")
    with pytest.raises(ValueError, match="rba"):
        score_frame("pixel", logits=np.zeros((3, 2, 2), np.float32), out_size=(2, 2), void_channel=None,
                    scorers=[SCORERS["rba"]])
    with pytest.raises(ValueError, match="kind"):
        get_scorers("msp", "mask")


def test_parse_temperatures():
    assert parse_temperatures("0.5,0.75,1.1") == (0.5, 0.75, 1.0, 1.1)
    assert parse_temperatures(" 2, 1 ,0.5,2") == (0.5, 1.0, 2.0)
    assert parse_temperatures("") == (1.0,)
    assert all(isinstance(t, float) for t in parse_temperatures("1,3"))


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "nan", "inf", ""])
def test_parse_temperatures_rejects(bad):
    with pytest.raises(ValueError, match=repr(bad)):
        parse_temperatures(f"0.5,{bad}")


def test_parse_temperatures_range():
    assert parse_temperatures("0.1,1000") == (0.1, 1.0, 1000.0)
    for bad in ("0.05", "1500"):
        with pytest.raises(ValueError, match=r"outside \[0.1, 1000\].*float64"):
            parse_temperatures(bad)
