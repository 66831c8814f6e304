"""The demo world's procedural road scene: :func:`render_scene` draws one frame.

Classes use Cityscapes trainIds (:mod:`extract.demo.classes`: road 0, sidewalk 1, building
2, pole 5, vegetation 8, sky 10, person 11, car 13). A scene is drawn in layers, back to
front: the ground's geometry (:mod:`extract.demo.ground`), the sky, buildings and
vegetation on the horizon, the road and the sidewalks, then the things standing on them
far to near (:mod:`extract.demo.objects`), then the lighting. Anomalies are objects never
seen in training (saturated blobs, cow-like animals, traffic cones, boxes with loud
textures), mostly on the road; they are void (255) in the trainIds and returned as a
separate mask. A scene is a pure function of the state of its ``numpy.random.Generator``:
each layer draws from it in turn.
"""

from __future__ import annotations

import numpy as np

from extract.demo.classes import BUILDING, ROAD, SIDEWALK, SKY, VEGETATION, VOID
from extract.demo.ground import Ground, lay_out_ground
from extract.demo.objects import draw_things, place_things, reveal_anomaly
from extract.demo.paint import Canvas, jitter, paint, texture
from extract.datasets.synth import smooth_noise


def render_scene(
    rng: np.random.Generator, height: int, width: int, anomalies: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one procedural road scene.

    Returns ``(rgb, train_ids, anomaly_mask)``: ``rgb`` uint8 ``(H, W, 3)``; ``train_ids``
    uint8 ``(H, W)`` with Cityscapes trainIds (255 = void, used under anomalies);
    ``anomaly_mask`` bool ``(H, W)``, all False when ``anomalies`` is False. With
    ``anomalies=True`` one to three unseen objects are placed, mostly on the road; the
    rest of the scene stays in-distribution. Deterministic given the state of ``rng``.
    """
    H, W = int(height), int(width)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    canvas = Canvas(np.zeros((H, W, 3), np.float32), np.full((H, W), SKY, np.uint8), yy, xx)
    ground = lay_out_ground(rng, yy, xx)
    _draw_sky(rng, canvas, ground.horizon)
    _draw_background(rng, canvas, ground)
    _draw_road(rng, canvas, ground)
    _draw_sidewalks(rng, canvas, ground)
    draw_things(rng, canvas, ground, place_things(rng, ground, anomalies))
    if anomalies:
        reveal_anomaly(rng, canvas, ground)
    amask = canvas.lab == VOID  # anomaly pixels not occluded by nearer objects
    return _light(rng, canvas), canvas.lab, amask


def _draw_sky(rng, canvas: Canvas, h0) -> None:
    """Vertical gradient down to the horizon row ``h0``, sometimes overcast, with clouds."""
    img, yy, H, W = canvas.img, canvas.yy, canvas.height, canvas.width
    if rng.random() < 0.7:
        top, bot = jitter(rng, (70, 125, 200), 15), jitter(rng, (175, 205, 235), 12)
    else:
        g = rng.uniform(150, 215)
        top, bot = jitter(rng, (g - 15, g - 10, g), 6), jitter(rng, (g + 15, g + 15, g + 18), 6)
    f = np.clip(yy / max(h0, 1.0), 0, 1)[..., None]
    img[:] = top * (1 - f) + bot * f
    clouds = np.clip(texture(rng, H, W, W / 4) * 1.6 + rng.uniform(-0.6, 0.3), 0, 1)[..., None]
    img[:] = img * (1 - 0.7 * clouds) + 235.0 * 0.7 * clouds


def _draw_background(rng, canvas: Canvas, ground: Ground) -> None:
    """Columns of buildings and vegetation standing on the horizon, left to right; ground
    below the horizon that neither road nor sidewalk covers becomes vegetation."""
    xx, W = canvas.xx, canvas.width
    x = 0.0
    while x < W:
        seg = W * rng.uniform(0.07, 0.3)
        x0, x1 = int(x), int(min(W, x + seg))
        x += seg
        if x1 <= x0:
            continue
        cols = (xx >= x0) & (xx < x1)
        if rng.random() < 0.6:
            _draw_building(rng, canvas, ground, cols, x0)
        else:
            _draw_vegetation(rng, canvas, ground, cols)
    # anything below the horizon not covered yet (e.g. gaps) becomes vegetation
    rest = ground.below & ~ground.road & ~ground.sidewalk & (canvas.lab == SKY)
    paint(canvas, rest, jitter(rng, (80, 115, 50), 10), VEGETATION, texture(rng, canvas.height, W, 6), 0.3)


def _draw_building(rng, canvas: Canvas, ground: Ground, cols, x0) -> None:
    """A facade over the columns ``cols`` (starting at ``x0``), with a grid of windows."""
    yy, xx, H, W = canvas.yy, canvas.xx, canvas.height, canvas.width
    h0 = ground.horizon
    top_y = h0 - rng.uniform(0.15, 1.0) * h0
    m = cols & (yy >= top_y) & ~ground.road & ~ground.sidewalk & (ground.below | (yy <= h0))
    base = jitter(
        rng,
        [(190, 175, 150), (140, 140, 145), (150, 110, 90), (200, 190, 180), (110, 100, 95)][rng.integers(5)],
        12,
    )
    tex = texture(rng, H, W, 8)
    paint(canvas, m, base, BUILDING, tex, 0.12)
    # windows: a grid of darker (or lit) rectangles
    sy, sx = rng.uniform(5, 12) * H / 128, rng.uniform(5, 12) * W / 256
    wy, wx = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
    win = m & (((yy - top_y) % sy) / sy > 1 - wy) & (((xx - x0) % sx) / sx > 1 - wx)
    win &= yy < h0 + 0.1 * (H - h0)
    wcol = jitter(rng, (60, 70, 85) if rng.random() < 0.8 else (220, 210, 150), 10)
    paint(canvas, win, wcol, BUILDING, tex, 0.2)


def _draw_vegetation(rng, canvas: Canvas, ground: Ground, cols) -> None:
    """Vegetation over the columns ``cols`` with a bumpy crown line."""
    yy, H, W = canvas.yy, canvas.height, canvas.width
    h0 = ground.horizon
    top_y = h0 - rng.uniform(0.05, 0.6) * h0
    bump = smooth_noise(rng, 1, W, max(2.0, W / 40))[0] * 0.15 * H
    m = cols & (yy >= top_y + bump[None, :]) & ~ground.road & ~ground.sidewalk
    base = jitter(rng, (70, 110, 45), 12)
    tex = texture(rng, H, W, 6) + 0.5 * rng.normal(0, 0.5, (H, W)).astype(np.float32)
    paint(canvas, m, base, VEGETATION, tex, 0.35)


def _draw_road(rng, canvas: Canvas, ground: Ground) -> None:
    """Asphalt with texture, dashed lane markings, sometimes edge lines."""
    H, W = canvas.height, canvas.width
    road, dx, half, depth = ground.road, ground.dx, ground.half, ground.depth
    asphalt = jitter(rng, np.full(3, rng.uniform(75, 120)), 4)
    tex = texture(rng, H, W, 10) * 0.5 + rng.normal(0, 0.35, (H, W)).astype(np.float32)
    paint(canvas, road, asphalt, ROAD, tex, 0.12)
    dash = np.sin(ground.distance * rng.uniform(25, 40) * H / 128 + rng.uniform(0, 6.3)) > 0.1
    lane = road & (np.abs(dx) < 0.025 * half + 0.3) & dash & (depth > 2)
    paint(canvas, lane, jitter(rng, (225, 225, 215), 8), ROAD)
    if rng.random() < 0.6:
        for s in (-1, 1):
            edge = road & (np.abs(dx - s * 0.9 * half) < 0.02 * half + 0.3) & (depth > 2)
            paint(canvas, edge, jitter(rng, (215, 215, 205), 8), ROAD)


def _draw_sidewalks(rng, canvas: Canvas, ground: Ground) -> None:
    """Lighter pavement with tile seams and a curb along the road."""
    H, W = canvas.height, canvas.width
    sidewalk, dx, half = ground.sidewalk, ground.dx, ground.half
    pave = jitter(rng, [(160, 155, 150), (170, 140, 130), (140, 140, 135)][rng.integers(3)], 8)
    seam = np.sin(ground.distance * rng.uniform(60, 90) * H / 128) > 0.85
    tex = texture(rng, H, W, 6) * 0.6 - 0.6 * seam
    paint(canvas, sidewalk, pave, SIDEWALK, tex, 0.1)
    curb = sidewalk & (np.abs(np.abs(dx) - half) < 0.04 * half + 0.3)
    paint(canvas, curb, jitter(rng, (195, 195, 190), 6), SIDEWALK)


def _light(rng, canvas: Canvas) -> np.ndarray:
    """The frame as uint8 RGB under global exposure, a colour cast, horizontal shading and
    sensor noise."""
    light = rng.uniform(0.7, 1.2)
    cast = 1.0 + rng.normal(0.0, 0.05, 3).astype(np.float32)
    shade = 1.0 + rng.uniform(-0.25, 0.25) * (canvas.xx / canvas.width - 0.5)
    img = canvas.img * light * cast[None, None, :] * shade[..., None]
    img += rng.normal(0.0, rng.uniform(2.0, 8.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
