"""Tiny synthetic datasets in the exact real folder layouts (``extract datasets synth``).

Images are real encoded files (png/jpg/webp as the manifest says) and labels carry the
*raw* values of the real dataset (e.g. RoadAnomaly's 2 for anomaly), so every test runs
through the same readers and label mappings as real data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from schemas.manifest import VOID, DatasetSpec, Layout

_SAVE_OPTS = {"jpg": {"quality": 92}, "webp": {"quality": 90}, "png": {}}
_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise in [-1, 1], shape (h, w): a uniform random grid with one node
    every ``cell`` pixels, bilinearly interpolated (also the demo world's texture source)."""
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


def synth_frame(spec: DatasetSpec, rng: np.random.Generator, size: tuple[int, int],
                void_off_road: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, canonical label) pair of the dataset's kind."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    noise = np.stack([smooth_noise(rng, h, w, 16.0) for _ in range(3)], axis=-1) * 0.5 + 0.5  # (h, w, 3)
    image = noise * 0.6 + rng.random((h, w, 3)) * 0.15
    if spec.kind == "semantic":
        label = np.zeros((h, w), dtype=np.uint8)
        n_bands = rng.integers(3, 8)
        cuts = np.sort(rng.integers(0, h, n_bands))
        classes = rng.integers(0, 19, n_bands + 1)
        band = np.searchsorted(cuts, yy)
        label = classes[band].astype(np.uint8)
        label[(xx < w // 10)] = VOID
        image += (label[..., None] % 7) / 20.0
    else:
        label = np.zeros((h, w), dtype=np.uint8)
        if rng.random() < 0.85:  # some frames have no anomaly, as in Fishyscapes
            cy, cx = rng.integers(h // 3, h - h // 6), rng.integers(w // 6, w - w // 6)
            ry, rx = max(2, h // rng.integers(6, 12)), max(2, w // rng.integers(8, 16))
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            label[blob] = 1
            image[blob] = image[blob] * 0.3 + rng.random(3) * 0.7
            ring = (((yy - cy) / (ry + 1.5)) ** 2 + ((xx - cx) / (rx + 1.5)) ** 2 <= 1.0) & ~blob
            label[ring] = VOID
        label[: max(1, h // 12)] = VOID  # a void strip, like the ego-vehicle / sky rims
        if void_off_road:
            road = np.abs(xx - w / 2) <= (w * 0.15 + (yy / h) * w * 0.3)
            road &= yy >= h // 3
            label[~road] = VOID
    image = np.clip(image * 255, 0, 255).astype(np.uint8)
    return image, label


def _colour(label: np.ndarray) -> np.ndarray:
    """An RGB rendering of a canonical label, like the releases' ``_color.png`` masks."""
    palette = np.zeros((256, 3), np.uint8)
    palette[1] = (255, 102, 0)
    palette[VOID] = (255, 255, 255)
    palette[2:VOID] = np.random.default_rng(0).integers(0, 256, (VOID - 2, 3))
    return palette[label]


def _save_image(image: np.ndarray, path: Path, ext: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format=_PIL_FORMAT[ext], **_SAVE_OPTS[ext])


def write_synth_dataset(
    spec: DatasetSpec,
    out_root: str | os.PathLike,
    n: int,
    size: tuple[int, int],
    seed: int = 0,
    sizes: list[tuple[int, int]] | None = None,
    layout: str | Layout | None = None,
) -> list[Path]:
    """Write ``n`` frames of ``spec`` under ``out_root`` in one of its layouts (default: the
    first); returns the image paths of the frames.

    The layout's first folder spelling and first image extension are used; labels carry the
    raw values (``synth.raw_values``). The layout's ``synth.unlabelled`` images (no label)
    and ``synth.extra_files`` (colour masks) are written too. For one seed, the frames of
    every layout hold the same pixels and ids, so their caches are interchangeable.
    ``sizes`` gives per-frame sizes (ragged datasets); otherwise every frame is ``size``.
    """
    lay = layout if isinstance(layout, Layout) else spec.layout(layout)
    opts = lay.synth
    rng = np.random.default_rng(seed)
    root = Path(out_root) / lay.folders[0]
    ext = lay.image_exts[0] if lay.image_exts else "png"
    groups_opts = opts.get("groups", {})
    raw_of = {c: lay.labels.raw_for(c) for c in set(lay.labels.values.values())}
    raw_of.update({int(c): int(r) for c, r in (opts.get("raw_values") or {}).items()})
    written = []
    for i in range(n):
        groups = {k: v[i % len(v)] for k, v in groups_opts.items()}
        fid = opts.get("id", "synth_{i:04d}").format(i=i, n=i + 1, **groups)
        groups.update(id=fid, ext=ext)
        image, canon = synth_frame(spec, rng, sizes[i] if sizes else size, bool(opts.get("void_off_road")))
        raw = np.zeros_like(canon)
        for c in np.unique(canon):
            raw[canon == c] = raw_of[int(c)]
        img_path = root / lay.image_template.format(**groups)
        lbl_path = root / lay.label_template.format(**groups)
        _save_image(image, img_path, ext)
        lbl_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw, mode="L").save(lbl_path, format="PNG")
        for template in opts.get("extra_files", ()):
            Image.fromarray(_colour(canon)).save(root / template.format(**groups), format="PNG")
        written.append(img_path)
    unlabelled = opts.get("unlabelled") or {}
    for i in range(int(unlabelled.get("n", 0))):
        groups = {k: v[i % len(v)] for k, v in groups_opts.items()}
        groups.update(id=unlabelled["id"].format(i=i, n=i + 1, **groups), ext=ext)
        image, _ = synth_frame(spec, rng, size, bool(opts.get("void_off_road")))
        _save_image(image, root / lay.image_template.format(**groups), ext)
    return written


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W); ValueError names the bad text."""
    try:
        h, w = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like HxW (e.g. 64x128), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return h, w
