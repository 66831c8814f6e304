"""The extraction loop: dataset -> model -> cache, resumable and shardable.

A DataLoader decodes and resizes frames in worker processes; the model runs on batches;
outputs go to the host through :class:`extract.writer.frames.HostCopier` and are written by
:class:`extract.writer.frames.FrameWriter` threads. A frame's ``done`` flag is written after all
of its chunks, so an interrupted run (SIGINT, SIGKILL, a failing disk) leaves a cache that a
rerun of the same command completes to the same bytes. A rerun also extracts again the done
frames whose chunks went missing (:mod:`schemas.integrity`).

The cache always describes the whole dataset: its frame list, sizes and array shapes are
fixed when it is created. ``--limit N`` and ``--shard I/N`` only choose which frames a run
extracts (the first N; every N-th), so a later run with a larger or no ``--limit`` extends
the same cache without ``--overwrite``, done frames stay valid, and shards never change
anything but their own frames' chunks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from PIL import Image

from extract.adapters import ADAPTERS, Adapter
from extract.datasets.layouts import DatasetCopy
from extract.datasets.reader import DatasetReader, image_size, read_frame
from extract.models import get_model_spec, load_model
from extract.writer.provenance import device_name, versions
from extract.writer.resume import open_or_create
from extract.writer.frames import FrameWriter, HostCopier, default_writer_threads
from schemas import cache as C
from schemas import integrity
from schemas.errors import OptionError, os_error_line
from schemas.manifest import DatasetError, get_dataset_spec

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_cache_path(model: str, dataset: str) -> Path:
    return Path("caches") / model / f"{dataset}.zarr"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the first CUDA device when one is available, else the CPU; else as given."""
    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise OptionError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
    return dev


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    if not text:
        return 0, 1
    try:
        i, n = (int(t) for t in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


class _FrameDataset(torch.utils.data.Dataset):
    """Decodes and prepares the frames to do (runs in DataLoader workers)."""

    def __init__(self, copy: DatasetCopy, refs, indices, prepare, cfg, cache_spec: C.CacheSpec):
        self.copy, self.refs, self.indices, self.prepare, self.cfg = copy, refs, indices, prepare, cfg
        self.cache_spec = cache_spec  # hflip: also the input of the horizontally mirrored image

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            frame = read_frame(self.copy, self.refs[i])
            if frame.size != self.cache_spec.sizes[i]:
                raise DatasetError(f"{frame.image_path}: size {frame.size} changed since the cache was created "
                                   f"({self.cache_spec.sizes[i]})")
            th, tw = C.thumbnail_size(*frame.size)
            thumb = np.asarray(Image.fromarray(frame.image).resize((tw, th), Image.BILINEAR))
            item = {"i": i, "input": self.prepare(frame.image, self.cfg), "label": frame.label, "thumb": thumb}
            if self.cache_spec.hflip:  # the image mirrored before any preprocessing, as Mask2Anomaly's np.fliplr(img)
                item["input_hflip"] = self.prepare(np.ascontiguousarray(frame.image[:, ::-1]), self.cfg)
            return item
        except DatasetError as exc:
            return {"i": i, "error": str(exc)}


def _collate(items):
    return items


def _batches_by_shape(items):
    groups: dict[tuple, list] = {}
    for it in items:
        groups.setdefault(tuple(it["input"].shape[-2:]), []).append(it)
    return list(groups.values())


@dataclass
class RunSummary:
    cache: Path
    frames_total: int
    frames_skipped: int
    frames_written: int
    seconds: float
    disk_bytes: int
    raw_bytes: int
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        ratio = self.raw_bytes / self.disk_bytes if self.disk_bytes else float("nan")
        return (f"{self.frames_written} frames written ({self.frames_skipped} already done) in {self.seconds:.1f} s, "
                f"{self.fps:.2f} frames/s; cache {self.disk_bytes / 2**20:.1f} MiB, compression {ratio:.2f}x: {self.cache}")


def run_extraction(
    model: str,
    dataset: str,
    data_root: str | os.PathLike,
    checkpoint: str | os.PathLike,
    cache: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    batch_size: int = 1,
    workers: int = 0,
    writer_threads: int | None = None,
    shard: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    input_height: int | None = None,
    compression: str = C.DEFAULT_COMPRESSION,
    progress: bool = True,
    log: Callable[[str], None] = print,
    layout: str | None = None,
    include_excluded: bool = False,
    skip_unexpected: bool = False,
    hflip: bool = False,
    model_options: Mapping[str, str] | None = None,
) -> RunSummary:
    """Run ``model`` over ``dataset`` and store its raw outputs in a cache (see module doc).

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; the device
    chosen is logged. ``limit``: extract only the first ``limit`` frames (a later call with a
    larger or no limit continues the same cache). A failing write stops the run with a
    CacheError naming the cache, the frame and the reason; the frames done before it stay.
    ``layout``, ``include_excluded`` and ``skip_unexpected`` choose the copy and frames as in
    :class:`extract.datasets.reader.DatasetReader`; which copy was read and what was left out is logged.
    ``hflip``: also run the model on each horizontally mirrored image and store those outputs
    beside the normal ones (``<array>_hflip``; the cache's ``hflip`` attribute), for the
    flip-averaged scorers; a cache is made with or without it, never changed afterwards.
    ``model_options``: ``--model-option KEY=VALUE`` of models that take them (:func:`extract.models.load_model`).
    """
    t_start = time.perf_counter()
    shard_i, shard_n, mspec, dev = _check_options(model, device, dtype, shard, log)
    reader = _open_dataset(dataset, data_root, layout, include_excluded, skip_unexpected, log)
    # the cache covers every frame; --limit only bounds what this run extracts
    n_run = min(limit, len(reader.refs)) if limit else len(reader.refs)
    ckpt, net, cfg = _load_checkpoint(model, mspec, checkpoint, dev, input_height, model_options)
    adapter = mspec.adapter or ADAPTERS[mspec.kind]
    spec = _cache_spec(model, dataset, mspec.kind, adapter, reader, ckpt, cfg, dev, dtype, hflip)
    cache_path = Path(cache) if cache else default_cache_path(model, dataset)
    # keep the stored provenance (creation time) for every write
    root, spec = open_or_create(cache_path, spec, overwrite, compression)
    mine = [i for i in range(n_run) if i % shard_n == shard_i]
    todo, notes = _frames_to_do(root, spec, cache_path, mine, n_run, limit, log)
    target = _Target(net, adapter, cfg, dev, DTYPES[dtype], reader.copy, reader.refs, root, spec)
    writer, interrupted, failure = _extract_frames(target, todo, batch_size, workers, writer_threads, progress,
                                                   f"{model}/{dataset}")
    if writer.error is not None:  # consolidating would write to the failing store again; it is optional
        raise C.CacheError(f"{cache_path}: {writer.error}; the {writer.written} frames written before it are done "
                           "and kept: fix the cause and rerun the same command to continue")
    C.consolidate(cache_path)
    seconds = time.perf_counter() - t_start
    summary = RunSummary(cache_path, len(mine), len(mine) - len(todo), writer.written, seconds,
                         C.disk_bytes(cache_path), C.raw_bytes(root, spec), interrupted, notes)
    if failure:
        raise DatasetError(f"{failure} ({writer.written} frames written before it stay done; fix the file and rerun)")
    return summary


def _check_options(model: str, device: str, dtype: str, shard: str | None, log: Callable[[str], None]):
    """``(shard_i, shard_n, model spec, device)`` of a run, after checking the options that
    need no file (a bad one raises OptionError); the device chosen is logged."""
    try:
        shard_i, shard_n = parse_shard(shard)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    mspec = get_model_spec(model)
    if dtype not in DTYPES:
        raise OptionError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    dev = resolve_device(device)
    if DTYPES[dtype] is not None and dev.type != "cuda":
        raise OptionError(f"--dtype {dtype} needs a CUDA device (device here: {dev.type}); "
                          "on the CPU extraction runs in fp32")
    log(f"device: {device_name(dev)}" + (" (--device auto)" if device == "auto" else ""))
    return shard_i, shard_n, mspec, dev


def _open_dataset(dataset: str, data_root, layout: str | None, include_excluded: bool, skip_unexpected: bool,
                  log: Callable[[str], None]) -> DatasetReader:
    """The reader of the dataset's copy under ``data_root``; which copy and what was left out is logged."""
    dspec = get_dataset_spec(dataset)
    reader = DatasetReader(dspec, data_root, strict=not skip_unexpected, layout=layout,
                           include_excluded=include_excluded)
    for note in reader.notes():
        log(note)
    return reader


def _load_checkpoint(model: str, mspec, checkpoint, dev: torch.device, input_height: int | None,
                     model_options: Mapping[str, str] | None):
    """``(checkpoint identity, network on dev, model config)``; ``input_height`` overrides a pixel model's."""
    ckpt = mspec.identify(checkpoint)  # the file (a folder for Mask2Former) and its digest
    net, cfg = load_model(model, ckpt.path, dev, model_options)
    cfg = dict(cfg)
    if input_height is not None and mspec.kind == "pixel":
        cfg["input_height"] = int(input_height)
    return ckpt, net, cfg


def _cache_spec(model: str, dataset: str, kind: str, adapter: Adapter, reader: DatasetReader, ckpt, cfg: dict,
                dev: torch.device, dtype: str, hflip: bool) -> C.CacheSpec:
    """The cache the model makes of the whole dataset (every frame, whatever ``--limit``), with
    its provenance: model, checkpoint, dataset copy, preprocessing, versions, device, time."""
    dspec, refs = reader.spec, reader.refs
    sizes = tuple(image_size(r.image_path) for r in refs)
    prov = C.Provenance(
        model=model,
        model_config={k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool, list, type(None)))},
        checkpoint_sha256=ckpt.sha256,
        checkpoint_file=ckpt.name,
        dataset=dataset,
        manifest_digest=reader.copy.digest(),
        preprocessing=adapter.preprocessing(cfg),
        versions=versions(),
        device=device_name(dev),
        dtype=dtype,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    extra = {"dataset_copy": {"layout": reader.copy.layout.name, "folder": reader.copy.folder_name}}
    if dspec.benchmark:
        extra["benchmarks"] = {fmt: {"dataset": name, "count": dspec.count} for fmt, name in dspec.benchmark.items()}
    return C.CacheSpec(kind=kind, label_kind=dspec.kind, frame_ids=tuple(r.id for r in refs), sizes=sizes,
                       provenance=prov, extra=extra, labelled=tuple(r.labelled for r in refs), hflip=bool(hflip),
                       **adapter.spec_fields(cfg, sizes))


