"""EoMT sliding-window geometry for semantic inference (pure, no torch).

Follows the official semantic evaluation of EoMT (``tue-mps/eomt``,
``training/lightning_module.py``: ``scale_img_size_semantic``,
``window_imgs_semantic``, ``revert_window_logits_semantic``):

1. scale the image so that its *short* side equals the crop size:
   ``factor = max(crop / H, crop / W)``, new size ``round(H * factor), round(W * factor)``;
2. cut ``n = ceil(long / crop)`` square crops along the long side, the overlap
   ``n * crop - long`` spread evenly: ``start_j = int(j * (crop - overlap / (n - 1)))``;
3. after the network, crop outputs are summed into the resized frame, divided by the
   per-pixel count, and bilinearly resized to the original size.

The geometry lives in ``schemas`` because both the extractor (to cut crops) and the
analysis (to merge them) need the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One crop of a frame: ``[start, end)`` along the long side of the resized frame."""

    start: int
    end: int


@dataclass(frozen=True)
class FrameWindows:
    """Window geometry of one frame.

    ``resized`` is the (height, width) after scaling the short side to ``crop``;
    ``portrait`` is True when crops run along the height (``resized[0] > resized[1]``).
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    crop: int
    windows: tuple[Window, ...]
    # (height, width) every crop's masks are upsampled to, when not (crop, crop): a single
    # non-square window that covers the whole resized frame (Mask2Former: schemas.inference)
    tile_hw: tuple[int, int] | None = None

    @property
    def tile(self) -> tuple[int, int]:
        """(height, width) of one crop of the resized frame, the size its masks are upsampled to."""
        return self.tile_hw if self.tile_hw is not None else (self.crop, self.crop)

    @property
    def portrait(self) -> bool:
        return self.resized[0] > self.resized[1]

    @property
    def n_crops(self) -> int:
        return len(self.windows)


def scaled_size(height: int, width: int, crop: int) -> tuple[int, int]:
    """Size after scaling the short side to ``crop`` (Python ``round``, as the official code)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    factor = max(crop / height, crop / width)
    return round(height * factor), round(width * factor)


def window_starts(long_side: int, crop: int) -> tuple[Window, ...]:
    """Crops along a side of length ``long_side`` with the overlap spread evenly."""
    n = math.ceil(long_side / crop)
    overlap = n * crop - long_side
    per_crop = overlap / (n - 1) if overlap > 0 else 0
    out = []
    for j in range(n):
        start = int(j * (crop - per_crop))
        out.append(Window(start, start + crop))
    return tuple(out)


def frame_windows(height: int, width: int, crop: int) -> FrameWindows:
    """Full window geometry of a ``height`` x ``width`` frame for square crops of ``crop``."""
    new_h, new_w = scaled_size(height, width, crop)
    return FrameWindows(
        original=(int(height), int(width)),
        resized=(new_h, new_w),
        crop=int(crop),
        windows=window_starts(max(new_h, new_w), crop),
    )
