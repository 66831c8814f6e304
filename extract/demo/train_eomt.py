"""The demo's EoMT: the released architecture at a toy size, trained on the toy world (CPU).

The network is :class:`extract.models.eomt.EoMT` itself (DINOv2-style ViT with registers,
queries joined before the last ``num_blocks`` blocks, class head with no-object, 3-layer
mask MLP, ``log2(patch) - 2`` upscale blocks), only narrower and shallower than the
released ViT-S/B/L: width 128 (two 64-dimensional heads), 6 blocks, patch 16, 128 x 128
crops. It is trained from scratch with EoMT's mask-classification objective
(:mod:`extract.demo.matching`) and saved in the released Lightning checkpoint format
(``{'state_dict': {'network.*', 'criterion.empty_weight'}}``), so ``extract run --model
eomt`` reads its size from the checkpoint and loads it like a released model.

Training follows ``tue-mps/eomt`` where it fits a CPU budget: AdamW (weight decay 0.05),
linear warm-up then polynomial decay (power 0.9), random crops of ``crop`` pixels along the
long side of frames resized as inference resizes them (short side = crop, PIL bilinear)
and horizontal flips; no masked attention (the released models run without it at
inference), no scale or colour jitter (the toy world varies lighting itself).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from extract.demo.matching import LossWeights, mask_classification_loss, sample_masks, semantic_targets
from extract.demo.progress import DEFAULT_EVERY, TrainingProgress
from extract.demo.runtime import batch_indices, deterministic_torch, warmup_poly_lr
from extract.demo.classes import NUM_CLASSES
from extract.demo.settings import EOMT
from extract.demo.world import read_cityscapes_split



def demo_eomt_config(crop: int = 128, embed_dim: int = 128, depth: int = 6, num_blocks: int = 2,
                     num_q: int = 16, patch: int = 16):
    """The toy EoMT's :class:`~extract.models.eomt.EoMTConfig`: 19 Cityscapes classes,
    4 registers, ``embed_dim / 64`` heads (the DINOv2 head size, as the loader infers it)."""
    from extract.models.eomt import HEAD_DIM, EoMTConfig

    return EoMTConfig(embed_dim=embed_dim, depth=depth, num_heads=embed_dim // HEAD_DIM, num_register_tokens=4,
                      patch_size=patch, img_size=crop, num_q=num_q, num_classes=NUM_CLASSES, num_blocks=num_blocks)


def load_frames(root, split: str, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rgb uint8 (N, 3, h, w), trainIds int64 (N, h, w))`` of a Cityscapes-layout split,
    resized as EoMT inference resizes a frame (short side = ``crop``, PIL bilinear; labels
    nearest), so training crops look like the crops ``extract run`` feeds the model."""
    from PIL import Image

    from schemas.windows import frame_windows

    rgbs, ids = read_cityscapes_split(root, split)
    h, w = frame_windows(rgbs.shape[1], rgbs.shape[2], crop).resized
    if (h, w) != rgbs.shape[1:3]:
        rgbs = np.stack([np.asarray(Image.fromarray(x).resize((w, h), Image.BILINEAR)) for x in rgbs])
        ids = np.stack([np.asarray(Image.fromarray(y).resize((w, h), Image.NEAREST)) for y in ids])
    return torch.from_numpy(rgbs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ids.astype(np.int64))


