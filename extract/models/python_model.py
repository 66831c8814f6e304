"""Any pixel model into the cache: ``extract run --model python:MODULE:FUNCTION --checkpoint FILE``.

``FUNCTION(checkpoint: Path)`` (the factory) returns a ``torch.nn.Module`` that maps a normalised
image batch (B, 3, h, w) to class logits (B, C, h', w') (a tensor, or a mapping whose ``"out"`` is
one: torchvision's segmentation models), and a :class:`PixelDeclaration` (or a dict of its
fields) saying how frames are prepared and what the channels are. ``--model-option KEY=VALUE``
overrides any field of the declaration; ``--input-height`` sets ``input_height``.

A frame becomes its input as ERFNet's does (:func:`extract.models.erfnet.preprocess_erfnet`:
PIL bilinear resize of the short side to ``input_height``, sides rounded to ``size_multiple``,
[0, 1]), then ``(x - mean) / std`` per channel. The logits are cached as they come out
(float16, void channel kept), at ``ceil(input / output_stride)``; the analysis resizes them to
the label size and drops the void channel, as for ERFNet.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from extract.models.adapter import Adapter, split_single, write_pixel
from extract.models.erfnet import erfnet_input_size, preprocess_erfnet
from extract.models.spec import ModelSpec
from schemas.errors import OptionError

PREFIX = "python:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the classes of a 19-channel model when the declaration names none (Cityscapes trainIds 0..18)
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")


@dataclass(frozen=True)
class PixelDeclaration:
    """How a pixel model's frames are prepared and what its output channels are.

    ``num_classes``: K semantic classes; the output has K channels, or K + 1 with ``void_channel``
    (the index of a channel the analysis drops before any softmax, as ERFNet's). ``mean``/``std``:
    per-channel normalisation of [0, 1] RGB input. ``input_height``: short side of the model input
    (None: the frame's own size); ``size_multiple``: sides rounded to it; ``output_stride``: the
    logits are ``ceil(input / output_stride)`` in each side. ``class_names``: K names (default: the
    19 Cityscapes trainIds when K is 19).
    """

    num_classes: int
    void_channel: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_height: int | None = None
    size_multiple: int = 1
    output_stride: int = 1
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        k = self.num_classes
        if k < 1:
            raise ValueError(f"num_classes must be >= 1, got {k}")
        if self.void_channel is not None and not 0 <= self.void_channel <= k:
            raise ValueError(f"void_channel must be in 0..{k} (the output has {k + 1} channels), got {self.void_channel}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {self.mean} and {self.std}")
        for name in ("size_multiple", "output_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_height is not None and self.input_height < 1:
            raise ValueError(f"input_height must be >= 1, got {self.input_height}")
        if self.class_names is not None and len(self.class_names) != k:
            raise ValueError(f"class_names has {len(self.class_names)} names for {k} classes")

    @property
    def n_channels(self) -> int:
        return self.num_classes + (self.void_channel is not None)

    def names(self) -> tuple[str, ...]:
        if self.class_names is not None:
            return tuple(self.class_names)
        return CITYSCAPES_CLASSES if self.num_classes == 19 else tuple(f"class {k}" for k in range(self.num_classes))


def parse_option(field_name: str, text: str) -> Any:
    """The value of declaration field ``field_name`` from ``--model-option`` text (tuples: ``a/b/c``)."""
    kinds = {f.name: f.type for f in fields(PixelDeclaration)}
    if field_name not in kinds:
        raise KeyError(field_name)
    kind = str(kinds[field_name])
    if text.lower() in ("none", "") and "None" in kind:
        return None
    try:
        if "tuple[float" in kind:
            return tuple(float(v) for v in text.split("/"))
        if "tuple[str" in kind:
            return tuple(text.split("/"))
        return int(text)
    except ValueError:
        raise ValueError(f"{field_name}={text!r}: expected {kind}") from None


def _declaration(obj: Any, options: Mapping[str, str], source: str) -> PixelDeclaration:
    if isinstance(obj, Mapping):
        given: dict[str, Any] = {str(k): tuple(v) if isinstance(v, list) else v for k, v in obj.items()}
        obj = PixelDeclaration(**given)
    if not isinstance(obj, PixelDeclaration):
        raise TypeError(f"{source}: the declaration must be a PixelDeclaration or a dict, got {type(obj).__name__}")
    changes = {}
    for k, v in options.items():
        try:
            changes[k] = parse_option(k, v)
        except KeyError:
            raise OptionError(f"--model-option {k}: not a field of the declaration "
                              f"({', '.join(f.name for f in fields(PixelDeclaration))})") from None
        except ValueError as exc:
            raise OptionError(f"--model-option {exc}") from None
    return replace(obj, **changes)


def _import_factory(target: str):
    """``MODULE:FUNCTION`` -> the function (OptionError naming ``--model`` when it cannot be found)."""
    module_name, _, func_name = target.partition(":")
    if not module_name or not func_name:
        raise OptionError(f"--model {PREFIX}{target}: expected {PREFIX}MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (any failure of a user's module is one line)
        raise OptionError(f"--model {PREFIX}{target}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise OptionError(f"--model {PREFIX}{target}: {module_name} has no function {func_name}")
    return module, func


def _source_digest(module) -> str | None:
    try:
        return hashlib.sha256(Path(inspect.getfile(module)).read_bytes()).hexdigest()
    except (TypeError, OSError):
        return None


def load_factory_model(target: str, path: str | Path, device: str | torch.device = "cpu",
                       **options: str) -> tuple[nn.Module, dict]:
    """Build the model of factory ``target`` (``MODULE:FUNCTION``) from ``path``; returns (model, config)."""
    module, func = _import_factory(target)
    where = f"--model {PREFIX}{target}"
    try:
        built = func(Path(path))
    except Exception as exc:  # noqa: BLE001
        raise OptionError(f"{where}: the factory failed on {path} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module)):
        raise OptionError(f"{where}: the factory must return (torch.nn.Module, declaration), got {type(built).__name__}")
    try:
        decl = _declaration(built[1], options, where)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{where}: {exc}") from None
    cfg = {"name": PREFIX + target, "kind": "pixel", **asdict(decl), "n_channels": decl.n_channels,
           "class_names": list(decl.names()), "mean": list(decl.mean), "std": list(decl.std),
           "factory": target, "factory_sha256": _source_digest(module)}
    return built[0].to(device).eval(), cfg


def input_size(height: int, width: int, cfg: dict) -> tuple[int, int]:
    """The model input size of a ``height`` x ``width`` frame (:func:`erfnet_input_size`'s rule)."""
    short = cfg["input_height"] or min(height, width)
    return erfnet_input_size(height, width, short, cfg["size_multiple"])


def _prepare(image: np.ndarray, cfg: dict) -> np.ndarray:
    short = cfg["input_height"] or min(image.shape[:2])
    x = preprocess_erfnet(image, short, cfg["size_multiple"])  # (3, h, w) in [0, 1]
    mean = torch.tensor(cfg["mean"], dtype=torch.float32)[:, None, None]
    std = torch.tensor(cfg["std"], dtype=torch.float32)[:, None, None]
    return np.ascontiguousarray(((x - mean) / std).numpy())  # (3, h, w) float32


def _forward(model, x: torch.Tensor):
    out = model(x)
    if isinstance(out, Mapping):  # torchvision's segmentation models: {"out": logits, "aux": ...}
        out = out["out"]
    return (out.to(torch.float16),)  # (B, C, h', w')


def _fields(cfg: dict, sizes) -> dict:
    s = cfg["output_stride"]
    logit_sizes = tuple(tuple(math.ceil(v / s) for v in input_size(h, w, cfg)) for h, w in sizes)
    return dict(n_classes=cfg["num_classes"], n_channels=cfg["n_channels"], void_channel=cfg["void_channel"],
                logit_sizes=logit_sizes)


def _preprocessing(cfg: dict) -> dict:
    resize = (f"short side {cfg['input_height']} (PIL bilinear)" if cfg["input_height"] else "none (the frame's size)")
    return {"resize": f"{resize}, sides rounded to a multiple of {cfg['size_multiple']}", "range": "[0, 1]",
            "normalization": f"(x - mean {cfg['mean']}) / std {cfg['std']}", "logits_to_label": "bilinear (analysis)"}


#: the adapter of every factory model (pixel cache kind, preprocessing of the declaration)
FACTORY_ADAPTER = Adapter(_prepare, _forward, split_single, write_pixel, _fields, np.stack, _preprocessing)


def factory_spec(name: str) -> ModelSpec:
    """The spec of ``python:MODULE:FUNCTION`` (the factory is imported when the model is loaded)."""
    target = name[len(PREFIX):]
    if ":" not in target:
        raise OptionError(f"--model {name}: expected {PREFIX}MODULE:FUNCTION")
    return ModelSpec(name, "pixel", partial(load_factory_model, target),
                     f"pixel model built by {target}", adapter=FACTORY_ADAPTER,
                     options=tuple(f.name for f in fields(PixelDeclaration)), source=f"factory {target}")
