"""One frame of a cache -> every (scorer, T) anomaly map and the semantic map per T.

The one scoring path of ``analyze score`` (:mod:`analyze.driver`), ``analyze maps`` and
``analyze export`` (:func:`analyze.maps.frame_maps`): a frame's raw outputs are read from the
cache (:func:`frame_inputs`), composed into per-pixel class scores or resized logits
(:mod:`analyze.compose`), and every requested scorer is evaluated on them at every
temperature (:func:`analyze.scorers.score_many`). Anomaly maps are float64 (the scorers
evaluate their formulas in float64), semantic maps uint8.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from analyze.compose import (
    DEFAULT_TEMP_TARGET,
    DEFAULT_TILE_ROWS,
    ArrayLike,
    FrameComposer,
    parse_temp_target,
    positive_temperature,
    pixel_logits_to_label_size,
    resize_scores,
    semantic_prediction,
)
from analyze.scorers import Scorer, check_supported, score_many
from schemas import cache as C
from schemas.cache import parse_kind
from schemas.windows import FrameWindows


def frame_inputs(root, spec: C.CacheSpec, i: int) -> dict:
    """The raw outputs of frame ``i`` as keyword arguments of :func:`iter_frame_scores` (without the
    scorers and temperatures): ERFNet logits (valid part) and void channel, or EoMT class and mask
    logits of the frame's crops and its window geometry; ``out_size`` is the frame's label size.
    A chunk that does not decode raises :class:`schemas.cache.CacheError` naming the array and frame."""
    if spec.kind == "pixel":
        return dict(logits=C.read_pixel_logits(root, spec, i), void_channel=spec.void_channel, out_size=spec.sizes[i])
    class_logits, mask_logits = C.read_query_outputs(root, spec, i)
    return dict(class_logits=class_logits, mask_logits=mask_logits, geom=spec.windows(i), out_size=spec.sizes[i])


class TemperatureScores(NamedTuple):
    """Everything one temperature yields for one frame."""

    temperature: float
    semantic: np.ndarray  # (H, W) uint8
    scores: dict[str, np.ndarray]  # scorer name -> (H, W) float64


class FrameScores(NamedTuple):
    scores: dict[tuple[str, float], np.ndarray]  # (scorer name, T) -> (H, W) float64
    semantic: dict[float, np.ndarray]  # T -> (H, W) uint8


def iter_frame_scores(
    kind: str,
    *,
    scorers: Sequence[Scorer],
    temperatures: Sequence[float] = (1.0,),
    temp_target: str = DEFAULT_TEMP_TARGET,
    out_size: tuple[int, int] | None = None,
    logits: ArrayLike | None = None,
    void_channel: int | None = None,
    mask_logits: Sequence[ArrayLike] | ArrayLike | None = None,
    class_logits: Sequence[ArrayLike] | ArrayLike | None = None,
    geom: FrameWindows | None = None,
    tile_rows: int = DEFAULT_TILE_ROWS,
) -> Iterator[TemperatureScores]:
    """Score one frame, yielding one :class:`TemperatureScores` per temperature.

    ``kind='pixel'``: needs ``logits`` (C, h, w) (the valid part), ``out_size`` (label size) and
    ``void_channel``. ``kind='query'``: needs ``mask_logits`` (n_crops, Q, h, w),
    ``class_logits`` (n_crops, Q, K+1) and ``geom``; ``out_size`` defaults to ``geom.original``.
    Only one temperature's full-resolution maps are alive at a time, and the upsampled
    masks are computed once for all temperatures (see :class:`FrameComposer`). For
    ``temp_target='pixel'`` and for pixel models the same semantic array is yielded for
    every ``T``.
    """
    parse_kind(kind)
    parse_temp_target(temp_target)
    check_supported(scorers, kind)
    temps = tuple(dict.fromkeys(positive_temperature(t) for t in temperatures))

    def score_all(x: torch.Tensor, t: float, argmax_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return score_many(x, t, [s.name for s in scorers], argmax_out=argmax_out)

    if kind == "pixel":
        if logits is None or out_size is None:
            raise ValueError("kind='pixel' needs logits and out_size")
        z = pixel_logits_to_label_size(logits, out_size, void_channel)  # (K, H, W)
        sem = semantic_prediction(z)
        for t in temps:
            yield TemperatureScores(t, sem, score_all(z, t))
        return

    if mask_logits is None or class_logits is None or geom is None:
        raise ValueError("kind='query' needs mask_logits, class_logits and geom")
    size = out_size or geom.original
    composer = FrameComposer(mask_logits, class_logits, geom, tile_rows=tile_rows)
    if temp_target == "query":
        resized = composer.resized_scores(temps)
        for t in temps:
            s = resize_scores(resized.pop(t), size)  # (K, H, W)
            sem = np.empty(s.shape[1:], np.uint8)  # = semantic_prediction(s), from the scorers' pass
            yield TemperatureScores(t, sem, score_all(s, 1.0, argmax_out=sem))
    else:
        s = resize_scores(composer.resized_scores((1.0,))[1.0], size)  # (K, H, W)
        sem = semantic_prediction(s)
        for t in temps:
            yield TemperatureScores(t, sem, score_all(s, t))


def score_frame(
    kind: str,
    *,
    scorers: Sequence[Scorer],
    temperatures: Sequence[float] = (1.0,),
    temp_target: str = DEFAULT_TEMP_TARGET,
    out_size: tuple[int, int] | None = None,
    logits: ArrayLike | None = None,
    void_channel: int | None = None,
    mask_logits: Sequence[ArrayLike] | ArrayLike | None = None,
    class_logits: Sequence[ArrayLike] | ArrayLike | None = None,
    geom: FrameWindows | None = None,
    tile_rows: int = DEFAULT_TILE_ROWS,
) -> FrameScores:
    """All ``(scorer, T)`` maps and the semantic map per ``T`` of one frame.

    Same arguments as :func:`iter_frame_scores` (which keeps only one temperature's maps
    alive); returns ``FrameScores(scores, semantic)`` with ``scores[(name, T)]`` (H, W)
    float64 and ``semantic[T]`` (H, W) uint8.
    """
    scores: dict[tuple[str, float], np.ndarray] = {}
    semantic: dict[float, np.ndarray] = {}
    frames = iter_frame_scores(
        kind, scorers=scorers, temperatures=temperatures, temp_target=temp_target, out_size=out_size,
        logits=logits, void_channel=void_channel, mask_logits=mask_logits, class_logits=class_logits,
        geom=geom, tile_rows=tile_rows,
    )
    for ts in frames:
        semantic[ts.temperature] = ts.semantic
        for name, m in ts.scores.items():
            scores[(name, ts.temperature)] = m
    return FrameScores(scores, semantic)
