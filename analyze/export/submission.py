"""Per-frame anomaly maps in a benchmark's submission format (``analyze export``).

SegmentMeIfYouCan (``SegmentMeIfYouCan/road-anomaly-benchmark``), format ``smiyc``:

* Where: ``Evaluation.channels['anomaly_p']`` (``evaluation.py``) stores a frame's map in
  ``anomaly_p/{method_name}/{dset_name}/{fid}.hdf5``, and ``dset_name`` is the split's
  ``name_for_persistence``, else its name (``datasets/dataset_io.py``,
  ``DatasetBase.get_frame``). Every ObstacleTrack split persists as ``ObstacleTrack-all``;
  the AnomalyTrack splits read their frames from ``AnomalyTrack-all``
  (``datasets/tracks_extra.py``), so their files too. The cache names its split
  (``extra.benchmarks.smiyc.dataset``, from the manifest's ``benchmark:``).
* What: ``Evaluation.save_output`` casts the map to float16; ``ChannelLoaderHDF5.write_file``
  creates one HDF5 dataset ``value`` with ``compression = 9`` (gzip level 9), as here.
  Reading (``ChannelLoaderHDF5.read_file``, then ``np.squeeze``) expects the image's size
  (``metric_worker`` resizes narrower maps bilinearly): maps are written at the original size.

The map is :func:`analyze.maps.write.frame_maps`, the one map computation: the float64 scores
``analyze score`` and ``analyze maps`` use (higher = more anomalous), mapped by one affine
transform fitted on the whole track, ``(score - center) * scale`` with the same constants for
every frame (:class:`analyze.metrics.f16_range.Float16Transform`: the track's range onto float16's
finest range, so the order of the pooled scores is kept as far as float16 allows), then cast
to float16. The benchmark's ``PixBinaryClass`` bins each frame at its own percentiles and
picks the component threshold on the map itself, so the transform changes no metric except
through the ties float16 makes; a plain cast makes many where an offset dominates the score
(energy at T = 1000: about ``-T log K``). The fit needs the track's min and max first: one
more pass over the frames before the first file is written (skipped when every file is
already complete). Each file records the transform in its attributes (``f16_center``,
``f16_scale``, the fitted range); the summary says how many distinct scores float16 loses,
with and without the transform, and a warning says it when more than 1 % are lost.
Every frame of the cache is exported, labelled or not.

Resumable: a file is written under a temporary name in its folder and renamed, so a file
with the final name is complete. Its attributes record what made it (scorer, T, target,
cache digest); a rerun skips files made by the same export and refuses others unless
``overwrite``, so one method folder never mixes two exports.
"""

from __future__ import annotations

import os
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from analyze.export.formats import FORMATS, ExportFormat
from analyze.export.frames import ExportError, FrameMaps, fit_transform, read_hdf5, write_frames
from analyze.metrics.f16_range import LOSS_WARN, Float16Transform, LossCount
from schemas import cache as C
from schemas import integrity
from schemas.version import PACKAGE, tool_version

if TYPE_CHECKING:
    from analyze.scorers.id_stats import IdStats

METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a folder name, and no "," (the benchmark splits lists on it)
MATCH_ATTRS = ("scorer", "temperature", "temp_target", "cache_digest", "f16_transform")  # for a file to be reused


