"""Which layout a data root holds, and the frames that copy lists.

:func:`locate` finds the one copy of a dataset under ``--data-root`` (a layout of the
manifest and one of its folder spellings) and refuses when there are none or several;
:func:`list_frames` lists that copy's files without decoding anything. Files that are not
frames are sorted out as data, never by dataset name:

* system files (hidden files such as ``.DS_Store`` and AppleDouble ``._*``, anything under a
  hidden folder or ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``) are skipped and counted;
* other files that do not fit the layout are *unexpected*: an error in strict mode, skipped
  and counted with ``--skip-unexpected``;
* images without a label are an error, except ids the layout allows to be unlabelled
  (``labelled_ids``, e.g. the SMIYC release's test images), which are listed apart;
* ids the layout excludes (``exclude.prefixes``) are listed apart unless ``include_excluded``;
  with ``exclude.keep: unlabelled`` and ``frames: all`` they stay frames, without a label.

Extensions are matched case-insensitively (``.PNG``, ``.JPG``); frames are in natural order
of their ids (``validation_2`` before ``validation_10``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from schemas.manifest import DatasetError, DatasetSpec, Layout

#: File names that operating systems leave in folders (compared lower-case); hidden files too.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"})
SHOWN_PATHS = 5  # offending paths an error message lists


def is_system_file(rel: str) -> bool:
    """True for files an OS leaves behind: a hidden path component or a name in :data:`SYSTEM_FILES`."""
    return any(part.startswith(".") or part.lower() in SYSTEM_FILES for part in rel.split("/"))


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``a2`` < ``a10`` (ties broken by the text)."""
    parts = re.split(r"(\d+)", text)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], text


def _lower_ext(rel: str) -> str:
    """``rel`` with its last extension lower-cased (``images/A.JPG`` -> ``images/A.jpg``)."""
    stem, dot, ext = rel.rpartition(".")
    return f"{stem}.{ext.lower()}" if dot and "/" not in ext else rel


def _shown(items: list) -> str:
    more = f" and {len(items) - SHOWN_PATHS} more" if len(items) > SHOWN_PATHS else ""
    return ", ".join(str(p) for p in items[:SHOWN_PATHS]) + more


@dataclass(frozen=True)
class DatasetCopy:
    """One copy of a dataset on disk: its layout and the folder that holds it."""

    spec: DatasetSpec
    layout: Layout
    data_root: Path
    folder_name: str  # the spelling found (one of ``layout.folders``)

    @property
    def folder(self) -> Path:
        return self.data_root / self.folder_name

    def describe(self) -> str:
        return f"layout {self.layout.name} in {self.folder}"

    def digest(self) -> str:
        return self.spec.digest(self.layout.name)


def _holds_images(folder: Path, layout: Layout) -> bool:
    if not folder.is_dir():
        return False
    for p in folder.glob(layout.image_glob):
        if p.is_file() and not is_system_file(p.relative_to(folder).as_posix()):
            return True
    return False


def locate(spec: DatasetSpec, data_root: str | os.PathLike, layout: str | None = None) -> DatasetCopy:
    """The one copy of ``spec`` under ``data_root`` (only layout ``layout`` when given).

    A layout matches when one of its folders exists and its image glob lists a file other
    than a system file. No match, or more than one, is a :class:`DatasetError` that lists
    what each layout expects or where each copy is.
    """
    data_root = Path(data_root)
    layouts = [spec.layout(layout)] if layout else list(spec.layouts)
    found = [DatasetCopy(spec, lay, data_root, f) for lay in layouts for f in lay.folders
             if _holds_images(data_root / f, lay)]
    if len(found) == 1:
        return found[0]
    if found:
        where = "; ".join(f"{c.folder} ({c.layout.name})" for c in found)
        hint = ("choose one with --layout NAME or point --data-root at a folder holding one copy"
                if len({c.layout.name for c in found}) == len(found) else
                "keep one of them or point --data-root at a folder holding one copy")
        raise DatasetError(f"{data_root}: {len(found)} copies of {spec.name} found: {where}; {hint}")
    expected = "; ".join(lay.expected() for lay in layouts)
    empty = [str(data_root / f) for lay in layouts for f in lay.folders if (data_root / f).is_dir()]
    if empty:
        expected += f" (found {', '.join(empty)} but no images in it)"
    if data_root.name in {f for lay in layouts for f in lay.folders}:
        expected += f"; --data-root is the folder that holds {data_root.name}/, e.g. {data_root.parent}"
    if not data_root.is_dir():
        raise DatasetError(f"{data_root}: data root not found (a {spec.name} copy was expected: {expected})")
    raise DatasetError(f"{data_root}: no {spec.name} copy found; expected {expected}")


@dataclass(frozen=True)
class FrameRef:
    """Paths of one frame on disk (nothing decoded); ``label_path`` is None for an unlabelled image."""

    id: str
    image_path: Path
    label_path: Path | None

    @property
    def labelled(self) -> bool:
        return self.label_path is not None


