"""EoMT's mask-classification training objective: Hungarian matching, then CE + BCE + Dice.

Follows ``tue-mps/eomt`` ``training/mask_classification_loss.py`` (``MaskClassificationLoss``,
built on Hugging Face's ``Mask2FormerHungarianMatcher`` and ``Mask2FormerLoss``) with the
coefficients of ``training/mask_classification_semantic.py``: mask (BCE) 5, Dice 5, class 2,
no-object weight 0.1.

- **Matching** (per image): cost ``C[q, s] = 5 * BCE(m_q, t_s) + 2 * (-softmax(c_q)[k_s])
  + 5 * Dice(m_q, t_s)``, solved with ``scipy.optimize.linear_sum_assignment``; ``BCE`` is
  the mean over pixels of the sigmoid cross-entropy, ``Dice = 1 - (2 sum(p t) + 1) /
  (sum p + sum t + 1)`` with ``p = sigmoid(m)``.
- **Class loss**: cross-entropy over the K + 1 classes of every query, target ``k_s`` for a
  matched query and no-object (index K) for the rest, class weights 1 and 0.1 for
  no-object (``torch`` weighted mean: ``sum w_y * nll / sum w_y``).
- **Mask losses**: for each matched pair, the mean BCE over pixels and the Dice loss, summed
  over the batch and divided by the number of matched segments (at least 1).

Deviations, on purpose: the official code compares masks at 12,544 random points per mask
(uniform in the matcher; 3x oversampled, 75 % most uncertain, in the loss); here both
the predicted mask logits and the binary target masks are sampled bilinearly
(``align_corners=False``, as the official ``grid_sample``) at the centres of a regular
grid of points (:func:`sample_masks`), the same points for the matcher and the loss, so
training is deterministic and cheap on a CPU. Only the final-layer prediction is supervised
(the official training also supervises each query block's intermediate prediction while it
anneals masked attention, which the released models switch off at inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class LossWeights:
    """Coefficients of ``training/mask_classification_semantic.py`` (EoMT defaults)."""

    mask: float = 5.0
    dice: float = 5.0
    cls: float = 2.0
    no_object: float = 0.1


def pairwise_sigmoid_ce(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(Q, S)`` mean over the P pixels of ``BCEWithLogits(m_q, t_s)``.

    ``mask_logits`` (Q, P), ``targets`` (S, P) in {0, 1}. BCE(x, 1) = softplus(-x) and
    BCE(x, 0) = softplus(x), so the pairs come from two matrix products.
    """
    pos = F.softplus(-mask_logits)  # (Q, P)
    neg = F.softplus(mask_logits)  # (Q, P)
    return (pos @ targets.T + neg @ (1 - targets).T) / mask_logits.shape[1]  # (Q, S)


