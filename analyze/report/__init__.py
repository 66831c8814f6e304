"""The seed paper's tables and figures, built from ``results.parquet`` only.

Nothing here touches a cache or a model: every number is a row of the results table
(:mod:`schemas.results`), multiplied by 100 and rounded to two decimals for display.

Tables (pandas DataFrames, then Markdown / LaTeX text)
------------------------------------------------------

* :func:`table1`: the paper's Table 1. Rows (model, scorer) in the order ERFNet x {MSP,
  MaxLogit, MaxEntropy, Energy}, EoMT x {MSP, MaxLogit, MaxEntropy, Energy, RbA} (only those
  present; other models and scorers follow). Columns: mIoU on the manifest's in-distribution
  dataset (Cityscapes val), then AuPRC (higher is better) and FPR95 (lower is better) per
  anomaly dataset in the manifest's ``report.order`` (the paper's: SMIYC RA-21, SMIYC RO-21,
  FS L&F, FS Static, RoadAnomaly; other datasets follow), titled by ``report.title``.
  The mIoU is the model's ``scorer = "semantic"`` row: one value per model, repeated on every
  scorer row, because a scorer does not change the segmentation (the paper printed a
  different mIoU per scorer, which cannot be right).
* :func:`table2`: the paper's Table 2, one (model, scorer) at every temperature; the mIoU
  column is per T where T changes the segmentation (EoMT, T on the query class logits) and
  the T = 1 value otherwise.

Both take ``ci=True`` for cells such as ``"61.39 [59.1, 63.0]"`` (value and the bootstrap
interval of the ``ci_low``/``ci_high`` columns). Only rows with an empty ``selected_on`` are
used: rows made by :func:`analyze.report.temperature.select_temperature` are a different table.

Figures: :mod:`analyze.report.multiples` (what the report draws, one file per figure kind and
dataset: temperature small multiples, scorers compared on a fitted axis with the chance level)
and :mod:`analyze.report.figures` (PR and ROC curves per dataset; the paper's Figures 5-6 and
the older bar chart stay available to the API).

:func:`write_report` writes all of them, skipping (with a note) what the results cannot
support, and a ``report.md`` that shows every table and figure with those notes; the tables
mark the cells not significantly different from each column's best
(:mod:`analyze.report.significance`), and ``html=True`` adds one self-contained ``index.html``
(:mod:`analyze.report.html`).

Modules: :mod:`~analyze.report.names` (vocabulary), :mod:`~analyze.report.rows` (which rows a
number comes from), :mod:`~analyze.report.tables` (Tables 1-2 as DataFrames),
:mod:`~analyze.report.text` (Markdown and LaTeX), :mod:`~analyze.report.figures`,
:mod:`~analyze.report.multiples`, :mod:`~analyze.report.significance`, :mod:`~analyze.report.html`
(with :mod:`~analyze.report.html_assets`), :mod:`~analyze.report.write` (the whole report).
"""

from __future__ import annotations

from analyze.report.figures import plot_curves, plot_scorer_bars, plot_vs_temperature
from analyze.report.names import (HIGHER_IS_BETTER, METRIC_NAMES, MODELS, SCORERS, TABLE_METRICS, TARGET_NOTES,
                                  dataset_name, dataset_order, default_miou_dataset, metric_label, model_name,
                                  scorer_name, slug)
from analyze.report.rows import has_ci, temperature_grids
from analyze.report.tables import table1, table2
from analyze.report.text import MISSING_MD, MISSING_TEX, to_latex, to_markdown
from analyze.report.write import curves_path_for, write_report

__all__ = [
    "HIGHER_IS_BETTER", "METRIC_NAMES", "MISSING_MD", "MISSING_TEX", "MODELS", "SCORERS", "TABLE_METRICS",
    "TARGET_NOTES", "curves_path_for", "dataset_name", "dataset_order", "default_miou_dataset", "has_ci",
    "metric_label", "model_name", "plot_curves", "plot_scorer_bars", "plot_vs_temperature", "scorer_name", "slug",
    "table1", "table2", "temperature_grids", "to_latex", "to_markdown", "write_report",
]
