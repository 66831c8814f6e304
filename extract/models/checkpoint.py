"""Checkpoint loading and validation shared by the model converters.

Every checkpoint is read with ``torch.load(path, map_location="cpu", weights_only=True)``:
the restricted unpickler only rebuilds tensors and plain containers, so a file that
embeds code is refused instead of executed. Anything that goes wrong while reading or
matching a checkpoint surfaces as a :class:`CheckpointError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from schemas.errors import DataError

# Key fragments that identify each released checkpoint family, after wrappers and
# prefixes are stripped (ERFNet: ``eval/erfnet.py``; EoMT: ``models/eomt.py``).
_ERFNET_MARKER = "encoder.initial_block.conv.weight"
_EOMT_MARKERS = ("encoder.backbone.patch_embed.proj.weight", "q.weight")

KIND_LABELS = {"erfnet": "ERFNet", "eomt": "EoMT"}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (a checkpoint's identity, recorded in every cache), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CheckpointError(DataError, ValueError):
    """A checkpoint file cannot be read, or does not match the expected network."""


def load_weights_only(path: str | Path) -> object:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with one-line errors.

    Truncated or corrupt files and pickles that need arbitrary code raise
    :class:`CheckpointError` naming the file; a missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    _check_format(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise CheckpointError(
                f"checkpoint {path} is not a weights-only file ({_reason(err)}): it pickles "
                "objects or code that weights_only=True refuses to run, or it is truncated"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: {_first_line(err)}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure to parse means a corrupt file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: {_first_line(err)}"
        ) from None


def _check_format(path: Path) -> None:
    """CheckpointError unless ``path`` starts as a file ``torch.save`` writes: a zip archive
    (``PK\\x03\\x04``, the format since torch 1.6) or a pickle (protocol 2 or later: ``\\x80``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return
    raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a "
                          f"pickle; it starts with {head!r}): pass the model's .pth or .bin file")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _reason(err: BaseException) -> str:
    """The informative part of torch's multi-line weights-only refusal (the offending global)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    boilerplate = ("Weights only load failed", "(1)", "(2)", "Check the documentation")
    for ln in lines:
        if ln.startswith(boilerplate):
            continue
        ln = ln.split("WeightsUnpickler error:", 1)[-1].strip()  # after torch's "Please file an issue ..."
        if ln:
            return ln.split(". Please use", 1)[0].rstrip(".")
    return "refused by the weights-only unpickler"


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of ``obj``: a plain state_dict or one in a ``{'state_dict': ...}`` wrapper."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, expected a state_dict (a mapping of tensors)"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors: not a model state_dict")
    others = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if others:
        raise CheckpointError(f"{source} has non-tensor state_dict entries: {_clip(others)}")
    return dict(tensors)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it; otherwise return a copy."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def detect_checkpoint_kind(state_dict: object, source: str = "checkpoint") -> str:
    """``'erfnet'`` or ``'eomt'`` from the key names of a (possibly wrapped/prefixed) checkpoint
    (anything else, a non-mapping included: CheckpointError naming ``source``)."""
    sd = unwrap_state_dict(state_dict, source)
    keys = set()
    for k in sd:
        for prefix in ("module.", "network."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        keys.add(k)
    if all(m in keys for m in _EOMT_MARKERS):
        return "eomt"
    if _ERFNET_MARKER in keys:
        return "erfnet"
    raise CheckpointError(
        f"{source} is neither an ERFNet nor an EoMT checkpoint "
        f"(first keys: {_clip(sorted(sd))})"
    )


def expect_kind(state_dict: Mapping[str, object], kind: str, source: str = "checkpoint") -> None:
    """Raise when ``state_dict`` is recognisably the *other* model's checkpoint."""
    try:
        found = detect_checkpoint_kind(state_dict, source)
    except CheckpointError:
        return  # unknown format: the strict key check reports the details
    if found != kind:
        raise CheckpointError(
            f"{source} is an {KIND_LABELS[found]} checkpoint, not {KIND_LABELS[kind]}"
        )


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    what: str,
    source: str = "checkpoint",
) -> None:
    """Strict key and shape comparison; the error lists missing, unexpected and mismatched keys."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(got)
        if tuple(got[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_clip(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_clip(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} is not a valid {what} checkpoint: " + "; ".join(problems))


def _clip(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
