"""The two-pass exact plan's first pass composes only the rows of the anomaly pixels (issue 27,
goal 1): the rows it reads score as in the whole frame, bit for bit (SML's smoothing widens them
by its reach), the rows it leaves out are not composed, and the two-pass rows equal the
one-pass rows exactly on both cache kinds, with and without SML, with and without the
bootstrap intervals and the component metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze.bench.caches import build_cache
from analyze.bench.reference import study_scorers
from analyze.compose import frame_scores as FS
from analyze.compose.frame_scores import Scoring, compose_rows, frame_inputs, score_frame
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


def test_compose_rows_widens_by_the_reach_of_sml():
    rows = np.zeros(200, bool)
    rows[[50, 120]] = True
    plain = get_scorers("msp,energy", "pixel")
    assert compose_rows(None, plain) is None and (compose_rows(rows, plain) == rows).all()
    far = sml.reach()  # the defaults: 3 x 6 (Gaussian) + 4 iterations + radius 3 + 1 (boundaries)
    assert far == 26
    wide = compose_rows(rows, get_scorers("msp,sml", "pixel"))
    assert np.flatnonzero(wide).tolist() == list(range(50 - far, 50 + far + 1)) + list(range(120 - far, 120 + far + 1))
    narrow = compose_rows(rows, get_scorers("sml:width=0,iterations=0,dilation=2", "pixel"))
    assert np.flatnonzero(narrow).tolist() == list(range(44, 57)) + list(range(114, 127))


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("with_sml", [False, True])
def test_rows_read_score_as_in_the_whole_frame_and_the_rest_is_not_composed(caches, kind, with_sml):
    """A band of rows: the maps there equal the whole frame's bit for bit; far from it they are 0
    (nothing was composed there, where every real score differs from 0)."""
    cache, stats = caches[kind]
    frame, _ = _frame(cache, 0)
    scoring = _scoring(cache, kind, stats, with_sml)
    whole = score_frame(frame, scoring)
    h = frame.out_size[0]
    rows = np.zeros(h, bool)
    rows[150:155] = True  # within the third of EoMT's four blocks, ERFNet's tiles 9
    parts = {t: ts.scores for t, ts in ((ts.temperature, ts) for ts in FS.iter_frame_scores(frame, scoring, rows))}
    for (name, t), full in whole.scores.items():
        part = parts[t][name]
        assert np.array_equal(part[rows], full[rows]), (name, t)
        # the first block was not composed: 0 there (SML's smoothing spreads 26 rows into it)
        assert (full[:32] != 0).all() and (part[:32] == 0).all()
    if with_sml:  # SML's reach needs rows 124 to 180 of the 256: EoMT composes blocks 1 and 2, ERFNet 7 to 11
        assert (compose_rows(rows, scoring.scorers) == (np.abs(np.arange(h) - 152) <= 28)).all()


@pytest.mark.parametrize("kind", ["pixel", "query"])
@pytest.mark.parametrize("with_sml", [False, True])
@pytest.mark.parametrize("later", [False, True])
def test_two_pass_rows_equal_one_pass_rows_exactly(caches, monkeypatch, kind, with_sml, later):
    cache, stats = caches[kind]
    asked: list = []  # the rows each frame task of each pass asked for
    real = tasks.iter_frame_scores

    def record(frame, scoring, rows=None):
        asked.append(None if rows is None else rows.mean())
        return real(frame, scoring, rows)

    monkeypatch.setattr(tasks, "iter_frame_scores", record)
    opts = dict(scheduler="sync", warn=lambda m: None, id_stats=[stats] if with_sml else [],
                **(dict(bootstrap=30, component_metrics=True, seed=1) if later else {}))
    one = score_cache(cache, _scorers(kind, with_sml), TEMPS, **opts)
    assert len(asked) >= 3 and all(a is None for a in asked)  # every pass composes whole frames
    asked[:] = []
    two = score_cache(cache, _scorers(kind, with_sml), TEMPS, max_memory=2**16, **opts)
    assert len(asked) >= 6 and all(0 < f < 1 for f in asked[:3]) and asked[3:6] == [None] * 3  # positives, negatives
    for a, b in zip(one, two):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(one[0]) and len(one[1])
