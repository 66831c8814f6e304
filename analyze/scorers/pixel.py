"""The scorers of the per-pixel scores ``x``, evaluated together in one tiled float64 pass.

Every scorer maps "logits" ``x`` of shape ``(K, H, W)`` (numpy array or CPU tensor) and a
temperature ``T > 0`` to an ``(H, W)`` float64 map, computed on ``x / T`` in float64
(:func:`score_many`). What ``x`` is depends on the model (see :mod:`analyze.compose.queries`):

* pixel model (ERFNet): the class logits ``z`` with the void channel already dropped, so the
  void channel never enters a softmax;
* mask model (EoMT): the per-pixel class scores ``s_k = sum_q softmax(c_q)_k sigmoid(m_q)``.
  As in the RbA reference, which applies its scores to this ``sem_seg`` map, ``s`` is
  treated as logits: MSP is ``1 - max softmax(s)``, MaxEntropy the entropy of
  ``softmax(s)``, Energy ``-logsumexp(s)``, GEN, KL matching and SML likewise.

The mask scorers (EAM, no-object, Mask2Anomaly) are evaluated in the same tiles from the query
channels that :class:`analyze.compose.queries.FrameComposer` composes beside ``s``
(:mod:`analyze.scorers.masks`); SML's boundary suppression and smoothing run on the whole map
afterwards (:mod:`analyze.scorers.sml`).

Numerics: MSP sums the non-maximal probabilities instead of computing ``1 - max softmax``,
which keeps resolution for confident pixels where ``1 - p`` rounds to 0 and creates ties;
MaxEntropy uses ``log_softmax`` and counts ``p log p`` as 0 where ``p`` underflows (never
``p.log()``); GEN takes ``p (1 - p)`` of the top class as ``r / (1 + r)^2`` for the same reason.

Why float64: the metrics depend on the order of the scores, and float32 runs out of
resolution away from T = 1 (measured on the demo's ERFNet cache against a float64
evaluation: MSP and MaxEntropy at T = 0.01 underflow to ties and move FPR95 by 0.19; Energy
at T = 0.1 loses ``T log(1 + r)`` beside ``max x`` and moves AUROC by 5e-6; MaxEntropy at
T = 100 flattens near ``log K`` (2e-5) and at T = 1000 moves AuPRC by 1e-3). Computing in
float64 and keeping float64 scores makes the metrics those of a float64 evaluation at every
temperature in :data:`analyze.scorers.temperatures.T_RANGE` (tested to 1e-6). The inputs ``x``
(ERFNet logits resized to the label size, EoMT class scores) stay float32, as in the official
inference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch

from analyze.scorers import kernels, masks, sml
from analyze.scorers.compiled import CHUNK_PIXELS, CompiledTile
from analyze.scorers.kept_maps import lend
from analyze.scorers.plugins import PluginMaps
from analyze.scorers.registry import Scorer, get_scorer
from analyze.scorers.tile_math import SCORE_DTYPE, first_argmax, score_tile

__all__ = ["ClassStats", "MapScorer", "SCORE_DTYPE", "TILE_ELEMENTS", "first_argmax", "row_tiles", "score",
           "score_many"]
ArrayLike = Union[np.ndarray, torch.Tensor]
TILE_ELEMENTS = 1 << 18  # floats of one (K, rows, W) tile of score_many: 2 MiB of float64, stays in cache


@dataclass(frozen=True)
class ClassStats:
    """In-distribution statistics of one scorer input (one temperature), ready for the scorers.

    ``mean``, ``std`` (K,): of the max of ``x / T`` over the pixels predicted as each class (SML);
    ``log_d`` (Ka, K): ``log`` of the mean ``softmax(x / T)`` of the pixels predicted as each of
    the Ka classes in ``classes`` that have any (KL matching), with ``-inf`` (a mean
    probability of exactly 0) stored as 0 and flagged in ``d_zero``. Built by
    :meth:`from_moments`.
    """

    mean: torch.Tensor
    std: torch.Tensor
    classes: torch.Tensor
    log_d: torch.Tensor
    d_zero: torch.Tensor | None

    @classmethod
    def from_moments(cls, count, mean, var, mean_softmax, pooled_mean: float, pooled_var: float) -> "ClassStats":
        """From per-class pixel counts, max-logit means and (ddof=1) variances and mean softmax
        vectors. Classes with fewer than 2 pixels or no variance standardise with the pooled
        mean and variance of all pixels (the official code would give NaN); KL matching takes
        its minimum over the classes with at least one pixel (the official mean of no sample is NaN)."""
        count = np.asarray(count, np.int64)
        ok = (count >= 2) & np.isfinite(var) & (np.asarray(var, np.float64) > 0)
        m = np.where(ok, mean, pooled_mean).astype(np.float64)
        sd = np.sqrt(np.where(ok, var, pooled_var).astype(np.float64))
        have = np.flatnonzero(count > 0)
        d = np.asarray(mean_softmax, np.float64)[have]  # (Ka, K)
        zero = d == 0
        with np.errstate(divide="ignore"):
            log_d = np.where(zero, 0.0, np.log(np.where(zero, 1.0, d)))
        return cls(torch.from_numpy(m), torch.from_numpy(sd), torch.from_numpy(have), torch.from_numpy(log_d),
                   torch.from_numpy(zero) if zero.any() else None)


def row_tiles(shape: Sequence[int]) -> list[slice]:
    """Row slices of the (K, rows, W) tiles of a (K, H, W) map, ~``TILE_ELEMENTS`` floats each."""
    k, h, w = shape
    step = max(1, TILE_ELEMENTS // max(1, k * w))
    return [slice(r0, min(r0 + step, h)) for r0 in range(0, h, step)]


def _check_scorers(scorers: Mapping[str, Scorer], stats: ClassStats | None) -> None:
    for s in scorers.values():
        if s.uses is not None:
            raise ValueError(f"scorer {s.name} averages two passes: evaluate it with analyze.compose.frame_scores")
        if s.needs_stats and stats is None:
            raise ValueError(f"scorer {s.name} needs in-distribution statistics (stats=)")


def _check_channels(scorers: Mapping[str, Scorer], channels) -> None:
    for s in scorers.values():
        if s.needs_queries:
            missing = [c.key for c in masks.channels_for(s) if c.key not in (channels or {})]
            if missing:
                raise ValueError(f"scorer {s.name} needs the composed query channels {', '.join(missing)}")


class MapScorer:
    """Every requested scorer of ``x / T`` (results specs, e.g. ``gen:gamma=0.2``) into full-size
    (H, W) float64 maps, fed tile by tile (:meth:`add`) in any order: the fused pass of a frame
    hands over each tile of ``x`` as it is composed or resized, so no full-size ``x`` is needed.

    ``device``: where the maps live and the tiles are scored. On the CPU the compiled loops of
    :class:`analyze.scorers.compiled.CompiledTile` score them (``compiled=False``: the torch
    reference, :func:`analyze.scorers.tile_math.score_tile`, the same bits); elsewhere the torch
    reference. ``semantic``: also the first maximal class of ``x`` (the semantic map, uint8).
    ``sparse``: most rows will be :meth:`blank` (a pass that reads a few pixels).
    :meth:`finish` applies SML's smoothing to the whole maps and returns them as numpy arrays.
    """

    def __init__(self, names: Sequence[str], temperature: float, shape: tuple[int, int], *,
                 stats: ClassStats | None = None, semantic: bool = False, device: str | torch.device = "cpu",
                 compiled: bool | None = None, sparse: bool = False):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.scorers = {n: get_scorer(n) for n in dict.fromkeys(names)}
        _check_scorers(self.scorers, stats)
        self.plugins = PluginMaps(self.scorers, float(temperature), shape, stats)  # users' functions
        builtin = {n: s for n, s in self.scorers.items() if s.plugin is None}
        self.temperature = float(temperature)
        self.stats = stats
        self.device = torch.device(device)
        self.compiled = self.device.type == "cpu" if compiled is None else bool(compiled)
        if self.compiled and self.device.type != "cpu":
            raise ValueError("the compiled scorers run on the CPU only")
        self.builtin = builtin
        needs_sem = semantic or any(s.base == "sml" for s in builtin.values())
        kept = {n: lend(shape, SCORE_DTYPE, self.device, sparse) for n in builtin}
        sem = lend(shape, torch.uint8, self.device, sparse) if needs_sem else None
        self.maps = {n: k.tensor for n, k in kept.items()}
        self.sem = None if sem is None else sem.tensor
        # rows blank() has to clear: sparse maps start zeroed, so only those add() wrote (or, for
        # maps kept from an earlier frame, its user wrote: kept_maps); finish() clears those of
        # them that neither reached
        self._dirty = np.zeros(shape[0], bool) if sparse else np.ones(shape[0], bool)
        lent = [*kept.values(), *([sem] if sem is not None else [])]
        for k in lent:
            self._dirty |= k.dirty
            k.dirty = self._dirty  # the rows written here follow the maps to their next user
        self._stale = self._dirty.copy()  # rows that may hold another frame's values until reached
        self._semantic = semantic
        self._tiles: dict[int, CompiledTile] = {}

    def add(self, x: ArrayLike, rows: slice, cols: slice = slice(None),
            channels: Mapping[str, ArrayLike] | None = None) -> None:
        """Score the tile ``x`` (K, R, Wc) of ``x`` (not yet divided by T) that lies at
        ``[rows, cols]`` of the maps; ``channels``: its query channels (R, Wc) each."""
        _check_channels(self.scorers, channels)
        self._dirty[rows] = True
        self._stale[rows] = False
        k = x.shape[0]
        if self.stats is not None and self.stats.mean.shape[0] != k:
            raise ValueError(f"statistics of {self.stats.mean.shape[0]} classes for scores of {k} classes")
        self.plugins.add(x, rows, cols)
        if self.compiled:
            x = torch.as_tensor(x)
            if x.dtype not in (torch.float32, torch.float64):  # float16, bfloat16: exact in float32
                x = x.to(torch.float32)
            self._add_compiled(x.numpy(), rows, cols, channels or {})
            return
        tile = torch.as_tensor(x).to(self.device, SCORE_DTYPE, copy=True)  # (K, R, Wc), divided in place
        if self.temperature != 1.0:
            tile /= self.temperature
        out = {n: m[rows, cols] for n, m in self.maps.items()}
        ch = {key: torch.as_tensor(c).to(self.device) for key, c in (channels or {}).items()}
        score_tile(tile, self.temperature, self.builtin, out, None if self.sem is None else self.sem[rows, cols],
                   self.stats, ch)

    def _add_compiled(self, x: np.ndarray, rows: slice, cols: slice, channels: Mapping[str, ArrayLike]) -> None:
        k, r, w = x.shape
        if not self.builtin and self.sem is not None:  # the semantic map alone: one loop over the tile
            self.sem[rows, cols].numpy()[:] = kernels.first_classes(x.reshape(k, -1), self.temperature).reshape(r, w)
            return
        step = max(1, CHUNK_PIXELS // w)  # whole rows per chunk
        tile = self._tiles.get(step * w)
        if tile is None:
            tile = self._tiles[step * w] = CompiledTile(self.builtin, self.temperature, self.stats, k, step * w)
        ch = {key: c if isinstance(c, np.ndarray) else c.numpy() for key, c in channels.items()}
        maps = {n: m[rows, cols].numpy() for n, m in self.maps.items()}
        sem = None if self.sem is None else self.sem[rows, cols].numpy()
        direct = all(m.flags.c_contiguous for m in maps.values())  # whole map rows: the loops write into them
        for r0 in range(0, r, step):
            r1 = min(r0 + step, r)
            dest = {n: m[r0:r1].reshape(-1) for n, m in maps.items()} if direct else None
            scores, arg = tile(x[:, r0:r1].reshape(k, -1), {key: c[r0:r1].reshape(-1) for key, c in ch.items()}, dest)
            if not direct:
                for n, m in maps.items():
                    m[r0:r1] = scores[n].reshape(r1 - r0, w)
            if sem is not None:
                sem[r0:r1] = arg.reshape(r1 - r0, w)

    def blank(self, rows: slice, cols: slice = slice(None)) -> None:
        """Pixels that are not scored (a pass that reads others only): 0 in every map, class 0 in
        the semantic map, so that every map is defined everywhere. ``sparse`` maps start zeroed
        (on the CPU in pages the system zeroes when first touched), so only rows :meth:`add`
        wrote are cleared: a pass that reads a few pixels writes no other memory."""
        if self._dirty[rows].any():
            self._clear(rows, cols)
        self._stale[rows] = False
        self.plugins.blank(rows, cols)

    def _clear(self, rows, cols=slice(None)) -> None:
        for m in self.maps.values():
            m[rows, cols] = 0
        if self.sem is not None:
            self.sem[rows, cols] = 0

    def finish(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """``({name: (H, W) float64}, semantic (H, W) uint8 or None)``, SML smoothed, on the CPU."""
        if self._stale.any():  # rows of a kept map that this frame did not reach
            self._clear(torch.from_numpy(self._stale).to(self.device))
            self._stale[:] = False
        out = {}
        for n, s in self.builtin.items():
            m = self.maps[n]
            if s.base == "sml":
                kw = s.kwargs
                m = sml.suppress_and_smooth(m, self._semantic_map(), kw["width"], kw["iterations"], kw["dilation"],
                                            kw["border"])
            out[n] = m.cpu().numpy()
        out.update(self.plugins.finish())
        out = {n: out[n] for n in self.scorers}  # in the order asked for
        return out, (self._semantic_map().cpu().numpy() if self._semantic else None)

    def _semantic_map(self) -> torch.Tensor:
        """The first-maximum class map, kept when ``semantic`` or an SML scorer asked for it."""
        if self.sem is None:
            raise ValueError("no semantic map: made with semantic=False and no SML scorer")
        return self.sem


def score_many(x: ArrayLike, temperature: float, names: Sequence[str], argmax_out: np.ndarray | None = None, *,
               stats: ClassStats | None = None, channels: Mapping[str, ArrayLike] | None = None,
               device: str | torch.device | None = None, compiled: bool | None = None) -> dict[str, np.ndarray]:
    """Several scorers (results ``scorer`` specs, e.g. ``gen:gamma=0.2``) on the same ``x / T``
    (``x``: (K, H, W)) in one pass over row tiles of ``TILE_ELEMENTS`` floats (:class:`MapScorer`;
    the formulas: :mod:`analyze.scorers.tile_math`). Every scorer is evaluated here, so a
    score does not depend on which other scorers were requested.

    ``stats``: the :class:`ClassStats` of this T (KL matching, SML); ``channels``: the composed
    query channels (H, W) of the mask scorers. ``argmax_out`` (an (H, W) uint8 array), if given,
    receives the first-maximum class of ``x`` per pixel (the semantic map, :func:`first_argmax`),
    taken from the same tiles. ``device`` (default: ``x``'s) and ``compiled`` as in :class:`MapScorer`.
    Sums over classes run in class order, so a pixel's scores depend on its own values only,
    never on the size of the map or the tiling (SML's smoothing, a spatial filter, excepted).
    """
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.ndim != 3:
        raise ValueError(f"scorers take (K, H, W) logits, got shape {tuple(t.shape)}")
    if argmax_out is not None and (argmax_out.shape != tuple(t.shape[1:]) or argmax_out.dtype != np.uint8
                                   or t.shape[0] > 255):
        raise ValueError(f"argmax_out must be a uint8 array of shape {tuple(t.shape[1:])}")
    ms = MapScorer(names, temperature, (t.shape[1], t.shape[2]), stats=stats, semantic=argmax_out is not None,
                   device=t.device if device is None else device, compiled=compiled)
    _check_channels(ms.scorers, channels)
    for rows in row_tiles(t.shape):
        ms.add(t[:, rows], rows, slice(None), {k: c[rows] for k, c in (channels or {}).items()})
    maps, sem = ms.finish()
    if argmax_out is not None:
        argmax_out[...] = sem
    return maps


def score(name: str, x: ArrayLike, temperature: float = 1.0, stats: ClassStats | None = None) -> np.ndarray:
    """The anomaly map of one scorer on one frame's per-pixel class scores (higher = more anomalous).

    The per-map counterpart of ``analyze score``: the same float64 computation
    (:func:`score_many`), so its values are those the tool's metrics are computed on.

    Parameters
    ----------
    name
        A scorer spec as the results ``scorer`` column writes it: ``"msp"``, ``"maxlogit"``,
        ``"energy"``, ``"rba"``, ``"gen:gamma=0.2"``, ... (:data:`analyze.scorers.SCORERS`;
        the mask scorers need query channels: use :func:`score_many`).
    x
        Per-pixel class scores ``(K, H, W)``: logits of a pixel model (ERFNet), or the
        composed class scores of a mask model; any float dtype, numpy or torch (a torch
        tensor is scored on its device).
    temperature
        T: the scorer sees ``x / T``.
    stats
        The :class:`ClassStats` of this T for KL matching and SML
        (:meth:`analyze.scorers.id_stats.IdStats.class_stats`); None for the other scorers.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float64 anomaly scores.

    Raises
    ------
    ValueError
        An unknown scorer, ``x`` not 3-D, or a scorer that needs ``stats`` or query
        channels without them.
    """
    return score_many(x, temperature, (name,), stats=stats)[get_scorer(name).name]
