"""Dataset readers driven by ``data_manifest.yaml``.

Every dataset is described by data (layouts of its copies, label mapping) in the manifest
(:mod:`schemas.manifest`, the parser both wings share); :mod:`extract.datasets.layouts` finds
the copy under a data root and lists its frames; this module decodes them and checks copies
(``extract datasets check``). Nothing here branches on a dataset
name. A reader yields, per frame, the frame id, the RGB uint8 image, the canonical label map
({0 in-distribution, 1 anomaly, 255 void}, or Cityscapes trainIds 0..18 / 255) and the
original size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from extract.datasets.layouts import DatasetCopy, FrameRef, list_frames, locate
from schemas.manifest import (
    VOID,
    DatasetError,
    DatasetSpec,
    LabelMap,
)

__all__ = ["CheckReport", "DatasetReader", "Frame", "check_dataset", "image_size", "read_frame", "read_image",
           "read_label_file"]

_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


@dataclass
class Frame:
    id: str
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, canonical; all void (255) for an unlabelled frame
    size: tuple[int, int]
    image_path: Path
    label_path: Path | None  # None: an unlabelled frame (a benchmark's test image)

    @property
    def labelled(self) -> bool:
        return self.label_path is not None


def read_image(path: Path) -> np.ndarray:
    """Decode png/jpg/webp to RGB uint8 (H, W, 3); errors name the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: cannot read image header ({exc.__class__.__name__}: {exc})") from None
    return h, w


def read_label_file(labels: LabelMap, path: Path, dataset: str = "") -> np.ndarray:
    """Decode a raw label PNG and map it to canonical values (the layout's ``label_map``).

    A raw value outside the mapping is an error naming the file (or void where the layout
    says ``unmapped: void``).
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{path}: label must be a single-channel image, got mode {im.mode}")
            raw = np.asarray(im)
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: cannot decode label ({exc.__class__.__name__}: {exc})") from None
    if raw.ndim != 2:
        raise DatasetError(f"{path}: label must be 2-D, got shape {raw.shape}")
    mapping = f"the{' ' + dataset if dataset else ''} mapping {sorted(labels.values)}"
    if raw.max(initial=0) > 255:
        bad = sorted(int(v) for v in np.unique(raw[raw > 255])[:5])
        raise DatasetError(f"{path}: label values {bad} outside {mapping}")
    canon = labels.lut[raw.astype(np.uint8)]
    if (canon < 0).any():
        bad = sorted(int(v) for v in np.unique(raw[canon < 0])[:5])
        raise DatasetError(f"{path}: label values {bad} outside {mapping}")
    return canon.astype(np.uint8)


def read_frame(copy: DatasetCopy, ref: FrameRef) -> Frame:
    """Decode one frame of ``copy`` (image + canonical label); errors name the file.

    An unlabelled frame (``ref.label_path`` None) gets a label that is void (255) everywhere,
    so no metric ever counts one of its pixels.
    """
    image = read_image(ref.image_path)
    if ref.label_path is None:
        return Frame(ref.id, image, np.full(image.shape[:2], VOID, np.uint8), image.shape[:2], ref.image_path, None)
    label = read_label_file(copy.layout.labels, ref.label_path, copy.spec.name)
    if image.shape[:2] != label.shape:
        raise DatasetError(
            f"{ref.label_path}: label size {label.shape[0]}x{label.shape[1]} differs from image "
            f"size {image.shape[0]}x{image.shape[1]} ({ref.image_path.name})"
        )
    return Frame(ref.id, image, label, image.shape[:2], ref.image_path, ref.label_path)


class DatasetReader:
    """Iterates the frames of the one copy of a dataset under ``data_root``, in natural id
    order (also indexable, for DataLoaders).

    ``layout`` restricts detection to one layout; ``strict`` makes files that do not fit
    the layout an error (else they are skipped and counted in :meth:`notes`);
    ``include_excluded`` keeps ids the layout excludes. With the dataset's ``frames: all``,
    unlabelled images are frames too (:attr:`labelled` says which; their labels are void).
    """

    def __init__(self, spec: DatasetSpec, data_root: str | os.PathLike, strict: bool = True,
                 layout: str | None = None, include_excluded: bool = False):
        self.spec = spec
        self.data_root = Path(data_root)
        self.strict = strict
        self.copy = locate(spec, data_root, layout)
        self.listing = list_frames(self.copy, include_excluded=include_excluded)
        problems = self.listing.errors
        if strict and self.listing.unexpected:
            problems = [self.listing.unexpected_error()] + problems
        if problems:
            raise DatasetError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
        self.refs = self.listing.frames
        if not self.refs:
            raise DatasetError(f"{self.copy.folder}: no labelled {spec.name} images found ({self.copy.describe()})")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Frame:
        return read_frame(self.copy, self.refs[i])

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.refs]

    @property
    def labelled(self) -> list[bool]:
        """Per frame: has a label (False for a benchmark's test image, whose label is void)."""
        return [r.labelled for r in self.refs]

    def sizes(self) -> list[tuple[int, int]]:
        """Original (H, W) of every frame, read from headers only."""
        return [image_size(r.image_path) for r in self.refs]

    def notes(self) -> list[str]:
        """Which copy was found and what was left out of it, one line each."""
        n_unlabelled = self.labelled.count(False)
        unlabelled = f" ({n_unlabelled} unlabelled)" if n_unlabelled else ""
        return [f"{self.spec.name}: {self.copy.describe()}, {len(self.refs)} frames{unlabelled}"] + \
            self.listing.notes(skip_unexpected=not self.strict)


@dataclass
class CheckReport:
    errors: list[str]
    warnings: list[str]
    n_frames: int
    notes: list[str] = field(default_factory=list)
    copy: DatasetCopy | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def check_dataset(spec: DatasetSpec, data_root: str | os.PathLike, layout: str | None = None,
                  include_excluded: bool = False, skip_unexpected: bool = False) -> CheckReport:
    """Validate a local copy against the manifest (every file decoded).

    Errors: no copy or several, files that do not fit the layout (unless
    ``skip_unexpected``), images without a required label, labels without an image,
    undecodable files, label values outside the mapping, image/label size mismatch.
    Warning: a frame count different from the manifest's (subsets are allowed). Notes: the
    layout found and what was left out (system files, unlabelled and excluded images).
    """
    copy = locate(spec, data_root, layout)
    listing = list_frames(copy, include_excluded=include_excluded)
    errors = list(listing.errors)
    if listing.unexpected and not skip_unexpected:
        errors.insert(0, listing.unexpected_error())
    errors += [f"{p}: label has no image" for p in listing.orphan_labels]
    for ref in listing.frames:
        try:
            read_frame(copy, ref) if ref.labelled else read_image(ref.image_path)
        except DatasetError as exc:
            errors.append(str(exc))
    warns = []
    if len(listing.frames) != spec.count:
        warns.append(f"{copy.folder}: {len(listing.frames)} frames found, the full {spec.name} release has {spec.count}")
    notes = [f"{spec.name}: {copy.describe()}"] + listing.notes(skip_unexpected=skip_unexpected)
    return CheckReport(errors, warns, len(listing.frames), notes, copy)
