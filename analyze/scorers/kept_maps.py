"""Full-size score maps that a thread's frame tasks reuse from frame to frame.

A :class:`~analyze.scorers.pixel.MapScorer` holds one (H, W) float64 map per scorer at each
temperature: at 1024x2048, the study's five scorers at four T are 20 maps, 320 MB a frame, and
every scorer 48 maps, 770 MB. Allocated afresh for every frame, each came from the kernel as
new pages, zeroed on first touch: on the 2-core machine that was 0.4-0.5 s of system time in a
3 s EoMT frame (``clear_page`` 15 % of a profile). Inside a :func:`kept_maps` block (the frame
task opens one) the maps come from the thread's maps of its previous block instead, and go back
to it when the block ends; no number changes, since every pixel of a map is written again
(:meth:`MapScorer.add` or :meth:`MapScorer.blank`).

A map that a pass expects zeroed (``sparse``: most rows are left blank) carries the rows its last
user wrote (:attr:`Kept.dirty`): the new user clears those where it blanks a row, and
:meth:`MapScorer.finish` clears any it did not reach, so the map reads as if it were new.

Only the maps lent inside a block are kept at its end (the memory of one frame task per thread,
which the plan counts in its budget); outside a block :func:`lend` allocates as before, so maps
that escape (``score_frame``, ``analyze maps``) are never reused. The consumer of a block's maps
must copy what it keeps: every metric state does (the split's gathers, histograms, counts).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

_THREAD = threading.local()  # open: bool; free: list[Kept] (from the last block); lent: list[Kept]


@dataclass
class Kept:
    """A map lent by :func:`lend`: ``tensor`` (H, W) and ``dirty`` (H,) bool, the rows that may hold
    values other than 0 (its user shares its own array here, so that the rows it writes follow
    the map to the next)."""

    tensor: torch.Tensor
    dirty: np.ndarray


@contextmanager
def kept_maps() -> Iterator[None]:
    """Maps lent (:func:`lend`) on this thread inside the block reuse those of its last block; at
    the end they are kept for the next (those not reused are dropped). Nested blocks are the outer one."""
    state = _THREAD.__dict__
    if state.get("open"):
        yield
        return
    state["open"], state["lent"] = True, []
    state.setdefault("free", [])
    try:
        yield
    finally:
        state["free"], state["lent"], state["open"] = state["lent"], [], False


def drop() -> None:
    """Forget this thread's kept maps (a pass ran its frame tasks on the calling thread)."""
    _THREAD.__dict__["free"] = []


def lend(shape: tuple[int, int], dtype: torch.dtype, device: torch.device, zeroed: bool) -> Kept:
    """A (H, W) map of ``dtype``: this thread's kept map of that shape and dtype inside a
    :func:`kept_maps` block where one is free (its :attr:`Kept.dirty` rows hold old values),
    else a new one (``zeroed``: numpy's calloc, pages zeroed when first touched, so rows never
    written cost nothing; else uninitialised)."""
    state = _THREAD.__dict__
    shape = (int(shape[0]), int(shape[1]))
    keep = device.type == "cpu" and state.get("open")
    if keep:
        free = state["free"]
        for j, kept in enumerate(free):
            if tuple(kept.tensor.shape) == shape and kept.tensor.dtype == dtype:
                del free[j]
                state["lent"].append(kept)
                return kept
    if zeroed and device.type == "cpu":
        tensor = torch.from_numpy(np.zeros(shape, torch.empty(0, dtype=dtype).numpy().dtype))
    elif zeroed:
        tensor = torch.zeros(shape, dtype=dtype, device=device)
    else:
        tensor = torch.empty(shape, dtype=dtype, device=device)
    kept = Kept(tensor, np.full(shape[0], not zeroed))
    if keep:
        state["lent"].append(kept)
    return kept
