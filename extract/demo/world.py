"""The demo world on disk: road scenes written in the real dataset layouts, and read back.

:func:`write_world` renders scenes with :func:`extract.demo.scene.render_scene` and writes
them as the tool's real readers expect them (Cityscapes ``leftImg8bit`` / ``gtFine`` for
training and in-distribution validation, ``RoadAnomaly`` ``images`` / ``labels_masks`` for
anomalies); the rest of the tool then treats these files exactly like the real ones. Image
``i`` of split ``s`` is rendered from its own ``numpy.random.default_rng([seed, s, i])``
stream, so a world is identical for equal arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.demo.scene import render_scene

# RoadAnomaly label convention: 0 in-distribution, 2 anomaly, anything else void.
RA_ID, RA_ANOMALY, RA_VOID = 0, 2, 255

DEFAULT_SIZE = (128, 256)  # (H, W) of the rendered world, aspect 1:2 like Cityscapes
CITIES = ("demotown", "synthburg")


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
    n_train: int = 320,
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


def read_cityscapes_split(root, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The frames of a Cityscapes-layout folder as stored: ``(rgb uint8 (N, H, W, 3),
    trainIds uint8 (N, H, W))``, sorted by path (``leftImg8bit/<split>/<city>/*_leftImg8bit.png``
    with ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``). All frames must share
    one size, as the demo world writes them."""
    from PIL import Image

    root = Path(root)
    img_paths = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not img_paths:
        raise FileNotFoundError(f"no *_leftImg8bit.png under {root / 'leftImg8bit' / split}")
    rgbs, ids = [], []
    for p in img_paths:
        stem = p.name[: -len("_leftImg8bit.png")]
        gp = root / "gtFine" / split / p.parent.name / f"{stem}_gtFine_labelTrainIds.png"
        rgbs.append(np.asarray(Image.open(p).convert("RGB")))
        ids.append(np.asarray(Image.open(gp)))
    shapes = {a.shape[:2] for a in rgbs} | {a.shape for a in ids}
    if len(shapes) != 1:
        raise ValueError(f"{root}: frames and labels of split {split!r} differ in size: {sorted(shapes)}")
    return np.stack(rgbs), np.stack(ids)
