"""The report's vocabulary: display names of models, scorers, metrics and datasets, and file slugs.

Dataset titles and their column order come from ``data_manifest.yaml`` (``report.title``,
``report.order``, the ``in_distribution`` role of the mIoU dataset): the manifest is the only
list of datasets. Models, scorers and metrics are the tool's own vocabulary.
"""

from __future__ import annotations

import re

from schemas.manifest import in_distribution_dataset, load_manifest, report_order

MODELS: dict[str, str] = {"erfnet": "ERFNet", "eomt": "EoMT"}
#: display name of each scorer of :data:`analyze.scorers.SCORERS`, in the order of Table 1's rows
#: (a model shows the scorers it has); a test holds the two to the same keys
SCORERS: dict[str, str] = {"msp": "MSP", "maxlogit": "MaxLogit", "maxentropy": "MaxEntropy",
                           "energy": "Energy", "rba": "RbA"}
METRIC_NAMES: dict[str, str] = {"auprc": "AuPRC", "fpr95": "FPR95", "auroc": "AUROC", "miou": "mIoU",
                                "ece": "ECE", "siou": "sIoU", "ppv": "PPV", "mean_f1": "mean F1"}
HIGHER_IS_BETTER: dict[str, bool] = {"auprc": True, "fpr95": False, "auroc": True, "miou": True, "ece": False,
                                     "siou": True, "ppv": True, "mean_f1": True}
TABLE_METRICS = ("auprc", "fpr95")
TARGET_NOTES = {
    "query": "T divides the query class logits, which changes the segmentation",
    "pixel": "T divides the per-pixel class scores",
    "logits": "T divides the pixel logits",
}


def dataset_name(d: str) -> str:
    """The dataset's ``report.title`` in ``data_manifest.yaml``, else its name."""
    spec = load_manifest().get(d)
    return spec.display_name if spec is not None else d


def dataset_order() -> list[str]:
    """The anomaly datasets in the paper's column order (``report.order`` in the manifest)."""
    return report_order(load_manifest())


def default_miou_dataset() -> str:
    """The dataset of the mIoU column: the manifest's in-distribution dataset (Cityscapes val)."""
    return in_distribution_dataset(load_manifest()) or ""


def model_name(m: str) -> str:
    return MODELS.get(m, m)


def scorer_name(s: str) -> str:
    return SCORERS.get(s, s)


def metric_label(metric: str, arrow: str = "unicode") -> str:
    """``"AuPRC ↑"``; ``arrow="latex"`` gives ``"AuPRC $\\uparrow$"``, ``arrow=""`` none."""
    name = METRIC_NAMES.get(metric, metric)
    if metric not in HIGHER_IS_BETTER or not arrow:
        return name
    up = HIGHER_IS_BETTER[metric]
    if arrow == "latex":
        return f"{name} $\\{'uparrow' if up else 'downarrow'}$"
    return f"{name} {'↑' if up else '↓'}"


def slug(s: str, empty: str = "x") -> str:
    """``s`` as a file-name part: runs of characters other than letters, digits, ``_ . -``
    become ``_``; ``empty`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_") or empty
