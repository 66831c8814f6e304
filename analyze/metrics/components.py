"""SegmentMeIfYouCan component-level metrics (sIoU, PPV, mean F1) as a mergeable state.

Follows ``SegmentMeIfYouCan/road-anomaly-benchmark`` (2023, commit 1c7804e),
``road_anomaly_benchmark/metrics/instance_segmentation.py``: ``default_instancer`` (per frame:
threshold, components, size rules, region of interest), ``segment_metrics`` (per frame:
sIoU per ground-truth component, PPV per predicted component) and ``MetricSegment.aggregate``
(dataset: pooled means and F1 from summed counts); the pixel threshold (:mod:`analyze.metrics.best_f1`) comes from
``MetricSegment.get_thresh_p_from_curve``, i.e. the best-F1 point of the pixel PR curve
(``pixel_classification_curves.py``, ``curves_from_cmats``).

Per frame (``y_true``: 0 in-distribution, 1 anomaly, 255 void; ``y_score``: higher = more anomalous)
----------------------------------------------------------------------------------------------------

1. prediction ``score > threshold`` (strict, as the benchmark; ``inclusive=True`` gives
   ``>=``), set to 0 on void pixels *before* labelling (void can split a prediction);
2. 8-connected components (``scipy.ndimage.label`` with a 3x3 structure of ones) of the
   prediction and of ``y_true == 1``;
3. predicted components with fewer than ``min_pred_size`` pixels are dropped (sizes counted
   after step 1, on the whole frame); ground-truth components with fewer than
   ``min_gt_size`` pixels become void (they leave the region of interest, and so do the
   predicted pixels on them);
4. everything below is counted inside the region of interest (``y_true != 255`` after 3).

With ``G_i`` a ground-truth component, ``P_j`` a kept predicted component, ``S_i`` the
predicted components that touch ``G_i`` and ``P(S_i)`` their union, ``A`` all
ground-truth pixels (of any component), all sets counted inside the region of interest::

    sIoU(G_i) = |G_i ∩ P(S_i)| / (|G_i ∪ P(S_i)| - |P(S_i) ∩ (A minus G_i)|)
              = |G_i ∩ P(S_i)| / (|G_i| + |P(S_i) minus A|)
    PPV(P_j)  = |P_j ∩ A| / |P_j|

i.e. predicted pixels that lie on *other* ground-truth components are removed from the
union ("adjusted" union), so one prediction covering two objects is not punished for the
other one. ``sIoU_pred`` is the mirror image (roles of prediction and ground truth swapped),
reported by the benchmark but not in its tables.

Dataset (``MetricSegment.aggregate``)
-------------------------------------

Components are pooled over the dataset, not averaged per frame: ``siou`` is the mean of
every ground-truth component's sIoU, ``ppv`` the mean of every predicted component's PPV.
For each ``tau`` in ``np.linspace(0.25, 0.75, 11)``: ``TP = #(sIoU >= tau)``,
``FN = #(sIoU < tau)`` over ground-truth components, ``FP = #(PPV < tau)`` over predicted
components, ``F1(tau) = 2 TP / (2 TP + FN + FP)``; ``mean_f1`` is the plain mean of the 11.

Choices where this module differs from the benchmark's code
-----------------------------------------------------------

* the benchmark's size loops also visit the background label 0: a frame with fewer than
  ``min_gt_size`` non-anomaly pixels (void included) would have *all* of them turned void.
  That cannot happen on real frames (millions of pixels); here only real components are
  subject to the rules;
* undefined values are NaN plus :class:`analyze.metrics.UndefinedMetricWarning` (the
  benchmark divides by zero): ``siou`` without ground-truth component, ``ppv`` without
  predicted component, ``F1(tau)`` when there is neither (with false positives only, F1 is
  0, as in the benchmark);
* the benchmark thresholds the map it reads back from the submitted HDF5 file, i.e. the
  float16 values (``evaluation.py`` saves every map as float16), and under the numpy it pins
  (1.23, value-based casting) ``anomaly_p > thresh_p`` with a float16 ``anomaly_p`` compares in
  float16: the threshold is rounded to float16 too. :class:`ComponentState` with
  ``float16=True`` (what the ``smiyc`` protocol uses) does exactly that; by default the
  scores and the threshold are used as given (float64).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from analyze.metrics.common import VOID, UndefinedMetricWarning
from schemas.manifest import load_manifest

TAUS: tuple[float, ...] = tuple(np.linspace(0.25, 0.75, 11).tolist())
"""sIoU / PPV thresholds of the F1 (``thresh_sIoU`` in the benchmark configs)."""

_STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connectivity


@dataclass(frozen=True)
class TrackRules:
    """Small-component rules of one SMIYC track (``MetricSegment.configs``).

    A predicted component is kept when it has ``>= min_pred_size`` pixels
    (``thresh_segsize``); a ground-truth component with ``< min_gt_size`` pixels
    (``thresh_instsize``) is made void.
    """

    name: str
    min_pred_size: int
    min_gt_size: int
    benchmark_config: str = ""
    taus: tuple[float, ...] = TAUS

    def __post_init__(self) -> None:
        if self.min_pred_size < 0 or self.min_gt_size < 0:
            raise ValueError(f"track {self.name!r}: sizes must be >= 0")


TRACKS: dict[str, TrackRules] = {
    "anomaly": TrackRules("anomaly", min_pred_size=500, min_gt_size=100, benchmark_config="SegEval-AnomalyTrack"),
    "obstacle": TrackRules("obstacle", min_pred_size=50, min_gt_size=10, benchmark_config="SegEval-ObstacleTrack"),
}
"""The benchmark's two tracks (``SegEval`` without a suffix has the anomaly numbers)."""

