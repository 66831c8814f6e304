"""``python -m analyze.cli``: the ``analyze`` command, as the console script runs it."""

from analyze.cli.main import main

main()
