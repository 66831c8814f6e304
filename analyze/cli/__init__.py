"""The ``analyze`` command line: click commands that parse, check every option, and call one function.

:mod:`analyze.cli.main` is the group and the small commands, :mod:`analyze.cli.score` ``analyze
score``, :mod:`analyze.cli.fit` ``analyze fit``, :mod:`analyze.cli.scorers` ``analyze scorers``,
:mod:`analyze.cli.options` the option parsing they share. The top of the ``analyze`` import graph below the benchmarks: nothing else in ``analyze``
imports it; it holds no computation.
"""
