"""Over the temperature range the CLI accepts ([0.1, 1000]), every scorer's metrics equal a
float64 evaluation of its formula to 1e-6.

The reference takes the same inputs ``x`` as the tool (ERFNet logits; EoMT class scores
composed in float32 as the official inference does), evaluates each formula with numpy in
float64 (the forms of :func:`reference_scores`: a naive ``1 - max softmax`` would itself
tie below 1e-16), and scores with scikit-learn. The same formulas in float32 miss by more
than 1e-6 on these data (checked below), so the comparison has teeth.
"""

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analyze.cli import main as analyze_main
from analyze.compose import FrameComposer
from schemas.cache import open_cache, read_label, read_pixel_logits, read_query_outputs
from schemas.results import read_results
from tests.factories import query_cache, signal_pixel_cache

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


def _reference(path, t, target, scorers, dtype=np.float64):
    ss, ys = {n: [] for n in scorers}, []
    for x, ts, lab in _inputs(path, t, target):
        keep = lab != 255
        sc = reference_scores(x, ts, dtype)
        for n in scorers:
            ss[n].append(sc[n][keep])
        ys.append(lab[keep])
    y = np.concatenate(ys)
    return {n: _metrics(y, np.concatenate(v).astype(np.float64)) for n, v in ss.items()}


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
        ref = _reference(path, t, target, scorers)
        f32 = _reference(path, t, target, scorers, np.float32)
        for n in scorers:
            for m, v in ref[n].items():
                got = df[(df.scorer == n) & (df.temperature == t) & (df.metric == m)].value.item()
                assert got == pytest.approx(v, abs=1e-6), (n, t, m)
                worst32 = max(worst32, abs(f32[n][m] - v))
    assert worst32 > 1e-6  # float32 runs out of resolution somewhere in the range on these data
