"""What a cache records about how its numbers were made: checkpoint hash, versions, device."""

from __future__ import annotations


import numpy as np
import torch

from schemas.version import tool_version


def versions() -> dict[str, str]:
    """The tool's and the numerics libraries' versions recorded in a cache."""
    import timm
    import zarr

    return {"package": tool_version(), "torch": torch.__version__, "timm": timm.__version__, "zarr": zarr.__version__,
            "numpy": np.__version__}


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:<GPU name>``: the device recorded in a cache and logged."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
