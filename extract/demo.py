"""A tiny procedural road-scene world and a toy ERFNet trained on it, for ``make demo``.

Nothing here needs a GPU, a checkpoint or a real dataset: :func:`write_world` renders
road scenes and writes them in the *real* dataset layouts (Cityscapes ``leftImg8bit`` /
``gtFine`` for training and in-distribution validation, ``RoadAnomaly`` ``images`` /
``labels_masks`` for anomalies), and :func:`train_erfnet` trains the official ERFNet
architecture from scratch on the CPU and saves it in the official checkpoint format (a
plain ``module.``-prefixed state_dict with 20 output channels, channel 19 = void). The
rest of the tool then treats these files exactly like the real ones.

Classes use Cityscapes trainIds (road 0, sidewalk 1, building 2, pole 5, vegetation 8,
sky 10, person 11, car 13). Anomalies are objects never seen in training (saturated
blobs, cow-like animals, traffic cones, boxes with loud textures), mostly on the road.

Everything is deterministic for a given seed: each image is rendered from its own
``numpy.random.default_rng([seed, split, index])`` stream, and training seeds torch,
uses deterministic algorithms and a fixed number of threads.
"""

from __future__ import annotations

import colorsys
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

# Cityscapes trainIds used by the world.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 8, 10, 11, 13
VOID = 255
NUM_CLASSES = 19  # Cityscapes trainIds 0..18; ERFNet has a 20th (void) output channel
WORLD_CLASSES = (ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR)

# RoadAnomaly label convention: 0 in-distribution, 2 anomaly, anything else void.
RA_ID, RA_ANOMALY, RA_VOID = 0, 2, 255

ANOMALY_KINDS = ("blob", "animal", "cone", "box")
ANOMALY_SIZE = (0.18, 0.45)  # anomaly size as a fraction of the road width where it stands
DEFAULT_SIZE = (128, 256)  # (H, W) of the rendered world, aspect 1:2 like Cityscapes
DEFAULT_TRAIN_HEIGHT = 64  # ERFNet input rows for the demo model (extract at this height)
DEFAULT_TRAIN_STEPS = 400
CITIES = ("demotown", "synthburg")


# --------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random grid bilinearly interpolated."""
    gh = int(math.ceil(h / cell)) + 2
    gw = int(math.ceil(w / cell)) + 2
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _texture(rng, h, w, scale):
    """Multi-octave texture in about [-1, 1], ``scale`` = largest cell in pixels."""
    out = np.zeros((h, w), np.float32)
    amp, tot, cell = 1.0, 0.0, float(scale)
    while cell >= 1.5:
        out += amp * _smooth_noise(rng, h, w, cell)
        tot += amp
        amp *= 0.55
        cell /= 2.0
    return out / max(tot, 1e-6)


def _jitter(rng, colour, amount):
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0.0, amount, 3), 0, 255)


def _paint(img, lab, mask, colour, cls, tex=None, tex_amp=0.0):
    """Fill ``mask`` with ``colour`` (optionally modulated by ``tex``) and class ``cls``."""
    if not mask.any():
        return
    col = np.asarray(colour, np.float32)
    if tex is None:
        img[mask] = col
    else:
        img[mask] = col[None, :] * (1.0 + tex_amp * tex[mask])[:, None]
    if cls is not None:
        lab[mask] = cls


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _rect(yy, xx, y0, y1, x0, x1):
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


def _anomaly_colour(rng):
    """Half the time a loud colour, otherwise one borrowed from a known class."""
    if rng.random() < 0.5:
        return _saturated_colour(rng)
    return _jitter(rng, _BORROWED[rng.integers(len(_BORROWED))], 12)


# --------------------------------------------------------------------------- the scene


