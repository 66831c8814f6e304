"""What the bootstrap intervals and the component metrics of ``analyze score`` read instead of
composing every frame again.

Both need something that only the pooled scores decide (the bins at the quantiles of the
anomaly scores, the best-F1 threshold), so they come after the pass that pools them. They no
longer cost a pass of their own wherever an earlier pass kept what they read:

* one pass (``exact``, every score fits the memory budget): the pass's
  :class:`analyze.metrics.FramedExactState` holds each frame's scores, sorted, with their
  pixels when the component metrics are asked for. The intervals' per-frame histograms are
  then a binary search per bin edge in each frame's sorted scores (:func:`framed_histograms`),
  and the component metrics read the pixels above each key's threshold from the tail of each
  frame's sorted scores, with the frame's labels read again from the cache
  (:func:`framed_components`);
* two passes (``exact`` beyond the budget): the bins depend on the anomaly scores only, known
  after the first pass, so the second pass (:class:`SecondPassState`) histograms each frame
  beside counting its in-distribution scores, from the same sorted scores, and gives the
  frame's AP (the per-frame rows) too.

The component metrics of the two-pass plan and of the ``smiyc`` protocol still compose the
frames again in a pass of their own (:data:`analyze.tasks.PHASES` ``components``), as does
every later step when ``score_cache(..., recompose=True)`` (the former path; the same
numbers, tested).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from analyze import metrics as M
from analyze.bootstrap import FrameHistograms
from analyze.components import ComponentState, ground_truth
from analyze.metrics.framed import split_ap, split_sorted
from schemas import cache as C
from schemas.manifest import VOID

Key = tuple[str, float]  # (scorer, temperature)


@dataclass(frozen=True)
class SecondPassInputs:
    """A key's input to the second pass: its distinct anomaly scores ``u`` (ascending) and, for
    the intervals, its bin ``edges`` (:func:`analyze.bootstrap.edges_from_counts`)."""

    u: np.ndarray
    edges: np.ndarray | None = None


class SecondPassState:
    """The second pass of the two-pass ``exact`` protocol for one key: the in-distribution
    counts at ``u`` (:class:`analyze.metrics.NegativeCountState`) and, with ``edges``, the
    frame's bootstrap histograms (:class:`analyze.bootstrap.FrameHistograms`), both from one
    sort of the frame's scores; :meth:`add` returns the frame's AP. ``merge`` in frame order."""

    def __init__(self, inputs: SecondPassInputs) -> None:
        self.counts = M.NegativeCountState(inputs.u)
        self.histograms = None if inputs.edges is None else FrameHistograms(inputs.edges)

    def add(self, y_score, y_true, frame: int | None = None) -> float:
        split = split_sorted(y_score, y_true, frame)
        self.counts.add_sorted(split.neg, split.pos.size)
        if self.histograms is not None:
            self.histograms.add_sorted(split.pos, split.neg)
        return split_ap(split)

    def merge(self, other: "SecondPassState") -> "SecondPassState":
        out = object.__new__(SecondPassState)
        out.counts = self.counts.merge(other.counts)
        out.histograms = None if self.histograms is None else self.histograms.merge(other.histograms)
        return out


def framed_histograms(state: M.FramedExactState, edges: np.ndarray) -> FrameHistograms:
    """The bootstrap pass's :class:`FrameHistograms` of one key, from the one pass's state (its
    frames in order)."""
    out = FrameHistograms(edges)
    for split in state.frames:
        out.add_sorted(split.pos, split.neg)
    return out


def framed_components(cache: str, storage_options, states: Mapping[Key, M.FramedExactState],
                      thresholds: Mapping[Key, float], track: str, threads: int = 1) -> dict[Key, ComponentState]:
    """The component pass's :class:`ComponentState` per key, from the one pass's states (kept with
    ``positions``): per frame its labels are read again and their ground-truth components
    found once (:func:`analyze.components.ground_truth`), then each key's predicted pixels are
    the tails of the frame's sorted scores above its threshold
    (:meth:`ComponentState.add_sorted`). Frames run on ``threads`` threads, merged in order."""
    keys = list(states)
    if not keys:
        return {}
    frames = [s.frame for s in states[keys[0]].frames]
    for k in keys:
        if [s.frame for s in states[k].frames] != frames or not states[k].positions:
            raise ValueError(f"{cache}: {k[0]} T={k[1]}: the first pass kept other frames or no pixel positions")
    root, spec = C.open_cache(cache, mode="r", storage_options=storage_options, validate=False)

    def frame(j: int) -> dict[Key, ComponentState]:
        label = C.read_label(root, spec, frames[j])
        gt = ground_truth(label == 1, label != VOID, track)
        out = {}
        for k in keys:
            split = states[k].frames[j]
            out[k] = ComponentState(track, thresholds[k]).add_sorted(
                gt, [(split.pos, split.pos_index), (split.neg, split.neg_index)])
        return out

    if threads > 1 and len(frames) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="components") as pool:
            per_frame = list(pool.map(frame, range(len(frames))))
    else:
        per_frame = [frame(j) for j in range(len(frames))]
    return {k: M.merge_states([f[k] for f in per_frame]) for k in keys}
