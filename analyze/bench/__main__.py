"""``python -m analyze.bench``: the benchmark sections (:mod:`analyze.bench.sections`)."""

from analyze.bench.sections import main

main()