def _draw_anomaly(rng, img, lab, yy, xx, yb, hs, centre_x, H):
    """Paint one unseen object standing at row ``yb`` (road half-width ``hs`` there) and
    mark it void in ``lab``: a loud blob, a cow-like animal, a cone or a checkered box."""
    W = img.shape[1]
    on_sidewalk = rng.random() < 0.15
    if on_sidewalk:
        side = -1 if rng.random() < 0.5 else 1
        cx = centre_x + side * hs * rng.uniform(1.05, 1.3)
    else:
        cx = centre_x + rng.uniform(-0.7, 0.7) * hs
    size = max(8.0 * H / 128, 2 * hs * rng.uniform(*ANOMALY_SIZE))
    kind = ANOMALY_KINDS[rng.integers(len(ANOMALY_KINDS))]
    if kind == "blob":  # a loud ellipse with stripes or spots
        ry, rx = size * rng.uniform(0.3, 0.55), size * rng.uniform(0.4, 0.7)
        m = _ellipse(yy, xx, yb - ry, cx, ry, rx)
        c1, c2 = _anomaly_colour(rng), _anomaly_colour(rng)
        if rng.random() < 0.5:
            pat = np.sin((xx * rng.uniform(0.5, 1.5) + yy) * (6.0 / size) * math.pi) > 0
        else:
            pat = _smooth_noise(rng, H, W, max(size / 4, 1.5)) > 0.2
        col = np.where(pat[..., None], c2, c1)
        img[m] = col[m]
    elif kind == "animal":  # cow-like: body, head, legs, patches
        bh, bwid = size * 0.45, size * rng.uniform(0.8, 1.1)
        top = yb - size * 0.85
        body = _ellipse(yy, xx, top + bh / 2, cx, bh / 2, bwid / 2)
        hx = cx + (bwid * 0.55 if rng.random() < 0.5 else -bwid * 0.55)
        head = _ellipse(yy, xx, top + bh * 0.2, hx, size * 0.15, size * 0.13)
        legs = np.zeros((H, W), bool)
        for lx in (-0.38, -0.2, 0.2, 0.38):
            legs |= _rect(yy, xx, top + bh * 0.8, yb, cx + lx * bwid - size * 0.04, cx + lx * bwid + size * 0.04)
        m = body | head | legs
        c1 = _jitter(rng, [(235, 230, 220), (120, 70, 35), (25, 20, 20)][rng.integers(3)], 10)
        c2 = _jitter(rng, [(25, 20, 20), (240, 240, 235), (170, 110, 50)][rng.integers(3)], 10)
        patches = _smooth_noise(rng, H, W, max(size / 5, 1.5)) > 0.15
        img[m] = np.where(patches[..., None], c2, c1)[m]
    elif kind == "cone":  # orange triangle with white bands on a dark base
        ch, cw = size * rng.uniform(0.9, 1.3), size * rng.uniform(0.5, 0.7)
        rel = np.clip((yb - yy) / ch, 0, 1)
        tri = (yy <= yb) & (yy >= yb - ch) & (np.abs(xx - cx) <= cw / 2 * (1 - rel) + 0.5)
        base = _rect(yy, xx, yb - 0.08 * ch, yb, cx - cw * 0.6, cx + cw * 0.6)
        m = tri | base
        orange = _jitter(rng, (250, 110, 20), 12)
        band = ((rel * 4.0) % 1.0 > 0.6) & (rel > 0.15) & (rel < 0.8)
        col = np.where(band[..., None], np.array([245, 245, 245], np.float32), orange)
        img[m] = col[m]
        img[base] = _jitter(rng, (35, 35, 35), 5)
    else:  # box with a checkerboard of two loud colours
        bh, bwid = size * rng.uniform(0.5, 0.9), size * rng.uniform(0.6, 1.1)
        m = _rect(yy, xx, yb - bh, yb, cx - bwid / 2, cx + bwid / 2)
        c1, c2 = _anomaly_colour(rng), _anomaly_colour(rng)
        k = max(bwid / rng.uniform(3, 6), 1.0)
        chk = ((np.floor((xx - cx) / k) + np.floor((yy - yb) / k)) % 2) == 0
        img[m] = np.where(chk[..., None], c1, c2)[m]
    lab[m] = VOID


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
    img = np.zeros((H, W, 3), np.float32)
    lab = np.full((H, W), SKY, np.uint8)

    # ---- geometry: horizon, vanishing point, road and sidewalks
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
    ground = below & ~road & ~sidewalk

    # ---- sky: vertical gradient, sometimes overcast, with clouds
    if rng.random() < 0.7:
        top, bot = _jitter(rng, (70, 125, 200), 15), _jitter(rng, (175, 205, 235), 12)
    else:
        g = rng.uniform(150, 215)
        top, bot = _jitter(rng, (g - 15, g - 10, g), 6), _jitter(rng, (g + 15, g + 15, g + 18), 6)
    f = np.clip(yy / max(h0, 1.0), 0, 1)[..., None]
    img[:] = top * (1 - f) + bot * f
    clouds = np.clip(_texture(rng, H, W, W / 4) * 1.6 + rng.uniform(-0.6, 0.3), 0, 1)[..., None]
    img[:] = img * (1 - 0.7 * clouds) + 235.0 * 0.7 * clouds

    # ---- background: buildings and vegetation columns standing on the horizon
    x = 0.0
    while x < W:
        seg = W * rng.uniform(0.07, 0.3)
        x0, x1 = int(x), int(min(W, x + seg))
        x += seg
        if x1 <= x0:
            continue
        cols = (xx >= x0) & (xx < x1)
        if rng.random() < 0.6:  # building
            top_y = h0 - rng.uniform(0.15, 1.0) * h0
            m = cols & (yy >= top_y) & ~road & ~sidewalk & (below | (yy <= h0))
            base = _jitter(
                rng,
                [(190, 175, 150), (140, 140, 145), (150, 110, 90), (200, 190, 180), (110, 100, 95)][rng.integers(5)],
                12,
            )
            tex = _texture(rng, H, W, 8)
            _paint(img, lab, m, base, BUILDING, tex, 0.12)
            # windows: a grid of darker (or lit) rectangles
            sy, sx = rng.uniform(5, 12) * H / 128, rng.uniform(5, 12) * W / 256
            wy, wx = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
            win = m & (((yy - top_y) % sy) / sy > 1 - wy) & (((xx - x0) % sx) / sx > 1 - wx)
            win &= yy < h0 + 0.1 * (H - h0)
            wcol = _jitter(rng, (60, 70, 85) if rng.random() < 0.8 else (220, 210, 150), 10)
            _paint(img, lab, win, wcol, BUILDING, tex, 0.2)
        else:  # vegetation with a bumpy crown line
            top_y = h0 - rng.uniform(0.05, 0.6) * h0
            bump = _smooth_noise(rng, 1, W, max(2.0, W / 40))[0] * 0.15 * H
            m = cols & (yy >= top_y + bump[None, :]) & ~road & ~sidewalk
            base = _jitter(rng, (70, 110, 45), 12)
            tex = _texture(rng, H, W, 6) + 0.5 * rng.normal(0, 0.5, (H, W)).astype(np.float32)
            _paint(img, lab, m, base, VEGETATION, tex, 0.35)
    # anything below the horizon not covered yet (e.g. gaps) becomes vegetation
    rest = ground & (lab == SKY)
    _paint(img, lab, rest, _jitter(rng, (80, 115, 50), 10), VEGETATION, _texture(rng, H, W, 6), 0.3)

    # ---- road: asphalt with texture, lane markings, shadows
    asphalt = _jitter(rng, np.full(3, rng.uniform(75, 120)), 4)
    tex = _texture(rng, H, W, 10) * 0.5 + rng.normal(0, 0.35, (H, W)).astype(np.float32)
    _paint(img, lab, road, asphalt, ROAD, tex, 0.12)
    zdepth = 1.0 / np.maximum(depth, 0.5)  # distance along the road
    dash = np.sin(zdepth * rng.uniform(25, 40) * H / 128 + rng.uniform(0, 6.3)) > 0.1
    lane = road & (np.abs(dx) < 0.025 * half + 0.3) & dash & (depth > 2)
    _paint(img, lab, lane, _jitter(rng, (225, 225, 215), 8), ROAD)
    if rng.random() < 0.6:
        for s in (-1, 1):
            edge = road & (np.abs(dx - s * 0.9 * half) < 0.02 * half + 0.3) & (depth > 2)
            _paint(img, lab, edge, _jitter(rng, (215, 215, 205), 8), ROAD)

    # ---- sidewalks: lighter pavement with tile seams and a curb
    pave = _jitter(rng, [(160, 155, 150), (170, 140, 130), (140, 140, 135)][rng.integers(3)], 8)
    seam = np.sin(zdepth * rng.uniform(60, 90) * H / 128) > 0.85
    tex = _texture(rng, H, W, 6) * 0.6 - 0.6 * seam
    _paint(img, lab, sidewalk, pave, SIDEWALK, tex, 0.1)
    curb = sidewalk & (np.abs(np.abs(dx) - half) < 0.04 * half + 0.3)
    _paint(img, lab, curb, _jitter(rng, (195, 195, 190), 6), SIDEWALK)

    def row_scale(yb):
        """Road half-width at row ``yb`` (perspective scale of objects standing there)."""
        return hw_bottom * max(yb - h0, 0.0) / (H - h0)

    def road_centre(yb):
        return vx + (cb - vx) * max(yb - h0, 0.0) / (H - h0)

    # ---- poles and persons on the sidewalks
    things = []
    for _ in range(rng.integers(0, 4)):
        things.append(("pole", rng.uniform(h0 + 0.1 * (H - h0), H * 1.02)))
    for _ in range(rng.integers(0, 5)):
        things.append(("person", rng.uniform(h0 + 0.15 * (H - h0), H * 1.05)))
    # ---- cars on the road
    for _ in range(rng.integers(0, 5)):
        things.append(("car", rng.uniform(h0 + 0.08 * (H - h0), H * 1.1)))
    # ---- anomalies: unseen objects, mostly on the road
    if anomalies:
        for _ in range(int(rng.integers(1, 4))):
            things.append(("anomaly", rng.uniform(h0 + 0.3 * (H - h0), H * 1.0)))
    # far to near: nearer objects occlude farther ones (a stable sort keeps draw order)
    things.sort(key=lambda it: it[1])

    for kind, yb in things:
        if kind == "anomaly":
            _draw_anomaly(rng, img, lab, yy, xx, yb, max(row_scale(yb), 4.0), road_centre(yb), H)
            continue
        hs = row_scale(yb)
        if hs < 1.0:
            continue
        side = -1 if rng.random() < 0.5 else 1
        if kind == "pole":
            sw = sw_frac[0 if side < 0 else 1] or 0.3
            px = road_centre(yb) + side * hs * (1 + sw * rng.uniform(0.3, 0.9))
            pw = max(2.0 * H / 128, 0.05 * hs)
            ph = hs * rng.uniform(1.8, 3.0)
            m = _rect(yy, xx, yb - ph, yb, px - pw / 2, px + pw / 2)
            _paint(img, lab, m, _jitter(rng, (95, 95, 100), 12), POLE)
            if rng.random() < 0.5:  # a sign
                sm = _rect(yy, xx, yb - ph, yb - ph + 3 * pw, px - 1.5 * pw, px + 1.5 * pw)
                _paint(img, lab, sm, _jitter(rng, (90, 90, 100), 12), POLE)
        elif kind == "person":
            if rng.random() < 0.35:  # crossing the road: the road is not only for cars
                px = road_centre(yb) + rng.uniform(-0.9, 0.9) * hs
            else:
                sw = sw_frac[0 if side < 0 else 1] or 0.3
                px = road_centre(yb) + side * hs * (1 + sw * rng.uniform(0.2, 0.8))
            ph = hs * rng.uniform(0.7, 1.0)
            bw = 0.28 * ph
            cloth = _jitter(
                rng, [(40, 40, 50), (90, 60, 50), (60, 70, 110), (120, 120, 120), (150, 40, 40)][rng.integers(5)], 15
            )
            legs = _rect(yy, xx, yb - 0.45 * ph, yb, px - bw / 2, px - bw / 10) | _rect(
                yy, xx, yb - 0.45 * ph, yb, px + bw / 10, px + bw / 2
            )
            body = _ellipse(yy, xx, yb - 0.65 * ph, px, 0.22 * ph, bw / 2)
            head = _ellipse(yy, xx, yb - 0.9 * ph, px, 0.09 * ph, 0.08 * ph)
            _paint(img, lab, legs, _jitter(rng, (45, 45, 60), 10), PERSON)
            _paint(img, lab, body, cloth, PERSON)
            _paint(img, lab, head, _jitter(rng, (200, 160, 130), 20), PERSON)
        else:  # car, seen from behind
            cw = 2 * hs * rng.uniform(0.28, 0.42)
            ch = cw * rng.uniform(0.6, 0.85)
            if rng.random() < 0.15:  # parked half on the sidewalk
                cx = road_centre(yb) + side * hs * rng.uniform(0.9, 1.1)
            else:
                cx = road_centre(yb) + rng.uniform(-0.55, 0.55) * hs
            paint = _jitter(
                rng,
                [(235, 235, 235), (30, 30, 35), (150, 150, 155), (110, 25, 30), (30, 45, 90), (90, 90, 95)][
                    rng.integers(6)
                ],
                10,
            )
            shadow = _ellipse(yy, xx, yb, cx, 0.06 * ch, 0.55 * cw) & road
            img[shadow] *= 0.55
            body = _rect(yy, xx, yb - 0.62 * ch, yb - 0.12 * ch, cx - cw / 2, cx + cw / 2)
            ctop = yb - ch
            cab_t = np.clip((yy - ctop) / (0.38 * ch), 0, 1)
            cab_half = cw * (0.34 + 0.12 * cab_t)
            cabin = (yy >= ctop) & (yy < yb - 0.62 * ch) & (np.abs(xx - cx) < cab_half)
            window = cabin & (yy >= ctop + 0.08 * ch) & (np.abs(xx - cx) < cab_half - 0.05 * cw)
            wheels = _rect(yy, xx, yb - 0.2 * ch, yb, cx - cw / 2, cx - cw / 2 + 0.18 * cw) | _rect(
                yy, xx, yb - 0.2 * ch, yb, cx + cw / 2 - 0.18 * cw, cx + cw / 2
            )
            lights = _rect(yy, xx, yb - 0.55 * ch, yb - 0.45 * ch, cx - cw / 2, cx - 0.35 * cw) | _rect(
                yy, xx, yb - 0.55 * ch, yb - 0.45 * ch, cx + 0.35 * cw, cx + cw / 2
            )
            plate = _rect(yy, xx, yb - 0.35 * ch, yb - 0.25 * ch, cx - 0.12 * cw, cx + 0.12 * cw)
            ctex = _texture(rng, H, W, 4)
            _paint(img, lab, wheels, _jitter(rng, (20, 20, 22), 4), CAR)
            _paint(img, lab, body | cabin, paint, CAR, ctex, 0.06)
            _paint(img, lab, window, _jitter(rng, (50, 60, 75), 10), CAR, ctex, 0.25)
            _paint(img, lab, lights, _jitter(rng, (200, 30, 30), 15), CAR)
            _paint(img, lab, plate, _jitter(rng, (225, 225, 220), 8), CAR)

    # every anomaly may be hidden behind nearer objects: then add one in front of everything
    tries = 0
    while anomalies and (lab == VOID).sum() < max(16, 0.004 * H * W) and tries < 5:
        yb = rng.uniform(h0 + 0.3 * (H - h0), H * 1.0)
        _draw_anomaly(rng, img, lab, yy, xx, yb, max(row_scale(yb), 4.0), road_centre(yb), H)
        tries += 1
    amask = lab == VOID  # anomaly pixels not occluded by nearer objects

    # ---- lighting: global exposure, colour cast, horizontal shading, noise
    light = rng.uniform(0.7, 1.2)
    cast = 1.0 + rng.normal(0.0, 0.05, 3).astype(np.float32)
    shade = 1.0 + rng.uniform(-0.25, 0.25) * (xx / W - 0.5)
    img = img * light * cast[None, None, :] * shade[..., None]
    img += rng.normal(0.0, rng.uniform(2.0, 8.0), img.shape).astype(np.float32)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return rgb, lab, amask


