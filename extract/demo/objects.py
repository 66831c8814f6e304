"""Things standing on the demo scene's ground: poles, persons, cars and the unseen anomalies.

:func:`place_things` draws what stands where (a row each), :func:`draw_things` paints them
far to near so that nearer ones occlude farther ones, and :func:`reveal_anomaly` adds an
anomaly in front of everything when nearer objects hid them all. Each object is scaled by
the road's half-width at its row (:meth:`extract.demo.ground.Ground.half_width`).
Anomalies (saturated blobs, cow-like animals, traffic cones, boxes with loud textures) are
marked void in the trainIds. Imports only the demo's classes, drawing primitives and ground.
"""

from __future__ import annotations

import math

import numpy as np

from extract.demo.classes import CAR, PERSON, POLE, VOID
from extract.demo.ground import Ground
from extract.demo.paint import Canvas, anomaly_colour, ellipse, jitter, paint, rect, texture
from extract.datasets.synth import smooth_noise

ANOMALY_KINDS = ("blob", "animal", "cone", "box")
ANOMALY_SIZE = (0.18, 0.45)  # anomaly size as a fraction of the road width where it stands


def place_things(rng: np.random.Generator, ground: Ground, anomalies: bool) -> list[tuple[str, float]]:
    """``(kind, row)`` of every object, sorted far to near: poles and persons on the
    sidewalks, cars on the road and, with ``anomalies``, one to three unseen objects."""
    h0, H = ground.horizon, ground.height
    things = []
    for _ in range(rng.integers(0, 4)):
        things.append(("pole", rng.uniform(h0 + 0.1 * (H - h0), H * 1.02)))
    for _ in range(rng.integers(0, 5)):
        things.append(("person", rng.uniform(h0 + 0.15 * (H - h0), H * 1.05)))
    for _ in range(rng.integers(0, 5)):
        things.append(("car", rng.uniform(h0 + 0.08 * (H - h0), H * 1.1)))
    if anomalies:  # mostly on the road
        for _ in range(int(rng.integers(1, 4))):
            things.append(("anomaly", rng.uniform(h0 + 0.3 * (H - h0), H * 1.0)))
    # far to near: nearer objects occlude farther ones (a stable sort keeps draw order)
    things.sort(key=lambda it: it[1])
    return things


def draw_things(rng: np.random.Generator, canvas: Canvas, ground: Ground, things: list[tuple[str, float]]) -> None:
    """Paint ``things`` (:func:`place_things`) in order; those too far to see are skipped."""
    for kind, yb in things:
        if kind == "anomaly":
            _draw_anomaly(rng, canvas, ground, yb)
            continue
        hs = ground.half_width(yb)
        if hs < 1.0:
            continue
        side = -1 if rng.random() < 0.5 else 1
        if kind == "pole":
            _draw_pole(rng, canvas, ground, yb, hs, side)
        elif kind == "person":
            _draw_person(rng, canvas, ground, yb, hs, side)
        else:
            _draw_car(rng, canvas, ground, yb, hs, side)


def reveal_anomaly(rng: np.random.Generator, canvas: Canvas, ground: Ground) -> None:
    """Every anomaly may be hidden behind nearer objects: then add one in front of
    everything (up to five tries until enough pixels are void)."""
    H, W = canvas.height, canvas.width
    h0 = ground.horizon
    tries = 0
    while (canvas.lab == VOID).sum() < max(16, 0.004 * H * W) and tries < 5:
        yb = rng.uniform(h0 + 0.3 * (H - h0), H * 1.0)
        _draw_anomaly(rng, canvas, ground, yb)
        tries += 1


def _draw_pole(rng, canvas: Canvas, ground: Ground, yb, hs, side) -> None:
    """A grey pole on the sidewalk of ``side``, half the time with a sign on top."""
    yy, xx, H = canvas.yy, canvas.xx, canvas.height
    sw = ground.sidewalk_of(side)
    px = ground.centre(yb) + side * hs * (1 + sw * rng.uniform(0.3, 0.9))
    pw = max(2.0 * H / 128, 0.05 * hs)
    ph = hs * rng.uniform(1.8, 3.0)
    m = rect(yy, xx, yb - ph, yb, px - pw / 2, px + pw / 2)
    paint(canvas, m, jitter(rng, (95, 95, 100), 12), POLE)
    if rng.random() < 0.5:  # a sign
        sm = rect(yy, xx, yb - ph, yb - ph + 3 * pw, px - 1.5 * pw, px + 1.5 * pw)
        paint(canvas, sm, jitter(rng, (90, 90, 100), 12), POLE)


