"""Over the temperature range the CLI accepts ([0.1, 1000]), every scorer's maps equal a float64
evaluation of its formula, and the CLI's metrics equal scikit-learn's on those maps (the study's
five in the first test; GEN, KL matching, SML and the mask scorers in the second, with
statistics fit at those temperatures).

What the tool controls is checked apart from what a library build decides:

* ``x`` is composed as the tool composes it (ERFNet logits; EoMT class scores composed in
  float32 as the official inference does). A composition of one T has the same bits whichever
  other temperatures the command asks for (each T has BLAS products of its own), so the test
  composes each T alone.
* The maps equal the float64 formulas (numpy, in the forms of :func:`reference_scores`: a naive
  ``1 - max softmax`` would itself tie below 1e-16) to a relative 1e-9: a float64 bound that
  holds whatever order a libm or a compiler sums in. Metrics are *not* compared against the
  formula's maps, since at T = 1000 the scores of a frame sit within a few float64 ulps of one
  another and the last bit of a sum reorders their ties.
* The CLI's metrics equal scikit-learn's on the maps the tool's scorer function gives for that
  ``x`` (:func:`analyze.scorers.pixel.score_many`, which the fused tile pass equals bit for bit),
  to 1e-9.

The same formulas in float32 miss by more than 1e-6 on these data (checked below), so a float32
shortcut anywhere in the tool would fail the map check.
"""

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analyze.cli.main import main as analyze_main
from analyze.compose.queries import FrameComposer
from schemas.cache import open_cache, read_label, read_pixel_logits, read_query_outputs
from schemas.results import read_results
from analyze.compose.frame_scores import _channels
from analyze.scorers.id_stats import IdStats
from analyze.scorers.pixel import score_many
from analyze.scorers.registry import get_scorers
from tests import scorer_oracles as O
from tests.factories import pixel_cache, query_cache, signal_pixel_cache

TEMPS = (0.1, 0.3, 10.0, 1000.0)


def reference_scores(x, t, dtype=np.float64):
    """Every scorer's formula on ``z = x / T`` (K, H, W), evaluated in numpy in ``dtype``, in
    the forms that do not cancel: with ``d = z - max z`` and ``r = sum of exp(d)`` over the
    classes other than the (first) maximal one, ``1 - max softmax = r / (1 + r)``,
    ``-sum p log p = log(1 + r) - sum exp(d) d / (1 + r)``, ``-T logsumexp = -T (max z + log(1 + r))``."""
    z = np.asarray(x, dtype) / dtype(t)
    top = z.max(0)
    d = z - top
    e = np.exp(d)
    np.put_along_axis(e, d.argmax(0)[None], 0, axis=0)  # the maximal class left out
    r = e.sum(0)
    return {
        "msp": r / (1 + r),
        "maxlogit": -top,
        "maxentropy": np.log1p(r) - (e * d).sum(0) / (1 + r),
        "energy": -dtype(t) * (top + np.log1p(r)),
        "rba": -np.tanh(z).sum(0),
    }


def _metrics(y, s):
    fpr, tpr, _ = roc_curve(y, s)
    return {"auprc": average_precision_score(y, s), "auroc": roc_auc_score(y, s),
            "fpr95": float(np.interp(0.95, tpr, fpr))}


def _inputs(path, t, target):
    """(x at temperature ``t``, the T the scorer applies, label) per frame, as the tool composes x."""
    root, spec = open_cache(path)
    for i in range(spec.n_frames):
        lab = read_label(root, spec, i)
        if spec.kind == "pixel":
            yield read_pixel_logits(root, spec, i)[:19].astype(np.float32), t, lab
        else:
            cl, ml = read_query_outputs(root, spec, i)
            comp = FrameComposer(ml, cl, spec.windows(i))
            if target == "query":
                yield comp.scores(t).numpy(), 1.0, lab
            else:
                yield comp.scores(1.0).numpy(), t, lab


def _maps(path, t, target, scorers, dtype=np.float64):
    """Per frame: (the tool's maps, the formulas' maps in ``dtype``, label) for the scorers."""
    for x, ts, lab in _inputs(path, t, target):
        yield score_many(x, ts, scorers), reference_scores(x, ts, dtype), lab


def _pooled(frames, which):
    """Metrics of each scorer on the frames' maps ``which`` (0: the tool's, 1: the formulas'), pooled."""
    ss, ys = {}, []
    for f in frames:
        keep = f[-1] != 255
        for n, m in f[which].items():
            ss.setdefault(n, []).append(np.asarray(m, np.float64)[keep])
        ys.append(f[-1][keep])
    y = np.concatenate(ys)
    return {n: _metrics(y, np.concatenate(v)) for n, v in ss.items()}


def _check(df, frames, scorers, t):
    """The tool's maps equal the formulas' (float64 bound); the CLI's metrics equal scikit-learn's on them."""
    for tool, ref, _ in frames:
        for n in scorers:
            np.testing.assert_allclose(tool[n], ref[n], rtol=1e-9, atol=1e-12, err_msg=f"{n} at T {t}")
    for n, ms in _pooled(frames, 0).items():
        for m, v in ms.items():
            got = df[(df.scorer == n) & (df.temperature == t) & (df.metric == m)].value.item()
            assert got == pytest.approx(v, abs=1e-9), (n, t, m)


