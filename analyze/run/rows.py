"""An executed plan -> the rows of ``results.parquet``, its per-frame rows and its curves.

:func:`rows` is the one place where merged states become numbers: each key's pixel metrics
(with their bootstrap intervals, :func:`analyze.run.intervals.bootstrap_intervals`) and
curves, the mIoU per T of a semantic cache, and the component metrics a component pass made.
Every warning a computation raises is told once, naming the cache, scorer and T.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pandas as pd

from analyze import metrics as M
from analyze.compare.framedata import kept_frame_data
from analyze.metrics.common import told
from analyze.run.execute import Execution
from analyze.run.intervals import bootstrap_intervals
from analyze.scorers.plugins import with_records
from schemas import cache as C
from schemas.results import SEMANTIC_SCORER


@dataclass(frozen=True)
class RowSettings:
    """What the rows carry besides the states: the run's name and the options that shape them."""

    run: str
    frame_rule: str  # schemas.results.FRAMES
    temp_target: str  # the rows' temp_target: "logits" for pixel caches
    curve_points: int = 200
    bootstrap: int = 0
    seed: int = 0


def rows(ex: Execution, settings: RowSettings, frame_data: list | None = None
         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(results, per_frame, curves)`` of one executed plan, as :func:`analyze.run.driver.score_cache`
    returns them (before :func:`schemas.results.results_frame` sets the dtypes); with intervals,
    what they resampled is appended to ``frame_data`` (:func:`analyze.compare.framedata.kept_frame_data`)."""
    prov = ex.spec.provenance
    base = dict(run=settings.run, model=prov.model, dataset=prov.dataset, protocol=ex.plan.options.protocol,
                frames=settings.frame_rule, cache_digest=C.cache_digest(ex.spec), n_frames=len(ex.pooled))
    cis = (bootstrap_intervals(ex.job, ex.result.states, settings.bootstrap, settings.seed, ex.warn, ex.histograms)
           if settings.bootstrap and ex.plan.keys else {})
    target = settings.temp_target
    if frame_data is not None and cis:  # for analyze compare
        frame_data.append(kept_frame_data(ex.spec.frame_ids, ex.job, ex.result.states, ex.histograms, base, target))
    out, curve_rows = _pixel_rows(ex, base, target, cis, settings.curve_points)
    out += _miou_rows(ex, base, target)
    out += _component_rows(ex, base, target)
    frame_rows = pd.DataFrame([{**base, "temp_target": target, **r} for r in ex.result.rows])
    return with_records(pd.DataFrame(out)), frame_rows, pd.DataFrame(curve_rows)  # plugins: their record


def _key(base: dict, name: str, t: float, target: str) -> dict:
    """The columns every row of a key starts with, in the results' order."""
    return {**base, "scorer": name, "temperature": t, "temp_target": target}


def _pixel_rows(ex: Execution, base: dict, target: str, cis: dict, curve_points: int) -> tuple[list[dict], list[dict]]:
    """Each key's AuPRC, FPR95 and AUROC (with their intervals) and its PR and ROC curve."""
    out, curve_rows = [], []
    for (name, t), state in sorted(ex.result.states.items()):
        values = told(state.compute, f"{ex.job.cache}: {name} T={t}", ex.warn)
        n_pixels = int(values["n_pos"] + values["n_neg"])
        for metric in ("auprc", "fpr95", "auroc"):
            lo, hi = cis.get((name, t), {}).get(metric, (np.nan, np.nan))
            out.append({**_key(base, name, t, target), "metric": metric, "value": values[metric],
                        "n_pixels": n_pixels, "ci_low": lo, "ci_high": hi})
        if values["n_pos"] and values["n_neg"]:
            cv = M.curves(state, curve_points)
            curve_rows.append({**_key(base, name, t, target), "recall": cv["recall"].tolist(),
                               "precision": cv["precision"].tolist(), "fpr": cv["fpr"].tolist(),
                               "tpr": cv["tpr"].tolist()})
    return out, curve_rows


def _miou_rows(ex: Execution, base: dict, target: str) -> list[dict]:
    """The semantic map's mIoU at each T of the plan's mIoU rows."""
    out = []
    for t, conf in sorted(ex.result.confusion.items()):
        if t not in ex.plan.semantic_temps:
            continue
        values = conf.compute()
        out.append({**_key(base, SEMANTIC_SCORER, t, target), "metric": "miou",
                    "value": values["miou"], "n_pixels": int(conf.confusion.sum())})
    return out


def _component_rows(ex: Execution, base: dict, target: str) -> list[dict]:
    """sIoU, PPV and mean F1 of each key a component pass scored; ``n_pixels`` counts the non-void
    pixels of the frames pooled, as on the key's pixel-metric rows."""
    pooled = {k: int(s.n_pos + s.n_neg) for k, s in ex.result.states.items()}
    out = []
    for (name, t), state in sorted(ex.components.items()):
        values = told(state.compute, f"{ex.job.cache}: {name} T={t}", ex.warn)
        for metric in ("siou", "ppv", "mean_f1"):
            out.append({**_key(base, name, t, target), "metric": metric, "value": values[metric],
                        "n_pixels": pooled[(name, t)]})
    return out