def _draw_person(rng, canvas: Canvas, ground: Ground, yb, hs, side) -> None:
    """A person (legs, body, head) on the sidewalk of ``side`` or crossing the road."""
    yy, xx = canvas.yy, canvas.xx
    if rng.random() < 0.35:  # crossing the road: the road is not only for cars
        px = ground.centre(yb) + rng.uniform(-0.9, 0.9) * hs
    else:
        sw = ground.sidewalk_of(side)
        px = ground.centre(yb) + side * hs * (1 + sw * rng.uniform(0.2, 0.8))
    ph = hs * rng.uniform(0.7, 1.0)
    bw = 0.28 * ph
    cloth = jitter(
        rng, [(40, 40, 50), (90, 60, 50), (60, 70, 110), (120, 120, 120), (150, 40, 40)][rng.integers(5)], 15
    )
    legs = rect(yy, xx, yb - 0.45 * ph, yb, px - bw / 2, px - bw / 10) | rect(
        yy, xx, yb - 0.45 * ph, yb, px + bw / 10, px + bw / 2
    )
    body = ellipse(yy, xx, yb - 0.65 * ph, px, 0.22 * ph, bw / 2)
    head = ellipse(yy, xx, yb - 0.9 * ph, px, 0.09 * ph, 0.08 * ph)
    paint(canvas, legs, jitter(rng, (45, 45, 60), 10), PERSON)
    paint(canvas, body, cloth, PERSON)
    paint(canvas, head, jitter(rng, (200, 160, 130), 20), PERSON)


def _draw_car(rng, canvas: Canvas, ground: Ground, yb, hs, side) -> None:
    """A car seen from behind, on the road (sometimes parked half on the sidewalk of ``side``),
    with its shadow on the road."""
    yy, xx, img, H, W = canvas.yy, canvas.xx, canvas.img, canvas.height, canvas.width
    cw = 2 * hs * rng.uniform(0.28, 0.42)
    ch = cw * rng.uniform(0.6, 0.85)
    if rng.random() < 0.15:  # parked half on the sidewalk
        cx = ground.centre(yb) + side * hs * rng.uniform(0.9, 1.1)
    else:
        cx = ground.centre(yb) + rng.uniform(-0.55, 0.55) * hs
    colour = jitter(
        rng,
        [(235, 235, 235), (30, 30, 35), (150, 150, 155), (110, 25, 30), (30, 45, 90), (90, 90, 95)][rng.integers(6)],
        10,
    )
    shadow = ellipse(yy, xx, yb, cx, 0.06 * ch, 0.55 * cw) & ground.road
    img[shadow] *= 0.55
    body = rect(yy, xx, yb - 0.62 * ch, yb - 0.12 * ch, cx - cw / 2, cx + cw / 2)
    ctop = yb - ch
    cab_t = np.clip((yy - ctop) / (0.38 * ch), 0, 1)
    cab_half = cw * (0.34 + 0.12 * cab_t)
    cabin = (yy >= ctop) & (yy < yb - 0.62 * ch) & (np.abs(xx - cx) < cab_half)
    window = cabin & (yy >= ctop + 0.08 * ch) & (np.abs(xx - cx) < cab_half - 0.05 * cw)
    wheels = rect(yy, xx, yb - 0.2 * ch, yb, cx - cw / 2, cx - cw / 2 + 0.18 * cw) | rect(
        yy, xx, yb - 0.2 * ch, yb, cx + cw / 2 - 0.18 * cw, cx + cw / 2
    )
    lights = rect(yy, xx, yb - 0.55 * ch, yb - 0.45 * ch, cx - cw / 2, cx - 0.35 * cw) | rect(
        yy, xx, yb - 0.55 * ch, yb - 0.45 * ch, cx + 0.35 * cw, cx + cw / 2
    )
    plate = rect(yy, xx, yb - 0.35 * ch, yb - 0.25 * ch, cx - 0.12 * cw, cx + 0.12 * cw)
    ctex = texture(rng, H, W, 4)
    paint(canvas, wheels, jitter(rng, (20, 20, 22), 4), CAR)
    paint(canvas, body | cabin, colour, CAR, ctex, 0.06)
    paint(canvas, window, jitter(rng, (50, 60, 75), 10), CAR, ctex, 0.25)
    paint(canvas, lights, jitter(rng, (200, 30, 30), 15), CAR)
    paint(canvas, plate, jitter(rng, (225, 225, 220), 8), CAR)


