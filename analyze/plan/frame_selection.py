"""Which frames ``analyze score`` scores, and which of them a row pools.

A cache's labelled done frames are scored when they have every chunk (:func:`scorable_frames`,
:mod:`schemas.integrity`); of those, a row pools the frames with a labelled pixel, and under
``frames = "with-anomaly"`` only those with an anomaly pixel (:func:`contributes`,
:func:`pooled_frames`). Frames left out are named in a warning, never dropped silently.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from schemas import cache as C
from schemas import integrity
from schemas.errors import DataError
from schemas.results import FRAMES


class ScoreError(DataError):
    """Bad cache content or arguments for scoring (the message names the cache and frame)."""


def contributes(n_pos: int, n_valid: int, frame_rule: str, label_kind: str = "anomaly") -> bool:
    """Whether a frame with ``n_pos`` anomaly pixels among ``n_valid`` labelled ones is pooled:
    it needs a labelled pixel, and under ``frames = "with-anomaly"`` an anomaly pixel (the rule
    selects among anomaly frames; a semantic cache pools every frame with a labelled pixel)."""
    if frame_rule not in FRAMES:
        raise ValueError(f"frames must be one of {', '.join(FRAMES)}; got {frame_rule!r}")
    if frame_rule == "with-anomaly" and label_kind == "anomaly":
        return n_pos > 0
    return n_valid > 0


def scorable_frames(root, spec: C.CacheSpec, cache: str, allow_partial: bool, warn,
                    info: Callable[[str], None] = lambda m: None) -> tuple[int, ...]:
    """Indices of the labelled done frames that have every chunk (:mod:`schemas.integrity`).

    Unlabelled frames (a benchmark's test images, ``CacheSpec.labelled``) are never scored;
    ``info`` is told how many were skipped. Frames not done, or done but missing a chunk
    (lost in a copy), are refused with one line naming the cache (and the array and frame),
    or skipped with a warning when ``allow_partial``. The static arrays must agree with the
    attributes in any case.
    """
    labelled = spec.labelled_mask
    n_unlabelled = int((~labelled).sum())
    if n_unlabelled:
        info(f"{cache}: skipped {n_unlabelled} unlabelled frame(s); scoring the {int(labelled.sum())} labelled ones")
    if not labelled.any():
        raise ScoreError(f"{cache}: no labelled frame to score ({n_unlabelled} unlabelled frames; "
                         "`analyze export` writes their maps)")
    done = C.done_mask(root, str(cache))
    frames = [int(i) for i in np.flatnonzero(done & labelled)]
    n_labelled = int(labelled.sum())
    if len(frames) < n_labelled:
        missing = [spec.frame_ids[i] for i in np.flatnonzero(~done & labelled)]
        msg = (f"{cache}: {len(missing)} of {n_labelled} {'labelled ' if n_unlabelled else ''}frames are not done "
               f"(e.g. {', '.join(missing[:3])}); finish `extract run` first")
        if not allow_partial:
            raise ScoreError(msg + " or pass --allow-partial to score the done frames only")
        warn(msg + "; scoring the done frames only")
    problems = integrity.check_frames(root, spec, frames)
    static = [p for p in problems if p.frame is None]
    if static:
        raise ScoreError(f"{cache}: {integrity.describe(static)}; the cache is damaged (copy it again)")
    if problems:
        lost = {p.frame for p in problems}
        msg = (f"{cache}: {len(lost)} done frame(s) lack data chunks: {integrity.describe(problems)}; "
               "rerun `extract run` to extract them again, or copy the cache again")
        if not allow_partial:
            raise ScoreError(msg + "; --allow-partial skips them")
        warn(msg + f"; skipping these {len(lost)} frame(s)")
        frames = [i for i in frames if i not in lost]
    if not frames:
        raise ScoreError(f"{cache}: no frame is done" + (" and complete" if problems else ""))
    return tuple(frames)


def pooled_frames(cache: str, spec: C.CacheSpec, labels: Mapping[int, tuple[int, int]], rule: str,
                   warn: Callable[[str], None]) -> tuple[int, ...]:
    """The frames (indices) that ``rule`` pools, from each frame's (anomaly, labelled) pixel
    counts; warns with the count and the first ids of the frames left out, ScoreError if none is left."""
    empty = [i for i, (_, n_valid) in sorted(labels.items()) if n_valid == 0]
    no_anomaly = [i for i, (n_pos, n_valid) in sorted(labels.items()) if n_valid and not n_pos]
    pooled = tuple(i for i, (n_pos, n_valid) in sorted(labels.items())
                   if contributes(n_pos, n_valid, rule, spec.label_kind))

    def ids(idx):
        return ", ".join(spec.frame_ids[i] for i in idx[:3]) + (", ..." if len(idx) > 3 else "")

    if len(empty) == 1:
        warn(f"{cache}: frame {ids(empty)} is done but its labels are all void (255): it adds no pixel to any "
             "metric and is left out of n_frames and of the bootstrap")
    elif empty:
        warn(f"{cache}: {len(empty)} of {len(labels)} frames are done but their labels are all void (255): they add "
             f"no pixel to any metric and are left out of n_frames and of the bootstrap ({ids(empty)})")
    if rule == "with-anomaly" and no_anomaly:
        warn(f"{cache}: --frames with-anomaly leaves out {len(no_anomaly)} of {len(labels)} frames without an "
             f"anomaly pixel, with their in-distribution pixels ({ids(no_anomaly)})")
    if not pooled:
        why = "has an anomaly pixel" if rule == "with-anomaly" and spec.label_kind == "anomaly" else "has a labelled pixel"
        raise ScoreError(f"{cache}: no done frame {why}; nothing to score")
    return pooled
