"""The demo world's procedural road scene: :func:`render_scene` draws one frame.

Classes use Cityscapes trainIds (road 0, sidewalk 1, building 2, pole 5, vegetation 8,
sky 10, person 11, car 13). Anomalies are objects never seen in training (saturated
blobs, cow-like animals, traffic cones, boxes with loud textures), mostly on the road;
they are void (255) in the trainIds and returned as a separate mask. A scene is a pure
function of the state of its ``numpy.random.Generator``.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from extract.synth import smooth_noise

# Cityscapes trainIds used by the world.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 8, 10, 11, 13
VOID = 255
NUM_CLASSES = 19  # Cityscapes trainIds 0..18; ERFNet has a 20th (void) output channel
WORLD_CLASSES = (ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR)

ANOMALY_KINDS = ("blob", "animal", "cone", "box")
ANOMALY_SIZE = (0.18, 0.45)  # anomaly size as a fraction of the road width where it stands


# --------------------------------------------------------------------------- helpers


def _texture(rng, h, w, scale):
    """Multi-octave texture in about [-1, 1], ``scale`` = largest cell in pixels."""
    out = np.zeros((h, w), np.float32)
    amp, tot, cell = 1.0, 0.0, float(scale)
    while cell >= 1.5:
        out += amp * smooth_noise(rng, h, w, cell)
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
            pat = smooth_noise(rng, H, W, max(size / 4, 1.5)) > 0.2
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
        patches = smooth_noise(rng, H, W, max(size / 5, 1.5)) > 0.15
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
            bump = smooth_noise(rng, 1, W, max(2.0, W / 40))[0] * 0.15 * H
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


