"""The smiyc protocol's float16 step of a scored cache: each key's affine float16 transform,
fitted on every done frame (the ``ranges`` pass), and the warning of what float16 still loses.
Called by :mod:`analyze.run.driver`; imports no CLI code.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from analyze.metrics.f16_range import LOSS_WARN
from analyze.run.tasks import ScoreJob, run_phase
from schemas import cache as C


def f16_transforms(sched, job: ScoreJob, root) -> dict:
    """Each key's :class:`analyze.metrics.f16_range.Float16Transform`, fitted on the range of its scores
    over every done frame of the cache, labelled or not (one more pass: the ``ranges`` phase)."""
    every = tuple(int(i) for i in np.flatnonzero(C.done_mask(root, str(job.cache))))
    ranges = run_phase(sched, ScoreJob(**{**job.__dict__, "frames": every}), "ranges").states
    return {k: r.transform() for k, r in ranges.items()}


def warn_f16_loss(job: ScoreJob, states: Mapping, warn) -> None:
    """Say which keys lose more than :data:`analyze.metrics.f16_range.LOSS_WARN` of their distinct scores."""
    transforms = job.f16 or {}
    for (name, t), s in sorted(states.items()):
        if s.distinct and s.lost / s.distinct > LOSS_WARN and (name, t) in transforms:
            warn(f"{job.cache}: {name} T={t:g}: float16 loses {s.lost} of {s.distinct} distinct scores "
                 f"({100 * s.lost / s.distinct:.2f} %) even after the track's affine map "
                 f"({transforms[(name, t)].describe()}): the smiyc numbers see these ties, as the benchmark would")
