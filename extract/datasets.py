"""Dataset readers driven by ``data_manifest.yaml``.

Every dataset is described by data (folder layout, label mapping) in the manifest; this
module has no branch on dataset names. A reader yields, per frame, the frame id, the RGB
uint8 image, the canonical label map ({0 in-distribution, 1 anomaly, 255 void}, or
Cityscapes trainIds 0..18 / 255) and the original size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from schemas.errors import DataError

DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "data_manifest.yaml"
VOID = 255
KINDS = ("anomaly", "semantic")


class DatasetError(DataError):
    """A dataset on disk does not match the manifest (the message names the file)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One manifest entry (see the comment block at the top of ``data_manifest.yaml``)."""

    name: str
    title: str
    folder: str
    image_glob: str
    image_regex: str
    label_template: str
    count: int
    size: tuple[int, int] | None
    kind: str
    label_map: dict[int, int]
    unmapped: str
    roi: str
    image_template: str
    image_exts: tuple[str, ...] = field(default=())
    synth: dict = field(default_factory=dict)

    @property
    def lut(self) -> np.ndarray:
        """256-entry lookup table raw -> canonical; unmapped raw values give -1 or 255."""
        fill = VOID if self.unmapped == "void" else -1
        table = np.full(256, fill, dtype=np.int16)
        for raw, canon in self.label_map.items():
            table[raw] = canon
        return table

    def digest(self) -> str:
        """sha256 of the canonical JSON of this entry (stored as cache provenance)."""
        payload = json.dumps(_spec_to_dict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()


def _spec_to_dict(spec: DatasetSpec) -> dict:
    d = dict(spec.__dict__)
    d["label_map"] = {str(k): v for k, v in spec.label_map.items()}
    d["size"] = list(spec.size) if spec.size else None
    d["image_exts"] = list(spec.image_exts)
    return d


def _parse_entry(name: str, raw: dict, source: Path) -> DatasetSpec:
    try:
        regex = raw["images"]["regex"]
        exts = re.search(r"\(\?P<ext>([^)]*)\)", regex)
        label_map = {int(k): int(v) for k, v in raw["label_map"].items()}
        kind = raw["kind"]
        unmapped = raw.get("unmapped", "error")
        spec = DatasetSpec(
            name=name,
            title=str(raw.get("title", name)),
            folder=str(raw["folder"]),
            image_glob=str(raw["images"]["glob"]),
            image_regex=regex,
            label_template=str(raw["labels"]),
            count=int(raw["count"]),
            size=tuple(int(s) for s in raw["size"]) if raw.get("size") else None,
            kind=kind,
            label_map=label_map,
            unmapped=unmapped,
            roi=str(raw.get("roi", "")),
            image_template=str(raw["images"]["template"]),
            synth=dict(raw.get("synth") or {}),
            image_exts=tuple(exts.group(1).split("|")) if exts else (),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{source}: dataset {name!r} entry is malformed ({exc!r})") from None
    if kind not in KINDS:
        raise DatasetError(f"{source}: dataset {name!r} has kind {kind!r}, expected one of {KINDS}")
    if unmapped not in ("error", "void"):
        raise DatasetError(f"{source}: dataset {name!r} has unmapped {unmapped!r}, expected error or void")
    re.compile(regex)
    return spec


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    """Read the manifest (default: ``data_manifest.yaml`` beside the packages)."""
    source = Path(path or os.environ.get("ANOMSEG_MANIFEST") or DEFAULT_MANIFEST)
    try:
        raw = yaml.safe_load(source.read_text())
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read the dataset manifest ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        raise DatasetError(f"{source}: expected a top-level `datasets:` mapping")
    return {name: _parse_entry(name, entry, source) for name, entry in raw["datasets"].items()}


def get_dataset_spec(name: str, manifest: str | os.PathLike | None = None) -> DatasetSpec:
    specs = load_manifest(manifest)
    if name not in specs:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(sorted(specs))}")
    return specs[name]


@dataclass(frozen=True)
class FrameRef:
    """Paths of one frame on disk (nothing decoded)."""

    id: str
    image_path: Path
    label_path: Path


@dataclass
class Frame:
    id: str
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, canonical
    size: tuple[int, int]
    image_path: Path
    label_path: Path


def dataset_dir(spec: DatasetSpec, data_root: str | os.PathLike) -> Path:
    return Path(data_root) / spec.folder


def list_frames(spec: DatasetSpec, data_root: str | os.PathLike) -> tuple[list[FrameRef], list[str]]:
    """Frames matching the manifest, sorted by id, and the problems found while listing.

    Problems (one line each, naming the file): a file matched by the glob whose path does
    not fit the layout, an image without its label.
    """
    root = dataset_dir(spec, data_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder for {spec.name!r} not found")
    pattern = re.compile(spec.image_regex)
    frames, problems, seen = [], [], set()
    for path in sorted(root.glob(spec.image_glob)):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        m = pattern.match(rel)
        if m is None:
            problems.append(f"{path}: unexpected file (does not match {spec.name} layout {spec.image_regex})")
            continue
        groups = m.groupdict()
        label_path = root / spec.label_template.format(**groups)
        if not label_path.is_file():
            problems.append(f"{path}: image has no label (expected {label_path})")
            continue
        fid = groups["id"]
        if fid in seen:
            problems.append(f"{path}: duplicate frame id {fid!r}")
            continue
        seen.add(fid)
        frames.append(FrameRef(fid, path, label_path))
    frames.sort(key=lambda f: f.id)
    return frames, problems


def read_image(path: Path) -> np.ndarray:
    """Decode png/jpg/webp to RGB uint8 (H, W, 3); errors name the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot read image header ({exc.__class__.__name__}: {exc})") from None
    return h, w