@dataclass
class FrameListing:
    """What one copy holds: the frames to use and every file left out, with why."""

    copy: DatasetCopy
    frames: list[FrameRef]  # the selection, in natural id order
    unlabelled: list[FrameRef] = field(default_factory=list)  # images without a label (allowed ids)
    excluded: list[FrameRef] = field(default_factory=list)  # left out by the layout's exclusion rule
    system_files: list[Path] = field(default_factory=list)
    unexpected: list[Path] = field(default_factory=list)  # files that do not fit the layout
    orphan_labels: list[Path] = field(default_factory=list)  # labels whose image is missing
    errors: list[str] = field(default_factory=list)  # images without a required label, duplicate ids
    frames_selection: str = "labelled"
    include_excluded: bool = False

    def unexpected_error(self) -> str | None:
        """The strict-mode error for unexpected files (first paths and the option that skips them)."""
        if not self.unexpected:
            return None
        return (f"{self.copy.folder}: {len(self.unexpected)} file(s) do not fit layout {self.copy.layout.expected()}: "
                f"{_shown(self.unexpected)}; --skip-unexpected leaves them out")

    def notes(self, skip_unexpected: bool = False) -> list[str]:
        """One line per kind of file left out, with counts (what a run or a check reports)."""
        out = []
        if self.system_files:
            out.append(f"skipped {len(self.system_files)} system file(s) (hidden, AppleDouble ._*, Thumbs.db, "
                       f"desktop.ini): {_shown(self.system_files)}")
        if self.unexpected and skip_unexpected:
            out.append(f"skipped {len(self.unexpected)} file(s) that do not fit layout {self.copy.layout.name} "
                       f"(--skip-unexpected): {_shown(self.unexpected)}")
        if self.unlabelled and self.frames_selection == "labelled":
            out.append(f"left out {len(self.unlabelled)} unlabelled image(s) (only labelled frames are used): "
                       f"{_shown([r.image_path for r in self.unlabelled])}")
        if self.unlabelled and self.frames_selection == "all":
            out.append(f"kept {len(self.unlabelled)} unlabelled image(s) as frames (labels void, never scored): "
                       f"{_shown([r.image_path for r in self.unlabelled])}")
        if self.excluded:
            ids = _shown([r.id for r in self.excluded])
            reason = self.copy.layout.exclude_reason
            if self.include_excluded:
                out.append(f"kept {len(self.excluded)} frame(s) the layout excludes (--include-excluded): {ids} ({reason})")
            elif self.copy.layout.exclude_keep == "unlabelled" and self.frames_selection == "all":
                out.append(f"kept {len(self.excluded)} frame(s) the layout excludes as unlabelled frames (labels not "
                           f"read, never scored): {ids} ({reason}); --include-excluded scores them")
            else:
                out.append(f"left out {len(self.excluded)} frame(s) the layout excludes: {ids} ({reason}); "
                           "--include-excluded keeps them")
        return out


class _LabelIndex:
    """Finds a label file whose last extension may differ in case (``x.PNG`` for ``x.png``)."""

    def __init__(self):
        self._dirs: dict[Path, dict[str, Path]] = {}

    def find(self, path: Path) -> Path | None:
        names = self._dirs.get(path.parent)
        if names is None:
            names = {}
            if path.parent.is_dir():
                for entry in sorted(os.scandir(path.parent), key=lambda e: e.name):
                    if entry.is_file():
                        names.setdefault(_lower_ext(entry.name), path.parent / entry.name)
                        names[entry.name] = path.parent / entry.name  # an exact name wins
            self._dirs[path.parent] = names
        return names.get(path.name) or names.get(_lower_ext(path.name))


def _label_glob(template: str) -> tuple[str, re.Pattern]:
    """A glob over every file a label template can name (any case of its extension) and the
    regex a path with its extension lower-cased must match to be such a label."""
    glob = re.sub(r"\{[^}]*\}", "*", template)
    stem, dot, ext = glob.rpartition(".")
    if dot and "/" not in ext:
        glob = f"{stem}.*"
    parts = re.split(r"\{[^}]*\}", _lower_ext(template))
    return glob, re.compile("[^/]*".join(re.escape(p) for p in parts) + "$")


def list_frames(copy: DatasetCopy, include_excluded: bool = False, frames: str | None = None) -> FrameListing:
    """List the frames of ``copy`` (see the module doc for how files are sorted out).

    ``frames``: "labelled" (default: the dataset's ``frames``) keeps images with a label;
    "all" keeps unlabelled images too (their ``label_path`` is None).
    """
    lay, root = copy.layout, copy.folder
    selection = frames or copy.spec.frames
    pattern = re.compile(lay.image_regex)
    labelled_ids = re.compile(lay.labelled_ids) if lay.labelled_ids is not None else None
    index = _LabelIndex()
    out = FrameListing(copy, [], frames_selection=selection, include_excluded=include_excluded)
    seen: set[str] = set()
    for path in sorted(root.glob(lay.image_glob)):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if is_system_file(rel):
            out.system_files.append(path)
            continue
        m = pattern.match(_lower_ext(rel))
        if m is None:
            out.unexpected.append(path)
            continue
        groups = m.groupdict()
        fid = groups["id"]
        if fid in seen:
            out.errors.append(f"{path}: duplicate frame id {fid!r} (another image has the same id)")
            continue
        seen.add(fid)
        expected_label = root / lay.label_template.format(**groups)
        ref = FrameRef(fid, path, index.find(expected_label))
        if any(fid.startswith(p) for p in lay.exclude_prefixes):
            out.excluded.append(ref)
            if not include_excluded:
                if lay.exclude_keep == "unlabelled" and selection == "all":
                    out.frames.append(FrameRef(fid, path, None))  # a frame whose label is never read
                continue
        if ref.label_path is None:
            if labelled_ids is None or labelled_ids.match(fid):
                out.errors.append(f"{path}: image has no label (expected {expected_label})")
                continue
            out.unlabelled.append(ref)
            if selection == "labelled":
                continue
        out.frames.append(ref)
    used = {r.label_path for r in out.frames + out.excluded if r.label_path is not None}
    label_glob, label_regex = _label_glob(lay.label_template)
    for path in sorted(root.glob(label_glob)):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or path in used:
            continue
        if is_system_file(rel):
            out.system_files.append(path)
        elif label_regex.match(_lower_ext(rel)):
            out.orphan_labels.append(path)
    for lst in (out.frames, out.unlabelled, out.excluded):
        lst.sort(key=lambda r: natural_key(r.id))
    return out