def _frames_to_do(root, spec: C.CacheSpec, cache_path: Path, mine: list[int], n_run: int, limit: int | None,
                  log: Callable[[str], None]) -> tuple[list[int], list[str]]:
    """``(frames of mine still to extract, the resume check's notes)``: done frames whose chunks
    are all there are skipped (:func:`schemas.integrity.prepare_resume`); what is skipped is logged."""
    done, notes = integrity.prepare_resume(root, spec, mine)
    for note in notes:
        log(f"{cache_path}: {note}")
    todo = [i for i in mine if not done[i]]
    skipped = len(mine) - len(todo)
    if n_run < spec.n_frames:
        log(f"{cache_path}: --limit {limit}: frames 1-{n_run} of {spec.n_frames}; a later run with a larger "
            "or no --limit continues this cache")
    if skipped:
        log(f"{cache_path}: {skipped} of {len(mine)} frames already done, skipping them")
    return todo, notes


@dataclass(frozen=True)
class _Target:
    """What the frame loop needs: the model on its device, the dataset copy, the open cache."""

    net: torch.nn.Module
    adapter: Adapter
    cfg: dict
    dev: torch.device
    amp: torch.dtype | None  # autocast dtype on CUDA (DTYPES); None: fp32
    copy: DatasetCopy
    refs: list
    root: object
    spec: C.CacheSpec


