"""What a model's frames become before it and how its outputs are stored: the :class:`Adapter` contract.

The extraction loop (:mod:`extract.run`) is the same for every model; an adapter says how a
decoded image is prepared, how prepared frames are batched and run, how a batch's outputs are
split per frame and written, which cache fields the model configuration gives, and which
preprocessing the cache records. The built-in cache kinds' adapters are
:data:`extract.adapters.ADAPTERS`; a model with preprocessing of its own (Mask2Former, a pixel
model given as a factory) carries its adapter in its :class:`extract.models.ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from schemas import cache as C


@dataclass(frozen=True)
class Adapter:
    """How frames of one output kind are prepared, batched, run and written."""

    prepare: Callable  # (image uint8 HWC, model config) -> np.ndarray model input
    forward: Callable  # (model, batch tensor) -> tuple of output tensors (batch-major)
    split: Callable  # (outputs, items) -> list of per-item output tuples
    write: Callable  # (root, spec, i, host arrays, flip=False) -> None (flip: the flipped pass's arrays)
    spec_fields: Callable  # (model config, sizes) -> dict of CacheSpec fields
    stack: Callable  # (prepared inputs of frames of one shape) -> np.ndarray batch
    preprocessing: Callable  # (model config) -> dict recorded in the cache's provenance


def split_single(outputs, items) -> list[tuple]:
    """A one-output batch (B, ...) split per frame: ``[(outputs[0][j],) ...]`` (pixel logits)."""
    (logits,) = outputs
    return [(logits[j],) for j in range(len(items))]


def write_pixel(root, spec, i, arrays, flip=False) -> None:
    """Write a frame's pixel logits (``arrays[0]``)."""
    C.write_frame_pixel(root, spec, i, arrays[0], flip=flip)


def write_query(root, spec, i, arrays, flip=False) -> None:
    """Write a frame's class and mask logits (``arrays[0]``, ``arrays[1]``)."""
    C.write_frame_query(root, spec, i, arrays[0], arrays[1], flip=flip)
