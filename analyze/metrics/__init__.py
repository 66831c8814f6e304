"""Pixel metrics as mergeable states: ``update`` per frame, ``merge`` (a Dask tree-reduce), pure ``compute``.

Vocabulary follows scikit-learn: ``y_true`` is a label map (0 in-distribution, 1 anomaly =
the positive class, 255 void, ignored), ``y_score`` an anomaly map (higher = more
anomalous). Pixels are pooled over the whole dataset, never averaged per frame.

Protocols (:data:`PROTOCOLS`, the value of the results ``protocol`` column)
------------------------------------------------------------------------------

``exact`` (:class:`ExactState`)
    Exact, with ties, on the scores as given (no rounding):

    * ``auprc`` = scikit-learn ``average_precision_score`` (``sklearn/metrics/_ranking.py``):
      the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds, not the
      trapezoid;
    * ``auroc`` = ``roc_auc_score``: trapezoid on the ROC curve, a tie between positive and
      negative scores being a diagonal segment;
    * ``fpr95`` = ``ood_metrics.fpr_at_95_tpr`` (``ood-metrics`` 0.2.9 to 1.1.2, same code):
      ``np.interp(0.95, tpr, fpr)`` on ``sklearn.metrics.roc_curve``, with its two edge rules
      (0 when every TPR < 0.95, the smallest FPR among TPR >= 0.95 when every TPR >= 0.95;
      neither can fire once the curve starts at (0, 0) and has a positive). Where the curve
      has a flat stretch at TPR exactly 0.95, ``np.interp`` returns the FPR at its right end,
      i.e. the largest FPR of the stretch.

    The state keeps every non-void score, split into positives and negatives: it computes
    TP and FP at every distinct positive score and derives all three numbers from these
    integer counts (thresholds that only negatives reach change neither recall nor the ROC
    area, and lie on straight ROC segments). Counts are int64, so the result does not depend
    on how frames were grouped or merged.

``smiyc`` (:class:`SmiycState`)
    The SegmentMeIfYouCan benchmark as of its 2023 code (``SegmentMeIfYouCan/
    road-anomaly-benchmark``, ``road_anomaly_benchmark/metrics/pixel_classification.py`` and
    ``pixel_classification_curves.py``; ``evaluation.py`` stores every map as float16). See
    :class:`SmiycState` for the procedure and the two places where a choice was needed.

When every score of a dataset does not fit in memory, :class:`PositiveState` and
:class:`NegativeCountState` give the ``exact`` numbers in two passes over the frames.

mIoU (:class:`ConfusionState`) is the Cityscapes definition on a dataset-level confusion
matrix.

Undefined values are NaN plus a :class:`UndefinedMetricWarning` (never an exception): no
anomaly pixel in the whole dataset, or no negative pixel for AUROC/FPR95.

Modules: :mod:`~analyze.metrics.common` (labels, warnings, one frame's split, threads),
:mod:`~analyze.metrics.float_keys` (value-ordered float bit patterns),
:mod:`~analyze.metrics.counts` (the exact numbers from TP/FP counts),
:mod:`~analyze.metrics.exact` (:class:`ExactState`), :mod:`~analyze.metrics.framed` (the same
numbers with each frame kept apart and sorted, for ``analyze score``), :mod:`~analyze.metrics.two_pass`,
:mod:`~analyze.metrics.ranks`, :mod:`~analyze.metrics.kernels`, :mod:`~analyze.metrics.radix32`
and :mod:`~analyze.metrics.radix64` (the sorting and ranking engine of the exact protocol,
compiled with numba), :mod:`~analyze.metrics.smiyc`,
:mod:`~analyze.metrics.confusion`, :mod:`~analyze.metrics.curves`,
:mod:`~analyze.metrics.protocols` (the registry and the functions over any state). The public
API is importable from ``analyze.metrics``.
"""

from __future__ import annotations

from analyze.metrics.common import MAX_THREADS, TPR_LEVEL, VOID, UndefinedMetricWarning, num_threads
from analyze.metrics.confusion import ConfusionState
from analyze.metrics.curves import curves
from analyze.metrics.exact import ExactState
from analyze.metrics.framed import FramedExactState, FrameSplit
from analyze.metrics.protocols import PROTOCOLS, frame_ap, merge_states, new_state, pixel_metrics
from analyze.metrics.smiyc import SmiycState
from analyze.metrics.two_pass import AnomalyPixels, CountedState, NegativeCountState, PositiveState, anomaly_pixels

__all__ = [
    "MAX_THREADS", "PROTOCOLS", "TPR_LEVEL", "VOID", "AnomalyPixels", "ConfusionState", "CountedState", "ExactState",
    "FramedExactState", "FrameSplit", "anomaly_pixels",
    "NegativeCountState", "PositiveState", "SmiycState", "UndefinedMetricWarning", "curves", "frame_ap",
    "merge_states", "new_state", "num_threads", "pixel_metrics",
]