def read_label(spec: DatasetSpec, path: Path) -> np.ndarray:
    """Decode a raw label PNG and map it to canonical values (manifest ``label_map``)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{path}: label must be a single-channel image, got mode {im.mode}")
            raw = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode label ({exc.__class__.__name__}: {exc})") from None
    if raw.ndim != 2:
        raise DatasetError(f"{path}: label must be 2-D, got shape {raw.shape}")
    if raw.max(initial=0) > 255:
        bad = sorted(int(v) for v in np.unique(raw[raw > 255])[:5])
        raise DatasetError(f"{path}: label values {bad} outside the {spec.name} mapping {sorted(spec.label_map)}")
    canon = spec.lut[raw.astype(np.uint8)]
    if (canon < 0).any():
        bad = sorted(int(v) for v in np.unique(raw[canon < 0])[:5])
        raise DatasetError(f"{path}: label values {bad} outside the {spec.name} mapping {sorted(spec.label_map)}")
    return canon.astype(np.uint8)


def read_frame(spec: DatasetSpec, ref: FrameRef) -> Frame:
    image = read_image(ref.image_path)
    label = read_label(spec, ref.label_path)
    if image.shape[:2] != label.shape:
        raise DatasetError(
            f"{ref.label_path}: label size {label.shape[0]}x{label.shape[1]} differs from image "
            f"size {image.shape[0]}x{image.shape[1]} ({ref.image_path.name})"
        )
    return Frame(ref.id, image, label, image.shape[:2], ref.image_path, ref.label_path)


class DatasetReader:
    """Iterates the frames of one dataset in id order (also indexable, for DataLoaders)."""

    def __init__(self, spec: DatasetSpec, data_root: str | os.PathLike, strict: bool = True):
        self.spec = spec
        self.data_root = Path(data_root)
        self.refs, problems = list_frames(spec, data_root)
        if problems and strict:
            raise DatasetError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
        if not self.refs:
            raise DatasetError(f"{dataset_dir(spec, data_root)}: no {spec.name} images found ({spec.image_glob})")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Frame:
        return read_frame(self.spec, self.refs[i])

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.refs]

    def sizes(self) -> list[tuple[int, int]]:
        """Original (H, W) of every frame, read from headers only."""
        return [image_size(r.image_path) for r in self.refs]


@dataclass
class CheckReport:
    errors: list[str]
    warnings: list[str]
    n_frames: int

    @property
    def ok(self) -> bool:
        return not self.errors


def check_dataset(spec: DatasetSpec, data_root: str | os.PathLike) -> CheckReport:
    """Validate a local copy against the manifest.

    Errors: layout violations, images without labels, labels without images, undecodable
    files, label values outside the mapping, image/label size mismatch. Warning: an image
    count different from the manifest's (subsets are allowed).
    """
    refs, errors = list_frames(spec, data_root)
    warns: list[str] = []
    root = dataset_dir(spec, data_root)
    label_paths = {r.label_path.resolve() for r in refs}
    label_dir = (root / spec.label_template).parent
    if "{" not in str(label_dir.relative_to(root)) and label_dir.is_dir():
        for p in sorted(label_dir.iterdir()):
            if p.is_file() and p.resolve() not in label_paths and p.suffix == Path(spec.label_template).suffix:
                errors.append(f"{p}: label has no image")
    for ref in refs:
        try:
            read_frame(spec, ref)
        except DatasetError as exc:
            errors.append(str(exc))
    if len(refs) != spec.count:
        warns.append(f"{root}: {len(refs)} images found, the full {spec.name} release has {spec.count}")
    return CheckReport(errors, warns, len(refs))
