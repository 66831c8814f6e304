"""Model registry: a name maps to a :class:`ModelSpec` whose loader reads a checkpoint.

``load_model(name, path)`` returns the network in eval mode and a config dict describing
its input and output (``kind`` is ``'pixel'`` for per-pixel logits, ``'query'`` for
mask-classification outputs). Names are looked up in one place, :func:`get_model_spec`: the
built-in models (:data:`MODELS`), then ``python:MODULE:FUNCTION`` (a factory of any pixel model,
:mod:`extract.models.python_model`), then installed plugins (entry-point group
``anomaly_seg_cache.models``, :mod:`extract.models.plugins`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from extract.models.adapter import Adapter
from extract.models.checkpoint import CheckpointError, detect_checkpoint_kind, load_weights_only
from extract.models.eomt import EoMT, load_eomt, official_eomt_checkpoint
from extract.models.erfnet import ERFNet, load_erfnet, official_erfnet_state_dict
from extract.models.mask2former import MASK2FORMER
from extract.models.plugins import ENTRY_POINT_GROUP, load_plugin, plugin_entry_points
from extract.models.python_model import PREFIX as PYTHON_PREFIX
from extract.models.python_model import PixelDeclaration, factory_spec
from extract.models.spec import CheckpointRef, Loader, ModelSpec
from schemas.errors import OptionError

__all__ = [
    "ENTRY_POINT_GROUP",
    "MODELS",
    "Adapter",
    "CheckpointError",
    "CheckpointRef",
    "Loader",
    "ModelSpec",
    "PixelDeclaration",
    "detect_checkpoint_kind",
    "get_model_spec",
    "list_models",
    "load_model",
    "read_checkpoint_kind",
    "save_official_checkpoint",
]


MODELS: dict[str, ModelSpec] = {
    "erfnet": ModelSpec(
        "erfnet", "pixel", load_erfnet,
        "ERFNet, Cityscapes erfnet_pretrained.pth (19 classes + void channel)",
        model_class=ERFNet, to_official=official_erfnet_state_dict,
    ),
    "eomt": ModelSpec(
        "eomt", "query", load_eomt,
        "EoMT on a DINOv2 ViT; size, crop and heads read from the checkpoint",
        model_class=EoMT, to_official=official_eomt_checkpoint,
    ),
    "mask2former": MASK2FORMER,
}


def get_model_spec(name: str) -> ModelSpec:
    """The spec for ``name``: a built-in model, ``python:MODULE:FUNCTION``, or an installed plugin;
    unknown names list the valid ones (KeyError)."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith(PYTHON_PREFIX):
        return factory_spec(name)
    plugins = plugin_entry_points()
    if name in plugins:
        return load_plugin(plugins[name])
    raise KeyError(
        f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS) + sorted(set(plugins) - set(MODELS)))}, "
        f"or {PYTHON_PREFIX}MODULE:FUNCTION"
    )


def list_models() -> list[tuple[str, str, str]]:
    """``(name, source, description)`` of every model ``extract run --model`` takes by name:
    the built-in ones, then the installed plugins (a plugin a built-in name shadows says so)."""
    rows = [(s.name, s.source, s.description) for s in MODELS.values()]
    for name, ep in sorted(plugin_entry_points().items()):
        if name in MODELS:
            rows.append((name, f"plugin {ep.value}", "shadowed by the built-in model of this name"))
            continue
        try:
            spec = load_plugin(ep)
            rows.append((name, spec.source, spec.description))
        except OptionError as exc:
            rows.append((name, f"plugin {ep.value}", f"broken: {exc}"))
    return rows


def load_model(
    name: str, checkpoint_path: str | Path, device: str | torch.device = "cpu",
    options: Mapping[str, str] | None = None,
) -> tuple[nn.Module, dict]:
    """Load a released (or demo) checkpoint as the network ``extract run`` runs.

    Parameters
    ----------
    name
        The model: ``"erfnet"``, ``"eomt"``, ``"mask2former"`` (:data:`MODELS`), ``"python:MODULE:FUNCTION"``
        or an installed plugin's name (:func:`get_model_spec`).
    checkpoint_path
        The checkpoint file: ERFNet's ``erfnet_pretrained.pth`` (a state_dict, with or
        without DataParallel's ``module.`` prefix) or an EoMT Lightning checkpoint /
        ``pytorch_model.bin``; EoMT's size is read from the checkpoint.
    device
        Where the weights are loaded (``"cpu"``, ``"cuda"``, a :class:`torch.device`).
    options
        ``--model-option`` values, by key (the keys the model's spec lists in ``options``).

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
    spec = get_model_spec(name)
    unknown = sorted(set(options or {}) - set(spec.options))
    if unknown:
        takes = f"takes {', '.join(spec.options)}" if spec.options else "takes no --model-option"
        raise OptionError(f"--model-option {unknown[0]}: model {name} {takes}")
    try:
        return spec.loader(checkpoint_path, device, **dict(options or {}))
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
    if spec.to_official is None:
        raise TypeError(f"model {kind!r} has no released single-file format to write")
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
