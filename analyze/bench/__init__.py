"""Benchmarks (``python -m analyze.bench``, ``make bench``): one module per section of
:mod:`analyze.bench.sections`. Nothing in the rest of ``analyze`` imports this package (an
import-linter contract in ``pyproject.toml``); tests may.
"""
