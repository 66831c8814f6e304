"""Builders for test inputs: provenance records and caches written through the schema."""

from __future__ import annotations

import numpy as np

from schemas.cache import CacheSpec, Provenance, create_cache, mark_done, thumbnail_size
from schemas.cache import write_frame_common, write_frame_pixel, write_frame_query


def provenance(model="erfnet", dataset="road_anomaly", **over) -> Provenance:
    base = dict(
        model=model,
        model_config={"num_classes": 20},
        checkpoint_sha256="0" * 64,
        dataset=dataset,
        manifest_digest="1" * 64,
        preprocessing={"height": 16},
        versions={"package": "0.1.0", "torch": "2", "timm": "1", "zarr": "3"},
        device="cpu",
        dtype="fp32",
        created="2026-01-01T00:00:00+00:00",
    )
    base.update(over)
    return Provenance(**base)


def random_labels(rng, size, p_anomaly=0.1, p_void=0.1, label_kind="anomaly"):
    h, w = size
    if label_kind == "semantic":
        lab = rng.integers(0, 19, size=(h, w)).astype(np.uint8)
    else:
        lab = (rng.random((h, w)) < p_anomaly).astype(np.uint8)
    lab[rng.random((h, w)) < p_void] = 255
    return lab


def pixel_cache(path, sizes, rng, n_channels=20, logit_scale=0.5, label_kind="anomaly", done=True, **prov):
    """A pixel (ERFNet-like) cache with random logits at half resolution and random labels."""
    logit_sizes = [(max(1, h // 2), max(1, w // 2)) for h, w in sizes]
    spec = CacheSpec(
        kind="pixel", label_kind=label_kind, frame_ids=tuple(f"f{i:03d}" for i in range(len(sizes))),
        sizes=tuple(tuple(s) for s in sizes), provenance=provenance(**prov), n_classes=n_channels - 1,
        n_channels=n_channels, void_channel=n_channels - 1, logit_sizes=tuple(logit_sizes),
    )
    root = create_cache(path, spec)
    for i, (size, lsize) in enumerate(zip(sizes, logit_sizes)):
        lab = random_labels(rng, size, label_kind=label_kind)
        logits = (rng.normal(size=(n_channels, *lsize)) * 3 * logit_scale).astype(np.float16)
        write_frame_pixel(root, spec, i, logits)
        write_frame_common(root, spec, i, lab, np.zeros((*thumbnail_size(*size), 3), np.uint8))
        if done:
            mark_done(root, i)
    return root, spec


def query_outputs(rng, n, n_queries, n_classes, mask_size, confident=0.0):
    """Random class and mask logits of ``n`` crops; a ``confident`` fraction of the queries gets
    +8 on one class logit (a trained model's confident queries: Mask2Anomaly keeps some)."""
    cl = rng.normal(size=(n, n_queries, n_classes + 1)).astype(np.float32) * 2
    if confident:
        pick = rng.random((n, n_queries)) < confident
        cls = rng.integers(0, n_classes + 1, size=(n, n_queries))
        cl[pick, cls[pick]] += 8
    ml = (rng.normal(size=(n, n_queries, mask_size, mask_size)) * 3).astype(np.float16)
    return cl, ml


def query_cache(path, sizes, rng, crop=32, n_queries=6, n_classes=5, mask_size=8, label_kind="anomaly", done=True,
                hflip=False, confident=0.0, **prov):
    """A query (EoMT-like) cache with random class and mask logits (``hflip``: and a flipped pass)."""
    spec = CacheSpec(
        kind="query", label_kind=label_kind, frame_ids=tuple(f"f{i:03d}" for i in range(len(sizes))),
        sizes=tuple(tuple(s) for s in sizes), provenance=provenance(model="eomt", **prov), n_classes=n_classes,
        crop_size=crop, n_queries=n_queries, mask_size=mask_size, hflip=hflip,
    )
    root = create_cache(path, spec)
    for i, size in enumerate(sizes):
        n = spec.windows(i).n_crops
        cl, ml = query_outputs(rng, n, n_queries, n_classes, mask_size, confident)
        write_frame_query(root, spec, i, cl, ml)
        if hflip:
            write_frame_query(root, spec, i, *query_outputs(rng, n, n_queries, n_classes, mask_size, confident), flip=True)
        write_frame_common(root, spec, i, random_labels(rng, size, label_kind=label_kind),
                           np.zeros((*thumbnail_size(*size), 3), np.uint8))
        if done:
            mark_done(root, i)
    return root, spec


def signal_pixel_cache(path, n_frames, size=(16, 24), seed=0, p_anomaly=0.1, scale=3.0, empty=(), no_anomaly=(),
                       **prov):
    """A pixel cache in which the scorers find the anomalies (anomaly pixels have flatter
    logits, each frame its own confidence), logits at label resolution so that the scorers'
    input is the stored logits; frames in ``empty`` are all void, frames in ``no_anomaly``
    have no anomaly pixel."""
    rng = np.random.default_rng(seed)
    h, w = size
    spec = CacheSpec(
        kind="pixel", label_kind="anomaly", frame_ids=tuple(f"f{i:03d}" for i in range(n_frames)),
        sizes=((h, w),) * n_frames, provenance=provenance(**prov), n_classes=19, n_channels=20, void_channel=19,
        logit_sizes=((h, w),) * n_frames,
    )
    root = create_cache(path, spec)
    rows, cols = np.mgrid[0:h, 0:w]
    for i in range(n_frames):
        lab = random_labels(rng, size, p_anomaly=p_anomaly)
        if i in no_anomaly:
            lab[lab == 1] = 0
        if i in empty:
            lab[:] = 255
        z = rng.normal(size=(20, h, w)) * scale
        z[rng.integers(0, 19, size=(h, w)), rows, cols] += 2 * scale * rng.uniform(0.5, 1.5)  # a confident class
        z[:, lab == 1] *= 0.3  # anomalies: flatter logits
        write_frame_pixel(root, spec, i, z.astype(np.float16))
        write_frame_common(root, spec, i, lab, np.zeros((*thumbnail_size(h, w), 3), np.uint8))
        mark_done(root, i)
    return root, spec


def sigint_default() -> None:
    """``preexec_fn`` of a subprocess a test interrupts with SIGINT: the default disposition, so
    that Python raises KeyboardInterrupt in it. A shell without job control starts background
    jobs with SIGINT ignored, and a Python started so keeps ignoring it (a suite launched as
    ``make test &`` would otherwise see the interrupted command run to its end)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def mask2former_checkpoint(folder, num_labels=19, num_queries=6, shortest_edge=64, longest_edge=128, seed=0):
    """A random-weight, tiny Mask2Former (Swin backbone, one block per stage) and its image processor,
    written with ``save_pretrained`` into ``folder`` (what ``extract run --model mask2former`` reads)."""
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

    backbone = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, num_queries=num_queries, hidden_dim=32,
                               mask_feature_size=32, feature_size=32, encoder_feedforward_dim=32, encoder_layers=1,
                               decoder_layers=2, num_attention_heads=2, dim_feedforward=32)
    torch.manual_seed(seed)
    Mask2FormerForUniversalSegmentation(config).eval().save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": shortest_edge, "longest_edge": longest_edge}).save_pretrained(folder)
    return folder


def run_analyze(args, code: int = 0):
    """``analyze ARGS`` in-process (click's runner), asserting its exit code; the result."""
    from click.testing import CliRunner

    from analyze.cli.main import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def scored_signal_cache(tmp, n_frames: int, size, seed: int, scorers, temps: str, bootstrap: int):
    """A :func:`signal_pixel_cache` at ``tmp/c.zarr`` scored with ``--bootstrap`` into
    ``tmp/results.parquet`` (sync scheduler, no progress): ``(cache, results path)``."""
    cache, out = tmp / "c.zarr", tmp / "results.parquet"
    signal_pixel_cache(cache, n_frames, size, seed=seed)
    run_analyze(["score", "--cache", cache, "--scorers", ",".join(scorers), "--temps", temps, "--bootstrap",
                 bootstrap, "--out", out, "--no-progress", "--scheduler", "sync"])
    return cache, out

