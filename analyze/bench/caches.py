"""Synthetic caches at real resolution for the study benchmark (:mod:`analyze.bench.study`).

Written through :mod:`schemas.cache` like ``extract run`` writes them: 1024x2048 frames;
ERFNet-shaped pixel caches (20 channels of float16 logits at 512x1024, the last one void)
and EoMT-L-shaped query caches (1024 crops, 2 per frame, 100 queries, 19 classes + no-object,
float16 mask logits at 256x256). Anomaly caches have a void band at the top (~8 %) and a few
elliptic anomaly objects (~2 % of the pixels) whose logits are flatter (ERFNet) or whose
masks are all off (EoMT), so the scorers find them, the best-F1 threshold predicts blobs and
the component metrics see components of realistic sizes. ``informative=False`` leaves the
objects' logits like the rest's, as a random-weight model scores them: the scorers do not
find them and the best-F1 threshold sits low (most pixels predicted); semantic caches (Cityscapes val's
shape) have class labels instead. Spatially smooth logits (a coarse field repeated, plus
noise) keep the cache cheap to make and the content image-like; the numbers mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FRAME = (1024, 2048)
ERFNET_LOGITS = (20, 512, 1024)  # channels (19 classes + void), rows, columns
EOMT = dict(crop=1024, queries=100, classes=19, mask=256)
KINDS = ("pixel", "query")


def _provenance(model: str, dataset: str):
    from schemas.cache import Provenance

    cfg = {"num_classes": 20} if model == "erfnet" else {"num_classes": EOMT["classes"]}
    return Provenance(model=model, model_config=cfg, checkpoint_sha256="0" * 64, dataset=dataset,
                      manifest_digest="0" * 64, preprocessing={"bench": "study"},
                      versions={"package": "bench", "torch": "-", "timm": "-", "zarr": "-"}, device="cpu",
                      dtype="fp32", created="2026-01-01T00:00:00+00:00", checkpoint_file=f"{model}_bench.pth")


def anomaly_labels(rng: np.random.Generator, size: tuple[int, int] = FRAME) -> np.ndarray:
    """(H, W) uint8: 0 road scene, 1 anomaly (2 to 5 ellipses, ~2 % of the pixels), 255 void band on top."""
    h, w = size
    label = np.zeros((h, w), np.uint8)
    label[: int(0.08 * h)] = 255
    rows, cols = np.ogrid[:h, :w]
    for _ in range(int(rng.integers(2, 6))):
        ry, rx = rng.integers(h // 40, h // 12), rng.integers(w // 80, w // 24)
        cy, cx = rng.integers(h // 3, h - ry), rng.integers(rx, w - rx)
        label[((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1] = 1
    return label


def _dataset(label_kind: str) -> str:
    """The manifest's in-distribution dataset for semantic labels; for anomaly labels the report's
    1024x2048 anomaly dataset with the most frames (Fishyscapes Lost & Found)."""
    from schemas.manifest import in_distribution_dataset, load_manifest, report_order

    specs = load_manifest()
    if label_kind == "semantic":
        return in_distribution_dataset(specs)
    return max((n for n in report_order(specs) if specs[n].size == FRAME), key=lambda n: specs[n].count)


def _smooth(rng: np.random.Generator, channels: int, shape: tuple[int, int], cell: int, scale: float) -> np.ndarray:
    """(channels, *shape) float32: a coarse normal field repeated ``cell`` times, plus noise."""
    ch, cw = -(-shape[0] // cell), -(-shape[1] // cell)
    coarse = rng.normal(size=(channels, ch, cw)).astype(np.float32) * scale
    field = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, : shape[0], : shape[1]]
    return field + rng.normal(size=(channels, *shape)).astype(np.float32) * (0.3 * scale)


def build_cache(path: str | Path, kind: str, n_frames: int, label_kind: str = "anomaly", seed: int = 0,
                scale: int = 1, dataset: str | None = None, informative: bool = True):
    """Write an ``n_frames`` cache of ``kind`` (``pixel`` ERFNet, ``query`` EoMT) at ``path``; every
    frame done. ``label_kind``: ``anomaly`` or ``semantic`` (dataset: :func:`_dataset`);
    ``dataset`` names another. Frame ``i`` depends only on ``(seed, i)``,
    so a 1-frame cache holds the first frame of the 8-frame one. ``scale`` divides every size
    (frame, logits, crop, mask; ``16``: 64x128 frames for tests), and the query count too.
    ``informative=False``: the anomaly objects' logits have the same statistics as the rest
    (the labels and every random draw stay those of the informative cache)."""
    from schemas.cache import CacheSpec, create_cache, mark_done, thumbnail_size
    from schemas.cache import write_frame_common, write_frame_pixel, write_frame_query

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    model = "erfnet" if kind == "pixel" else "eomt"
    dataset = dataset or _dataset(label_kind)
    frame = (FRAME[0] // scale, FRAME[1] // scale)
    logit_size = (ERFNET_LOGITS[1] // scale, ERFNET_LOGITS[2] // scale)
    crop, m, queries = EOMT["crop"] // scale, EOMT["mask"] // scale, max(4, EOMT["queries"] // scale)
    ids = tuple(f"f{i:04d}" for i in range(n_frames))
    common = dict(label_kind=label_kind, frame_ids=ids, sizes=(frame,) * n_frames,
                  provenance=_provenance(model, dataset))
    if kind == "pixel":
        spec = CacheSpec(kind="pixel", n_classes=19, n_channels=20, void_channel=19,
                         logit_sizes=(logit_size,) * n_frames, **common)
    else:
        spec = CacheSpec(kind="query", n_classes=EOMT["classes"], crop_size=crop, n_queries=queries,
                         mask_size=m, **common)
    root = create_cache(path, spec, compression="lz4")
    thumb = np.zeros((*thumbnail_size(*frame), 3), np.uint8)
    for i in range(n_frames):
        rng = np.random.default_rng([seed, i])
        if label_kind == "anomaly":
            label = anomaly_labels(rng, frame)
        else:
            label = rng.integers(0, 19, size=(16, 32)).astype(np.uint8).repeat(frame[0] // 16, 0).repeat(frame[1] // 32, 1)
            label[: frame[0] // 10] = 255
        if kind == "pixel":
            z = _smooth(rng, ERFNET_LOGITS[0], logit_size, max(2, 32 // scale), 3.0)
            if informative:
                z[:, label[::2, ::2] == 1] *= 0.3  # anomalies: flatter logits (label at half resolution)
            write_frame_pixel(root, spec, i, z.astype(np.float16))
        else:
            n_crops = spec.windows(i).n_crops
            masks = np.stack([_smooth(rng, queries, (m, m), max(2, 16 // scale), 3.0) for _ in range(n_crops)])
            off = label.reshape(m, frame[0] // m, n_crops * m, frame[1] // (n_crops * m)).max(axis=(1, 3)) == 1
            for c in range(n_crops if informative else 0):  # anomalies: every mask off there
                masks[c][:, off[:, c * m : (c + 1) * m]] = -4.0
            cl = (rng.normal(size=(n_crops, queries, EOMT["classes"] + 1)) * 2).astype(np.float32)
            write_frame_query(root, spec, i, cl, masks.astype(np.float16))
        write_frame_common(root, spec, i, label, thumb)
        mark_done(root, i)
    return root, spec
