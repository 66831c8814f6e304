"""Drawing primitives of the demo world's scenes: the canvas, textures, colours and shapes.

A :class:`Canvas` is the frame being drawn (float32 RGB and uint8 trainIds, painted in
place); :func:`paint` fills a mask with a colour and a class; :func:`ellipse` and
:func:`rect` are masks of simple shapes on the pixel grid. Every random draw comes from
the ``numpy.random.Generator`` passed in, so a scene stays a pure function of its state.
Imports nothing of the demo but :func:`extract.datasets.synth.smooth_noise`.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from extract.datasets.synth import smooth_noise


@dataclass(frozen=True)
class Canvas:
    """One frame being drawn: ``img`` float32 ``(H, W, 3)`` and ``lab`` uint8 ``(H, W)``
    (painted in place), and the pixel grid ``yy``, ``xx`` float32 ``(H, W)``."""

    img: np.ndarray
    lab: np.ndarray
    yy: np.ndarray
    xx: np.ndarray

    @property
    def height(self) -> int:
        return self.img.shape[0]

    @property
    def width(self) -> int:
        return self.img.shape[1]


def texture(rng, h, w, scale):
    """Multi-octave texture in about [-1, 1], ``scale`` = largest cell in pixels."""
    out = np.zeros((h, w), np.float32)
    amp, tot, cell = 1.0, 0.0, float(scale)
    while cell >= 1.5:
        out += amp * smooth_noise(rng, h, w, cell)
        tot += amp
        amp *= 0.55
        cell /= 2.0
    return out / max(tot, 1e-6)


def jitter(rng, colour, amount):
    """``colour`` with Gaussian noise of standard deviation ``amount`` per channel, in [0, 255]."""
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0.0, amount, 3), 0, 255)


def paint(canvas: Canvas, mask, colour, cls, tex=None, tex_amp=0.0):
    """Fill ``mask`` with ``colour`` (optionally modulated by ``tex``) and class ``cls``."""
    img, lab = canvas.img, canvas.lab
    if not mask.any():
        return
    col = np.asarray(colour, np.float32)
    if tex is None:
        img[mask] = col
    else:
        img[mask] = col[None, :] * (1.0 + tex_amp * tex[mask])[:, None]
    if cls is not None:
        lab[mask] = cls


def ellipse(yy, xx, cy, cx, ry, rx):
    """Mask of the ellipse centred at ``(cy, cx)`` with radii ``ry``, ``rx`` (at least 0.5)."""
    return ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def rect(yy, xx, y0, y1, x0, x1):
    """Mask of the rectangle ``y0 <= y < y1``, ``x0 <= x < x1``."""
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def _saturated_colour(rng):
    """A loud colour (high saturation and value): never used by in-distribution classes."""
    hue = rng.choice([0.0, 0.08, 0.15, 0.3, 0.5, 0.78, 0.85, 0.92]) + rng.uniform(-0.03, 0.03)
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    return np.array([r, g, b], np.float32) * 255.0


# Colours borrowed from in-distribution classes (foliage, sky, facade, paint, skin): an
# unseen object patterned with them looks locally like several known classes at once.
_BORROWED = (
    (70, 110, 45),
    (110, 160, 215),
    (190, 175, 150),
    (150, 110, 90),
    (235, 235, 235),
    (30, 30, 35),
    (200, 160, 130),
    (110, 25, 30),
)


def anomaly_colour(rng):
    """Half the time a loud colour, otherwise one borrowed from a known class."""
    if rng.random() < 0.5:
        return _saturated_colour(rng)
    return jitter(rng, _BORROWED[rng.integers(len(_BORROWED))], 12)
