"""The spill: the pass that composes every frame whole writes each frame's scores to local disk,
and the component metrics read them back instead of composing every frame again.

The component metrics need each key's best-F1 threshold, known only once a pass has counted
every frame (:mod:`analyze.metrics.best_f1`); a threshold that sits low (weak scores: most
pixels predicted) lies below any share of the in-distribution scores the memory budget could
keep with their pixels. So that pass (``one-pass``, or the two-pass plan's ``negatives``:
:attr:`analyze.run.tasks.Phase.spills`) writes each pooled frame's map of each key, as scored
(float64), into a temporary folder, and :func:`analyze.run.later_passes.spilled_components`
thresholds them there: the same comparisons on the same scores as a pass that composes the
frames again (``score_cache(..., recompose=True)``), so the same rows, bit for bit.

A map file (``k{key index}-{frame}.map``) is one block (:data:`analyze.plan.passes.SPILL_BLOCK`)
of header (:data:`MAGIC`, then the map's height and width as two little-endian uint64), then the
float64 map, padded to a whole block. Both ends move it with ``O_DIRECT`` where the system and
the folder's file system allow it (Linux), through the thread's block-aligned buffers: written
through the page cache, the spill's new cache pages cost about 46 ms of system time per
1024x2048 map on a VM that reports free pages to its host (4.4 s for 96 maps, against 0.13 s
with ``O_DIRECT``). Elsewhere it falls back to buffered reads and writes of the same bytes. The
component step reads on twice as many threads as it computes on, so that one thread's wait for
the disk leaves its core to another.

The folder is made under :attr:`SpillPolicy.folder` (default: the temporary folder, ``TMPDIR``)
only when the disk has room for every map (:func:`analyze.plan.passes.spill_bytes`) and
:attr:`SpillPolicy.reserve` more (:meth:`SpillPolicy.open`), and only on a local scheduler (a
distributed worker's disk is not this process's); it is removed once read, and when the run
fails. Without it the plan falls back to keeping the pixels of the highest in-distribution
scores (:func:`analyze.plan.passes.one_pass_positions`, :func:`analyze.plan.passes.second_pass_positions`)
and a pass that composes the frames they miss.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from analyze.metrics.scratch import thread_buffer
from analyze.plan.passes import SPILL_BLOCK

Key = tuple[str, float]  # (scorer, temperature)
MAGIC = b"analyze spill v1"  # the first bytes of a map file
_MAGIC = slice(0, len(MAGIC))  # a map file's header: the magic, then the map's height and width (two <u8)
_SHAPE = slice(len(MAGIC), len(MAGIC) + 16)

SPILL_RESERVE = 2**30  # bytes the disk keeps free beyond the spill


def disk_free(folder: str) -> int:
    """Bytes free on the disk that holds ``folder`` (:func:`shutil.disk_usage`)."""
    return shutil.disk_usage(folder).free


@dataclass(frozen=True)
class Spill:
    """An open spill folder and the keys whose maps it holds (file ``k{key index}-{frame}.map``, :func:`map_path`)."""

    folder: str
    keys: tuple[Key, ...]

    def prefix(self, key: Key) -> str:
        return os.path.join(self.folder, f"k{self.keys.index(key)}")

    def prefixes(self) -> dict[Key, str]:
        """Each key's :meth:`prefix` (what a spilling pass's job names: :attr:`analyze.run.tasks.ScoreJob.spill`)."""
        return {k: self.prefix(k) for k in self.keys}

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class SpillPolicy:
    """Where and whether a pass spills: a folder under ``folder`` (None: the temporary
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


def map_path(prefix: str, frame: int) -> str:
    return f"{prefix}-{frame}.map"


def write_map(prefix: str, frame: int, score: np.ndarray) -> None:
    """Spill frame ``frame``'s (H, W) map of one key (float64, as scored): see the module docstring."""
    a = np.asarray(score, np.float64)
    if a.ndim != 2:
        raise ValueError(f"a spilled map is (H, W), not {a.shape}")
    nbytes = a.size * 8
    buf = _aligned("spill write", SPILL_BLOCK + _blocks(nbytes))
    buf[:SPILL_BLOCK] = 0
    buf[_MAGIC] = np.frombuffer(MAGIC, np.uint8)
    buf[_SHAPE].view("<u8")[:] = a.shape
    np.copyto(buf[SPILL_BLOCK:SPILL_BLOCK + nbytes].view(np.float64).reshape(a.shape), a)
    buf[SPILL_BLOCK + nbytes:] = 0
    path = map_path(prefix, frame)
    if not _direct(path, buf, write=True):
        with open(path, "wb") as f:
            f.write(memoryview(buf))


def read_map(prefix: str, frame: int, shape: tuple[int, int]) -> np.ndarray:
    """Frame ``frame``'s spilled map of one key, which must be ``shape``: a view of this thread's
    buffer, valid until its next :func:`read_map` (ValueError naming the file when it is not such a map)."""
    path = map_path(prefix, frame)
    h, w = (int(n) for n in shape)
    nbytes = h * w * 8
    buf = _aligned("spill read", SPILL_BLOCK + _blocks(nbytes))
    size = os.path.getsize(path)
    if size != buf.size:
        raise ValueError(f"{path}: {size} bytes, not those of a spilled {h}x{w} map ({buf.size})")
    if not _direct(path, buf, write=False):
        with open(path, "rb") as f:
            if f.readinto(memoryview(buf)) != buf.size:
                raise ValueError(f"{path}: shorter than its size")
    found = tuple(int(n) for n in buf[_SHAPE].view("<u8"))
    if bytes(buf[_MAGIC]) != MAGIC or found != (h, w):
        raise ValueError(f"{path}: not a spilled {h}x{w} map")
    return buf[SPILL_BLOCK:SPILL_BLOCK + nbytes].view(np.float64).reshape(h, w)


def _blocks(nbytes: int) -> int:
    """``nbytes`` rounded up to whole blocks."""
    return -(-nbytes // SPILL_BLOCK) * SPILL_BLOCK


def _aligned(role: str, n: int) -> np.ndarray:
    """This thread's buffer of ``role``: ``n`` bytes starting on a block boundary (``O_DIRECT``'s rule)."""
    raw = thread_buffer(role, np.uint8, n + SPILL_BLOCK)
    skip = -raw.ctypes.data % SPILL_BLOCK
    return raw[skip:skip + n]


def _direct(path: str, buf: np.ndarray, write: bool) -> bool:
    """Move the whole file ``path`` from or to the block-aligned ``buf`` with ``O_DIRECT``; False
    where the system or the file system refuses it (nothing moved: the caller moves it buffered)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    mode = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if write else os.O_RDONLY
    try:
        fd = os.open(path, mode | flag | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        if e.errno == errno.EINVAL:  # tmpfs and others: no O_DIRECT
            return False
        raise
    view, done = memoryview(buf), 0
    try:
        while done < buf.size:
            n = os.pwritev(fd, [view[done:]], done) if write else os.preadv(fd, [view[done:]], done)
            if n <= 0:
                raise ValueError(f"{path}: {'no byte written' if write else 'shorter than its size'}")
            done += n
    except OSError as e:
        if e.errno == errno.EINVAL and done == 0:  # blocks larger than SPILL_BLOCK
            return False
        raise
    finally:
        os.close(fd)
    return True