class ExportOptionError(ValueError):
    """An option that does not fit the cache (``option`` names it, e.g. ``--scorer``)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def check_method_name(method: str) -> str:
    if not METHOD_NAME.match(method or ""):
        raise ExportOptionError("--method", f"method name {method!r} must be letters, digits, _ . + - "
                                            "(it is a folder name in the submission)")
    return method


@dataclass
class ExportSummary:
    benchmark: str
    dataset: str
    what: str  # model, scorer, T and target
    folder: Path
    n_frames: int
    n_unlabelled: int
    written: int
    skipped: int
    release_count: int | None = None
    zip_path: Path | None = None
    zipped: dict[str, int] = field(default_factory=dict)  # dataset folder -> files packed
    transform: Float16Transform | None = None  # None: nothing written, none fitted
    loss_plain: LossCount | None = None  # distinct scores a plain float16 cast loses (every frame)
    loss: LossCount | None = None  # ... that the written files lose

    def line(self) -> str:
        unl = f" ({self.n_unlabelled} unlabelled)" if self.n_unlabelled else ""
        out = (f"{self.benchmark} {self.dataset}: {self.n_frames} frames{unl} of {self.what} in {self.folder}: "
               f"{self.written} written, {self.skipped} already complete")
        if self.transform is not None and self.loss is not None and self.loss_plain is not None:
            out += (f"; float16 of {self.transform.describe()} loses {self.loss.figure()} of the frames written "
                    f"(a plain cast: {self.loss_plain.figure()})")
        return out


def export_maps(
    cache: str | os.PathLike[str], scorer: str, out: str | os.PathLike[str], method: str, *, temperature: float = 1.0,
    temp_target: str = "query", fmt: str = "smiyc", overwrite: bool = False, make_zip: bool = False,
    progress: bool = True, storage_options: Mapping[str, Any] | None = None, warn: Callable[[str], None] = print,
    id_stats: Sequence[IdStats] = (),
) -> ExportSummary:
    """Write one scorer's map of every frame of a cache in a benchmark's submission format.

    The files go under ``out`` as the benchmark lays them out (see the module doc); a rerun
    skips the files this export already wrote.

    Parameters
    ----------
    cache
        Cache path or fsspec URL of a benchmark split (its manifest entry names it), every
        frame done.
    scorer
        One scorer spec (``"msp"``, ``"gen:gamma=0.2"``; :data:`analyze.scorers.SCORERS`).
    out, method
        Submission folder (made as needed); the method's name, a folder of the submission
        (letters, digits, ``_ . + -``).
    temperature, temp_target
        T in [0.1, 1000] at which the scorer is applied; EoMT caches: ``"query"`` (T on the
        query class logits) or ``"pixel"`` (on the per-pixel class scores), as in
        :func:`analyze.run.driver.score_cache`.
    fmt, overwrite, make_zip
        The submission format, ``"smiyc"`` (SegmentMeIfYouCan HDF5 files, float16); replace files
        made by another export instead of refusing them; also pack ``out/anomaly_p/<method>/``
        into ``out/<method>.zip`` (entries ``<method>/<dataset>/<frame id>.hdf5``).
    progress, storage_options, warn
        Show a progress bar (tqdm); fsspec options for a URL cache; called with each warning
        line (default: :func:`print`).
    id_stats
        :class:`analyze.scorers.id_stats.IdStats` for KL matching and SML, as in ``score_cache``.

    Returns
    -------
    ExportSummary
        What was written where; ``.line()`` is the CLI's summary line.
    Raises
    ------
    ExportOptionError
        An option that does not fit the cache (``.option`` names it, e.g. ``--scorer``).
    ExportError
        The cache's or the folder's content (unfinished or damaged cache, a foreign file).
    """
    form = FORMATS.get(fmt)
    if form is None:
        raise ExportOptionError("--format", f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    check_method_name(method)
    root, spec = C.open_cache(cache, storage_options=storage_options)
    chosen, stats = _one_scorer(cache, spec, scorer, float(temperature), temp_target, id_stats, warn)
    (sc,) = chosen
    bench = _benchmark_split(cache, root, spec, fmt, form.benchmark)
    dataset, t = str(bench["dataset"]), float(temperature)
    attrs = _file_attrs(spec, sc.name, t, temp_target)
    folder = _output_folder(form, Path(out), method, dataset)
    paths = [folder / f"{fid}{form.suffix}" for fid in spec.frame_ids]
    # every existing file is checked before anything is written: a refusal leaves the folder as it was
    complete = [False] * spec.n_frames if overwrite else \
        [_complete(p, size, attrs, method) for p, size in zip(paths, spec.sizes)]
    maps, label = FrameMaps(root, spec, chosen, t, temp_target, stats, sc.name, cache), f"{dataset} {sc.name} T={t:g}"
    transform, plain = None, LossCount()
    if not all(complete):  # the track's range first: one pass over every frame
        transform, plain = fit_transform(maps, label, progress)
        attrs.update(transform.attrs())
        _check_transform([p for p, done in zip(paths, complete) if done], transform, method)
    written, loss = write_frames(maps, paths, complete, transform, attrs, label, progress)
    if written and loss.fraction > LOSS_WARN:
        warn(f"{cache}: {sc.name} T={t:g}: float16 loses {loss.figure()} even after the track's affine map "
             f"(a plain cast: {plain.figure()}): ties the float64 scores did not have")
    bench_count = _check_completeness(cache, spec, folder, form.suffix, dataset, bench.get("count"), warn)
    target = attrs["temp_target"]
    what = f"{spec.provenance.model} {sc.name} T={t:g}" + (f" (T on the {target} target)" if spec.kind == "query" else "")
    summary = ExportSummary(form.benchmark, dataset, what, folder, spec.n_frames, int((~spec.labelled_mask).sum()),
                            written, sum(complete), bench_count, transform=transform,
                            loss_plain=plain if written else None, loss=loss if written else None)
    if make_zip:
        summary.zip_path, summary.zipped = pack(Path(out), method, form)
    return summary


def _file_attrs(spec: C.CacheSpec, scorer: str, t: float, temp_target: str) -> dict[str, Any]:
    """The attributes every file of an export carries (a rerun compares them before skipping a file)."""
    return {"scorer": scorer, "temperature": t, "temp_target": "logits" if spec.kind == "pixel" else temp_target,
            "cache_digest": C.cache_digest(spec), "model": spec.provenance.model, "dataset": spec.provenance.dataset,
            "values": "float16 anomaly scores, higher = more anomalous, one affine map per track (f16_transform)",
            "f16_transform": Float16Transform.identity().attrs()["f16_transform"],
            "tool": f"{PACKAGE} {tool_version()}"}


def _output_folder(form, out: Path, method: str, dataset: str) -> Path:
    """The export's folder, made as needed, without the temporary files an interrupted export left."""
    folder = form.folder(out, method, dataset)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    for stale in folder.glob(f".*{form.suffix}.*.tmp"):  # left by an interrupted export
        stale.unlink(missing_ok=True)
    return folder


