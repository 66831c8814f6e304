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
  frame's AP (the per-frame rows) too. For the component metrics it spills each frame's maps
  to local disk (:mod:`analyze.run.spill`), which :func:`spilled_components` thresholds;
  without room on disk it keeps the pixels of the highest in-distribution scores instead, as
  the one pass does.

The component metrics of the ``smiyc`` protocol, and those of the frames where the kept
pixels do not reach a key's threshold, still compose the frames again in a pass of their own
(:data:`analyze.run.tasks.PHASES` ``components``), as does every later step when
``score_cache(..., recompose=True)`` (the former path; the same numbers, tested).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from analyze import metrics as M
from analyze.metrics.bootstrap import FrameHistograms
from analyze.metrics.components import ComponentState, ground_truth
from analyze.metrics.framed import split_ap, split_sorted
from analyze.run.spill import Spill, read_map
from schemas import cache as C
from schemas.manifest import VOID

Key = tuple[str, float]  # (scorer, temperature)


@dataclass(frozen=True)
class SecondPassInputs:
    """A key's input to the second pass: its distinct anomaly scores ``u`` (ascending), for the
    intervals its bin ``edges`` (:func:`analyze.metrics.bootstrap.edges_from_counts`), and for the
    component metrics without a spill the fraction of in-distribution scores kept with their
    pixels (``positions``, :func:`analyze.metrics.framed.split_sorted`)."""

    u: np.ndarray
    edges: np.ndarray | None = None
    positions: float = 0.0


class SecondPassState:
    """The second pass of the two-pass ``exact`` protocol for one key: the in-distribution
    counts at ``u`` (:class:`analyze.metrics.NegativeCountState`), with ``edges`` the frame's
    bootstrap histograms (:class:`analyze.metrics.bootstrap.FrameHistograms`) and with ``positions``
    the frame's component candidates (:meth:`analyze.metrics.FrameSplit.candidates`), all from
    one sort of the frame's scores (the frame task spills the map, where the pass spills:
    :attr:`analyze.run.tasks.Phase.spills`); :meth:`add` returns the frame's AP. ``merge`` in frame order."""

    def __init__(self, inputs: SecondPassInputs) -> None:
        self.positions = inputs.positions
        self.counts = M.NegativeCountState(inputs.u)
        self.histograms = None if inputs.edges is None else FrameHistograms(inputs.edges)
        self.frames: list[M.FrameSplit] = []  # component candidates

    def add(self, y_score, y_true, frame: int | None = None) -> float:
        # counts, histograms and the AP are all that stay of the sorted scores (but the candidates)
        split = split_sorted(y_score, y_true, frame, self.positions, scratch=not self.positions)
        self.counts.add_sorted(split.neg, split.pos.size)
        if self.histograms is not None:
            self.histograms.add_sorted(split.pos, split.neg)
        if self.positions:
            self.frames.append(split.candidates())
        return split_ap(split)

    def merge(self, other: "SecondPassState") -> "SecondPassState":
        out = object.__new__(SecondPassState)
        out.positions = min(self.positions, other.positions)
        out.counts = self.counts.merge(other.counts)
        out.histograms = None if self.histograms is None else self.histograms.merge(other.histograms)
        out.frames = self.frames + other.frames
        return out


def framed_histograms(state: M.FramedExactState, edges: np.ndarray) -> FrameHistograms:
    """The bootstrap pass's :class:`FrameHistograms` of one key, from the one pass's state (its
    frames in order)."""
    out = FrameHistograms(edges)
    for split in state.frames:
        out.add_sorted(split.pos, split.neg)
    return out


Picked = Callable[[int, Key, np.ndarray], "np.ndarray | None"]  # (j, key, labels) -> prediction mask or None