# --------------------------------------------------------------------------- the world


def _dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        m = out.copy()
        m[1:] |= out[:-1]
        m[:-1] |= out[1:]
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def road_anomaly_label(anomaly_mask: np.ndarray, void_border: int = 1) -> np.ndarray:
    """RoadAnomaly-style label: 0 in-distribution, 2 anomaly, 255 on a ``void_border``-pixel
    ring just outside each anomaly (the real annotations leave object borders uncertain)."""
    lab = np.zeros(anomaly_mask.shape, np.uint8)
    if void_border > 0:
        lab[_dilate(anomaly_mask, void_border)] = RA_VOID
    lab[anomaly_mask] = RA_ANOMALY
    return lab


def _cityscapes_split(root: Path, split: str, items) -> int:
    from PIL import Image

    n = 0
    for city, idx, rgb, ids in items:
        stem = f"{city}_000000_{idx:06d}"
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
        n += 1
    return n


def write_world(
    out_dir,
    seed: int = 0,
    n_train: int = 160,
    n_val: int = 12,
    n_anomaly: int = 20,
    size: tuple[int, int] = DEFAULT_SIZE,
    void_border: int = 1,
) -> dict:
    """Render the demo world and write it under ``out_dir`` in the real dataset layouts.

    - ``train/leftImg8bit/train/<city>/<city>_000000_NNNNNN_leftImg8bit.png`` and
      ``train/gtFine/train/<city>/<stem>_gtFine_labelTrainIds.png`` (trainIds, 255 void);
    - ``cityscapes/leftImg8bit/val/<city>/...`` + ``cityscapes/gtFine/val/<city>/...``
      (in-distribution scenes, for mIoU);
    - ``anomaly/RoadAnomaly/images/<stem>.jpg`` + ``anomaly/RoadAnomaly/labels_masks/<stem>.png``
      (0 in-distribution, 2 anomaly, 255 void on a thin ring around each anomaly).

    Image ``i`` of split ``s`` is rendered from ``default_rng([seed, s, i])``, so the world
    is identical for equal arguments. Returns paths, counts and the anomaly-pixel fraction.
    """
    from PIL import Image

    out = Path(out_dir)
    H, W = int(size[0]), int(size[1])

    def scenes(split_tag, n, anomalies):
        for i in range(n):
            rng = np.random.default_rng([int(seed), split_tag, i])
            yield i, render_scene(rng, H, W, anomalies)

    train_root = out / "train"
    n_tr = _cityscapes_split(
        train_root,
        "train",
        ((CITIES[i % len(CITIES)], i, rgb, ids) for i, (rgb, ids, _) in scenes(0, n_train, False)),
    )
    val_root = out / "cityscapes"
    n_va = _cityscapes_split(
        val_root,
        "val",
        ((CITIES[i % len(CITIES)], i, rgb, ids) for i, (rgb, ids, _) in scenes(1, n_val, False)),
    )
    ra_root = out / "anomaly" / "RoadAnomaly"
    (ra_root / "images").mkdir(parents=True, exist_ok=True)
    (ra_root / "labels_masks").mkdir(parents=True, exist_ok=True)
    n_pos = n_valid = 0
    for i, (rgb, _, amask) in scenes(2, n_anomaly, True):
        stem = f"demo_anomaly_{i:03d}"
        Image.fromarray(rgb).save(ra_root / "images" / f"{stem}.jpg", quality=95)
        lab = road_anomaly_label(amask, void_border)
        Image.fromarray(lab).save(ra_root / "labels_masks" / f"{stem}.png")
        n_pos += int((lab == RA_ANOMALY).sum())
        n_valid += int((lab != RA_VOID).sum())
    return {
        "root": str(out),
        "train_root": str(train_root),
        "cityscapes_root": str(val_root),
        "road_anomaly_root": str(ra_root),
        "n_train": n_tr,
        "n_val": n_va,
        "n_anomaly": int(n_anomaly),
        "size": [H, W],
        "anomaly_pixel_fraction": n_pos / max(n_valid, 1),
    }