def _check_completeness(cache, spec: C.CacheSpec, folder: Path, suffix: str, dataset: str, bench_count,
                        warn: Callable[[str], None]) -> int | None:
    """Warn of files that are not frames of the cache and of a cache short of the full release;
    the release's frame count (None where the manifest has none)."""
    ids = set(spec.frame_ids)
    foreign = sorted(p.name for p in folder.glob(f"*{suffix}") if p.name[: -len(suffix)] not in ids)
    if foreign:
        warn(f"{folder}: {len(foreign)} file(s) are not frames of {cache} (e.g. {', '.join(foreign[:3])})")
    if bench_count is not None and int(bench_count) != spec.n_frames:
        warn(f"{cache}: {spec.n_frames} frames, the full {dataset} release has {bench_count}; "
             "the benchmark expects every frame")
    return int(bench_count) if bench_count is not None else None


def _one_scorer(cache, spec: C.CacheSpec, scorer: str, temperature: float, temp_target: str,
                id_stats: Sequence[IdStats], warn: Callable[[str], None]) -> tuple[Sequence[Any], Any]:
    """(the one chosen scorer, its class statistics): :func:`analyze.compose.frame_scores.choose_scorers`
    of ``scorer``, refused unless it names exactly one scorer."""
    from analyze.compose.frame_scores import choose_scorers

    if scorer.strip().lower() == "all":
        raise ExportOptionError("--scorer", f"one scorer per export (a method), got {scorer!r}")
    try:
        chosen, stats = choose_scorers(str(cache), spec, scorer, (temperature,), temp_target, id_stats, warn)
    except ValueError as exc:
        raise ExportOptionError("--scorer", str(exc)) from None
    if len(chosen) != 1:
        raise ExportOptionError("--scorer", f"one scorer per export (a method), got {scorer!r}")
    return chosen, stats


