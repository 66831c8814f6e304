"""The float16 a benchmark stores, and one affine transform per track that makes the most of it.

SegmentMeIfYouCan (``road-anomaly-benchmark``, ``evaluation.py`` ``save_output``) casts every
submitted map to float16 before any metric. float16 has 11 significant bits: near a score of
magnitude ``m`` its step is about ``m / 2048``. A score whose values sit on a large offset
(energy at large T: about ``-T log K``; MSP at large T: about ``1 - 1/K``) loses almost all
its distinct values to the cast: ties the float64 map did not have, which change the
benchmark's bins, its AP and the component step.

:class:`Float16Transform` maps the scores of one (dataset, scorer, T) by
``(score - center) * scale``, one pair of constants for every frame of the track. It is
monotone (``scale > 0``; float64 rounding is monotone), so the pooled order of the scores is
kept wherever float16 can tell two values apart, and every threshold of the float64 map is a
threshold of the transformed one. Which transform: the one of these candidates that loses
the fewest distinct values on a fixed sample of the track's scores (every
``n // SAMPLE``-th pixel of each frame; ties go to the earlier candidate):

* ``identity``: the plain cast (when every score fits float16); best where the scores are
  float16 values already (MaxLogit of float16 logits at T = 0.5 or 1);
* ``centered``: the track's ``[min, max]`` onto ``[-HALF_WIDTH, HALF_WIDTH]``, centred on 0
  where float16 is finest, both signs used;
* ``low``, ``high``: ``[min, max]`` onto ``[0, 2 HALF_WIDTH]`` or ``[-2 HALF_WIDTH, 0]``,
  finest at the low or the high end of the scores.

``HALF_WIDTH = 2**14`` keeps every quantity the benchmark's binning computes in float16
finite: the range ``2**15`` and ``max + 1 %`` (its ``eps``) stay below 65504.

The cost: the track's min and max are needed before the first frame is mapped, i.e. one
more pass over the frames (:mod:`analyze.export.submission`, the ``ranges`` pass of ``analyze score
--protocol smiyc``).

:func:`distinct_lost` counts what the cast loses on one frame: its distinct float64 scores
minus its distinct float16 values (scores that share a float16 value with another).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HALF_WIDTH = 2.0**14
"""The centred candidate maps the track onto ``[-HALF_WIDTH, HALF_WIDTH]`` (the others onto twice that width)."""
LOSS_WARN = 0.01
"""Warn when more than this fraction of the distinct scores is lost to float16."""


SAMPLE = 1024
"""Scores per frame that choose the transform (every ``n // SAMPLE``-th pixel)."""
F16_MAX = 65504.0


@dataclass(frozen=True)
class Float16Transform:
    """``score -> (score - center) * scale`` (float64), then the benchmark's float16 cast.

    ``kind``: which candidate (module docstring); ``lo``, ``hi``: the track's smallest and
    largest score it was fitted on."""

    kind: str
    center: float
    scale: float
    lo: float = math.nan
    hi: float = math.nan

    @classmethod
    def candidates(cls, lo: float, hi: float) -> list["Float16Transform"]:
        """The candidate transforms for scores in ``[lo, hi]``, in order of preference."""
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"cannot fit a float16 transform on the score range [{lo}, {hi}]")
        out = [cls("identity", 0.0, 1.0, lo, hi)] if max(-lo, hi) <= F16_MAX else []
        half = hi / 2 - lo / 2  # no overflow
        if half == 0:
            return out or [cls("centered", lo, 1.0, lo, hi)]
        return out + [cls("centered", lo / 2 + hi / 2, HALF_WIDTH / half, lo, hi),
                      cls("low", lo, HALF_WIDTH / half, lo, hi), cls("high", hi, HALF_WIDTH / half, lo, hi)]

    @classmethod
    def identity(cls) -> "Float16Transform":
        return cls("identity", 0.0, 1.0)

    def mapped(self, score: np.ndarray) -> np.ndarray:
        """``(score - center) * scale`` in float64."""
        out = np.subtract(score, self.center, dtype=np.float64)
        out *= self.scale
        return out

    def apply(self, score: np.ndarray) -> np.ndarray:
        """The float16 map the benchmark stores (values beyond float16 become +-inf, which the
        callers refuse)."""
        with np.errstate(over="ignore"):
            return self.mapped(score).astype(np.float16)

    def attrs(self) -> dict:
        """What an exported file records (HDF5 attributes)."""
        return {"f16_transform": "value = float16((score - f16_center) * f16_scale)", "f16_kind": self.kind,
                "f16_center": self.center, "f16_scale": self.scale, "f16_fit_min": self.lo, "f16_fit_max": self.hi}

    def describe(self) -> str:
        return f"{self.kind}: (score - {self.center:.9g}) * {self.scale:.9g}"


class ScoreRange:
    """Smallest and largest score over frames and a fixed sample of each frame's scores
    (:data:`SAMPLE`): ``update`` per frame, ``merge``, then :meth:`transform`."""

    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf
        self.samples: list[np.ndarray] = []

    def update(self, score: np.ndarray, y_true=None) -> "ScoreRange":
        """Add one frame's scores (every pixel, void too: every pixel is submitted)."""
        flat = np.asarray(score, np.float64).ravel()
        if flat.size:
            self.lo, self.hi = min(self.lo, float(flat.min())), max(self.hi, float(flat.max()))
            self.samples.append(flat[:: max(1, flat.size // SAMPLE)].copy())
        return self

    def merge(self, other: "ScoreRange") -> "ScoreRange":
        out = ScoreRange()
        out.lo, out.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        out.samples = self.samples + other.samples
        return out

    def transform(self) -> Float16Transform:
        """The candidate that loses the fewest distinct sampled values (the earlier on ties)."""
        def lost(tr: Float16Transform) -> int:
            return sum(n_distinct(x) - n_distinct(tr.apply(x)) for x in self.samples)

        return min(Float16Transform.candidates(self.lo, self.hi), key=lost)  # min keeps the first of equals


def n_distinct(x: np.ndarray) -> int:
    """Distinct values of ``x`` (a sort, then the changes: faster than ``np.unique``)."""
    s = np.sort(np.asarray(x).ravel())
    return int(s.size and 1 + np.count_nonzero(s[1:] != s[:-1]))


def distinct_lost(score: np.ndarray, as_float16: np.ndarray) -> tuple[int, int]:
    """(distinct float64 scores, of them lost to float16) on one frame: ``n64 - n16`` with
    ``n16`` the distinct values of ``as_float16`` (the frame's float16 map)."""
    n64 = n_distinct(np.asarray(score, np.float64))
    return n64, max(0, n64 - n_distinct(as_float16))


@dataclass
class LossCount:
    """Distinct scores and those lost to float16, summed over frames (:func:`distinct_lost`)."""

    distinct: int = 0
    lost: int = 0

    def add(self, score: np.ndarray, as_float16: np.ndarray) -> None:
        n, lost = distinct_lost(score, as_float16)
        self.distinct += n
        self.lost += lost

    @property
    def fraction(self) -> float:
        return self.lost / self.distinct if self.distinct else 0.0

    def figure(self) -> str:
        return f"{self.lost} of {self.distinct} distinct scores ({100 * self.fraction:.2f} %)"
