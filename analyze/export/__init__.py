"""``analyze export``: per-frame anomaly maps in a benchmark's submission format.

:mod:`analyze.export.submission` checks the options and orchestrates; :mod:`analyze.export.frames`
writes each frame (float16 transform, HDF5). Maps come from :mod:`analyze.compose.frame_scores`.
"""
