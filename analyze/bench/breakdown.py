"""Where one frame's time goes in ``analyze score``, and the library-kernel reference on the same
frame (part 2 of :mod:`analyze.bench.study`).

The steps are timed by calling, on one thread, the functions the frame task calls
(:mod:`analyze.compose.frame_scores`, :mod:`analyze.compose.queries`, :mod:`analyze.scorers`,
:class:`analyze.metrics.FramedExactState`, :mod:`analyze.run.later_passes`), each the best of
``repeats`` runs. "Recomposing" is what the bootstrap and component passes cost per frame
before they read the first pass (``score_cache(recompose=True)``): composition and scorers
twice more, the bootstrap histograms by a binary search per pixel
(:func:`analyze.metrics.bootstrap.frame_histograms`) and the component step on the dense map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from analyze import metrics as M
from analyze.bench import reference as R
from analyze.compose.frame_scores import FrameInputs, Scoring, frame_inputs, iter_frame_scores
from analyze.compose.queries import FrameComposer
from analyze.compose.resize import pixel_logits_to_label_size, resize_scores, semantic_prediction
from analyze.metrics.best_f1 import best_f1_threshold
from analyze.metrics.bootstrap import frame_histograms
from analyze.metrics.components import ComponentState, track_for_dataset
from analyze.plan.passes import POSITIONS
from analyze.run.intervals import key_edges
from analyze.run.later_passes import framed_histograms, kept_components
from analyze.run.scheduler import single_threaded_tasks
from analyze.scorers import get_scorers, score_many
from schemas import cache as C

FRAME = 1  # not the first: the 1-frame cache's frame is the 8-frame cache's frame 0


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(seconds, result) of the fastest of ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        if time.perf_counter() - t0 < best:
            best, out = time.perf_counter() - t0, res
    return best, out


@dataclass(frozen=True)
class _Frame:
    """Frame :data:`FRAME` of a cache as read (``inputs``: the cache's arrays, ``label``), the
    temperatures and scorers timed on it, and how many runs each timing takes the best of."""

    cache: Path
    spec: C.CacheSpec
    inputs: FrameInputs
    label: np.ndarray
    temps: Sequence[float]
    names: list[str]
    repeats: int

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.sizes[FRAME]


def breakdown(cache: Path, temps: Sequence[float], repeats: int = 2) -> dict:
    """Seconds per step of frame :data:`FRAME` of ``cache`` on one thread, the reference's, and
    the largest relative difference between the reference's maps and the tool's."""
    with single_threaded_tasks():
        warm = np.random.default_rng(0).random((64, 64))
        M.FramedExactState(POSITIONS).add(warm, (warm > 0.9).astype(np.uint8))  # numba loads its kernels
        root, spec = C.open_cache(str(cache))
        t_read, (inputs, label) = _best(lambda: (frame_inputs(root, spec, FRAME), C.read_label(root, spec, FRAME)),
                                        repeats)
        frame = _Frame(cache, spec, inputs, label, temps, R.study_scorers(spec.kind), repeats)
        t_compose, x = _best(lambda: _compose(frame), repeats)
        t_score, maps = _best(lambda: _score(frame, x), repeats)
        t_fused = _time_fused(frame, maps)
        t_metrics, _ = _best(lambda: _states(frame, maps, 0.0), repeats)
        t_positioned, kept = _best(lambda: _states(frame, maps, POSITIONS), repeats)
        t_later, t_dense, missing = _time_later_steps(frame, maps, kept)
        ref, rows = _time_reference(frame)
        agreement = R.max_difference(rows, maps, spec.crop_size if spec.kind == "query" else None)
    steps = {"read cache": t_read, "composition (alone)": t_compose, "scorers (+ semantic map) (alone)": t_score,
             "composition + scorers, fused (the tool's path)": t_fused,
             "metric states (split, sort, frame AP)": t_metrics,
             "+ pixels of the highest scores (components)": t_positioned - t_metrics,
             "later steps (intervals' histograms, component metrics)": t_later}
    grid = t_read + t_fused + t_metrics
    return {"steps": steps, "grid_s": grid, "compose_score_s": t_fused,
            "later_s": t_positioned - t_metrics + t_later,
            "recompose_s": 2 * (t_read + t_compose + t_score) + t_dense,
            "keys_recomposed": sum(bool(v) for v in missing.values()), **ref, "reference_agreement": agreement}


def _compose(frame: _Frame):
    """Composition alone: ERFNet's logits at label size; EoMT's scores per temperature at label size."""
    inputs, spec = frame.inputs, frame.spec
    if spec.kind == "pixel":
        return pixel_logits_to_label_size(inputs.logits, frame.size, spec.void_channel)
    resized = FrameComposer(inputs.mask_logits, inputs.class_logits, inputs.geom).resized_scores(frame.temps)
    return {t: resize_scores(resized[t], frame.size) for t in frame.temps}


def _score(frame: _Frame, x) -> dict:
    """The scorers (and the semantic map) alone on the composed ``x``: ``{(scorer, T): map}``."""
    maps = {}
    if frame.spec.kind == "pixel":
        semantic_prediction(x)
        for t in frame.temps:
            maps.update({(n, t): m for n, m in score_many(x, t, frame.names).items()})
        return maps
    for t in frame.temps:
        sem = np.empty(x[t].shape[1:], np.uint8)
        maps.update({(n, t): m for n, m in score_many(x[t], 1.0, frame.names, argmax_out=sem).items()})
    return maps


def _time_fused(frame: _Frame, maps: dict) -> float:
    """Seconds of the tool's path (composition and scorers fused per row tile where the frame
    allows); its maps must equal ``maps`` (composition then scorers) bit for bit."""
    chosen = get_scorers(",".join(frame.names), frame.spec.kind)

    def fused():
        out = {}
        for ts in iter_frame_scores(frame.inputs, Scoring(chosen, frame.temps)):
            out.update({(n, ts.temperature): m for n, m in ts.scores.items()})
        return out

    t_fused, fused_maps = _best(fused, frame.repeats)
    if any(not np.array_equal(fused_maps[k], m, equal_nan=True) for k, m in maps.items()):
        raise AssertionError("the fused pass's maps differ from composition then scorers")
    return t_fused


def _states(frame: _Frame, maps: dict, positions: float) -> dict:
    """The exact metric state of each map (keeping the pixels of the highest ``positions``)."""
    out = {}
    for key, m in maps.items():
        out[key] = M.FramedExactState(positions)
        out[key].add(m, frame.label, FRAME)
    return out


def _time_later_steps(frame: _Frame, maps: dict, kept: dict) -> tuple[float, float, dict]:
    """``(seconds of the later steps from the kept scores, seconds of the same steps on the dense
    maps as the recomposing path took them, the keys whose components were not all kept)``."""
    track = track_for_dataset(frame.spec.provenance.dataset)
    thresholds = {k: best_f1_threshold(s) for k, s in kept.items()}
    edges = key_edges(kept)

    def later():
        hist = {k: framed_histograms(kept[k], e) for k, e in edges.items()}
        comp, missing = kept_components(str(frame.cache), None, {k: s.frames for k, s in kept.items()}, thresholds,
                                        track)
        return hist, missing

    t_later, (_, missing) = _best(later, frame.repeats)

    def recomposed():
        for k, m in maps.items():
            frame_histograms(m, frame.label, edges[k])
            ComponentState(track, thresholds[k]).update(m, frame.label)

    t_dense, _ = _best(recomposed, frame.repeats)
    return t_later, t_dense, missing


def _time_reference(frame: _Frame) -> tuple[dict, dict]:
    """The library-kernel reference in float32 and float64: ``({name: {"total", "parts"}}, the
    float64 run's kept rows)``."""
    inputs, spec = frame.inputs, frame.spec
    ref = {}
    for name, dtype in (("reference_f32", torch.float32), ("reference_f64", torch.float64)):
        def run(dtype=dtype):
            if spec.kind == "pixel":
                return R.erfnet_frame(inputs.logits, spec.void_channel, frame.size, frame.temps, dtype, keep_rows=64)
            return R.eomt_frame(inputs.mask_logits, inputs.class_logits, frame.temps, spec.crop_size, dtype,
                                keep_rows=64)

        t, (clock, rows) = _best(run, frame.repeats)
        ref[name] = {"total": t, "parts": clock}
    return ref, rows
