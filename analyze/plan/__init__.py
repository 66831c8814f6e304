"""What ``analyze score`` will do to a cache, as data: the frames it scores and pools
(:mod:`analyze.plan.frame_selection`) and the passes over them (:mod:`analyze.plan.passes`).

Printable without running anything (``analyze score --explain``). Imports no Dask, no torch, no
composition: a plan is read from the cache's spec and the options alone.
"""