# --------------------------------------------------------------------------- training


def load_cityscapes_split(root, split: str = "train", height: int | None = None):
    """Load ``(images float32 [N,3,h,w] in [0,1], labels int64 [N,h,w])`` from a
    Cityscapes-layout folder. Images go through the tool's ERFNet preprocessing
    (:func:`extract.models.erfnet.preprocess_erfnet`: resize to ``height`` rows with PIL
    bilinear, values in [0, 1], no mean/std normalisation); labels are resized to the same
    size with nearest neighbour. ``height=None`` keeps the stored size."""
    import torch
    from PIL import Image

    from extract.models.erfnet import preprocess_erfnet

    root = Path(root)
    img_paths = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not img_paths:
        raise FileNotFoundError(f"no *_leftImg8bit.png under {root / 'leftImg8bit' / split}")
    xs, ys = [], []
    for p in img_paths:
        city = p.parent.name
        stem = p.name[: -len("_leftImg8bit.png")]
        gp = root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        rgb = np.asarray(Image.open(p).convert("RGB"))
        x = preprocess_erfnet(rgb, height if height is not None else min(rgb.shape[:2]))
        gt = Image.open(gp)
        if gt.size != (x.shape[2], x.shape[1]):
            gt = gt.resize((x.shape[2], x.shape[1]), Image.NEAREST)
        xs.append(x)
        ys.append(torch.from_numpy(np.asarray(gt, np.int64)))
    return torch.stack(xs), torch.stack(ys)


