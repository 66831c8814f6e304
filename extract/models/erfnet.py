"""ERFNet (Romera et al. 2017) for Cityscapes, compatible with the released checkpoint.

Architecture follows ``Eromera/erfnet_pytorch``, ``eval/erfnet.py``; module names are
chosen so that ``state_dict()`` keys equal the official ones (``encoder.initial_block.*``,
``encoder.layers.N.*``, ``encoder.output_conv.*``, ``decoder.layers.N.*``,
``decoder.output_conv.*``). Preprocessing follows ``train/main.py`` (``Resize(512)`` +
``ToTensor()``, no mean/std normalisation). The released ``erfnet_pretrained.pth`` has 20
output channels: the 19 Cityscapes trainIds and a void channel at index 19.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from extract.models.checkpoint import (
    check_state_dict,
    expect_kind,
    load_weights_only,
    strip_prefix,
    unwrap_state_dict,
)

NUM_CLASSES = 20
VOID_CHANNEL = 19
INPUT_HEIGHT = 512

config: dict = {
    "name": "erfnet",
    "kind": "pixel",
    "num_classes": NUM_CLASSES,  # 19 Cityscapes trainIds + void
    "num_valid_classes": NUM_CLASSES - 1,
    "void_channel": VOID_CHANNEL,
    "input_height": INPUT_HEIGHT,  # short side after Resize(512), as torchvision computes it
    "input_range": [0.0, 1.0],
    "normalization": None,  # the released model was trained without mean/std
    "resize": "PIL bilinear",
}


class DownsamplerBlock(nn.Module):
    """concat(3x3 stride-2 conv to ``out - in`` channels, 2x2 max-pool) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch - in_ch, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.conv(x), self.pool(x)], dim=1)  # (B, out, H/2, W/2)
        return F.relu(self.bn(y))


class NonBottleneck1d(nn.Module):
    """Factorised residual block: (3x1, ReLU, 1x3, BN, ReLU) twice, second pair dilated."""

    def __init__(self, ch: int, dropprob: float, dilation: int):
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(ch, ch, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(ch, ch, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(ch, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(ch, ch, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(ch, ch, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(ch, eps=1e-3)
        self.dropout = nn.Dropout2d(dropprob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.bn2(self.conv1x3_2(y))
        if self.dropout.p != 0:
            y = self.dropout(y)
        return F.relu(y + x)


class UpsamplerBlock(nn.Module):
    """3x3 stride-2 transposed conv (output_padding 1) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=True
        )
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1d(64, 0.1, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1d(128, 0.1, d) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)
        # Only used for encoder-only pre-training; kept so the released keys match.
        self.output_conv = nn.Conv2d(128, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial_block(x)  # (B, 16, H/2, W/2)
        for layer in self.layers:
            x = layer(x)
        return x  # (B, 128, H/8, W/8)


class Decoder(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                UpsamplerBlock(128, 64),
                NonBottleneck1d(64, 0.0, 1),
                NonBottleneck1d(64, 0.0, 1),
                UpsamplerBlock(64, 16),
                NonBottleneck1d(16, 0.0, 1),
                NonBottleneck1d(16, 0.0, 1),
            ]
        )
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)  # (B, C, H, W)


class ERFNet(nn.Module):
    """ERFNet; ``forward`` maps (B, 3, H, W) in [0, 1] to logits (B, num_classes, H, W).

    H and W must be multiples of 8 for the output to have the input size.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder(num_classes)
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # (B, C, H, W)


def erfnet_input_size(height: int, width: int, short_side: int = INPUT_HEIGHT, multiple: int = 8) -> tuple[int, int]:
    """Model input size: torchvision ``Resize(short_side)``, then sides rounded to ``multiple``.

    torchvision (``transforms/functional.py::_compute_resized_output_size``) sets the
    short side and truncates the long one: ``int(short_side * long / short)``. ERFNet's
    three stride-2 downsamplers concatenate a conv branch (ceil) and a max-pool branch
    (floor), so the official network fails unless both sides are divisible by 8; sides are
    therefore rounded to the nearest multiple of ``multiple`` (``multiple=1`` keeps the
    torchvision size). 1024x2048 -> 512x1024 is unchanged; 720x1280 -> 512x910 -> 512x912.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if width <= height:
        h, w = int(short_side * height / width), short_side
    else:
        h, w = short_side, int(short_side * width / height)
    return tuple(max(multiple, int(round(v / multiple)) * multiple) for v in (h, w))


def preprocess_erfnet(image_uint8_hwc: np.ndarray, height: int = INPUT_HEIGHT, multiple: int = 8) -> torch.Tensor:
    """ERFNet input as ``train/main.py`` builds it: ``Resize(height)`` (PIL bilinear), ToTensor.

    ``height`` keeps the official name: it is the size of the short side, so portrait
    images get width ``height``; sides are rounded to ``multiple`` (see :func:`erfnet_input_size`).
    Returns a float32 tensor (3, h, w) in [0, 1]; no mean/std.
    """
    image = np.asarray(image_uint8_hwc)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    new_h, new_w = erfnet_input_size(image.shape[0], image.shape[1], height, multiple)
    pil = Image.fromarray(image)
    if (new_h, new_w) != image.shape[:2]:
        pil = pil.resize((new_w, new_h), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.uint8)  # (h, w, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, h, w)


def _expected_state_dict() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return ERFNet().state_dict()


def convert_erfnet_checkpoint(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Our state_dict from the released ``erfnet_pretrained.pth`` (pure function).

    Accepts the DataParallel format (every key prefixed ``module.``), the same without
    prefix, and an optional ``{'state_dict': ...}`` wrapper. BatchNorm
    ``num_batches_tracked`` counters, which checkpoints saved before PyTorch 0.4.1 lack
    and which inference never reads, are filled with zeros when absent; every other key
    and shape must match exactly, else :class:`CheckpointError` lists the differences.
    ``source`` names the checkpoint in error messages.
    """
    sd = unwrap_state_dict(obj, source)
    expect_kind(sd, "erfnet", source)
    sd = strip_prefix(sd, "module.")
    expected = _expected_state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros((), dtype=torch.long)
    check_state_dict(expected, sd, "ERFNet", source)
    return {k: sd[k] for k in expected}


def load_erfnet(path: str | Path, device: str | torch.device = "cpu") -> tuple[ERFNet, dict]:
    """Load a released-format ERFNet checkpoint; returns (model in eval mode, ``config``)."""
    obj = load_weights_only(path)
    sd = convert_erfnet_checkpoint(obj, source=f"checkpoint {path}")
    model = ERFNet()
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval(), dict(config)


def official_erfnet_state_dict(model: ERFNet) -> dict[str, torch.Tensor]:
    """``model`` in the released format: a plain state_dict saved under DataParallel."""
    return {"module." + k: v.detach().cpu() for k, v in model.state_dict().items()}