DEFAULT_TRACK = "anomaly"
"""The track of a dataset the manifest does not know."""


def get_track(track: str | TrackRules) -> TrackRules:
    """The :class:`TrackRules` named ``track`` (a key of :data:`TRACKS`), or ``track`` itself."""
    if isinstance(track, TrackRules):
        return track
    try:
        return TRACKS[track]
    except KeyError:
        raise ValueError(f"unknown component track {track!r}; valid: {', '.join(sorted(TRACKS))}") from None


def track_for_dataset(dataset: str) -> str:
    """The track of a dataset: its ``component_track`` in ``data_manifest.yaml`` (e.g. obstacle for
    SMIYC RoadObstacle21), else :data:`DEFAULT_TRACK`."""
    spec = load_manifest().get(dataset)
    return spec.component_track if spec is not None else DEFAULT_TRACK


# --------------------------------------------------------------------------------------
# per frame (pure)


class FrameComponents(NamedTuple):
    """Per-component numbers of one frame, in label order (raster order of first pixel)."""

    siou_gt: np.ndarray  # (n_gt,) float64
    ppv_pred: np.ndarray  # (n_pred,) float64
    siou_pred: np.ndarray  # (n_pred,) float64


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    lab, n = ndimage.label(mask, structure=_STRUCTURE)
    return lab, int(n)


class GroundTruth(NamedTuple):
    """What the component step needs of one frame's labels, whatever the prediction (shared by
    every scorer and temperature): ground-truth components (``g_lab``, 1 .. ``n_g``, label
    order), the region of interest after the small-component rule (``roi``) and each
    component's pixels in it (``g_size``, index 0: roi pixels off the ground truth)."""

    roi_mask: np.ndarray  # (H, W) bool: y_true != 255, before the size rule
    g_lab: np.ndarray  # (H, W) int32
    n_g: int
    roi: np.ndarray  # (H, W) bool
    g_size: np.ndarray  # (n_g + 1,) int64


def ground_truth(gt_mask: np.ndarray, roi_mask: np.ndarray, rules: str | TrackRules) -> GroundTruth:
    """Steps 2 and 3 of the module docstring for the ground truth: its 8-connected components,
    those under ``min_gt_size`` pixels made void."""
    rules = get_track(rules)
    gt_mask = np.asarray(gt_mask, bool)
    roi_mask = np.asarray(roi_mask, bool)
    if gt_mask.ndim != 2 or gt_mask.shape != roi_mask.shape:
        raise ValueError(f"masks must be 2-D of one shape; got {gt_mask.shape}, {roi_mask.shape}")
    if np.any(gt_mask & ~roi_mask):
        raise ValueError("gt_mask has pixels outside roi_mask (ground truth cannot be void)")
    g_lab, n_g = _label(gt_mask)
    small_g = np.bincount(g_lab.ravel(), minlength=n_g + 1) < rules.min_gt_size  # (n_g + 1,)
    small_g[0] = False
    roi = roi_mask & ~small_g[g_lab]
    return GroundTruth(roi_mask, g_lab, n_g, roi, np.bincount(g_lab[roi], minlength=n_g + 1).astype(np.int64))