def kept_components(cache: str, storage_options, frames: Mapping[Key, Sequence[M.FrameSplit]],
                    thresholds: Mapping[Key, float], track: str, threads: int = 1
                    ) -> tuple[dict[Key, ComponentState], dict[Key, list[int]]]:
    """Each key's :class:`ComponentState` over the frames whose pixels above its threshold were kept
    (``frames[key]``: the key's :class:`analyze.metrics.FrameSplit` per frame, kept with
    positions), and the frames where they were not (the highest in-distribution score kept
    without its pixel lies above the threshold), which a pass that composes them again must add.

    Each key's predicted pixels are the tails of the frame's sorted scores
    (:meth:`analyze.metrics.FrameSplit.pixels_above`), added by :func:`components_per_frame`.
    """
    keys = list(frames)
    if not keys:
        return {}, {}
    order = [s.frame for s in frames[keys[0]]]
    for k in keys:
        if [s.frame for s in frames[k]] != order:
            raise ValueError(f"{cache}: {k[0]} T={k[1]}: the first pass kept other frames")

    def predicted(j: int, key: Key, label: np.ndarray) -> np.ndarray | None:
        index = frames[key][j].pixels_above(thresholds[key])
        if index is None:
            return None
        pred = np.zeros(label.shape, bool)
        pred.ravel()[index] = True
        return pred

    per_frame = components_per_frame(cache, storage_options, order, keys, thresholds, track, predicted, threads)
    missing = {k: [i for i, f in zip(order, per_frame) if f[k] is None] for k in keys}
    return merged_in_order(per_frame, keys, thresholds, track), missing


def spilled_components(cache: str, storage_options, spill: Spill, frames: Sequence[int],
                       thresholds: Mapping[Key, float], track: str, threads: int = 1) -> dict[Key, ComponentState]:
    """Each key's :class:`ComponentState` over ``frames`` (in order) from the maps the second pass
    spilled (:mod:`analyze.run.spill`): each key's prediction is the frame's non-void pixels
    scoring ``> threshold``, :meth:`ComponentState.update`'s rule (a NaN threshold predicts nothing)."""
    keys = list(thresholds)

    def predicted(j: int, key: Key, label: np.ndarray) -> np.ndarray:
        score = read_map(spill.prefix(key), frames[j], label.shape)  # this thread's buffer: used at once
        return (score > thresholds[key]) & (label != VOID)

    # twice the threads: while one waits for its map from disk (O_DIRECT: no page cache), another computes
    per_frame = components_per_frame(cache, storage_options, frames, keys, thresholds, track, predicted, 2 * threads)
    return merged_in_order(per_frame, keys, thresholds, track)


def components_per_frame(cache: str, storage_options, order: Sequence[int], keys: Sequence[Key],
                         thresholds: Mapping[Key, float], track: str, predicted: Picked, threads: int = 1
                         ) -> list[dict[Key, ComponentState | None]]:
    """Per frame of ``order`` (on ``threads`` threads, in order): its labels read again, and for
    each key the :class:`ComponentState` of the prediction ``predicted(j, key, labels)`` gives
    ((H, W) bool: the non-void pixels above the key's threshold), None where it gives None.
    The ground-truth components are found once per frame (:func:`analyze.metrics.components.ground_truth`,
    :meth:`ComponentState.add_mask`)."""
    root, spec = C.open_cache(cache, mode="r", storage_options=storage_options, validate=False)

    def frame(j: int) -> dict[Key, ComponentState | None]:
        label = C.read_label(root, spec, order[j])
        gt = None
        out: dict[Key, ComponentState | None] = {}
        for k in keys:
            picked = predicted(j, k, label)
            if picked is None:
                out[k] = None
                continue
            if gt is None:
                gt = ground_truth(label == 1, label != VOID, track)
            out[k] = ComponentState(track, thresholds[k]).add_mask(picked, gt)
        return out

    if threads > 1 and len(order) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="components") as pool:
            return list(pool.map(frame, range(len(order))))
    return [frame(j) for j in range(len(order))]


def merged_in_order(per_frame: Sequence[Mapping[Key, ComponentState | None]], keys: Sequence[Key],
                    thresholds: Mapping[Key, float], track: str) -> dict[Key, ComponentState]:
    """Each key's states of :func:`components_per_frame` merged in frame order (an empty state where none)."""
    states = {}
    for k in keys:
        done = [f[k] for f in per_frame if f[k] is not None]
        states[k] = M.merge_states(done) if done else ComponentState(track, thresholds[k])
    return states