def random_crops(rgb: torch.Tensor, ids: torch.Tensor, crop: int, gen: torch.Generator):
    """One random ``crop`` x ``crop`` window per frame (uniform offsets), flipped
    horizontally with probability 1/2: ``(x float (B, 3, crop, crop) in [0, 1], ids (B, crop, crop))``."""
    b, _, h, w = rgb.shape
    ys = torch.randint(0, h - crop + 1, (b,), generator=gen)
    xs = torch.randint(0, w - crop + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    xb, yb = [], []
    for i in range(b):
        x = rgb[i, :, ys[i] : ys[i] + crop, xs[i] : xs[i] + crop]
        y = ids[i, ys[i] : ys[i] + crop, xs[i] : xs[i] + crop]
        if flip[i]:
            x, y = x.flip(-1), y.flip(-1)
        xb.append(x)
        yb.append(y)
    return torch.stack(xb).float() / 255.0, torch.stack(yb)


def train_eomt(
    train_root,
    out_checkpoint,
    *,
    steps: int = EOMT["steps"],
    batch_size: int = EOMT["batch_size"],
    lr: float = EOMT["lr"],
    weight_decay: float = 0.05,
    warmup: int | None = None,
    crop: int = 128,
    embed_dim: int = 128,
    depth: int = 6,
    num_blocks: int = 2,
    num_q: int = EOMT["num_q"],
    loss_points: int = 64,
    seed: int = 0,
    threads: int | None = EOMT["threads"],
    log: Callable[[str], None] | None = None,
    log_seconds: float = DEFAULT_EVERY,
    log_label: str = "",
) -> dict:
    """Train the toy EoMT (:func:`demo_eomt_config`) from scratch on a Cityscapes-layout
    ``train`` split and save it in the released Lightning format.

    Each step draws ``batch_size`` frames (seeded epoch permutations), cuts one random
    crop of each (:func:`random_crops`), builds one target segment per class present
    (:func:`~extract.demo.matching.semantic_targets`, sampled on a ``loss_points`` x
    ``loss_points`` grid) and minimises EoMT's matched loss
    (:func:`~extract.demo.matching.mask_classification_loss`: 5 BCE + 5 Dice + 2 CE,
    no-object weight 0.1) with AdamW and :func:`~extract.demo.runtime.warmup_poly_lr`
    (``warmup`` defaults to 5 % of the steps). Deterministic for equal arguments on one
    machine (:func:`~extract.demo.runtime.deterministic_torch`). ``log`` receives a progress
    line (:class:`~extract.demo.progress.TrainingProgress`: step, loss and its parts, elapsed,
    time left, prefixed ``log_label: ``) after the first and the last step and at least every
    ``log_seconds`` seconds of training. Returns statistics: first
    and final loss (mean of the last 10 % of steps) and its parts, wall and CPU seconds,
    the settings and the model configuration.
    """
    from extract.models import save_official_checkpoint
    from extract.models.eomt import build_eomt

    log = log or (lambda msg: None)
    schedule = _Schedule(steps, batch_size, lr, weight_decay, max(1, steps // 20) if warmup is None else int(warmup),
                         crop, loss_points, seed)
    cfg = demo_eomt_config(crop, embed_dim, depth, num_blocks, num_q)
    t0, c0 = time.perf_counter(), time.process_time()
    with deterministic_torch(seed, threads):
        rgb_all, ids_all = load_frames(train_root, "train", crop)
        model = build_eomt(cfg)
        history = _fit(model, rgb_all, ids_all, schedule, TrainingProgress(steps, log, log_seconds, log_label))
        train_seconds = time.perf_counter() - t0
        model.eval()
        out_checkpoint = Path(out_checkpoint)
        out_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_official_checkpoint(model, out_checkpoint, kind="eomt")
    tail = history[-max(1, len(history) // 10):]
    final = {k: float(np.mean([h[k] for h in tail])) for k in history[0]} if history else {}
    return {
        "checkpoint": str(out_checkpoint),
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "n_images": int(rgb_all.shape[0]),
        "first_loss": history[0]["total"] if history else float("nan"),
        "final_loss": final.get("total", float("nan")),
        **{f"final_{k}": v for k, v in final.items() if k != "total"},
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,  # all threads of this process
        "config": cfg.to_dict(),
    }


@dataclass(frozen=True)
class _Schedule:
    """How :func:`train_eomt` optimises: ``steps`` batches of ``batch_size`` crops of ``crop``
    pixels, AdamW (``lr``, ``weight_decay``) with ``warmup`` warm-up steps, the loss sampled on a
    ``loss_points`` x ``loss_points`` grid, batches and crops drawn from a generator seeded ``seed``."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup: int
    crop: int
    loss_points: int
    seed: int


def _fit(model, rgb_all: torch.Tensor, ids_all: torch.Tensor, schedule: _Schedule,
         progress: TrainingProgress) -> list[dict[str, float]]:
    """Train ``model`` in place as ``schedule`` says (see :func:`train_eomt`) and return each
    step's loss and its parts."""
    s = schedule
    weights = LossWeights()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_poly_lr(step, s.steps, s.warmup))
    gen = torch.Generator().manual_seed(s.seed)
    history: list[dict[str, float]] = []
    for step, idx in enumerate(batch_indices(rgb_all.shape[0], s.batch_size, s.steps, gen)):
        x, ids = random_crops(rgb_all[idx], ids_all[idx], s.crop, gen)  # (B, 3, S, S), (B, S, S)
        grid = (s.loss_points, s.loss_points)
        targets = [(lab, sample_masks(m, grid)) for lab, m in map(semantic_targets, ids)]
        mask_logits, class_logits = model(x)  # (B, Q, S/4, S/4), (B, Q, K + 1)
        losses = mask_classification_loss(class_logits, mask_logits, targets, weights)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        sched.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
        parts = " ".join(f"{k} {v:.3f}" for k, v in history[-1].items() if k != "total")
        progress.step(step + 1, history[-1]["total"], f"({parts})")
    return history
