"""Paired comparisons of results cells (``analyze compare``): is cell A better than cell B on the
same frames?

* :mod:`analyze.compare.framedata`: the per-frame data a scoring pass with ``--bootstrap`` keeps
  beside ``results.parquet`` (``<stem>_bootstrap.parquet``), so a comparison never composes a
  map again;
* :mod:`analyze.compare.paired`: the pure math, the paired frame bootstrap (one resampling of
  the frames for every cell), its percentile intervals, two-sided p-values and Holm's correction;
* :mod:`analyze.compare.cells`: which rows are the cells asked for, the check that they pool the
  same frames, and the tidy output rows.
"""
