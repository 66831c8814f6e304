"""The demo scene's ground in perspective: horizon, vanishing point, road and sidewalks.

:func:`lay_out_ground` draws the geometry of one scene and returns it as a :class:`Ground`:
the road is a triangle from the vanishing point on the horizon to the bottom row, flanked
by sidewalks of random widths (sometimes none); objects standing at a row scale with the
road's half-width there (:meth:`Ground.half_width`). Imports nothing of the demo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ground:
    """One scene's ground: the scalars that place it and the masks they give.

    ``horizon`` row, vanishing point column ``vanish_x``, road centre ``centre_bottom`` and
    half-width ``half_bottom`` at the bottom row, sidewalk widths ``sidewalk_frac`` (left,
    right) as fractions of the road's half-width. Arrays ``(H, W)``: ``depth`` (0 at the
    horizon, growing towards the camera), ``dx`` (column minus the road centre of the row),
    ``half`` (road half-width of the row), ``distance`` (``1 / depth``, the distance along the
    road, for stripes that shrink with it), and the masks ``below`` (the horizon), ``road``,
    ``sidewalk``.
    """

    height: int
    horizon: float
    vanish_x: float
    centre_bottom: float
    half_bottom: float
    sidewalk_frac: tuple[float, float]
    depth: np.ndarray
    dx: np.ndarray
    half: np.ndarray
    distance: np.ndarray
    below: np.ndarray
    road: np.ndarray
    sidewalk: np.ndarray

    def half_width(self, yb):
        """Road half-width at row ``yb`` (perspective scale of objects standing there)."""
        return self.half_bottom * max(yb - self.horizon, 0.0) / (self.height - self.horizon)

    def centre(self, yb):
        """Column of the road centre at row ``yb``."""
        return self.vanish_x + (self.centre_bottom - self.vanish_x) * max(yb - self.horizon, 0.0) / (
            self.height - self.horizon
        )

    def sidewalk_of(self, side: int) -> float:
        """Sidewalk width fraction of ``side`` (-1 left, 1 right), 0.3 where there is none."""
        return self.sidewalk_frac[0 if side < 0 else 1] or 0.3


def lay_out_ground(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> Ground:
    """Draw one scene's ground on the pixel grid ``yy``, ``xx`` (float32 ``(H, W)``)."""
    H, W = yy.shape
    h0 = rng.uniform(0.36, 0.5) * H
    vx = W * (0.5 + rng.uniform(-0.15, 0.15))
    cb = W * (0.5 + rng.uniform(-0.18, 0.18))  # road centre at the bottom row
    hw_bottom = W * rng.uniform(0.28, 0.5)  # road half-width at the bottom row
    depth = np.clip(yy - h0, 0.0, None)  # 0 at the horizon, grows towards the camera
    t = depth / (H - h0)
    centre = vx + (cb - vx) * t
    half = hw_bottom * t
    dx = xx - centre
    below = yy > h0
    road = below & (np.abs(dx) < half)
    sw_frac = [rng.uniform(0.25, 0.55) if rng.random() < 0.9 else 0.0 for _ in range(2)]
    side_w = np.where(dx < 0, sw_frac[0], sw_frac[1]) * half
    sidewalk = below & ~road & (np.abs(dx) < half + side_w)
    distance = 1.0 / np.maximum(depth, 0.5)
    return Ground(H, h0, vx, cb, hw_bottom, (sw_frac[0], sw_frac[1]), depth, dx, half, distance, below, road, sidewalk)