def pairwise_dice(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(Q, S)`` Dice loss ``1 - (2 sum(p_q t_s) + 1) / (sum p_q + sum t_s + 1)``, ``p = sigmoid(m)``."""
    p = mask_logits.sigmoid()  # (Q, P)
    num = 2 * p @ targets.T  # (Q, S)
    den = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def match_cost(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
               masks: torch.Tensor, w: LossWeights = LossWeights()) -> torch.Tensor:
    """The matcher's ``(Q, S)`` cost matrix for one image.

    ``class_logits`` (Q, K + 1), ``mask_logits`` (Q, P), ``labels`` (S,) class indices,
    ``masks`` (S, P) in {0, 1}. ``mask * BCE + cls * (-p_q[k_s]) + dice * Dice``, with
    ``p_q = softmax(c_q)`` over all K + 1 classes.
    """
    cost_class = -class_logits.softmax(-1)[:, labels]  # (Q, S)
    return (w.mask * pairwise_sigmoid_ce(mask_logits, masks) + w.cls * cost_class
            + w.dice * pairwise_dice(mask_logits, masks))


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                    masks: torch.Tensor, w: LossWeights = LossWeights()) -> tuple[np.ndarray, np.ndarray]:
    """``(query_idx, segment_idx)``: the one-to-one assignment of queries to segments with
    the least total :func:`match_cost` (``linear_sum_assignment``; every segment gets a
    query when Q >= S). Inputs as :func:`match_cost`."""
    if labels.numel() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cost = match_cost(class_logits.float(), mask_logits.float(), labels, masks.float(), w)
    cost = torch.nan_to_num(cost.clamp(-1e10, 1e10), 0.0)  # as the official matcher
    q, s = linear_sum_assignment(cost.cpu().numpy())
    return q.astype(np.int64), s.astype(np.int64)


def mask_classification_loss(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                             targets: list[tuple[torch.Tensor, torch.Tensor]],
                             w: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """EoMT's training loss of a batch (see the module docstring).

    ``class_logits`` (B, Q, K + 1); ``mask_logits`` (B, Q, h, w) at the model's mask
    resolution; ``targets[b] = (labels (S_b,), masks (S_b, G, G))``: the target masks at
    the points of a G x G grid (:func:`sample_masks`). The mask logits are sampled at the
    same points, then matched and compared there. Returns the unweighted ``mask``,
    ``dice`` and ``ce`` losses and their weighted sum ``total``.
    """
    b, nq, k1 = class_logits.shape
    logits = sample_masks(mask_logits, tuple(targets[0][1].shape[-2:])).flatten(2)  # (B, Q, P)
    cls_target = torch.full((b, nq), k1 - 1, dtype=torch.long, device=class_logits.device)
    matched_logits, matched_masks = [], []
    for i, (labels, masks) in enumerate(targets):
        flat = masks.flatten(1).to(logits.dtype)  # (S, P)
        qi, si = hungarian_match(class_logits[i].detach(), logits[i].detach(), labels, flat, w)
        cls_target[i, torch.from_numpy(qi)] = labels[torch.from_numpy(si)]
        matched_logits.append(logits[i, torch.from_numpy(qi)])
        matched_masks.append(flat[torch.from_numpy(si)])
    pred = torch.cat(matched_logits)  # (M, P)
    true = torch.cat(matched_masks)  # (M, P)
    n_masks = max(pred.shape[0], 1)
    loss_mask = F.binary_cross_entropy_with_logits(pred, true, reduction="none").mean(1).sum() / n_masks
    p = pred.sigmoid()
    dice = 1 - (2 * (p * true).sum(-1) + 1) / (p.sum(-1) + true.sum(-1) + 1)
    loss_dice = dice.sum() / n_masks
    weight = torch.ones(k1, dtype=class_logits.dtype, device=class_logits.device)
    weight[-1] = w.no_object
    loss_ce = F.cross_entropy(class_logits.transpose(1, 2), cls_target, weight=weight)
    total = w.mask * loss_mask + w.dice * loss_dice + w.cls * loss_ce
    return {"mask": loss_mask, "dice": loss_dice, "ce": loss_ce, "total": total}


def sample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``masks`` (..., h, w) sampled bilinearly at the centres of a ``size`` grid of points
    spread evenly over the image (``F.interpolate``, ``align_corners=False``: the values
    ``grid_sample`` gives at those points; no antialiasing). A binary mask becomes the
    fraction of each point's neighbourhood it covers, as the official target sampling."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    out = F.interpolate(flat, size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def semantic_targets(train_ids: torch.Tensor, ignore: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """A semantic label map (H, W) as mask-classification targets: one segment per class
    present (ignore pixels belong to none), as EoMT's semantic datasets build them.
    Returns ``(labels (S,) int64 in ascending order, masks (S, H, W) float32)``."""
    classes = torch.unique(train_ids)
    classes = classes[classes != ignore].long()
    masks = (train_ids[None] == classes[:, None, None]).float()  # (S, H, W)
    return classes, masks
