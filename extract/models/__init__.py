"""Model registry: a name maps to a loader that reads a released checkpoint.

``load_model(name, path)`` returns the network in eval mode and a config dict describing
its input and output (``kind`` is ``'pixel'`` for per-pixel logits, ``'query'`` for
mask-classification outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from extract.models.checkpoint import CheckpointError, detect_checkpoint_kind, load_weights_only
from extract.models.eomt import EoMT, load_eomt, official_eomt_checkpoint
from extract.models.erfnet import ERFNet, load_erfnet, official_erfnet_state_dict

__all__ = [
    "MODELS",
    "CheckpointError",
    "ModelSpec",
    "detect_checkpoint_kind",
    "get_model_spec",
    "load_model",
    "read_checkpoint_kind",
    "save_official_checkpoint",
]

Loader = Callable[[str | Path, str | torch.device], tuple[nn.Module, dict]]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    ``loader(path, device) -> (model, config)`` reads a released checkpoint;
    ``to_official(model)`` returns the object that release would hold for ``model``.
    """

    name: str
    kind: str  # 'pixel' or 'query'
    loader: Loader
    model_class: type[nn.Module]
    # takes an instance of model_class (save_official_checkpoint checks it first), hence Any
    to_official: Callable[[Any], dict]
    description: str


MODELS: dict[str, ModelSpec] = {
    "erfnet": ModelSpec(
        "erfnet", "pixel", load_erfnet, ERFNet, official_erfnet_state_dict,
        "ERFNet, Cityscapes erfnet_pretrained.pth (19 classes + void channel)",
    ),
    "eomt": ModelSpec(
        "eomt", "query", load_eomt, EoMT, official_eomt_checkpoint,
        "EoMT on a DINOv2 ViT; size, crop and heads read from the checkpoint",
    ),
}


def get_model_spec(name: str) -> ModelSpec:
    """The registered spec for ``name``; unknown names list the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}"
        ) from None


def load_model(
    name: str, checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Load a released (or demo) checkpoint as the network ``extract run`` runs.

    Parameters
    ----------
    name
        The model: ``"erfnet"`` or ``"eomt"`` (:data:`MODELS`).
    checkpoint_path
        The checkpoint file: ERFNet's ``erfnet_pretrained.pth`` (a state_dict, with or
        without DataParallel's ``module.`` prefix) or an EoMT Lightning checkpoint /
        ``pytorch_model.bin``; EoMT's size is read from the checkpoint.
    device
        Where the weights are loaded (``"cpu"``, ``"cuda"``, a :class:`torch.device`).

    Returns
    -------
    model, config
        The network in eval mode, and a dict describing it (e.g. ``num_classes``; EoMT:
        ``embed_dim``, ``depth``, ``num_heads``, ``crop``).

    Raises
    ------
    KeyError
        An unknown model name (the message lists the valid ones).
    CheckpointError
        A checkpoint the model cannot be built from (the message names the file and the
        missing or unexpected keys).

    Example: ``model, cfg = load_model("erfnet", "erfnet_pretrained.pth", "cuda")``.
    """
    try:
        return get_model_spec(name).loader(checkpoint_path, device)
    except CheckpointError:
        raise
    except ValueError as exc:  # e.g. a configuration read from the checkpoint that no ViT size has
        raise CheckpointError(f"checkpoint {checkpoint_path}: cannot build {name} from it ({exc})") from None


def save_official_checkpoint(model: nn.Module, path: str | Path, kind: str) -> Path:
    """Write ``model`` in the released format of ``kind`` (for tests and demos).

    ERFNet: a plain state_dict with every key prefixed ``module.`` (DataParallel).
    EoMT: ``{'state_dict': {'network.' + key: ..., 'criterion.empty_weight': ...}}``.
    """
    spec = get_model_spec(kind)
    if not isinstance(model, spec.model_class):
        raise TypeError(
            f"kind {kind!r} needs an instance of {spec.model_class.__name__}, "
            f"got {type(model).__name__}"
        )
    path = Path(path)
    torch.save(spec.to_official(model), path)
    return path


def read_checkpoint_kind(path: str | Path) -> str:
    """``'erfnet'`` or ``'eomt'`` for a checkpoint file (weights-only load)."""
    return detect_checkpoint_kind(load_weights_only(path), f"checkpoint {path}")