def class_weights(labels, num_channels: int = 20, c: float = 1.10):
    """ENet-style class weights ``1 / ln(c + p_k)`` from the label frequencies ``p_k`` of
    the training set (the official ERFNet training uses such hard-coded weights, with
    weight 0 for the void channel). Classes with no pixel get weight 0."""
    import torch

    lab = labels[labels != VOID]
    counts = torch.bincount(lab.flatten(), minlength=num_channels)[:num_channels].double()
    p = counts / counts.sum().clamp(min=1)
    w = 1.0 / torch.log(c + p)
    w[counts == 0] = 0.0
    return w.float()


def logitnorm_loss(logits, target, tau: float = 0.04, ignore_index: int = VOID, weight=None):
    """Logit Normalisation (Wei et al., ICML 2022): cross-entropy on
    ``logits / (tau * ||logits||_2)``, the norm taken per pixel over the channels."""
    import torch.nn.functional as F

    norm = logits.norm(p=2, dim=1, keepdim=True) + 1e-7
    return F.cross_entropy(logits / (norm * tau), target, weight=weight, ignore_index=ignore_index)


def _new_erfnet(num_classes: int = 20):
    from extract.models.erfnet import ERFNet

    return ERFNet(num_classes=num_classes)


def _save_checkpoint(model, path):
    import torch

    try:
        from extract.models import save_official_checkpoint
    except ImportError:
        save_official_checkpoint = None
    if save_official_checkpoint is not None:
        save_official_checkpoint(model, path, kind="erfnet")
    else:
        torch.save({"module." + k: v for k, v in model.state_dict().items()}, str(path))


