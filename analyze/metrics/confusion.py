"""mIoU: a dataset-level confusion matrix as a mergeable state."""

from __future__ import annotations

import warnings

import numpy as np

from analyze.metrics.common import VOID, UndefinedMetricWarning, check_same_type


class ConfusionState:
    """Dataset-level confusion matrix for mIoU (Cityscapes ``evalPixelLevelSemanticLabeling``).

    ``confusion[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p`` (int64);
    pixels whose ground truth is ``ignore_index`` are skipped. ``merge`` adds matrices.
    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; a class with ``TP + FP + FN = 0`` (absent from
    both ground truth and prediction) has IoU NaN and is left out of the mean, as in the
    Cityscapes script; ``miou`` is the mean over the remaining classes (19 on Cityscapes).
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = VOID) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, y_pred, y_true) -> "ConfusionState":
        """Add one frame of predicted and ground-truth class ids (same shape)."""
        y_pred = np.asarray(y_pred).ravel()
        y_true = np.asarray(y_true).ravel()
        if y_pred.shape != y_true.shape:
            raise ValueError(f"y_pred has {y_pred.size} pixels, y_true {y_true.size}")
        keep = y_true != self.ignore_index
        t = y_true[keep].astype(np.int64)
        p = y_pred[keep].astype(np.int64)
        k = self.num_classes
        if t.size and (t.min() < 0 or t.max() >= k):
            raise ValueError(f"y_true holds ids outside [0, {k}) other than {self.ignore_index}")
        if p.size and (p.min() < 0 or p.max() >= k):
            raise ValueError(f"y_pred holds ids outside [0, {k}) at non-ignored pixels")
        self.confusion += np.bincount(t * k + p, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other: "ConfusionState") -> "ConfusionState":
        check_same_type(self, other)
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError("cannot merge confusion states with different classes")
        out = type(self)(self.num_classes, self.ignore_index)
        out.confusion = self.confusion + other.confusion
        return out

    def compute(self, *, warn: bool = True) -> dict:
        """``miou`` (float) and ``iou`` (per-class float64 array, NaN for absent classes)."""
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - np.diag(self.confusion)
        iou = np.full(self.num_classes, np.nan)
        np.divide(tp, denom, out=iou, where=denom > 0)
        if not np.any(denom > 0):
            if warn:
                warnings.warn("no labelled pixel: miou is NaN", UndefinedMetricWarning, stacklevel=2)
            return {"miou": np.nan, "iou": iou}
        return {"miou": float(np.nanmean(iou)), "iou": iou}
