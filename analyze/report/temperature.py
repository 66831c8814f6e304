"""Temperature: honest selection and calibration on in-distribution data.

* :func:`select_temperature` chooses T on *validation* datasets only and reports the chosen
  T on the other datasets (the seed paper chose T on the datasets it reported: a careful
  tool refuses to).
* :func:`fit_temperature_nll` is temperature scaling (Guo et al., "On Calibration of Modern
  Neural Networks", ICML 2017): the T minimising the negative log-likelihood of the
  in-distribution semantic labels (Cityscapes val), with the expected calibration error
  before and after. It evaluates the composition at sampled pixels only, from the same
  primitives as whole frames (:mod:`analyze.compose.queries`).

(Bootstrap intervals of the metrics: :mod:`analyze.metrics.bootstrap`.)
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import pandas as pd

from analyze.report.cells import checked, one_row_each, plain
from schemas.errors import DataError
from schemas.results import SEMANTIC_SCORER

#: metrics where lower is better (selection minimises them)
LOWER_IS_BETTER = frozenset({"fpr95", "ece", "nll"})
#: one temperature is chosen per group of these columns
SELECTION_KEY = ("run", "model", "scorer", "temp_target", "protocol", "frames")
ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)


# ---- selection ---------------------------------------------------------------------------


def chosen_temperatures(df: pd.DataFrame, select_on: Sequence[str], metric: str = "auprc",
                        model: str | None = None, scorer: str | None = None) -> pd.DataFrame:
    """The T chosen per (run, model, scorer, temp_target, protocol, frames), from the ``select_on``
    datasets only.

    Returns those columns, temperature (chosen), ``score`` (mean ``metric`` over ``select_on``
    at that T) and ``n_temperatures``. A T counts only where every ``select_on`` dataset has a
    finite value; groups with a single T, or where no T qualifies, are left out. Best =
    highest mean (lowest for fpr95/ece/nll); ties within 1e-12 go to the T closest to 1, then
    to the smaller T. Raises ``analyze.report.cells.RowConflict`` when two rows would give one
    dataset's value at one T, or when the rows of one (run, model, dataset) come from two
    caches (a T chosen on a mixture of two models' outputs means nothing).
    """
    select_on = list(dict.fromkeys(select_on))
    if not select_on:
        raise ValueError("select_on is empty: name the validation dataset(s) to choose T on")
    d = plain(df)
    d = d[d["scorer"] != SEMANTIC_SCORER]
    if model is not None:
        d = d[d["model"] == model]
    if scorer is not None:
        d = d[d["scorer"] == scorer]
    datasets = set(d["dataset"])
    unknown = [s for s in select_on if s not in datasets]
    if unknown:
        raise ValueError(f"select_on dataset(s) {', '.join(unknown)} not in the results; "
                         f"present: {', '.join(sorted(datasets)) or 'none'}")
    if datasets <= set(select_on):
        raise ValueError(f"select_on ({', '.join(select_on)}) covers every dataset in the results: nothing would be "
                         "left to report without reporting a dataset T was chosen on")
    lower = metric in LOWER_IS_BETTER
    keys = list(SELECTION_KEY)
    cols = keys + ["temperature", "score", "n_temperatures"]
    v = d[(d["metric"] == metric) & d["dataset"].isin(select_on)]
    if v.empty:
        return pd.DataFrame(columns=cols)
    checked(d[d["dataset"].isin(select_on)], "temperature selection")
    one_row_each(v, keys + ["temperature", "dataset"], "one value of the selection")
    wide = v.pivot(index=keys + ["temperature"], columns="dataset", values="value").reindex(
        columns=select_on)  # (group x T, select_on)
    ok = np.isfinite(wide.to_numpy(float)).all(axis=1)
    mean = pd.Series(np.where(ok, wide.to_numpy(float).mean(axis=1) if wide.shape[1] else np.nan, np.nan),
                     index=wide.index)
    rows = []
    for group, g in mean.groupby(level=keys, observed=True, sort=True):
        temps = g.index.get_level_values("temperature").to_numpy(float)
        vals = g.to_numpy(float)
        if temps.size < 2 or not np.isfinite(vals).any():
            continue
        best = np.nanmin(vals) if lower else np.nanmax(vals)
        ties = temps[np.abs(vals - best) <= 1e-12]
        i = int(np.flatnonzero(temps == sorted(ties, key=lambda x: (abs(x - 1.0), x))[0])[0])
        rows.append(dict(zip(keys, group)) | {"temperature": float(temps[i]), "score": float(vals[i]),
                                                "n_temperatures": int(temps.size)})
    return pd.DataFrame(rows, columns=cols)


def select_temperature(df: pd.DataFrame, select_on: list[str], metric: str = "auprc", model: str | None = None,
                       scorer: str | None = None) -> pd.DataFrame:
    """Rows of every dataset *not* in ``select_on`` at the T chosen on ``select_on``.

    For each (run, model, scorer, temp_target, protocol, frames) with several temperatures, T maximises
    the mean ``metric`` over the ``select_on`` datasets (minimises it for fpr95; see
    :func:`chosen_temperatures`). The returned rows are the results rows (every metric) of
    the other datasets at that T, with ``selected_on = ",".join(select_on)``; they can be
    appended to ``results.parquet`` (``selected_on`` is part of the row key). A dataset in
    ``select_on`` is never returned; ``ValueError`` when ``select_on`` covers every dataset or
    names one that is not in the results. mIoU rows are not returned: T is chosen per scorer,
    the segmentation is per model.
    """
    select_on = list(dict.fromkeys(select_on))
    chosen = chosen_temperatures(df, select_on, metric, model, scorer)
    d = plain(df)
    d = d[(d["scorer"] != SEMANTIC_SCORER) & ~d["dataset"].isin(select_on)]
    key = list(SELECTION_KEY) + ["temperature"]
    groups = d.merge(chosen[list(SELECTION_KEY)], on=list(SELECTION_KEY), how="inner")
    checked(groups, "temperature selection")  # every T of a reported dataset: one cache
    out = d.merge(chosen[key], on=key, how="inner")[list(d.columns)]  # T values come from this very column
    out = out.assign(selected_on=",".join(select_on))
    assert not out["dataset"].isin(select_on).any()  # the whole point of this function
    return out.reset_index(drop=True)


# ---- calibration (temperature scaling) ---------------------------------------------------


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017, eq. 3): ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over
    ``n_bins`` equal-width confidence bins ``((m-1)/M, m/M]``."""
    conf = np.asarray(confidence, np.float64)
    corr = np.asarray(correct, np.float64)
    if conf.size == 0:
        return float("nan")
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    s_conf = np.bincount(b, weights=conf, minlength=n_bins)
    s_acc = np.bincount(b, weights=corr, minlength=n_bins)
    return float(np.sum(np.abs(s_acc - s_conf)) / conf.size)


def pixel_keys(seed: int, frame: int, n: int) -> np.ndarray:
    """The sampling keys of the ``n`` labelled pixels of ``frame`` (uniform in [0, 1), float64),
    from a generator seeded with ``(seed, frame)``: a pixel's key does not depend on the other frames."""
    return np.random.default_rng([seed, frame]).random(n)


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(keys, k - 1)[:k] if keys.size > k else np.arange(keys.size)


def sample_pixels(labels, max_pixels: int, seed: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A uniform sample without replacement of ``max_pixels`` labelled pixels (label != 255)
    of all frames, or all of them when there are fewer: frame -> (sorted flat indices, labels).

    ``labels`` yields ``(frame index, flat label array)``, one frame at a time. Bottom-k
    sampling: every labelled pixel gets a uniform key (:func:`pixel_keys`) and the
    ``max_pixels`` smallest keys of the whole dataset win, which is a uniform sample without
    replacement. The winners so far are kept in a reservoir of at most ``max_pixels`` (key,
    frame, index, label) entries, merged with each frame's own ``max_pixels`` smallest keys, so
    memory is one frame plus the reservoir, whatever the number of frames; the sample depends
    on the seed only (not on the order or grouping of the frames).
    """
    k = int(max_pixels)
    keys, frame_of, index, label = np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    for i, lab in labels:
        valid = np.flatnonzero(lab != 255)
        if not valid.size:
            continue
        u = pixel_keys(seed, i, valid.size)
        best = _smallest(u, k)
        keys = np.concatenate([keys, u[best]])
        frame_of = np.concatenate([frame_of, np.full(best.size, i, np.int64)])
        index = np.concatenate([index, valid[best]])
        label = np.concatenate([label, lab[valid[best]]])
        keep = _smallest(keys, k)
        keys, frame_of, index, label = keys[keep], frame_of[keep], index[keep], label[keep]
    out = {}
    for i in np.unique(frame_of):
        sel = np.flatnonzero(frame_of == i)
        order = np.argsort(index[sel])
        out[int(i)] = (index[sel][order], label[sel][order])
    return out


class _Calibration:
    """The sampled pixels of a semantic cache, ready to give class probabilities at any T."""

    def __init__(self, cache_path, max_pixels: int, seed: int, storage_options=None):
        from analyze.compose.queries import FrameComposer
        from analyze.compose.resize import pixel_logits_at
        from schemas import integrity
        from schemas.cache import CacheError, done_mask, open_cache, read_label, read_pixel_logits, read_query_outputs

        root, spec = open_cache(cache_path, storage_options=storage_options)
        if spec.label_kind != "semantic":
            raise DataError(f"{cache_path}: temperature scaling needs an in-distribution semantic cache "
                            f"(e.g. cityscapes_val); this one has {spec.label_kind} labels")
        frames = [int(i) for i in np.flatnonzero(done_mask(root, str(cache_path)))]
        if not frames:
            raise DataError(f"{cache_path}: no frame is done")
        problems = integrity.check_frames(root, spec, frames)
        if problems:
            raise DataError(f"{cache_path}: {integrity.describe(problems)}; the cache lost data "
                            "(`analyze inspect --verify` lists it all)")
        self.spec, self.kind, self.n_frames = spec, spec.kind, len(frames)
        self.k = spec.n_classes
        labels, self.blocks = [], []
        try:
            picks = sample_pixels(((i, read_label(root, spec, i).ravel()) for i in frames), max_pixels, seed)
            if not picks:
                raise DataError(f"{cache_path}: no labelled pixel (all 255) in the cache")
            for i, (flat, lab) in picks.items():
                if (lab >= self.k).any():
                    raise DataError(f"{cache_path}: frame {spec.frame_ids[i]} has labels >= {self.k} other than 255")
                labels.append(lab)
                h, w = spec.sizes[i]
                rows, cols = flat // w, flat % w
                if spec.kind == "pixel":
                    self.blocks.append(pixel_logits_at(read_pixel_logits(root, spec, i), (h, w), spec.void_channel,
                                                       rows, cols))  # (n, K)
                else:
                    cl, ml = read_query_outputs(root, spec, i)
                    a = FrameComposer(ml, cl, spec.windows(i)).pixel_weights(rows, cols)  # (n, crops*Q)
                    self.blocks.append((a, np.asarray(cl, np.float64).reshape(-1, cl.shape[-1])))
        except CacheError as exc:  # a chunk that does not decode
            raise DataError(f"{cache_path}: {exc}") from None
        self.labels = np.concatenate(labels).astype(np.int64)

    def log_probs(self, t: float) -> np.ndarray:
        """(n, K) log class probabilities at temperature ``t`` (float64)."""
        out = []
        for b in self.blocks:
            if self.kind == "pixel":
                z = b / t
                z = z - z.max(axis=1, keepdims=True)
                out.append(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))
            else:
                a, c = b
                c = c / t
                c = c - c.max(axis=1, keepdims=True)
                pq = np.exp(c)
                pq /= pq.sum(axis=1, keepdims=True)
                s = a @ pq[:, :-1]  # (n, K): s_T at the sampled pixels
                tot = s.sum(axis=1, keepdims=True)
                out.append(np.log(np.maximum(s, 1e-300)) - np.log(np.maximum(tot, 1e-300)))
        return np.concatenate(out)

    def nll(self, t: float) -> float:
        lp = self.log_probs(t)
        return float(-np.mean(lp[np.arange(lp.shape[0]), self.labels]))

    def ece(self, t: float) -> float:
        lp = self.log_probs(t)
        pred = lp.argmax(axis=1)
        return expected_calibration_error(np.exp(lp.max(axis=1)), pred == self.labels)


def fit_temperature_nll(cache_path: str | os.PathLike, max_pixels: int = 200_000, seed: int = 0,
                        storage_options=None, name: str | None = None) -> dict:
    """Temperature scaling on an in-distribution semantic cache (Guo et al. 2017).

    Class probabilities at the sampled pixels:

    * pixel model: ``p = softmax(z / T)`` over the K classes (void channel dropped), ``z`` the
      logits bilinearly resized to the label size (as for scoring);
    * mask model: ``p = s_T / sum_k s_T`` with ``s_T`` composed with the query target
      (``softmax(c_q / T)`` before combining the masks), i.e. the temperature that
      ``analyze score --temp-target query`` applies. ``s`` is not a softmax, so the
      normalisation is needed for a likelihood; the query target is the one that changes
      the segmentation and hence the confidence of the semantic prediction.

    ``max_pixels`` non-ignored pixels (label != 255) are drawn uniformly without replacement,
    one frame at a time (:func:`sample_pixels`: memory does not grow with the number of
    frames; the same pixels for a seed), and serve every T. The composition is evaluated at
    these pixels only (:func:`analyze.compose.queries.pixel_logits_at`,
    :meth:`analyze.compose.queries.FrameComposer.pixel_weights`). T minimises the mean NLL over ``log T`` (scipy
    ``minimize_scalar``, bounded, T in [0.05, 20]). ECE uses 15 equal-width confidence bins.

    Returns ``T``, ``nll_before`` / ``nll_after`` (nats per pixel), ``ece_before`` /
    ``ece_after`` (fractions), ``n_pixels``, ``n_frames``, and ``rows``: results rows of metric
    ``ece`` (scorer ``semantic``) at T = 1 and at the fitted T, the latter with
    ``selected_on`` = the dataset, since T was fitted on these very pixels (NLL is not a
    fraction, so it is not a results row). Their run is ``name``, by default that of the
    cache's checkpoint (:func:`schemas.results.default_run`, as ``analyze score``).
    """
    from scipy.optimize import minimize_scalar

    from schemas.cache import cache_digest
    from schemas.results import default_run

    cal = _Calibration(cache_path, max_pixels, seed, storage_options)
    res = minimize_scalar(lambda u: cal.nll(math.exp(u)), bounds=tuple(math.log(b) for b in T_BOUNDS),
                          method="bounded", options={"xatol": 1e-5})
    t = float(math.exp(res.x))
    out = {"T": t, "nll_before": cal.nll(1.0), "nll_after": cal.nll(t), "ece_before": cal.ece(1.0),
           "ece_after": cal.ece(t), "n_pixels": int(cal.labels.size), "n_frames": cal.n_frames}
    spec = cal.spec
    prov = spec.provenance
    base = dict(run=name or default_run(prov.model, prov.checkpoint_sha256, prov.checkpoint_file),
                model=prov.model, dataset=prov.dataset, scorer=SEMANTIC_SCORER, frames="all",
                temp_target="logits" if spec.kind == "pixel" else "query", protocol="exact", metric="ece",
                ci_low=float("nan"), ci_high=float("nan"), n_frames=cal.n_frames, n_pixels=int(cal.labels.size),
                cache_digest=cache_digest(spec))
    out["rows"] = pd.DataFrame([
        {**base, "temperature": 1.0, "value": out["ece_before"], "selected_on": ""},
        {**base, "temperature": t, "value": out["ece_after"], "selected_on": spec.provenance.dataset},
    ])
    return out
