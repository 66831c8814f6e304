"""One frame of a cache -> every (scorer, T) anomaly map and the semantic map per T.

The one scoring path of ``analyze score`` (:mod:`analyze.run.driver`), ``analyze maps`` and
``analyze export`` (:func:`analyze.maps.write.frame_maps`): a frame's raw outputs are read from the
cache (:func:`frame_inputs`), composed into per-pixel class scores or resized logits
(:mod:`analyze.compose.queries`), and every requested scorer is evaluated on them at every
temperature (:func:`analyze.scorers.score_many`). Anomaly maps are float64 (the scorers
evaluate their formulas in float64), semantic maps uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from analyze.compose.queries import (
    DEFAULT_TEMP_TARGET,
    DEFAULT_TILE_ROWS,
    FrameComposer,
    parse_temp_target,
    positive_temperature,
)
from analyze.compose.partial import blank_sides, compose_mask, read_cols
from analyze.compose.semantic import semantic_maps
from analyze.compose.resize import label_size_tiles, pixel_logits_to_label_size, resize_scores, semantic_prediction
from analyze.scorers.id_stats import match_stats
from analyze.scorers import masks
from analyze.scorers.pixel import ClassStats, MapScorer, score_many
from analyze.scorers.registry import SCORERS, Scorer, all_notes, check_supported, get_scorers, parse_spec
from schemas import cache as C
from schemas.cache import parse_kind
from schemas.windows import FrameWindows


@dataclass(frozen=True)
class FrameInputs:
    """One frame's raw outputs as a cache holds them (:func:`frame_inputs`), the input of
    :func:`iter_frame_scores`. ``kind='pixel'``: ``logits`` (C, h, w) (the valid part),
    ``void_channel`` and ``out_size`` (the label size). ``kind='query'``: ``mask_logits``
    (n_crops, Q, h, w), ``class_logits`` (n_crops, Q, K+1) and ``geom``; ``out_size`` defaults
    to ``geom.original``. ``flip``: the same arrays of the flipped pass, when the cache has one."""

    kind: str
    out_size: tuple[int, int] | None = None
    logits: Any = None
    void_channel: int | None = None
    mask_logits: Any = None
    class_logits: Any = None
    geom: FrameWindows | None = None
    flip: Mapping[str, Any] | None = None

    def arrays(self) -> dict[str, Any]:
        """The model outputs of this pass by name (``logits``, or ``class_logits`` and ``mask_logits``)."""
        named = dict(logits=self.logits, class_logits=self.class_logits, mask_logits=self.mask_logits)
        return {k: v for k, v in named.items() if v is not None}


@dataclass(frozen=True)
class Scoring:
    """What :func:`iter_frame_scores` computes from a frame: the scorers at each temperature (on
    ``temp_target``), with the in-distribution statistics ``stats`` (``{T: ClassStats}``: KL
    matching, SML), in row tiles of ``tile_rows``, on ``device``; ``compiled``: on the CPU,
    ``None`` takes the fast path (numpy's BLAS, the compiled scorers), ``False`` the torch
    code a GPU runs."""

    scorers: tuple[Scorer, ...] = ()
    temperatures: tuple[float, ...] = (1.0,)
    temp_target: str = DEFAULT_TEMP_TARGET
    stats: Mapping[float, ClassStats] | None = None
    tile_rows: int = DEFAULT_TILE_ROWS
    device: str | torch.device = "cpu"
    compiled: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorers", tuple(self.scorers))
        object.__setattr__(self, "temperatures", tuple(self.temperatures))


def choose_scorers(cache, spec: C.CacheSpec, scorers: str, temps: Sequence[float], temp_target: str,
                   id_stats: Sequence = (), warn=lambda m: None, info=lambda m: None):
    """(scorers, {T: ClassStats} or None) for ``cache``: what the cache kind, its flipped pass and
    the statistics files allow (``all`` says what it leaves out); the statistics checked
    (:meth:`analyze.scorers.id_stats.IdStats.class_stats`, StatsError). A scorer the cache cannot have
    (another kind, a need not met) is a ValueError naming it and what it needs; ``warn`` and
    ``info`` are told what ``all`` leaves out and what the statistics lack."""
    fitted = match_stats(id_stats, spec, str(cache))
    available = {"id_stats"} if fitted is not None else set()
    if spec.hflip:
        available.add("flip")
    try:
        chosen = get_scorers(scorers, spec.kind, available)
    except ValueError as exc:
        lacking = {n for s in parse_spec(scorers) if s.supports(spec.kind) for n in s.needs} - available
        hints = [f"{cache} was extracted without --hflip"] if "flip" in lacking else []
        if "id_stats" in lacking and id_stats:
            hints.append(f"no --id-stats file fits it: {'; '.join(f.describe() for f in id_stats)}")
        raise ValueError(f"{cache}: {exc}" + (f" ({'; '.join(hints)})" if hints else "")) from None
    is_all = scorers.strip().lower() == "all"
    if is_all:
        for note in all_notes(spec.kind, available):
            info(f"{cache}: {note}")
    if temp_target == "pixel" and spec.kind == "query":
        fixed = [s.name for s in chosen if s.temperature == "query"]
        if fixed and 1.0 not in temps:
            if not is_all:
                raise ValueError(f"{cache}: {', '.join(fixed)} see T only through the query class logits: with "
                                 "--temp-target pixel they exist at T = 1 only")
            info(f"{cache}: --scorers all leaves out {', '.join(fixed)}: with --temp-target pixel they exist at T = 1 only")
            chosen = tuple(s for s in chosen if s.temperature != "query")
        elif fixed and any(t != 1.0 for t in temps):
            info(f"{cache}: {', '.join(fixed)} see T only through the query class logits: with --temp-target pixel "
                 "they are scored at T = 1 only")
    if not any(s.needs_stats for s in chosen):
        return chosen, None
    target = "logits" if spec.kind == "pixel" else temp_target
    stats = fitted.class_stats(spec, str(cache), target, temps)
    thin = fitted.poorly_covered()
    if thin and any(s.base in ("sml", "sml_raw") for s in chosen):
        warn(f"{cache}: {fitted.path}: class(es) {', '.join(map(str, thin))} have fewer than 2 fitted pixels at some "
             "T; SML standardises their pixels with the pooled statistics of all classes")
    return chosen, stats


def frame_inputs(root, spec: C.CacheSpec, i: int, flip: bool = False) -> FrameInputs:
    """The raw outputs of frame ``i``: ERFNet logits (valid part) and void channel, or EoMT class
    and mask logits of the frame's crops and its window geometry; ``out_size`` is the frame's
    label size. ``flip``: also the outputs of the flipped pass (the cache must have one,
    ``spec.hflip``). A chunk that does not decode raises :class:`schemas.cache.CacheError`
    naming the array and frame."""
    if spec.kind == "pixel":
        mirrored = dict(logits=C.read_pixel_logits(root, spec, i, flip=True)) if flip else None
        return FrameInputs("pixel", spec.sizes[i], logits=C.read_pixel_logits(root, spec, i),
                           void_channel=spec.void_channel, flip=mirrored)
    class_logits, mask_logits = C.read_query_outputs(root, spec, i)
    if flip:
        fc, fm = C.read_query_outputs(root, spec, i, flip=True)
    return FrameInputs("query", spec.sizes[i], class_logits=class_logits, mask_logits=mask_logits, geom=spec.windows(i),
                       flip=dict(class_logits=fc, mask_logits=fm) if flip else None)


class TemperatureScores(NamedTuple):
    """Everything one temperature yields for one frame."""

    temperature: float
    semantic: np.ndarray  # (H, W) uint8
    scores: dict[str, np.ndarray]  # scorer name -> (H, W) float64


class FrameScores(NamedTuple):
    scores: dict[tuple[str, float], np.ndarray]  # (scorer name, T) -> (H, W) float64
    semantic: dict[float, np.ndarray]  # T -> (H, W) uint8


def _channels(scorers: Sequence[Scorer]) -> tuple:
    return tuple({c.key: c for s in scorers for c in masks.channels_for(s)}.values())


def _split(maps: torch.Tensor, k: int, keys: Sequence[str], size) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(K + C, Hr, Wr) -> (s, {channel key: (H, W)}) at ``size``: s and the channels resized apart,
    so that s has the same bits whichever channels the scorers asked for (torch's resize
    kernel rounds a channel differently with the number of channels)."""
    s = resize_scores(maps[:k], size)
    if not keys:
        return s, {}
    extra = resize_scores(maps[k:], size)
    return s, {key: extra[c] for c, key in enumerate(keys)}


def iter_frame_scores(frame: FrameInputs, scoring: Scoring, pixels: np.ndarray | None = None
                      ) -> Iterator[TemperatureScores]:
    """Score one frame, yielding one :class:`TemperatureScores` per temperature of ``scoring``.

    ``pixels`` ((H, W) bool, label size): the pixels whose scores a pass reads (the anomaly
    pixels, for the two-pass protocol's first pass); None: every pixel. The fused passes then
    compose and score only what :func:`compose_mask` needs for them (EoMT: the crops' tiles of
    :meth:`FrameComposer.row_blocks` that cover one; ERFNet: the full resize), each row block or
    tile scored over the columns that hold one, with the same bits there. The other pixels hold no
    score a pass reads: 0 where nothing was composed (class 0 in the semantic map), else
    partial sums. The other paths compose the frame whole.

    Only one temperature's full-resolution maps are alive at a time, and the upsampled masks
    are computed once for all temperatures and query channels (see :class:`FrameComposer`).
    For ``temp_target='pixel'`` and for pixel models the same semantic array is yielded for
    every ``T``. The flip-averaged scorers (``m2a_flip``: the Mask2Anomaly map of the flipped
    pass, flipped back, averaged with that of this pass, as the official
    ``anomaly_inference.py``) need ``frame.flip``. The mask scorers see T only through the
    query softmax: with ``temp_target='pixel'`` they are yielded at T = 1 only. The maps come
    back as numpy arrays on the CPU whatever ``scoring.device``.
    """
    parse_kind(frame.kind)
    parse_temp_target(scoring.temp_target)
    check_supported(scoring.scorers, frame.kind)
    temps = tuple(dict.fromkeys(positive_temperature(t) for t in scoring.temperatures))
    _check_needs(frame, scoring, temps)
    direct = [s for s in scoring.scorers if s.uses is None]
    on = dict(device=scoring.device, compiled=scoring.compiled)
    if frame.kind == "pixel":
        if frame.logits is None or frame.out_size is None:
            raise ValueError("kind='pixel' needs logits and out_size")
        yield from _pixel_scores(torch.as_tensor(frame.logits).to(scoring.device), tuple(frame.out_size),
                                 frame.void_channel, direct, temps, scoring.stats, on, compose_mask(pixels, direct))
        return
    if frame.mask_logits is None or frame.class_logits is None or frame.geom is None:
        raise ValueError("kind='query' needs mask_logits, class_logits and geom")
    size = frame.out_size or frame.geom.original
    composer = FrameComposer(frame.mask_logits, frame.class_logits, frame.geom, tile_rows=scoring.tile_rows,
                             channels=_channels(scoring.scorers), **on)
    fused = not frame.geom.portrait and tuple(size) == tuple(frame.geom.resized)
    if fused and not scoring.scorers and composer.numpy_products:  # a semantic cache's pass
        yield from (TemperatureScores(t, sem, {}) for t, sem in semantic_maps(composer, temps, scoring.temp_target,
                                                                               pixels))
    elif fused and len(direct) == len(scoring.scorers):
        yield from _query_scores(composer, size, direct, temps, scoring.temp_target, scoring.stats, on,
                                 compose_mask(pixels, direct))
    else:
        yield from _resized_query_scores(composer, frame, scoring, size, temps, on)


def _check_needs(frame: FrameInputs, scoring: Scoring, temps: Sequence[float]) -> None:
    """The flipped pass and the statistics that the scorers need, or a ValueError saying which is missing."""
    flipped = [s for s in scoring.scorers if s.uses is not None]
    if flipped and frame.flip is None:
        raise ValueError(f"scorer(s) {', '.join(s.name for s in flipped)} need the flipped pass (flip=)")
    if any(s.needs_stats for s in scoring.scorers):
        if scoring.stats is None:
            raise ValueError("KL matching and SML need in-distribution statistics (stats=)")
        lacking = [t for t in temps if t not in scoring.stats]
        if lacking:
            raise ValueError(f"no in-distribution statistics at T = {', '.join(f'{t:g}' for t in lacking)}")


def _resized_query_scores(composer: FrameComposer, frame: FrameInputs, scoring: Scoring, size, temps, on: dict
                          ) -> Iterator[TemperatureScores]:
    """EoMT's maps resized to the frame's size (portrait crops, a label size other than the
    resized frame, or a flip-averaged scorer): each T's ``s`` and query channels whole, then
    every scorer on them."""
    direct = [s for s in scoring.scorers if s.uses is None]
    flipped = [s for s in scoring.scorers if s.uses is not None]
    stats = scoring.stats
    k, keys = composer.num_classes, composer.channel_keys

    def score_all(x: torch.Tensor, t: float, key: float, channels=None, argmax_out=None, mask_scorers=True):
        names = [s.name for s in direct if mask_scorers or not s.needs_queries]
        return score_many(x, t, names, argmax_out=argmax_out, stats=None if stats is None else stats.get(key),
                          channels=channels, **on)

    query = scoring.temp_target == "query"
    mirror = _flip_scores(flipped, frame.flip, frame.geom, size, scoring.tile_rows, temps if query else (1.0,), on)
    if query:
        resized = composer.resized_maps(temps)
        for t in temps:
            s, channels = _split(resized.pop(t), k, keys, size)  # (K, H, W), (H, W) each
            sem = np.empty(s.shape[1:], np.uint8)  # = semantic_prediction(s), from the scorers' pass
            scores = score_all(s, 1.0, t, channels, argmax_out=sem)
            yield TemperatureScores(t, sem, {**scores, **mirror(t, s, channels)})
    else:
        s, channels = _split(composer.resized_maps((1.0,))[1.0], k, keys, size)  # (K, H, W)
        sem = semantic_prediction(s)
        for t in temps:
            scores = score_all(s, t, t, channels, mask_scorers=t == 1.0)
            yield TemperatureScores(t, sem, {**scores, **(mirror(t, s, channels) if t == 1.0 else {})})


def _query_scores(composer: FrameComposer, size, scorers: Sequence[Scorer], temps: Sequence[float], temp_target: str,
                  stats, on: dict, pixels: np.ndarray | None = None) -> Iterator[TemperatureScores]:
    """EoMT's fused pass (side-by-side crops, no resize to the original size, no flipped pass):
    each block of complete rows of every T's class scores and query channels
    (:meth:`FrameComposer.row_blocks`) is scored as it is made (one :class:`MapScorer` per T), so
    no full-size ``s`` exists; the semantic map comes from the same pass (target ``query``: per
    T, the first maximum of ``s_T``; ``pixel``: of ``s_1 / T``, that of ``s_1``). ``pixels``:
    what to compose (:func:`compose_mask`): a block is scored over the columns that hold one;
    the rest is blank."""
    k, keys = composer.num_classes, composer.channel_keys
    query = temp_target == "query"

    def names(t: float) -> list[str]:  # the mask scorers see T through the query softmax only
        return [s.name for s in scorers if query or t == 1.0 or not s.needs_queries]

    maps = {t: MapScorer(names(t), 1.0 if query else t, size, stats=None if stats is None else stats.get(t),
                         semantic=query or i == 0, sparse=pixels is not None, **on) for i, t in enumerate(temps)}
    for at, block in composer.row_blocks(temps if query else (1.0,), pixels):
        cols = None if block is None else read_cols(pixels, at)
        for t, m in maps.items():
            if cols is None:  # no pixel of it is read
                m.blank(at)
                continue
            b = block[t if query else 1.0][:, :, cols]  # (K + C, R, Wc)
            m.add(b[:k], at, cols, {key: b[k + c] for c, key in enumerate(keys)})
            blank_sides(m, at, cols)
    first = None
    for t in temps:
        scores, sem = maps.pop(t).finish()
        first = sem if first is None or query else first
        yield TemperatureScores(t, first, scores)


def _pixel_scores(logits: torch.Tensor, size: tuple[int, int], void_channel: int | None, scorers: Sequence[Scorer],
                  temps: Sequence[float], stats, on: dict, pixels: np.ndarray | None = None
                  ) -> Iterator[TemperatureScores]:
    """ERFNet's fused pass: each row tile of the logits at label size
    (:func:`analyze.compose.resize.label_size_tiles`, the full resize sliced) is scored at every T while
    it is in cache (one :class:`MapScorer` per T), so no per-T copy of the logits exists; the
    semantic map comes from the first T's pass (the first maximum of ``z / T`` is that of ``z``).
    ``pixels``: what to compose (:func:`compose_mask`): a tile is scored over the columns that
    hold one, the rest is blank."""
    names = [s.name for s in scorers]
    maps = {t: MapScorer(names, t, size, stats=None if stats is None else stats.get(t), semantic=i == 0,
                         sparse=pixels is not None, **on) for i, t in enumerate(temps)}
    for at, tile in label_size_tiles(logits, size, void_channel):
        if tile.shape[0] > 255:
            raise ValueError(f"{tile.shape[0]} classes do not fit uint8 with 255 reserved for void")
        cols = read_cols(pixels, at)
        for m in maps.values():
            if cols is None:  # no pixel of it is read
                m.blank(at)
                continue
            m.add(tile if cols == slice(None) else tile[:, :, cols], at, cols)
            blank_sides(m, at, cols)
    sem = None
    for t in temps:
        scores, first = maps.pop(t).finish()
        sem = first if sem is None else sem
        yield TemperatureScores(t, sem, scores)


def _flip_scores(flipped: Sequence[Scorer], flip, geom, size, tile_rows: int, temps, on: dict):
    """``mirror(t, s, channels)`` -> {flip scorer: map}: the scorer it averages (``uses``) on this
    pass (``s``, ``channels``) and on the flipped pass at the same T, the latter flipped back."""
    if not flipped:
        return lambda t, s, channels: {}
    inner = [_inner(s) for s in flipped]
    comp = FrameComposer(flip["mask_logits"], flip["class_logits"], geom, tile_rows=tile_rows,
                         channels=_channels(inner), **on)
    maps = comp.resized_maps(temps)

    def mirror(t: float, s: torch.Tensor, channels) -> dict[str, np.ndarray]:
        fs, fch = _split(maps.pop(t), comp.num_classes, comp.channel_keys, size)
        names = [i.name for i in inner]
        here = score_many(s, 1.0, names, channels=channels, **on)
        there = score_many(fs, 1.0, names, channels=fch, **on)
        return {f.name: (here[i.name] + there[i.name][:, ::-1]) / 2 for f, i in zip(flipped, inner)}

    return mirror


def _inner(scorer: Scorer) -> Scorer:
    """The scorer a flip-averaged one averages, with the same parameters (m2a_flip -> m2a)."""
    return SCORERS[scorer.uses].with_params(**scorer.kwargs)


def iter_scorer_inputs(frame: FrameInputs, temperatures: Sequence[float] = (1.0,),
                       temp_target: str = DEFAULT_TEMP_TARGET, tile_rows: int = DEFAULT_TILE_ROWS
                       ) -> Iterator[tuple[float, torch.Tensor, float]]:
    """``(T, x, t)`` per temperature: the scorers of :func:`iter_frame_scores` see ``x / t``
    (:func:`analyze.scorers.pixel.score_many`), composed by the same functions. ERFNet: the
    logits at label size (the full resize that the fused pass slices into row tiles,
    :func:`analyze.compose.resize.label_size_tiles`) and ``t = T``; EoMT, target ``query``:
    ``s_T`` and ``t = 1``; target ``pixel``: ``s_1`` and ``t = T`` (the resized frame's maps of
    :meth:`FrameComposer.resized_maps`, of which the fused pass's row blocks are the rows, then
    the resize to the label size). ``tests/test_one_path.py`` holds the fused pass to these
    inputs bit for bit at every shape. The in-distribution statistics of ``analyze fit``
    describe exactly this input."""
    parse_kind(frame.kind)
    parse_temp_target(temp_target)
    temps = tuple(dict.fromkeys(positive_temperature(t) for t in temperatures))
    if frame.kind == "pixel":
        if frame.logits is None or frame.out_size is None:
            raise ValueError("kind='pixel' needs logits and out_size")
        z = pixel_logits_to_label_size(frame.logits, frame.out_size, frame.void_channel)  # (K, H, W)
        for t in temps:
            yield t, z, t
        return
    if frame.mask_logits is None or frame.class_logits is None or frame.geom is None:
        raise ValueError("kind='query' needs mask_logits, class_logits and geom")
    size = frame.out_size or frame.geom.original
    composer = FrameComposer(frame.mask_logits, frame.class_logits, frame.geom, tile_rows=tile_rows)
    if temp_target == "query":
        resized = composer.resized_scores(temps)
        for t in temps:
            yield t, resize_scores(resized.pop(t), size), 1.0
    else:
        s = resize_scores(composer.resized_scores((1.0,))[1.0], size)
        for t in temps:
            yield t, s, t


def score_frame(frame: FrameInputs, scoring: Scoring) -> FrameScores:
    """All ``(scorer, T)`` maps and the semantic map per ``T`` of one frame, as
    :func:`iter_frame_scores` yields them (which keeps only one temperature's maps alive):
    ``scores[(name, T)]`` (H, W) float64 and ``semantic[T]`` (H, W) uint8."""
    scores: dict[tuple[str, float], np.ndarray] = {}
    semantic: dict[float, np.ndarray] = {}
    for ts in iter_frame_scores(frame, scoring):
        semantic[ts.temperature] = ts.semantic
        for name, m in ts.scores.items():
            scores[(name, ts.temperature)] = m
    return FrameScores(scores, semantic)
