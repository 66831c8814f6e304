"""``data_manifest.yaml``: the datasets, their label values and the folder layouts of their copies.

The one list of datasets, and its one parser, read by both wings: ``extract`` (readers,
synthetic copies, cache provenance) and ``analyze`` (report titles and column order, the
in-distribution dataset of the mIoU column, the component-metric track).

A dataset entry says what the data *is* (kind, raw -> canonical label mapping, frame count,
how it is reported); each of its layouts says how one kind of copy stores the files (folder,
image glob/regex, label template, ids left out). The field reference is the comment block at
the top of the manifest. Nothing here branches on a dataset or layout name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from schemas.errors import DataError
from schemas.labels import VOID  # canonical label of void / ignored pixels, in every label kind

#: the environment variable that points the tools at another manifest file
MANIFEST_ENV = "ANOMSEG_MANIFEST"
MANIFEST_NAME = "data_manifest.yaml"
SCHEMA_VERSION = 2
#: ``kind`` values: what the canonical labels are (caches record it as ``label_kind``)
LABEL_KINDS = ("anomaly", "semantic")
UNMAPPED = ("error", "void")
#: ``role`` values: anomaly = scored for anomaly segmentation; in_distribution = the dataset of
#: the report's mIoU column (one dataset, kind semantic)
ROLES = ("anomaly", "in_distribution")
#: ``component_track`` values: the SMIYC track whose small-component rules apply
#: (:data:`analyze.metrics.components.TRACKS` has the rules of each)
COMPONENT_TRACKS = ("anomaly", "obstacle")
#: ``frames`` values: labelled = images with a label only; all = unlabelled images too.
FRAME_SELECTIONS = ("labelled", "all")
#: ``exclude.keep`` values: drop = excluded ids are not frames; unlabelled = frames without a label.
EXCLUDE_KEEP = ("drop", "unlabelled")


class DatasetError(DataError):
    """A dataset on disk (or the manifest) does not match what is expected; the message names the file."""


@dataclass(frozen=True)
class LabelMap:
    """Raw label value -> canonical value of one layout (``label_map`` + ``unmapped``)."""

    values: dict[int, int]
    unmapped: str = "error"

    @property
    def lut(self) -> np.ndarray:
        """256-entry lookup table raw -> canonical; unmapped raw values give -1 (error) or 255 (void)."""
        table = np.full(256, VOID if self.unmapped == "void" else -1, dtype=np.int16)
        for raw, canon in self.values.items():
            table[raw] = canon
        return table

    def raw_for(self, canonical: int) -> int:
        """First raw value that maps to ``canonical`` (what synthetic copies write)."""
        for raw, canon in self.values.items():
            if canon == canonical:
                return raw
        raise ValueError(f"no raw label value maps to {canonical}")


@dataclass(frozen=True)
class Layout:
    """How one kind of copy of a dataset stores its files (one entry under ``layouts:``)."""

    name: str
    dataset: str
    description: str
    folders: tuple[str, ...]  # accepted spellings of the folder under --data-root ("." = the root)
    image_glob: str
    image_regex: str
    image_template: str
    label_template: str
    labels: LabelMap
    labelled_ids: str | None = None  # ids that must have a label; None: every image must
    exclude_prefixes: tuple[str, ...] = ()
    exclude_reason: str = ""
    exclude_keep: str = "drop"  # unlabelled: excluded ids stay frames, without their label
    synth: dict = field(default_factory=dict)

    @property
    def image_exts(self) -> tuple[str, ...]:
        m = re.search(r"\(\?P<ext>([^)]*)\)", self.image_regex)
        return tuple(m.group(1).split("|")) if m else ()

    def expected(self) -> str:
        """One line saying where this layout keeps images and labels (for error messages)."""
        folders = " or ".join(f"{f}/" for f in self.folders)
        image = self.image_template.replace("{ext}", "|".join(self.image_exts) or "{ext}")
        return f"{self.name}: {folders} with {image} and {self.label_template}"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the manifest (see the comment block at the top of ``data_manifest.yaml``)."""

    name: str
    title: str
    kind: str
    count: int
    size: tuple[int, int] | None
    roi: str
    layouts: tuple[Layout, ...]
    frames: str = "labelled"
    benchmark: dict[str, str] = field(default_factory=dict)  # export format -> the benchmark's dataset name
    report_title: str = ""  # short name in tables and figures ("" = the manifest name)
    report_order: int | None = None  # column position among the anomaly datasets (None: after, by name)
    role: str = "anomaly"
    component_track: str = "anomaly"

    @property
    def display_name(self) -> str:
        """The name tables and figures show: ``report.title``, else the manifest name."""
        return self.report_title or self.name

    @property
    def layout_names(self) -> tuple[str, ...]:
        return tuple(lay.name for lay in self.layouts)

    def layout(self, name: str | None = None) -> Layout:
        """The layout called ``name`` (default: the first one listed)."""
        if name is None:
            return self.layouts[0]
        for lay in self.layouts:
            if lay.name == name:
                return lay
        raise DatasetError(f"{self.name} has no layout {name!r}; valid: {', '.join(self.layout_names)}")

    def digest(self, layout: str | None = None) -> str:
        """sha256 of what fixes the cached content of a frame: dataset name, kind and the
        layout's raw -> canonical label mapping.

        Folders, globs, templates, titles, counts, sizes and synth settings are left out, so
        caches made from different copies (layouts) of the same content are interchangeable;
        frame ids and sizes are compared on their own when a cache is resumed.
        """
        labels = self.layout(layout).labels
        payload = {"dataset": self.name, "kind": self.kind, "unmapped": labels.unmapped,
                   "label_map": {str(k): v for k, v in sorted(labels.values.items())}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _parse_label_map(raw: dict, fallback: LabelMap | None) -> LabelMap:
    if "label_map" not in raw:
        if fallback is None:
            raise KeyError("label_map")
        return LabelMap(fallback.values, str(raw.get("unmapped", fallback.unmapped)))
    values = {int(k): int(v) for k, v in raw["label_map"].items()}
    bad = [k for k in values if not 0 <= k <= 255]
    if bad:
        raise ValueError(f"raw label values {bad} outside 0..255")
    return LabelMap(values, str(raw.get("unmapped", "error")))


def _parse_layout(name: str, raw: dict, dataset: str, labels: LabelMap, synth: dict) -> Layout:
    folders = raw["folder"]
    folders = tuple(str(f) for f in (folders if isinstance(folders, list) else [folders]))
    exclude = raw.get("exclude") or {}
    layout = Layout(
        name=name,
        dataset=dataset,
        description=str(raw.get("description", "")),
        folders=folders,
        image_glob=str(raw["images"]["glob"]),
        image_regex=str(raw["images"]["regex"]),
        image_template=str(raw["images"]["template"]),
        label_template=str(raw["labels"]),
        labels=_parse_label_map(raw, labels),
        labelled_ids=raw.get("labelled_ids"),
        exclude_prefixes=tuple(str(p) for p in exclude.get("prefixes", ())),
        exclude_reason=str(exclude.get("reason", "")),
        exclude_keep=str(exclude.get("keep", "drop")),
        synth={**synth, **(raw.get("synth") or {})},
    )
    for rx in (layout.image_regex, layout.labelled_ids):
        if rx is not None:
            re.compile(rx)
    if "(?P<id>" not in layout.image_regex:
        raise ValueError("images.regex has no (?P<id>...) group")
    if layout.exclude_keep not in EXCLUDE_KEEP:
        raise ValueError(f"exclude.keep {layout.exclude_keep!r}, expected one of {EXCLUDE_KEEP}")
    return layout


def _size(raw) -> tuple[int, int]:
    """``size: [height, width]`` of a manifest entry (ValueError for any other length)."""
    height, width = (int(v) for v in raw)
    return height, width


def _parse_entry(name: str, raw: dict, source: Path) -> DatasetSpec:
    where = f"{source}: dataset {name!r}"
    try:
        report = raw.get("report") or {}
        if not isinstance(report, dict) or set(report) - {"title", "order"}:
            raise ValueError("report must be a mapping with title and/or order")
        labels = _parse_label_map(raw, None)
        synth = dict(raw.get("synth") or {})
        layouts_raw = raw["layouts"]
        if not isinstance(layouts_raw, dict) or not layouts_raw:
            raise ValueError("layouts must be a non-empty mapping of name -> layout")
        layouts = []
        for lname, lraw in layouts_raw.items():
            try:
                layouts.append(_parse_layout(str(lname), lraw, name, labels, synth))
            except (KeyError, TypeError, ValueError, AttributeError, re.error) as exc:
                raise DatasetError(f"{where} layout {lname!r} is malformed ({exc!r})") from None
        spec = DatasetSpec(
            name=name,
            title=str(raw.get("title", name)),
            kind=str(raw["kind"]),
            count=int(raw["count"]),
            size=_size(raw["size"]) if raw.get("size") else None,
            roi=str(raw.get("roi", "")),
            layouts=tuple(layouts),
            frames=str(raw.get("frames", "labelled")),
            benchmark={str(k): str(v) for k, v in (raw.get("benchmark") or {}).items()},
            report_title=str(report.get("title", "")),
            report_order=int(report["order"]) if report.get("order") is not None else None,
            role=str(raw.get("role", "anomaly")),
            component_track=str(raw.get("component_track", "anomaly")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{where} entry is malformed ({exc!r})") from None
    for what, value, valid in (("kind", spec.kind, LABEL_KINDS), ("frames", spec.frames, FRAME_SELECTIONS),
                               ("role", spec.role, ROLES), ("component_track", spec.component_track, COMPONENT_TRACKS)):
        if value not in valid:
            raise DatasetError(f"{where} has {what} {value!r}, expected one of {valid}")
    if spec.role == "in_distribution" and spec.kind != "semantic":
        raise DatasetError(f"{where} has role in_distribution but kind {spec.kind!r}: the mIoU dataset needs "
                           "semantic labels")
    for lay in spec.layouts:
        if lay.labels.unmapped not in UNMAPPED:
            raise DatasetError(f"{where} layout {lay.name!r} has unmapped {lay.labels.unmapped!r}, "
                               f"expected one of {UNMAPPED}")
    return spec


def default_manifest() -> Path:
    """The manifest the tools read when no path is given: ``$ANOMSEG_MANIFEST`` if set; else the
    copy packaged inside ``schemas`` (a wheel: the build copies the top-level
    ``data_manifest.yaml`` in, ``schemas/_build.py``); else, in a source checkout or an
    editable install, the top-level ``data_manifest.yaml`` itself, the one file people edit."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    packaged = resources.files("schemas") / MANIFEST_NAME
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[1] / MANIFEST_NAME
    return checkout if checkout.is_file() else Path(str(packaged))


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    """Read the manifest (``path``, else :func:`default_manifest`). Nothing reads it at import:
    ``--help`` and ``--version`` work without it.

    Parsed once per content (the report asks for titles many times).
    """
    source = Path(path) if path else default_manifest()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DatasetError(f"{source}: cannot read the dataset manifest ({why}); point ${MANIFEST_ENV} "
                           "at a data_manifest.yaml") from None
    return dict(_parse_manifest(source, text))


@functools.lru_cache(maxsize=8)
def _parse_manifest(source: Path, text: str) -> dict[str, DatasetSpec]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        raise DatasetError(f"{source}: expected a top-level `datasets:` mapping")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{source}: schema_version {raw.get('schema_version')!r}, this version reads {SCHEMA_VERSION}")
    specs = {str(name): _parse_entry(str(name), entry, source) for name, entry in raw["datasets"].items()}
    in_dist = [n for n, s in specs.items() if s.role == "in_distribution"]
    if len(in_dist) > 1:
        raise DatasetError(f"{source}: {len(in_dist)} datasets have role in_distribution ({', '.join(in_dist)}); "
                           "the report's mIoU column needs one")
    return specs


def in_distribution_dataset(specs: dict[str, DatasetSpec]) -> str | None:
    """The dataset of the report's mIoU column (role in_distribution), None when there is none."""
    return next((n for n, s in specs.items() if s.role == "in_distribution"), None)


def report_order(specs: dict[str, DatasetSpec]) -> list[str]:
    """The anomaly datasets that have a ``report.order``, in that order (the report's columns;
    datasets without one follow, by name)."""
    ranked = [(s.report_order, n) for n, s in specs.items() if s.report_order is not None and s.role == "anomaly"]
    return [n for _, n in sorted(ranked)]


def get_dataset_spec(name: str, manifest: str | os.PathLike | None = None) -> DatasetSpec:
    specs = load_manifest(manifest)
    if name not in specs:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(sorted(specs))}")
    return specs[name]