def frame_components(pred_mask: np.ndarray, gt_mask: np.ndarray, roi_mask: np.ndarray,
                     rules: str | TrackRules) -> FrameComponents:
    """sIoU per ground-truth component, PPV and sIoU per predicted component of one frame.

    ``pred_mask``: thresholded prediction; ``gt_mask``: ``y_true == 1``; ``roi_mask``:
    ``y_true != 255`` (all boolean, same 2-D shape; ``gt_mask`` must lie inside
    ``roi_mask``). Steps 1 to 4 and the formulas of the module docstring
    (``instance_segmentation.py``: ``default_instancer`` then ``segment_metrics``).
    Components that end up with no pixel in the region of interest are not reported.
    """
    pred_mask = np.asarray(pred_mask, bool)
    gt = ground_truth(gt_mask, roi_mask, rules)
    if pred_mask.shape != gt.roi.shape:
        raise ValueError(f"masks must be 2-D of one shape; got {pred_mask.shape}, {gt.roi.shape}")
    return prediction_components(pred_mask & gt.roi_mask, gt, rules)


def predicted_components(pred_index: np.ndarray, gt: GroundTruth, rules: str | TrackRules) -> FrameComponents:
    """:func:`prediction_components` of the prediction whose non-void pixels are ``pred_index``
    (flat indices) on the frame ``gt`` (:func:`ground_truth`)."""
    pred = np.zeros(gt.roi.shape, bool)
    pred.ravel()[np.asarray(pred_index, np.int64)] = True
    return prediction_components(pred, gt, rules)


