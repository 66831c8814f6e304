"""The demo's ERFNet: the official architecture trained from scratch on the toy world (CPU).

Saved in the released checkpoint format (a plain ``module.``-prefixed state_dict with 20
output channels, channel 19 = void), so ``extract run --model erfnet`` loads it like
``erfnet_pretrained.pth``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from extract.demo.progress import DEFAULT_EVERY, TrainingProgress
from extract.demo.runtime import batch_indices, cosine_lr, deterministic_torch
from extract.demo.classes import NUM_CLASSES, VOID
from extract.demo.settings import ERFNET
from extract.demo.world import read_cityscapes_split



def load_cityscapes_split(root, split: str = "train", height: int | None = None):
    """``(images float32 (N, 3, h, w) in [0, 1], labels int64 (N, h, w))`` of a
    Cityscapes-layout folder, through the tool's ERFNet preprocessing
    (:func:`extract.models.erfnet.preprocess_erfnet`: ``height`` rows, PIL bilinear, values
    in [0, 1], no mean/std); labels resized with nearest neighbour. ``height=None`` keeps
    the stored size."""
    from PIL import Image

    from extract.models.erfnet import preprocess_erfnet

    rgbs, ids = read_cityscapes_split(root, split)
    xs, ys = [], []
    for rgb, gt in zip(rgbs, ids):
        x = preprocess_erfnet(rgb, height if height is not None else min(rgb.shape[:2]))  # (3, h, w)
        if gt.shape != tuple(x.shape[1:]):
            gt = np.asarray(Image.fromarray(gt).resize((x.shape[2], x.shape[1]), Image.NEAREST))
        xs.append(x)
        ys.append(torch.from_numpy(gt.astype(np.int64)))
    return torch.stack(xs), torch.stack(ys)


def class_weights(labels, num_channels: int = 20, c: float = 1.10):
    """ENet-style class weights ``1 / ln(c + p_k)`` from the label frequencies ``p_k`` of
    the training set (the official ERFNet training uses such hard-coded weights, with
    weight 0 for the void channel). Classes with no pixel get weight 0."""
    lab = labels[labels != VOID]
    counts = torch.bincount(lab.flatten(), minlength=num_channels)[:num_channels].double()
    p = counts / counts.sum().clamp(min=1)
    w = 1.0 / torch.log(c + p)
    w[counts == 0] = 0.0
    return w.float()


def logitnorm_loss(logits, target, tau: float = 0.04, ignore_index: int = VOID, weight=None):
    """Logit Normalisation (Wei et al., ICML 2022): cross-entropy on
    ``logits / (tau * ||logits||_2)``, the norm taken per pixel over the channels."""
    norm = logits.norm(p=2, dim=1, keepdim=True) + 1e-7
    return F.cross_entropy(logits / (norm * tau), target, weight=weight, ignore_index=ignore_index)


def train_erfnet(
    train_root,
    out_checkpoint,
    *,
    steps: int = ERFNET["steps"],
    height: int = ERFNET["height"],
    batch_size: int = ERFNET["batch_size"],
    lr: float = ERFNET["lr"],
    seed: int = 0,
    loss: str = "ce",
    tau: float = 0.04,
    weighted: bool = True,
    threads: int | None = ERFNET["threads"],
    log: Callable[[str], None] | None = None,
    log_seconds: float = DEFAULT_EVERY,
    log_label: str = "",
) -> dict:
    """Train ``ERFNet(num_classes=20)`` from scratch on the CPU on a Cityscapes-layout
    ``train`` split and save it in the official format (``module.``-prefixed state_dict).

    Images are resized to ``height`` rows (bilinear, values in [0, 1], no normalisation);
    random horizontal flips; Adam with a cosine-decayed learning rate; cross-entropy with
    ignore index 255 (channel 19 = void never gets a target, as in the official model),
    weighted by :func:`class_weights` when ``weighted`` (as the official training weights
    its classes), or ``loss='logitnorm'`` (temperature ``tau``). Deterministic for equal
    arguments on one machine (:func:`extract.demo.runtime.deterministic_torch`, ``threads``
    intra-op threads). ``log`` receives a progress line (:class:`extract.demo.progress.TrainingProgress`:
    step, loss, elapsed, time left, prefixed ``log_label: ``) after the first and the last step
    and at least every ``log_seconds`` seconds of training. Returns statistics: final loss (mean of the last 10 % of steps),
    pixel accuracy of the trained model (eval mode) on the training images, wall and CPU
    seconds, and the settings used.
    """
    from extract.models import save_official_checkpoint
    from extract.models.erfnet import ERFNet

    if loss not in ("ce", "logitnorm"):
        raise ValueError(f"loss must be 'ce' or 'logitnorm', not {loss!r}")
    log = log or (lambda msg: None)
    t0, c0 = time.perf_counter(), time.process_time()
    with deterministic_torch(seed, threads):
        x_all, y_all = load_cityscapes_split(train_root, "train", height)
        weights = class_weights(y_all) if weighted else None
        model = ERFNet(num_classes=20)
        progress = TrainingProgress(steps, log, log_seconds, log_label)
        losses = _fit(model, x_all, y_all, _loss_fn(loss, tau, weights), steps, batch_size, lr, seed, progress)
        train_seconds = time.perf_counter() - t0
        accuracy = pixel_accuracy(model, x_all, y_all)
        out_checkpoint = Path(out_checkpoint)
        out_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_official_checkpoint(model, out_checkpoint, kind="erfnet")
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "checkpoint": str(out_checkpoint),
        "steps": int(steps),
        "height": int(height),
        "batch_size": int(batch_size),
        "n_images": int(x_all.shape[0]),
        "loss": loss,
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "pixel_accuracy": accuracy,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,  # all threads of this process
    }


def _loss_fn(loss: str, tau: float, weights):
    """The training loss ``(logits (B, 20, h, w), target (B, h, w)) -> scalar``: cross-entropy
    or :func:`logitnorm_loss`, class-``weights`` or none, void ignored."""
    if loss == "ce":
        return lambda out, target: F.cross_entropy(out, target, weight=weights, ignore_index=VOID)
    return lambda out, target: logitnorm_loss(out, target, tau=tau, weight=weights)


def _fit(model, x_all, y_all, loss_fn, steps: int, batch_size: int, lr: float, seed: int,
         progress: TrainingProgress) -> list[float]:
    """Train ``model`` in place for ``steps`` steps and return each step's loss: batches of
    ``batch_size`` frames in seeded epoch permutations, each frame flipped horizontally with
    probability 1/2, Adam (weight decay 1e-4) with :func:`~extract.demo.runtime.cosine_lr`."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step, idx in enumerate(batch_indices(x_all.shape[0], batch_size, steps, gen)):
        xb, yb = x_all[idx], y_all[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        if flip.any():
            xb = xb.clone()
            yb = yb.clone()
            xb[flip] = xb[flip].flip(-1)
            yb[flip] = yb[flip].flip(-1)
        lval = loss_fn(model(xb), yb)  # model(xb): (B, 20, h, w)
        opt.zero_grad(set_to_none=True)
        lval.backward()
        opt.step()
        sched.step()
        losses.append(float(lval.detach()))
        progress.step(step + 1, losses[-1])
    return losses


def pixel_accuracy(model, x_all, y_all, batch: int = 16) -> float:
    """Fraction of the non-void pixels of ``y_all`` that ``model`` (put in eval mode) labels
    right from ``x_all`` (argmax over the 19 classes, void channel left out)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for i in range(0, x_all.shape[0], batch):
            pred = model(x_all[i : i + batch])[:, :NUM_CLASSES].argmax(1)
            valid = y_all[i : i + batch] != VOID
            correct += int((pred[valid] == y_all[i : i + batch][valid]).sum())
            total += int(valid.sum())
    return correct / max(total, 1)
