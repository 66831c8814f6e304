"""EoMT's own semantic inference over window crops (``tue-mps/eomt``, ``window_imgs_semantic``,
``revert_window_logits_semantic``, ``eval_step``): the model's API for a whole frame.

Cutting a frame into crops (:func:`window_image`, also the extractor's input), composing the
crops' query outputs into per-pixel class scores (:func:`semantic_map`) and both together
(:func:`predict_semantic`). The analysis composes cached outputs with
:class:`analyze.compose.queries.FrameComposer`; both are tested against one untiled oracle
(``tests/oracles.py``), so they cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from schemas.windows import FrameWindows, frame_windows


def window_image(image_uint8_hwc: np.ndarray, crop: int) -> tuple[torch.Tensor, FrameWindows]:
    """Square crops of a frame as ``window_imgs_semantic`` cuts them.

    The frame is resized with PIL bilinear so its short side equals ``crop``, then
    ``ceil(long / crop)`` crops are taken along the long side with the overlap spread
    evenly (geometry: :func:`schemas.windows.frame_windows`). Returns uint8 crops
    (n, 3, crop, crop) and the geometry needed to merge their outputs.
    """
    image = np.asarray(image_uint8_hwc)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    geom = frame_windows(image.shape[0], image.shape[1], crop)
    new_h, new_w = geom.resized
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    frame = torch.from_numpy(resized.copy()).permute(2, 0, 1)  # (3, H', W')
    if geom.portrait:
        crops = [frame[:, w.start : w.end, :] for w in geom.windows]
    else:
        crops = [frame[:, :, w.start : w.end] for w in geom.windows]
    return torch.stack(crops).contiguous(), geom  # (n, 3, crop, crop)


def semantic_map(
    mask_logits: torch.Tensor, class_logits: torch.Tensor, geom: FrameWindows
) -> torch.Tensor:
    """Per-pixel class scores (K, H, W) of a frame from its crops' query outputs.

    Reference composition of the official semantic eval (``eval_step``): mask logits
    bilinearly upsampled to the crop size (align_corners=False); per crop
    ``einsum(bqhw,bqc->bchw, sigmoid(masks), softmax(class)[..., :-1])``; crops summed
    into the resized frame and divided by the per-pixel count; bilinear resize to the
    original size. Computed in float32 under ``torch.inference_mode`` (the result is an
    inference tensor: clone it before in-place edits); crops are processed one at a time.
    """
    n, nq = mask_logits.shape[:2]
    if class_logits.shape[:2] != (n, nq) or n != geom.n_crops:
        raise ValueError(
            f"expected {geom.n_crops} crops, got mask logits {tuple(mask_logits.shape)} "
            f"and class logits {tuple(class_logits.shape)}"
        )
    k = class_logits.shape[-1] - 1
    s = geom.crop
    h, w = geom.resized
    with torch.inference_mode():
        sums = torch.zeros((k, h, w), dtype=torch.float32, device=mask_logits.device)
        counts = torch.zeros((1, h, w), dtype=torch.float32, device=mask_logits.device)
        for j, win in enumerate(geom.windows):
            masks = F.interpolate(
                mask_logits[j : j + 1].float(), (s, s), mode="bilinear", align_corners=False
            )[0]  # (Q, S, S)
            probs = class_logits[j].float().softmax(dim=-1)[:, :-1]  # (Q, K)
            per_pixel = torch.einsum("qhw,qc->chw", masks.sigmoid(), probs)  # (K, S, S)
            if geom.portrait:
                sums[:, win.start : win.end, :] += per_pixel
                counts[:, win.start : win.end, :] += 1
            else:
                sums[:, :, win.start : win.end] += per_pixel
                counts[:, :, win.start : win.end] += 1
        merged = (sums / counts)[None]  # (1, K, H', W')
        return F.interpolate(merged, geom.original, mode="bilinear", align_corners=False)[0]


def predict_semantic(
    model: torch.nn.Module, image_uint8_hwc: np.ndarray, batch_size: int | None = None
) -> torch.Tensor:
    """Per-pixel class scores (K, H, W) of one frame: window, forward, merge (official eval).

    ``model`` is an :class:`extract.models.eomt.EoMT` (its ``config.img_size`` is the crop)."""
    param = next(model.parameters())
    crops, geom = window_image(image_uint8_hwc, model.config.img_size)
    step = batch_size or len(crops)
    masks, classes = [], []
    with torch.inference_mode():
        for i in range(0, len(crops), step):
            x = crops[i : i + step].to(param.device, param.dtype) / 255.0  # (b, 3, S, S)
            m, c = model(x)
            masks.append(m)
            classes.append(c)
        return semantic_map(torch.cat(masks), torch.cat(classes), geom)
