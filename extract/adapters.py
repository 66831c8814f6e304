"""Per cache kind: what a frame becomes before the model, and how the outputs are stored.

The extraction loop (:mod:`extract.run`) is the same for every model; :data:`ADAPTERS` says,
per cache kind (``pixel``: ERFNet logits; ``query``: EoMT class and mask logits of each
window crop), how a decoded image is prepared, how prepared frames are batched and run, how
a batch's outputs are split per frame and written, which cache fields the model
configuration gives, and which preprocessing the cache records.
"""

from __future__ import annotations

import numpy as np
import torch

from extract.models.adapter import Adapter, split_single, write_pixel, write_query
from extract.models.eomt import window_image
from extract.models.erfnet import erfnet_input_size, preprocess_erfnet


def _pixel_prepare(image: np.ndarray, cfg: dict) -> np.ndarray:
    return np.ascontiguousarray(preprocess_erfnet(image, cfg["input_height"]).numpy())  # (3, h, w) float32


def _pixel_stack(inputs):
    return np.stack(inputs)  # (B, 3, h, w)


def _pixel_preprocessing(cfg: dict) -> dict:
    return {"resize": f"short side {cfg['input_height']} (PIL bilinear), sides rounded to a multiple of 8",
            "range": "[0, 1]", "normalization": "none", "logits_to_label": "bilinear (analysis)"}


def _pixel_forward(model, x: torch.Tensor):
    return (model(x).to(torch.float16),)  # (B, C, h, w)


def _pixel_fields(cfg: dict, sizes) -> dict:
    logit_sizes = tuple(erfnet_input_size(h, w, cfg["input_height"]) for h, w in sizes)
    return dict(n_classes=cfg["num_classes"] - 1, n_channels=cfg["num_classes"], void_channel=cfg["void_channel"],
                logit_sizes=logit_sizes)


def _query_prepare(image: np.ndarray, cfg: dict) -> np.ndarray:
    crops, _ = window_image(image, cfg["crop"])
    return crops.numpy()  # (n, 3, crop, crop) uint8


def _query_stack(inputs):
    return np.concatenate(inputs)  # (crops of all frames, 3, crop, crop)


def _query_preprocessing(cfg: dict) -> dict:
    return {"resize": f"short side {cfg['crop']} (PIL bilinear)", "windows": "ceil(long/crop), overlap spread evenly",
            "range": "uint8/255 then ImageNet mean/std inside the model"}


def _query_forward(model, x: torch.Tensor):
    mask_logits, class_logits = model(x.float() / 255.0)  # (N, Q, m, m), (N, Q, K+1)
    return mask_logits.to(torch.float16), class_logits.float()


def _query_split(outputs, items):
    mask_logits, class_logits = outputs
    out, a = [], 0
    for it in items:
        n = it["input"].shape[0]
        out.append((class_logits[a : a + n], mask_logits[a : a + n]))
        a += n
    return out


def _query_fields(cfg: dict, sizes) -> dict:
    return dict(n_classes=cfg["num_classes"], crop_size=cfg["crop"], n_queries=cfg["num_q"],
                mask_size=cfg["mask_size"])


#: cache kind -> adapter: the one registry the extraction loop consults (no branch on the kind)
ADAPTERS: dict[str, Adapter] = {
    "pixel": Adapter(_pixel_prepare, _pixel_forward, split_single, write_pixel, _pixel_fields, _pixel_stack,
                     _pixel_preprocessing),
    "query": Adapter(_query_prepare, _query_forward, _query_split, write_query, _query_fields, _query_stack,
                     _query_preprocessing),
}