def prediction_components(pred: np.ndarray, gt: GroundTruth, rules: str | TrackRules) -> FrameComponents:
    """:func:`frame_components` of the prediction ``pred`` ((H, W) bool, non-void pixels only) on
    the frame ``gt`` (:func:`ground_truth`): the prediction's bounding box labelled once (the
    same components, numbered in the same raster order as on the whole frame), then every
    step on that box only, so a small prediction costs a small box."""
    rules = get_track(rules)
    rows = np.flatnonzero(pred.any(axis=1))
    box: tuple[slice, slice] = (slice(0, 0), slice(0, 0))
    p_lab, n_p = np.zeros((0, 0), np.int32), 0  # the component of each pixel of the box
    if rows.size:
        cols = np.flatnonzero(pred[rows[0]:rows[-1] + 1].any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        p_lab, n_p = _label(pred[box])
    drop_p = np.bincount(p_lab[pred[box]], minlength=n_p + 1) < rules.min_pred_size  # sizes on the whole frame
    drop_p[0] = True
    in_roi = pred[box] & gt.roi[box]  # predicted pixels in the region of interest
    p_size = np.bincount(p_lab[in_roi], minlength=n_p + 1)  # pixels of each component in the roi
    p_size[drop_p] = 0  # dropped components count nowhere (index 0 unused)

    # overlap |G_i ∩ P_j| for every touching pair (sparse), kept components only
    g_lab = gt.g_lab[box]
    both = in_roi & (g_lab > 0)
    keys, overlap = np.unique(g_lab[both].astype(np.int64) * (n_p + 1) + p_lab[both], return_counts=True)
    kept = ~drop_p[keys % (n_p + 1)]
    keys, overlap = keys[kept], overlap[kept]
    pair_g, pair_p = np.divmod(keys, n_p + 1)
    g_hit = np.zeros(gt.n_g + 1, np.int64)  # |G_i ∩ all predictions|
    p_hit = np.zeros(n_p + 1, np.int64)  # |P_j ∩ A|
    np.add.at(g_hit, pair_g, overlap)
    np.add.at(p_hit, pair_p, overlap)
    # |G_i| + |P(S_i) minus A|: each touching P_j adds its pixels off the ground truth
    g_union = gt.g_size.copy()
    p_union = p_size.copy()
    np.add.at(g_union, pair_g, (p_size - p_hit)[pair_p])
    np.add.at(p_union, pair_p, (gt.g_size - g_hit)[pair_g])

    gi = np.flatnonzero(gt.g_size[1:]) + 1
    pj = np.flatnonzero(p_size[1:]) + 1
    return FrameComponents(siou_gt=g_hit[gi] / g_union[gi], ppv_pred=p_hit[pj] / p_size[pj],
                           siou_pred=p_hit[pj] / p_union[pj])


def f1_per_tau(siou_gt: np.ndarray, ppv_pred: np.ndarray, taus=TAUS) -> dict:
    """Counts and F1 at each ``tau`` from pooled per-component values (``MetricSegment.aggregate``).

    ``tp = #(siou >= tau)``, ``fn = #(siou < tau)``, ``fp = #(ppv < tau)``,
    ``f1 = 2 tp / (2 tp + fn + fp)`` (NaN when the denominator is 0). Arrays of len(taus).
    """
    siou_gt = np.asarray(siou_gt, np.float64)
    ppv_pred = np.asarray(ppv_pred, np.float64)
    t = np.asarray(taus, np.float64)[:, None]  # (n_tau, 1)
    tp = np.count_nonzero(siou_gt[None, :] >= t, axis=1)
    fn = siou_gt.size - tp
    fp = np.count_nonzero(ppv_pred[None, :] < t, axis=1)
    denom = 2 * tp + fn + fp
    f1 = np.full(t.shape[0], np.nan)
    np.divide(2 * tp, denom, out=f1, where=denom > 0)
    return {"tp": tp, "fn": fn, "fp": fp, "f1": f1}


# --------------------------------------------------------------------------------------
# mergeable state


def _same_threshold(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


class ComponentState:
    """Component-level metrics of one (scorer, T) over a dataset: ``update`` per frame,
    ``merge`` (concatenation), pure ``compute`` (see the module docstring for definitions).

    Keeps only small per-frame arrays (one float per component), never the maps.
    ``compute`` sums with ``math.fsum`` (exactly rounded), so its result does not depend on
    the order in which frames were added or merged.
    """

    def __init__(self, track: str | TrackRules, threshold: float, *, inclusive: bool = False,
                 float16: bool = False) -> None:
        self.rules = get_track(track)
        self.threshold = float(threshold)
        self.inclusive = bool(inclusive)
        self.float16 = bool(float16)  # compare in float16, as the benchmark (module docstring)
        self.n_frames = 0
        self._siou_gt: list[np.ndarray] = []
        self._ppv_pred: list[np.ndarray] = []
        self._siou_pred: list[np.ndarray] = []

    def update(self, y_score: np.ndarray, y_true: np.ndarray) -> "ComponentState":
        """Add one frame: ``y_score`` (H, W) float, ``y_true`` (H, W) 0/1/255. Returns ``self``."""
        y_score = np.asarray(y_score)
        y_true = np.asarray(y_true)
        if y_score.ndim != 2 or y_score.shape != y_true.shape:
            raise ValueError(f"y_score {y_score.shape} and y_true {y_true.shape} must be one (H, W) shape")
        gt = y_true == 1
        roi = y_true != VOID
        if np.any(roi & ~gt & (y_true != 0)):
            bad = np.unique(y_true[roi & ~gt & (y_true != 0)])[:10]
            raise ValueError(f"y_true may hold only 0, 1 and {VOID} (void); found {bad.tolist()}")
        if y_score.dtype.kind == "f" and np.isnan(y_score[roi]).any():
            raise ValueError("y_score contains NaN at non-void pixels")
        thr: float | np.floating = self.threshold
        if self.float16:  # the map the benchmark reads back, and its float16 comparison
            with np.errstate(over="ignore"):
                y_score, thr = y_score.astype(np.float16), np.float16(thr)
        pred = y_score >= thr if self.inclusive else y_score > thr
        return self._add(frame_components(pred, gt, roi, self.rules))

    def add_prediction(self, pred_index: np.ndarray, gt: GroundTruth) -> "ComponentState":
        """Add one frame given as its labels' :func:`ground_truth` and the flat indices of its
        non-void pixels above the threshold (``> threshold``, ``>=`` when ``inclusive``): the same
        as :meth:`update` on the frame's map (:func:`predicted_components`)."""
        return self._add(predicted_components(pred_index, gt, self.rules))

    def add_mask(self, pred: np.ndarray, gt: GroundTruth) -> "ComponentState":
        """:meth:`add_prediction` of the prediction as a mask ((H, W) bool, non-void pixels above
        the threshold; :func:`prediction_components`)."""
        return self._add(prediction_components(pred, gt, self.rules))

    def _add(self, fc: FrameComponents) -> "ComponentState":
        self.n_frames += 1
        if fc.siou_gt.size:
            self._siou_gt.append(fc.siou_gt)
        if fc.ppv_pred.size:
            self._ppv_pred.append(fc.ppv_pred)
            self._siou_pred.append(fc.siou_pred)
        return self

    def merge(self, other: "ComponentState") -> "ComponentState":
        """A new state holding the components of both (inputs unchanged)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(self).__name__} with {type(other).__name__}")
        if (other.rules != self.rules or other.inclusive != self.inclusive or other.float16 != self.float16
                or not _same_threshold(self.threshold, other.threshold)):
            raise ValueError(
                f"cannot merge component states with different settings: ({self.rules.name}, {self.threshold}, "
                f"inclusive={self.inclusive}, float16={self.float16}) vs ({other.rules.name}, {other.threshold}, "
                f"inclusive={other.inclusive}, float16={other.float16})"
            )
        out = type(self)(self.rules, self.threshold, inclusive=self.inclusive, float16=self.float16)
        out.n_frames = self.n_frames + other.n_frames
        out._siou_gt = self._siou_gt + other._siou_gt
        out._ppv_pred = self._ppv_pred + other._ppv_pred
        out._siou_pred = self._siou_pred + other._siou_pred
        return out

    @property
    def n_gt(self) -> int:
        return sum(a.size for a in self._siou_gt)

    @property
    def n_pred(self) -> int:
        return sum(a.size for a in self._ppv_pred)

    def compute(self, *, warn: bool = True) -> dict:
        """Dataset-level numbers (fractions in [0, 1]; NaN + warning when undefined):

        ``siou`` (mean sIoU over ground-truth components), ``ppv`` (mean PPV over predicted
        components), ``mean_f1`` (mean F1 over :data:`TAUS`), ``f1_25``, ``f1_50``, ``f1_75``,
        ``siou_pred``, counts ``n_gt``, ``n_pred``, ``n_frames``, and the pixel ``threshold``.
        """
        siou_gt = np.concatenate(self._siou_gt) if self._siou_gt else np.empty(0)
        ppv = np.concatenate(self._ppv_pred) if self._ppv_pred else np.empty(0)
        siou_pred = np.concatenate(self._siou_pred) if self._siou_pred else np.empty(0)
        f = f1_per_tau(siou_gt, ppv, self.rules.taus)
        n_gt, n_pred = siou_gt.size, ppv.size
        undefined = []
        if n_gt == 0:
            undefined.append("siou")
        if n_pred == 0:
            undefined += ["ppv", "siou_pred"]
        if n_gt == 0 and n_pred == 0:
            undefined.append("mean_f1")
        if warn and undefined:
            warnings.warn(
                f"{n_gt} ground-truth and {n_pred} predicted components over {self.n_frames} frames: "
                f"{', '.join(undefined)} undefined (NaN)", UndefinedMetricWarning, stacklevel=2,
            )
        taus = np.asarray(self.rules.taus)
        return {
            "siou": _mean(siou_gt),
            "ppv": _mean(ppv),
            "mean_f1": float(np.mean(f["f1"])),
            **{f"f1_{round(t * 100)}": float(f["f1"][np.flatnonzero(taus == t)[0]])
               for t in (0.25, 0.5, 0.75) if np.any(taus == t)},
            "siou_pred": _mean(siou_pred),
            "n_gt": int(n_gt),
            "n_pred": int(n_pred),
            "n_frames": self.n_frames,
            "threshold": self.threshold,
        }


def _mean(x: np.ndarray) -> float:
    return math.fsum(x.tolist()) / x.size if x.size else float("nan")
