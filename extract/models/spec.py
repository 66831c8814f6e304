"""What a registered model is: :class:`ModelSpec`, and how a checkpoint is identified in a cache.

A spec names the model's cache kind, the loader that reads its checkpoint, and, for models whose
frames are prepared their own way, its :class:`extract.models.adapter.Adapter`. The registry
(:func:`extract.models.get_model_spec`) finds specs among the built-in models, the
``anomaly_seg_cache.models`` entry points and ``python:MODULE:FUNCTION`` factories.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from extract.models.adapter import Adapter
from extract.models.checkpoint import file_sha256

#: ``loader(checkpoint, device, **model_options) -> (model in eval mode, config dict)``
Loader = Callable[..., tuple[nn.Module, dict]]


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as a cache records it: where it is read, its content digest, the name rows show."""

    path: Path
    sha256: str
    name: str


def identify_file(checkpoint: str | Path) -> CheckpointRef:
    """A checkpoint that is one file: its sha256 (FileNotFoundError when it is not a file)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return CheckpointRef(path, file_sha256(path), path.name)


def identify_folder(folder: str | Path) -> CheckpointRef:
    """A checkpoint that is a folder (a ``save_pretrained`` directory): the sha256 of its files'
    relative paths and digests, in path order (hidden files and folders left out)."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{file_sha256(p)}\n".encode())
    return CheckpointRef(root, h.hexdigest(), root.name)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    ``loader(checkpoint, device) -> (model, config)`` reads a checkpoint; ``identify(checkpoint)``
    finds it and gives its digest (default: one file); ``adapter`` prepares frames and stores
    outputs (None: the built-in adapter of ``kind``, :data:`extract.adapters.ADAPTERS`);
    ``to_official(model)`` returns the object the model's release would hold (built-in models).
    """

    name: str
    kind: str  # 'pixel' or 'query'
    loader: Loader
    description: str
    model_class: type[nn.Module] = nn.Module
    # takes an instance of model_class (save_official_checkpoint checks it first), hence Any
    to_official: Callable[[Any], dict] | None = None
    adapter: Adapter | None = None
    identify: Callable[[str | Path], CheckpointRef] = identify_file
    options: tuple[str, ...] = ()  # the keys of ``--model-option KEY=VALUE`` the loader takes
    source: str = "built-in"  # where it comes from: built-in, a package's entry point, a factory
