"""Scorers against direct float64 numpy transcriptions of their formulas; the registry and the
``--scorers`` syntax. (GEN, KL matching, SML and the mask scorers from caches:
tests/test_scorer_oracles.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyze.compose.frame_scores import FrameInputs, Scoring, score_frame
import analyze.scorers.pixel as scorers_mod
from analyze.scorers import (SCORERS, STUDY_SCORERS, ClassStats, all_notes, check_supported, first_argmax, get_scorers,
                             parse_spec, parse_temperatures, score, score_many, scorer_display, scorer_order)
from tests import scorer_oracles as O

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
    "gen": lambda x, t: O.gen(x, t),
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


#: tested against their official formulas from caches in tests/test_scorer_oracles.py
CACHE_ORACLES = {"kl", "sml", "sml_raw", "eam", "noobject", "m2a", "m2a_flip"}


def test_registry_covers_every_oracle():
    assert set(SCORERS) == set(ORACLES) | CACHE_ORACLES and not set(ORACLES) & CACHE_ORACLES
    assert list(SCORERS)[:5] == list(STUDY_SCORERS)


def _stats(k, seed=0):
    rng = np.random.default_rng(seed)
    return ClassStats.from_moments(np.full(k, 100), rng.normal(size=k), rng.uniform(0.5, 2, k),
                                   rng.dirichlet(np.ones(k), size=k), 0.0, 1.0)


@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("t", [0.5, 1.0, 1.1, 3.0])
def test_scorer_matches_oracle(name, t, logits):
    got = score(name, logits, t)
    assert got.dtype == np.float64 and got.shape == logits.shape[1:]
    np.testing.assert_allclose(got, ORACLES[name](logits, t), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_numpy_and_torch_inputs_agree(name, logits):
    a = score(name, logits, 0.7)
    b = score(name, torch.from_numpy(logits), 0.7)
    np.testing.assert_array_equal(a, b)


def test_temperature_divides_logits(logits):
    t = 0.6
    for name in ORACLES:
        scaled = score(name, logits / np.float32(t), 1.0)
        factor = t if name == "energy" else 1.0  # energy is -T logsumexp(x / T)
        np.testing.assert_allclose(score(name, logits, t), factor * scaled, rtol=1e-5, atol=1e-6, err_msg=name)


def test_energy_at_t1_is_negative_logsumexp(logits):
    np.testing.assert_allclose(score("energy", logits), -logsumexp64(logits), rtol=1e-6)


def test_extreme_logits_stay_finite():
    x = np.zeros((4, 1, 5), np.float32)
    x[0, 0] = [1e4, 1e3, 100.0, 50.0, 0.0]  # p of the others underflows in float32 (and float64)
    x[1, 0] = [-1e4, -1e3, -100.0, -50.0, 0.0]
    x[2, 0, 4] = -np.inf  # one class with p exactly 0 by construction
    for name in list(ORACLES) + ["kl", "sml_raw"]:
        got = score(name, x, 1.0, stats=_stats(4))
        assert np.isfinite(got).all(), name
    ent = score("maxentropy", x)[0]
    assert (ent >= 0).all()
    np.testing.assert_allclose(ent[:3], 0.0, atol=1e-30)
    np.testing.assert_allclose(score("msp", x)[0, :3], 0.0, atol=1e-30)
    # x[:, 0, 4] = [0, 0, -inf, 0]: uniform over three classes
    np.testing.assert_allclose(ent[4], np.log(3), rtol=1e-6)
    np.testing.assert_allclose(score("msp", x)[0, 4], 2 / 3, rtol=1e-6)


def test_msp_keeps_resolution_for_confident_pixels():
    # 1 - max softmax is ~2e-13 and ~4e-13 here: "1 - p" in float32 would give two zeros (a tie)
    x = np.zeros((3, 1, 2), np.float32)
    x[0, 0] = [30.0, 30.0 - np.log(2.0)]
    got = score("msp", x)[0]
    r = 2 * np.exp(-x[0, 0].astype(np.float64))  # the other two classes, relative to the top one
    np.testing.assert_allclose(got, r / (1 + r), rtol=1e-5)  # exactly 1 - max softmax
    assert got[1] > got[0] > 0


def test_void_channel_never_enters_a_score():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 6, 8)).astype(np.float32)  # channel 4 = void
    scoring = Scoring(get_scorers("all", "pixel", ()), (0.5, 1.0))
    a = score_frame(FrameInputs("pixel", (9, 13), logits=z, void_channel=4), scoring)
    z2 = z.copy()
    z2[4] = 1e3  # a void channel this strong would dominate every softmax
    b = score_frame(FrameInputs("pixel", (9, 13), logits=z2, void_channel=4), scoring)
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
    # the same pixel gets the same bits whatever the map size and the tiling (SML's smoothing,
    # a spatial filter, excepted)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(19, 90, 130)) * 4).astype(np.float32)
    ch = {k: torch.from_numpy(rng.random((90, 130), dtype=np.float32)) for k in ("eam", "noobject", "m2a/kept", "m2a/gate")}
    names = [n for n in SCORERS if n not in ("sml", "m2a_flip")] + ["gen:gamma=0.5,m=4"]
    stats = _stats(19)
    for t in (1.0, 0.5):
        whole = score_many(x, t, names, stats=stats, channels=ch)
        part = score_many(x[:, 17:61, 5:99], t, names, stats=stats, channels={k: c[17:61, 5:99] for k, c in ch.items()})
        monkeypatch.setattr(scorers_mod, "TILE_ELEMENTS", 19 * 130 * 7)  # 7-row tiles
        retiled = score_many(x, t, names, stats=stats, channels=ch)
        monkeypatch.undo()
        for n in names:
            np.testing.assert_array_equal(part[n], whole[n][17:61, 5:99], err_msg=n)
            np.testing.assert_array_equal(retiled[n], whole[n], err_msg=n)


def test_get_scorers_spec():
    assert [s.name for s in get_scorers("all")] == list(SCORERS)
    assert [s.name for s in get_scorers("MSP, maxlogit,msp")] == ["msp", "maxlogit"]
    assert [s.name for s in get_scorers("all", "pixel", ())] == ["msp", "maxlogit", "maxentropy", "energy", "gen"]
    assert [s.name for s in get_scorers("all", "pixel", ("id_stats",))] == [
        "msp", "maxlogit", "maxentropy", "energy", "gen", "kl", "sml", "sml_raw"]
    every = [s.name for s in get_scorers("all", "query", ("id_stats", "flip"))]
    assert every == list(SCORERS)
    assert "m2a_flip" not in [s.name for s in get_scorers("all", "query", ("id_stats",))]
    with pytest.raises(ValueError, match=r"unknown scorer 'nope'.*msp, maxlogit, maxentropy, energy, rba, gen"):
        get_scorers("msp,nope")
    with pytest.raises(ValueError, match="kl needs in-distribution statistics"):
        get_scorers("msp,kl", "pixel", ())
    with pytest.raises(ValueError, match=r"m2a_flip needs flip pass \(`extract run --hflip`\)"):
        get_scorers("m2a_flip", "query", ("id_stats",))
    notes = all_notes("query", ())
    assert len(notes) == 2 and "kl, sml, sml_raw" in notes[0] and "m2a_flip" in notes[1]
    assert all_notes("pixel", ("id_stats",)) == []


def test_scorer_parameters_in_the_comma_list():
    a, b, c = parse_spec("gen:gamma=0.2,m=10,msp,GEN")
    assert (a.name, a.kwargs) == ("gen:gamma=0.2,m=10", {"gamma": 0.2, "m": 10})
    assert (b.name, c.name, c.kwargs) == ("msp", "gen", {"gamma": 0.1, "m": None})
    assert [s.name for s in parse_spec("gen:gamma=0.1,gen:m=19")] == ["gen", "gen:m=19"]  # defaults are plain
    assert [s.name for s in parse_spec("gen:m=3,gamma=0.5")] == ["gen:gamma=0.5,m=3"]  # declaration order
    assert parse_spec("gen:gamma=0.1,gen") == (SCORERS["gen"],)  # the same scorer once
    assert [s.name for s in parse_spec("sml:width=2,iterations=1,m2a:conf=0.5")] == [
        "sml:width=2,iterations=1", "m2a:conf=0.5"]
    sml, geo = parse_spec("sml:border=pinned,sml:border=Geodesic")  # the official pin is the default
    assert (sml.name, sml.kwargs["border"], geo.name, geo.kwargs["border"]) == ("sml", "pinned", "sml:border=geodesic",
                                                                                 "geodesic")
    for bad, msg in (("gen:gamma=-1", "gamma=-1 must be > 0"), ("gen:beta=1", "no parameter 'beta'"),
                     ("gamma=1,gen", "has no scorer before it"), ("msp:gamma=1", "no parameter 'gamma'"),
                     ("gen:m=1.5", "not an integer"), ("gen:gamma=x", "not a number"),
                     ("sml:width=3,iterations=2", "multiple of iterations"), ("gen:m=2,m=3", "given twice"),
                     ("m2a:first=5,last=3", "must not exceed"), ("all,msp", "cannot be combined"),
                     ("sml:border=reflect", "border=reflect must be pinned or geodesic")):
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad)


def test_display_names_and_order():
    assert scorer_display("gen") == "GEN" and scorer_display("m2a_flip") == "Mask2Anomaly (flip)"
    assert scorer_display("gen:gamma=0.2,m=10") == "GEN (gamma=0.2, m=10)"
    assert scorer_display("semantic") == "semantic"
    assert scorer_order(["kl", "gen:m=3", "msp", "gen", "zzz"]) == ["msp", "gen", "gen:m=3", "kl", "zzz"]


def test_gen_keeps_resolution_for_confident_pixels():
    # p (1 - p) of the top class is r / (1 + r)^2, not p - p^2 (which would round to a tie)
    x = np.zeros((3, 1, 2), np.float32)
    x[0, 0] = [40.0, 40.0 - np.log(2.0)]
    got = score("gen", x)[0]
    r = 2 * np.exp(-x[0, 0].astype(np.float64))
    top = (r / (1 + r) ** 2) ** 0.1
    others = 2 * (np.exp(-x[0, 0].astype(np.float64)) / (1 + r)) ** 0.1  # (1 - p)^g ~ 1 for the others
    np.testing.assert_allclose(got, top + others, rtol=1e-9)
    assert got[1] > got[0]


def test_kl_is_infinite_where_a_class_mean_is_zero():
    k = 3
    soft = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    stats = ClassStats.from_moments(np.array([5, 5, 0]), np.zeros(k), np.ones(k), soft, 0.0, 1.0)
    x = np.log(np.array([[0.98, 0.2], [0.01, 0.3], [0.01, 0.5]], np.float64))[:, None, :]  # (K, 1, 2)
    got = score("kl", x, 1.0, stats=stats)[0]
    p = np.exp(x[:, 0]) / np.exp(x[:, 0]).sum(0)
    # class 0 has d = (1, 0, 0): infinite for every p with mass elsewhere; class 2 has no pixel: left out
    want = [(p[:, j] * np.log(p[:, j] / soft[1])).sum() for j in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)  # pixel 1 is soft[1] itself: KL 0
    np.testing.assert_allclose(got, O.kl(x, 1.0, [5, 5, 0], soft)[0], rtol=1e-12, atol=1e-15)


def test_rba_refused_for_pixel_models():
    with pytest.raises(ValueError, match="rba.*pixel"):
        get_scorers("msp,rba", "pixel")
    with pytest.raises(ValueError, match="rba"):
        check_supported([SCORERS["rba"]], "pixel")
    with pytest.raises(ValueError, match="rba"):
        score_frame(FrameInputs("pixel", (2, 2), logits=np.zeros((3, 2, 2), np.float32)), Scoring([SCORERS["rba"]]))
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


def test_docs_catalogue_is_the_registry():
    from pathlib import Path

    from analyze.scorers import catalogue

    page = (Path(__file__).resolve().parents[1] / "docs" / "scorers.md").read_text()
    lines = catalogue()
    assert "\n".join(lines) in page  # name, formula, source, needs, how T enters, parameters
    assert len(lines) == 2 + len(SCORERS)
