"""Mask2Former (Hugging Face ``transformers``) into the query cache: ``extract run --model mask2former``.

``--checkpoint`` is a ``save_pretrained`` folder of ``Mask2FormerForUniversalSegmentation`` with
its image-processor config (``preprocessor_config.json``), or, on a machine with internet, a hub
id (``facebook/mask2former-swin-large-cityscapes-semantic``). The ``hf`` extra installs
transformers.

Each frame is prepared by the checkpoint's own image processor (``AutoImageProcessor``; resize,
rescale, normalisation, sides rounded up to ``size_divisor``), one frame per processor call, so
the input is never padded. The model's class logits (Q, K+1) and mask logits (Q, H/4, W/4) of
the frame are stored as one crop of the query cache, with the frame's input size and mask size
(the masks come at the first pixel-decoder stride, ``min(config.feature_strides)``). The cache
records the semantic inference that composes them (:mod:`schemas.inference`):
``--model-option semantic_inference=transformers`` (default: ``post_process_semantic_segmentation``,
with its fixed 384 x 384 mask resize) or ``detectron2`` (the original ``sem_seg_postprocess``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extract.models.adapter import Adapter, write_query
from extract.models.checkpoint import CheckpointError
from extract.models.spec import CheckpointRef, ModelSpec, identify_folder
from schemas.errors import OptionError
from schemas.inference import SEMANTIC_INFERENCES

DEFAULT_INFERENCE = "transformers"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise OptionError("--model mask2former needs transformers: pip install 'anomaly-seg-cache[hf]'") from None
    return transformers


def identify_checkpoint(checkpoint: str | Path) -> CheckpointRef:
    """A ``save_pretrained`` folder, or a hub id downloaded to the local hub cache (needs internet)."""
    path = Path(checkpoint)
    if path.is_dir():
        return identify_folder(path)
    # a hub id is owner/name; a missing folder inside an existing one is a wrong path, not an id
    if path.exists() or path.parent.exists() or not _HUB_ID.match(str(checkpoint)):
        raise FileNotFoundError(f"{checkpoint}: not a save_pretrained folder of Mask2Former (nor a hub id)")
    _transformers()
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(str(checkpoint))
    except Exception as exc:  # noqa: BLE001  (offline, unknown repository, ...: one line)
        raise CheckpointError(f"checkpoint {checkpoint}: cannot download it from the hub "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    ref = identify_folder(folder)
    return CheckpointRef(ref.path, ref.sha256, str(checkpoint))


class Mask2FormerOutputs(nn.Module):
    """The network as the extractor runs it: ``forward(pixel_values) -> (class logits (B, Q, K+1),
    mask logits (B, Q, h, w))`` of the final decoder layer."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(pixel_values=pixel_values)
        return out.class_queries_logits, out.masks_queries_logits


def load_mask2former(path: str | Path, device: str | torch.device = "cpu",
                     semantic_inference: str = DEFAULT_INFERENCE) -> tuple[nn.Module, dict]:
    """The network (in eval mode, wrapped by :class:`Mask2FormerOutputs`) and its config dict, which
    carries the image processor (``processor``) the frames are prepared with."""
    if semantic_inference not in SEMANTIC_INFERENCES:
        raise OptionError(f"--model-option semantic_inference={semantic_inference}: expected one of "
                          f"{', '.join(SEMANTIC_INFERENCES)}")
    tf = _transformers()
    try:
        network = tf.Mask2FormerForUniversalSegmentation.from_pretrained(str(path))
        processor = tf.AutoImageProcessor.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: cannot load Mask2Former and its image processor "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not hasattr(processor, "post_process_semantic_segmentation") or "Mask2Former" not in type(processor).__name__:
        raise CheckpointError(f"checkpoint {path}: its image processor is {type(processor).__name__}, "
                              "not Mask2Former's")
    if getattr(processor, "pad_size", None):
        raise CheckpointError(f"checkpoint {path}: the image processor pads to a fixed pad_size; the cache stores "
                              "unpadded inputs (remove pad_size from preprocessor_config.json)")
    cfg = network.config
    settings = json.dumps(processor.to_dict(), sort_keys=True, default=str)
    config = {"name": "mask2former", "kind": "query", "num_classes": int(cfg.num_labels),
              "num_q": int(cfg.num_queries), "mask_stride": int(min(cfg.feature_strides)),
              "semantic_inference": semantic_inference, "processor_class": type(processor).__name__,
              "processor_config": settings, "transformers": tf.__version__, "processor": processor}
    return Mask2FormerOutputs(network).to(device).eval(), config


def _pixel_values(image: np.ndarray, processor) -> torch.Tensor:
    out = processor(images=np.ascontiguousarray(image), return_tensors="pt")
    return out["pixel_values"][0]  # (3, H, W) float32


def input_sizes(sizes, cfg: dict) -> tuple[tuple[int, int], ...]:
    """The processor's output size for each frame size (the processor run on a black frame of that size)."""
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for h, w in sizes:
        if (h, w) not in seen:
            shape = _pixel_values(np.zeros((h, w, 3), np.uint8), cfg["processor"]).shape[-2:]
            seen[(h, w)] = (int(shape[0]), int(shape[1]))
    return tuple(seen[(h, w)] for h, w in sizes)


def _prepare(image: np.ndarray, cfg: dict) -> np.ndarray:
    return np.ascontiguousarray(_pixel_values(image, cfg["processor"]).numpy())  # (3, H, W) float32


def _forward(model, x: torch.Tensor):
    class_logits, mask_logits = model(x)  # (B, Q, K+1), (B, Q, h, w)
    return class_logits.float(), mask_logits.to(torch.float16)


def _split(outputs, items):
    class_logits, mask_logits = outputs
    return [(class_logits[j : j + 1], mask_logits[j : j + 1]) for j in range(len(items))]  # one crop per frame


def _fields(cfg: dict, sizes) -> dict:
    inputs = input_sizes(sizes, cfg)
    s = cfg["mask_stride"]
    masks = tuple((math.ceil(h / s), math.ceil(w / s)) for h, w in inputs)
    return dict(n_classes=cfg["num_classes"], n_queries=cfg["num_q"], crop_size=None,
                mask_size=max(max(m) for m in masks), semantic_inference=cfg["semantic_inference"],
                input_sizes=inputs, mask_sizes=masks)


def _preprocessing(cfg: dict) -> dict:
    return {"processor": cfg["processor_class"], "processor_config": cfg["processor_config"],
            "batching": "one frame per processor call (no padding)",
            "semantic_inference": cfg["semantic_inference"]}


MASK2FORMER_ADAPTER = Adapter(_prepare, _forward, _split, write_query, _fields, np.stack, _preprocessing)

MASK2FORMER = ModelSpec(
    "mask2former", "query", load_mask2former,
    "Mask2Former (transformers save_pretrained folder or hub id); class and mask logits per frame",
    adapter=MASK2FORMER_ADAPTER, identify=identify_checkpoint, options=("semantic_inference",),
)