def _benchmark_split(cache, root, spec: C.CacheSpec, fmt: str, benchmark: str) -> Mapping[str, Any]:
    """The cache's ``extra.benchmarks.<fmt>`` entry, once every frame is done and intact and
    every frame id can be a file name (ExportError otherwise)."""
    bench = dict(spec.extra.get("benchmarks") or {}).get(fmt)
    if not bench:
        raise ExportError(f"{cache}: dataset {spec.provenance.dataset} is not a {benchmark} split (the cache has "
                          f"no extra.benchmarks.{fmt}); extract a dataset whose data_manifest.yaml entry names one "
                          "(`benchmark:`), in the benchmark's own frame ids")
    done = C.done_mask(root, str(cache))  # a corrupt chunk: CacheError naming the cache and the array
    if not done.all():
        missing = [spec.frame_ids[i] for i in np.flatnonzero(~done)]
        raise ExportError(f"{cache}: {len(missing)} of {spec.n_frames} frames are not done (e.g. "
                          f"{', '.join(missing[:3])}); a submission needs every frame: finish `extract run` first")
    problems = integrity.check_frames(root, spec, range(spec.n_frames))
    if problems:
        raise ExportError(f"{cache}: {integrity.describe(problems)}; the cache lost data (rerun `extract run` "
                          "or copy the cache again)")
    bad_ids = [f for f in spec.frame_ids if "/" in f or "\\" in f or f.startswith(".")]
    if bad_ids:
        raise ExportError(f"{cache}: frame id {bad_ids[0]!r} cannot be a file name")
    return bench


def _complete(path: Path, size: tuple[int, int], attrs: dict, method: str) -> bool:
    """True when ``path`` holds this export's map of the frame; False when absent or unreadable
    (rewritten); an ExportError when it holds a map made otherwise (another scorer, T, cache)."""
    if not path.exists():
        return False
    got = read_hdf5(path)
    if got is None or got[0] != tuple(size) or got[1] != "float16":
        return False
    have = got[2]
    if any(have.get(k) != attrs[k] for k in MATCH_ATTRS):
        made = ", ".join(f"{k} {have.get(k, '?')}" for k in MATCH_ATTRS)
        raise ExportError(f"{path}: holds a map made by another export ({made}); refusing to mix it into method "
                          f"{method!r}: use another --method or --out, or --overwrite")
    return True


def _check_transform(done: list[Path], transform: Float16Transform, method: str) -> None:
    """Complete files must hold maps of the same transform (the same track gives the same fit)."""
    for path in done:
        read = read_hdf5(path)
        have = read[2] if read is not None else {}  # unreadable: not this transform
        if (have.get("f16_center"), have.get("f16_scale")) != (transform.center, transform.scale):
            raise ExportError(f"{path}: written with another float16 transform ({have.get('f16_center')}, "
                              f"{have.get('f16_scale')}) than this track's ({transform.center}, {transform.scale}); "
                              f"refusing to mix it into method {method!r}: use --overwrite")


METHOD_ATTRS = ("model", "scorer", "temperature", "temp_target")  # one method: the same in every file of an archive


def _made(values: tuple | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(METHOD_ATTRS, values)) if values else "not made by analyze export"


def pack(out: Path, method: str, form: ExportFormat = FORMATS["smiyc"]) -> tuple[Path, dict[str, int]]:
    """Zip ``out/anomaly_p/<method>/`` (every dataset folder in it) into ``out/<method>.zip``,
    entries ``<method>/<dataset>/<frame id><suffix>``, stored (HDF5 is compressed already);
    written to a temporary name and renamed. Returns the path and the files per dataset.

    Every file must come from an export of the same model, scorer, T and target (one method):
    an ExportError names two that differ.
    """
    base = out / "anomaly_p" / method
    files = sorted(p for p in base.glob(f"*/*{form.suffix}") if not p.name.startswith("."))
    counts: dict[str, int] = {}
    first: tuple | None = None
    for p in files:
        counts[p.parent.name] = counts.get(p.parent.name, 0) + 1
        got = read_hdf5(p)
        made = tuple(got[2].get(k) for k in METHOD_ATTRS) if got else None
        if first is None:
            first = (p, made)
        elif made != first[1]:
            raise ExportError(f"{base}: mixes two methods, {first[0].relative_to(base)} ({_made(first[1])}) and "
                              f"{p.relative_to(base)} ({_made(made)}); export both tracks with the same scorer and "
                              "T into one method folder")
    target = out / f"{method}.zip"
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for p in files:
                zf.write(p, p.relative_to(base.parent).as_posix())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{target}: cannot write the archive ({exc.strerror or exc})") from None
    return target, counts
