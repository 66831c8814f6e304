"""Executing a plan: one Dask task per frame and pass (:mod:`analyze.run.tasks`), the merged states
and the rows they give (:mod:`analyze.run.driver`), the later passes that read what an earlier one
kept, the scheduler and its threads, and ``analyze fit``'s pass (:mod:`analyze.run.fit`).

Stands on :mod:`analyze.plan`, :mod:`analyze.compose`, :mod:`analyze.scorers` and
:mod:`analyze.metrics`; imports no command-line, report, maps or export code.
"""
