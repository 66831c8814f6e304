"""Progress lines of the demo trainings: step, loss, elapsed time and an estimate of the time left.

A line is written after the first step, after the last, and after any step that ends at least
``every`` seconds after the previous line, so a long training is never silent for more than
``every`` seconds plus one step. Only the clock is read: the training's random streams, and so
its weights, are the same with or without these lines.
"""

from __future__ import annotations

import time
from typing import Callable

#: seconds between two progress lines of ``extract demo train`` / ``train-eomt`` by default
DEFAULT_EVERY = 15.0


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m07s`` or ``1h02m``: a duration as a person reads it."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class TrainingProgress:
    """Writes ``<label>step i/n  loss L[  details]  elapsed E  left ~R`` lines through ``log``.

    ``every``: seconds between lines (0: a line after every step). The time left is the mean
    seconds per step so far times the steps still to run, counted from when this object was
    made (just before the first step).
    """

    def __init__(self, total: int, log: Callable[[str], None], every: float = DEFAULT_EVERY, label: str = "") -> None:
        if every < 0:
            raise ValueError(f"progress interval must be >= 0 seconds, got {every}")
        self.total = int(total)
        self.log = log
        self.every = float(every)
        self.label = f"{label}: " if label else ""
        self.start = time.perf_counter()
        self.last: float | None = None

    def step(self, step: int, loss: float, details: str = "") -> None:
        """Report that step ``step`` (1-based) ended with ``loss``, when a line is due."""
        now = time.perf_counter()
        due = self.last is None or step >= self.total or now - self.last >= self.every
        if not due:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / max(step, 1) * max(self.total - step, 0)
        extra = f"  {details}" if details else ""
        self.log(f"{self.label}step {step}/{self.total}  loss {loss:.4f}{extra}  "
                 f"elapsed {format_seconds(elapsed)}  left ~{format_seconds(left)}")