def _extract_frames(target: _Target, todo: list[int], batch_size: int, workers: int, writer_threads: int | None,
                    progress: bool, desc: str) -> tuple[FrameWriter, bool, str | None]:
    """Run the model over the frames ``todo`` and hand each frame's outputs to the writer
    threads, until the end, an unreadable frame, a failing write or SIGINT. Returns the closed
    writer (its ``error`` and ``written``), whether SIGINT stopped it, the unreadable frame's error."""
    net, adapter, dev, spec = target.net, target.adapter, target.dev, target.spec
    loader = torch.utils.data.DataLoader(
        _FrameDataset(target.copy, target.refs, todo, adapter.prepare, target.cfg, spec),
        batch_size=max(1, batch_size), num_workers=workers, collate_fn=_collate, pin_memory=False,
        persistent_workers=False, prefetch_factor=2 if workers else None,
    )
    copier = HostCopier(dev)
    writer = FrameWriter(writer_threads or default_writer_threads())
    autocast = (torch.autocast(device_type="cuda", dtype=target.amp) if target.amp is not None
                else torch.autocast(device_type=dev.type, enabled=False))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="frame", desc=desc, disable=not progress, dynamic_ncols=True)
    interrupted = False
    failure: str | None = None
    try:
        for batch in loader:
            errors = [it for it in batch if "error" in it]
            batch = [it for it in batch if "error" not in it]
            for group in _batches_by_shape(batch):
                passes = ("input", "input_hflip") if spec.hflip else ("input",)
                per_pass = [adapter.split(_forward(net, adapter, [it[p] for it in group], dev, autocast), group)
                            for p in passes]  # [pass][frame] -> output tuple
                for j, it in enumerate(group):
                    waits = [[copier.submit(o) for o in outs[j]] for outs in per_pass]
                    writer.submit(partial(_write_frame, target.root, spec, adapter, it, waits))
                    bar.update(1)
            if errors:
                failure = errors[0]["error"]
                break
            if writer.error is not None:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        writer.close(wait=True)
    return writer, interrupted, failure