@pytest.mark.parametrize("kind,target", [("pixel", "query"), ("query", "query"), ("query", "pixel")])
def test_metrics_equal_a_float64_evaluation_over_the_range(tmp_path, kind, target):
    path = tmp_path / "c.zarr"
    if kind == "pixel":
        signal_pixel_cache(path, 8, (24, 32), seed=0)
        scorers = ["msp", "maxlogit", "maxentropy", "energy"]
    else:
        root, spec = query_cache(path, [(32, 48)] * 6, np.random.default_rng(0), crop=32, n_queries=8, n_classes=7)
        scorers = ["msp", "maxlogit", "maxentropy", "energy", "rba"]
    out = tmp_path / "r.parquet"
    res = CliRunner().invoke(analyze_main, [
        "score", "--cache", str(path), "--scorers", ",".join(scorers), "--temps", ",".join(map(str, TEMPS)),
        "--temp-target", target, "--out", str(out), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    df = read_results(out)
    worst32 = 0.0
    for t in TEMPS:
        frames = list(_maps(path, t, target, scorers))
        _check(df, frames, scorers, t)
        f64 = _pooled(frames, 1)
        f32 = _pooled(_maps(path, t, target, scorers, np.float32), 1)
        worst32 = max(worst32, max(abs(f32[n][m] - v) for n in scorers for m, v in f64[n].items()))
    assert worst32 > 1e-6  # float32 runs out of resolution somewhere in the range on these data


def _gen(x, t, gamma=0.1):
    """GEN's official formula (tests/scorer_oracles.py ``gen``: the sum of ``p^g (1 - p)^g`` over
    the classes) in float64 with ``1 - p_k`` as the sum of the other classes' probabilities: the
    official ``1 - p`` cancels where ``p ~ 1`` (T = 0.1 here) and is then no reference at all."""
    p = O.softmax(np.asarray(x, np.float64) / t)
    rest = np.stack([np.delete(p, k, axis=0).sum(0) for k in range(p.shape[0])])
    return ((p * rest) ** gamma).sum(0)


def _new_maps(path, t, target, scorers, stats, class_stats):
    """Per frame: (the tool's maps, the official formulas' maps in float64 (tests/scorer_oracles.py),
    label), on x and on the query channels as the tool composes them in float32 (the official
    precision)."""
    root, spec = open_cache(path)
    ts = t
    for i in range(spec.n_frames):
        lab = read_label(root, spec, i)
        channels = {}
        if spec.kind == "pixel":
            x, q = read_pixel_logits(root, spec, i)[:19].astype(np.float32), None
        else:
            cl, ml = read_query_outputs(root, spec, i)
            comp = FrameComposer(ml, cl, spec.windows(i), channels=_channels(get_scorers("eam,noobject,m2a")))
            maps = comp.resized_maps((t if target == "query" else 1.0,))
            q = next(iter(maps.values())).numpy()  # (K + 4, H, W): s, then the channels
            k = comp.num_classes
            channels = {key: q[k + c] for c, key in enumerate(comp.channel_keys)}
            x, ts = q[:k], (1.0 if target == "query" else t)
        ref = {"gen": _gen(x, ts), **O.stats_scores(x, ts, stats.temperatures[t])}
        if q is not None:
            ref.update(O.mask_scores(q.astype(np.float64)))  # the channels are the oracle's v, no-object, A, B
        tool = score_many(x, ts, scorers, stats=class_stats[t],
                          channels={key: c for key, c in channels.items()
                                    if key in {ch.key for ch in _channels(get_scorers(",".join(scorers)))}})
        yield tool, ref, lab


@pytest.mark.parametrize("kind,target", [("pixel", "query"), ("query", "query"), ("query", "pixel")])
def test_new_scorers_equal_a_float64_evaluation_over_the_range(tmp_path, kind, target):
    path, city = tmp_path / "c.zarr", tmp_path / "city.zarr"
    scorers = ["gen", "kl", "sml_raw", "sml"]
    if kind == "pixel":
        signal_pixel_cache(path, 6, (24, 32), seed=1)
        pixel_cache(city, [(24, 32)] * 3, np.random.default_rng(2), dataset="cityscapes_val", label_kind="semantic")
    else:
        kw = dict(crop=32, n_queries=8, n_classes=19, confident=0.6)
        query_cache(path, [(32, 48)] * 5, np.random.default_rng(0), **kw)
        query_cache(city, [(32, 48)] * 3, np.random.default_rng(2), dataset="cityscapes_val", label_kind="semantic",
                    **kw)
        scorers += ["eam", "noobject", "m2a"] if target == "query" else []
    temps = ",".join(map(str, TEMPS))
    res = CliRunner().invoke(analyze_main, ["fit", "--cache", str(city), "--temps", temps, "--temp-target", target,
                                            "--out", str(tmp_path / "s.json"), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "r.parquet"
    res = CliRunner().invoke(analyze_main, [
        "score", "--cache", str(path), "--scorers", ",".join(scorers), "--temps", temps, "--temp-target", target,
        "--id-stats", str(tmp_path / "s.json"), "--out", str(out), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    df = read_results(out)
    stats = IdStats.read(tmp_path / "s.json")
    spec = open_cache(path)[1]
    class_stats = stats.class_stats(spec, str(path), "logits" if kind == "pixel" else target, TEMPS)
    for t in TEMPS:
        _check(df, list(_new_maps(path, t, target, scorers, stats, class_stats)), scorers, t)