def _draw_anomaly(rng, canvas: Canvas, ground: Ground, yb) -> None:
    """Paint one unseen object standing at row ``yb`` and mark it void: a loud blob, a
    cow-like animal, a cone or a checkered box, mostly on the road, sometimes on a sidewalk."""
    hs, centre_x, H = max(ground.half_width(yb), 4.0), ground.centre(yb), canvas.height
    on_sidewalk = rng.random() < 0.15
    if on_sidewalk:
        side = -1 if rng.random() < 0.5 else 1
        cx = centre_x + side * hs * rng.uniform(1.05, 1.3)
    else:
        cx = centre_x + rng.uniform(-0.7, 0.7) * hs
    size = max(8.0 * H / 128, 2 * hs * rng.uniform(*ANOMALY_SIZE))
    kind = ANOMALY_KINDS[rng.integers(len(ANOMALY_KINDS))]
    m = _ANOMALIES[kind](rng, canvas, yb, cx, size)
    canvas.lab[m] = VOID


def _blob(rng, canvas: Canvas, yb, cx, size):
    """A loud ellipse with stripes or spots."""
    yy, xx, img = canvas.yy, canvas.xx, canvas.img
    ry, rx = size * rng.uniform(0.3, 0.55), size * rng.uniform(0.4, 0.7)
    m = ellipse(yy, xx, yb - ry, cx, ry, rx)
    c1, c2 = anomaly_colour(rng), anomaly_colour(rng)
    if rng.random() < 0.5:
        pat = np.sin((xx * rng.uniform(0.5, 1.5) + yy) * (6.0 / size) * math.pi) > 0
    else:
        pat = smooth_noise(rng, canvas.height, canvas.width, max(size / 4, 1.5)) > 0.2
    col = np.where(pat[..., None], c2, c1)
    img[m] = col[m]
    return m


def _animal(rng, canvas: Canvas, yb, cx, size):
    """Cow-like: body, head, legs, patches."""
    yy, xx, img, H, W = canvas.yy, canvas.xx, canvas.img, canvas.height, canvas.width
    bh, bwid = size * 0.45, size * rng.uniform(0.8, 1.1)
    top = yb - size * 0.85
    body = ellipse(yy, xx, top + bh / 2, cx, bh / 2, bwid / 2)
    hx = cx + (bwid * 0.55 if rng.random() < 0.5 else -bwid * 0.55)
    head = ellipse(yy, xx, top + bh * 0.2, hx, size * 0.15, size * 0.13)
    legs = np.zeros((H, W), bool)
    for lx in (-0.38, -0.2, 0.2, 0.38):
        legs |= rect(yy, xx, top + bh * 0.8, yb, cx + lx * bwid - size * 0.04, cx + lx * bwid + size * 0.04)
    m = body | head | legs
    c1 = jitter(rng, [(235, 230, 220), (120, 70, 35), (25, 20, 20)][rng.integers(3)], 10)
    c2 = jitter(rng, [(25, 20, 20), (240, 240, 235), (170, 110, 50)][rng.integers(3)], 10)
    patches = smooth_noise(rng, H, W, max(size / 5, 1.5)) > 0.15
    img[m] = np.where(patches[..., None], c2, c1)[m]
    return m


def _cone(rng, canvas: Canvas, yb, cx, size):
    """Orange triangle with white bands on a dark base."""
    yy, xx, img = canvas.yy, canvas.xx, canvas.img
    ch, cw = size * rng.uniform(0.9, 1.3), size * rng.uniform(0.5, 0.7)
    rel = np.clip((yb - yy) / ch, 0, 1)
    tri = (yy <= yb) & (yy >= yb - ch) & (np.abs(xx - cx) <= cw / 2 * (1 - rel) + 0.5)
    base = rect(yy, xx, yb - 0.08 * ch, yb, cx - cw * 0.6, cx + cw * 0.6)
    m = tri | base
    orange = jitter(rng, (250, 110, 20), 12)
    band = ((rel * 4.0) % 1.0 > 0.6) & (rel > 0.15) & (rel < 0.8)
    col = np.where(band[..., None], np.array([245, 245, 245], np.float32), orange)
    img[m] = col[m]
    img[base] = jitter(rng, (35, 35, 35), 5)
    return m


def _box(rng, canvas: Canvas, yb, cx, size):
    """Box with a checkerboard of two loud colours."""
    yy, xx, img = canvas.yy, canvas.xx, canvas.img
    bh, bwid = size * rng.uniform(0.5, 0.9), size * rng.uniform(0.6, 1.1)
    m = rect(yy, xx, yb - bh, yb, cx - bwid / 2, cx + bwid / 2)
    c1, c2 = anomaly_colour(rng), anomaly_colour(rng)
    k = max(bwid / rng.uniform(3, 6), 1.0)
    chk = ((np.floor((xx - cx) / k) + np.floor((yy - yb) / k)) % 2) == 0
    img[m] = np.where(chk[..., None], c1, c2)[m]
    return m


_ANOMALIES = {"blob": _blob, "animal": _animal, "cone": _cone, "box": _box}