def _forward(net, adapter: Adapter, inputs: list, dev: torch.device, autocast):
    """The model's outputs for the prepared ``inputs`` of one batch (one pass)."""
    stacked = adapter.stack(inputs)
    # NCHW-contiguous, torch-allocated input: CPU conv kernels pick their code path by
    # memory layout, and cached outputs must not depend on how numpy laid out a batch
    x = torch.from_numpy(np.ascontiguousarray(stacked))
    x = x.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else x.clone()
    with torch.inference_mode(), autocast:
        return adapter.forward(net, x)


def _write_frame(root, spec: C.CacheSpec, adapter: Adapter, item: dict, waits) -> None:
    """Write one frame: its outputs (``waits[0]``; ``waits[1]``: those of the flipped pass), then
    label and thumbnail, then ``done``."""
    passes = [[w() for w in ws] for ws in waits]
    i = item["i"]
    try:
        for flip, arrays in enumerate(passes):
            adapter.write(root, spec, i, arrays, flip=bool(flip))
        C.write_frame_common(root, spec, i, item["label"], item["thumb"])
        C.mark_done(root, i)
    except OSError as exc:  # disk full, read-only folder, a lost network store
        raise C.CacheError(f"cannot write frame {spec.frame_ids[i]} (index {i}): {os_error_line(exc)}") from None
    except (ValueError, RuntimeError) as exc:  # zarr's own store errors (e.g. a read-only store)
        raise C.CacheError(f"cannot write frame {spec.frame_ids[i]} (index {i}): {type(exc).__name__}: {exc}") from None