def train_erfnet(
    train_root,
    out_checkpoint,
    *,
    steps: int = DEFAULT_TRAIN_STEPS,
    height: int = DEFAULT_TRAIN_HEIGHT,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    loss: str = "ce",
    tau: float = 0.04,
    weighted: bool = True,
    threads: int | None = 2,
    log: Callable[[str], None] | None = None,
    log_every: int = 25,
) -> dict:
    """Train ``ERFNet(num_classes=20)`` from scratch on the CPU on a Cityscapes-layout
    ``train`` split and save it in the official format (``module.``-prefixed state_dict).

    Images are resized to ``height`` rows (bilinear, values in [0, 1], no normalisation);
    random horizontal flips; Adam with a cosine-decayed learning rate; cross-entropy with
    ignore index 255 (channel 19 = void never gets a target, as in the official model),
    weighted by :func:`class_weights` when ``weighted`` (as the official training weights
    its classes), or ``loss='logitnorm'`` (temperature ``tau``). ``threads`` sets
    ``torch.set_num_threads`` for the run (restored afterwards). Batches are drawn from a seeded generator,
    torch is seeded and deterministic algorithms are requested, so equal arguments give
    identical weights on the same machine and thread count. Returns statistics: final
    loss (mean of the last 10 % of steps), pixel accuracy of the trained model (eval mode)
    on the training images, seconds, and the settings used.
    """
    import torch
    import torch.nn.functional as F

    if loss not in ("ce", "logitnorm"):
        raise ValueError(f"loss must be 'ce' or 'logitnorm', not {loss!r}")
    log = log or (lambda msg: None)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    t0 = time.perf_counter()
    try:
        torch.manual_seed(seed)
        x_all, y_all = load_cityscapes_split(train_root, "train", height)
        n = x_all.shape[0]
        weights = class_weights(y_all) if weighted else None
        model = _new_erfnet(20)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))) * 0.95 + 0.05
        )
        gen = torch.Generator().manual_seed(seed)
        losses = []
        order = torch.randperm(n, generator=gen)
        pos = 0
        for step in range(steps):
            if pos + batch_size > n:
                order = torch.randperm(n, generator=gen)
                pos = 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            xb, yb = x_all[idx], y_all[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            if flip.any():
                xb = xb.clone()
                yb = yb.clone()
                xb[flip] = xb[flip].flip(-1)
                yb[flip] = yb[flip].flip(-1)
            out = model(xb)
            if loss == "ce":
                lval = F.cross_entropy(out, yb, weight=weights, ignore_index=VOID)
            else:
                lval = logitnorm_loss(out, yb, tau=tau, weight=weights)
            opt.zero_grad(set_to_none=True)
            lval.backward()
            opt.step()
            sched.step()
            losses.append(float(lval.detach()))
            if (step + 1) % log_every == 0 or step == 0 or step + 1 == steps:
                log(f"step {step + 1}/{steps}  loss {losses[-1]:.4f}  {time.perf_counter() - t0:.1f}s")
        train_seconds = time.perf_counter() - t0
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for i in range(0, n, 16):
                pred = model(x_all[i : i + 16])[:, :NUM_CLASSES].argmax(1)
                valid = y_all[i : i + 16] != VOID
                correct += int((pred[valid] == y_all[i : i + 16][valid]).sum())
                total += int(valid.sum())
        out_checkpoint = Path(out_checkpoint)
        out_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(model, out_checkpoint)
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "checkpoint": str(out_checkpoint),
        "steps": int(steps),
        "height": int(height),
        "batch_size": int(batch_size),
        "n_images": int(n),
        "loss": loss,
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "pixel_accuracy": correct / max(total, 1),
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0,
    }
