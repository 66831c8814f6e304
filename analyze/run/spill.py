"""The two-pass plan's spill: the second pass writes each frame's scores to local disk, and the
component metrics read them back instead of composing every frame again.

The component metrics need each key's best-F1 threshold, known only once the second pass has
counted every frame (:mod:`analyze.metrics.best_f1`); a threshold that sits low (weak scores:
most pixels predicted) lies below any share of the in-distribution scores the memory budget
could keep with their pixels. So the ``negatives`` pass (:class:`analyze.run.later_passes.SecondPassState`)
writes each pooled frame's map of each key, as scored (float64, ``.npy``), into a temporary
folder, and :func:`analyze.run.later_passes.spilled_components` thresholds them there: the same comparisons on the same
scores as a pass that composes the frames again (``score_cache(..., recompose=True)``), so
the same rows, bit for bit.

The folder is made under :attr:`SpillPolicy.folder` (default: the temporary folder, ``TMPDIR``)
only when the disk has room for every map (``pixels x keys x 8`` bytes) and
:attr:`SpillPolicy.reserve` more (:meth:`SpillPolicy.open`), and only on a local scheduler (a
distributed worker's disk is not this process's); it is removed once read, and when the run
fails. Without it the plan falls back to keeping the pixels of the highest in-distribution
scores (:func:`analyze.plan.passes.second_pass_positions`) and a pass that composes the
frames they miss.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Key = tuple[str, float]  # (scorer, temperature)

SPILL_RESERVE = 2**30  # bytes the disk keeps free beyond the spill


def disk_free(folder: str) -> int:
    """Bytes free on the disk that holds ``folder`` (:func:`shutil.disk_usage`)."""
    return shutil.disk_usage(folder).free


@dataclass(frozen=True)
class Spill:
    """An open spill folder and the keys whose maps it holds (file ``k{key index}-{frame}.npy``)."""

    folder: str
    keys: tuple[Key, ...]

    def prefix(self, key: Key) -> str:
        return os.path.join(self.folder, f"k{self.keys.index(key)}")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class SpillPolicy:
    """Where and whether the second pass spills: a folder under ``folder`` (None: the temporary
    folder), when ``free`` (bytes free on a folder's disk) leaves ``reserve`` beyond the spill."""

    folder: str | None = None
    free: Callable[[str], int] = disk_free
    reserve: int = SPILL_RESERVE

    def open(self, needed: int, keys: Sequence[Key]) -> Spill | None:
        """A new, empty spill folder for ``needed`` bytes of ``keys``' maps, or None without room."""
        where = self.folder or tempfile.gettempdir()
        if self.free(where) < needed + self.reserve:
            return None
        return Spill(tempfile.mkdtemp(prefix="analyze-spill-", dir=where), tuple(keys))


def write_map(prefix: str, frame: int, score: np.ndarray) -> None:
    """Spill frame ``frame``'s map of one key (float64, as scored)."""
    np.save(f"{prefix}-{frame}.npy", np.asarray(score, np.float64), allow_pickle=False)


def read_map(prefix: str, frame: int) -> np.ndarray:
    return np.load(f"{prefix}-{frame}.npy", allow_pickle=False)
