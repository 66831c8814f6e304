"""``extract bench``: each extraction stage alone and the whole pipeline, on the same input.

Stages (per frame or crop): the forward pass; the device -> host copy (pinned buffers,
non-blocking, second stream; on CPU a no-op); compression (the cache codec: Blosc zstd 3 +
byte shuffle, one writer thread per ``--writer-threads``); the storage write of already
compressed chunks. The pipeline runs all of them overlapped, as ``extract run`` does. The
figure of merit is the pipeline's throughput as a fraction of the slowest stage's.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numcodecs
import numpy as np
import torch
import zarr

from extract.writer.frames import FrameWriter, HostCopier, default_writer_threads
from schemas.cache import COMPRESSION, default_compressors, write_chunk


@dataclass
class StageTimes:
    items: int
    forward: float
    copy: float
    compress: float
    write: float
    pipeline: float
    device: str
    unit: str
    writer_threads: int = 0

    def rates(self) -> dict[str, float]:
        return {k: self.items / getattr(self, k) for k in ("forward", "copy", "compress", "write", "pipeline")}

    def lines(self) -> list[str]:
        r = self.rates()
        slowest = min(r[k] for k in ("forward", "copy", "compress", "write"))
        out = [f"device {self.device}; {self.items} {self.unit}s per stage; {self.writer_threads} writer threads"]
        for k in ("forward", "copy", "compress", "write", "pipeline"):
            out.append(f"{k:9s} {r[k]:9.1f} {self.unit}s/s  ({getattr(self, k):.2f} s)")
        out.append(f"pipeline / slowest stage = {r['pipeline'] / slowest:.1%}")
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str, device: torch.device, size: str):
    """A random-weight model of the requested shape (no checkpoint needed)."""
    if name == "erfnet":
        from extract.models.erfnet import ERFNet

        return ERFNet(20).to(device).eval()
    from extract.models.eomt import CITYSCAPES_LARGE_1024, EoMTConfig, build_eomt

    cfg = CITYSCAPES_LARGE_1024 if size == "full" else EoMTConfig(
        embed_dim=384, depth=4, num_heads=6, num_register_tokens=4, patch_size=16, img_size=64,
        num_q=10, num_classes=19, num_blocks=2)
    return build_eomt(cfg, device).eval()


def bench_extraction(model: str = "erfnet", device: str = "cpu", batch_size: int = 1, batches: int = 4,
                     height: int = 512, width: int = 1024, dtype: str = "fp32", writer_threads: int | None = None,
                     size: str = "full", net=None, compression: str = "zstd3") -> StageTimes:
    """Time every stage on the same synthetic batch (see the module docstring)."""
    dev = torch.device(device)
    writer_threads = writer_threads or default_writer_threads()
    net = net or _model(model, dev, size)
    if model == "erfnet":
        x = torch.rand(batch_size, 3, height, width, device=dev)
        unit = "frame"
    else:
        crop = net.config.img_size
        x = torch.rand(batch_size, 3, crop, crop, device=dev)
        unit = "crop"
    forward = _forward_pass(net, x, dtype, dev)
    forward()  # warm-up (cudnn autotune, allocator)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(batches):
        outs = forward()
    _sync(dev)
    t_forward = time.perf_counter() - t0

    copier = HostCopier(dev)
    t0 = time.perf_counter()
    for _ in range(batches):
        host = [w() for w in [copier.submit(o) for o in outs]]
    t_copy = time.perf_counter() - t0

    # one array per output, one chunk per frame/crop, exactly as the cache stores them
    per_item = [[np.ascontiguousarray(h[j]) for h in host] for j in range(batch_size)]
    t_compress, blobs = _time_compression(per_item, compression, batches, writer_threads)
    with tempfile.TemporaryDirectory() as tmp:
        t_write = _time_writes(Path(tmp), blobs, batches, writer_threads)
        arrays = _cache_arrays(Path(tmp) / "bench.zarr", per_item[0], batches * batch_size, compression)
        t_pipeline = _time_pipeline(forward, copier, arrays, batches, batch_size, writer_threads, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    items = batches * batch_size
    return StageTimes(items, t_forward, t_copy, t_compress, t_write, t_pipeline, name, unit, writer_threads)


def _forward_pass(net, x: torch.Tensor, dtype: str, dev: torch.device) -> Callable[[], list[torch.Tensor]]:
    """The model's outputs on ``x`` as float16 (as the cache stores them), under autocast to
    ``dtype`` on CUDA."""
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    ctx = (lambda: torch.autocast("cuda", dtype=amp)) if (amp and dev.type == "cuda") else torch.inference_mode

    def forward():
        with torch.inference_mode(), ctx():
            out = net(x)
        outs = out if isinstance(out, tuple) else (out,)
        return [o.to(torch.float16) for o in outs]

    return forward


def _time_compression(per_item: list[list[np.ndarray]], compression: str, batches: int,
                      writer_threads: int) -> tuple[float, list[list[bytes]]]:
    """Seconds to compress ``batches`` times every item's arrays with the cache codec on
    ``writer_threads`` threads, and the compressed chunks (raw bytes without a codec)."""
    preset = COMPRESSION[compression]
    codec = (numcodecs.Blosc(cname=preset["cname"], clevel=preset["clevel"], shuffle=numcodecs.Blosc.SHUFFLE)
             if preset else None)
    with ThreadPoolExecutor(writer_threads) as pool:
        t0 = time.perf_counter()
        for _ in range(batches):
            blobs = list(pool.map(lambda arrays: [codec.encode(a) if codec else a.tobytes() for a in arrays],
                                  per_item))
        return time.perf_counter() - t0, blobs


def _time_writes(tmp: Path, blobs: list[list[bytes]], batches: int, writer_threads: int) -> float:
    """Seconds to write the compressed chunks of ``batches`` batches as files under ``tmp``."""
    def put(job):
        b, j, chunks = job
        for o, blob in enumerate(chunks):
            Path(tmp, f"{b}_{j}_{o}").write_bytes(blob)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(writer_threads) as pool:
        list(pool.map(put, [(b, j, c) for b in range(batches) for j, c in enumerate(blobs)]))
    return time.perf_counter() - t0


def _cache_arrays(path: Path, item: list[np.ndarray], n: int, compression: str) -> list:
    """One float16 Zarr array per output of ``n`` items, chunked one item each, as in a cache."""
    root = zarr.open_group(str(path), mode="w")
    return [root.create_array(f"out{o}", shape=(n, *a.shape), chunks=(1, *a.shape), dtype="float16",
                              compressors=default_compressors(compression))
            for o, a in enumerate(item)]


def _time_pipeline(forward, copier: HostCopier, arrays: list, batches: int, batch_size: int, writer_threads: int,
                   dev: torch.device) -> float:
    """Seconds of forward passes, host copies and chunk writes (:class:`FrameWriter`) all
    overlapped, as ``extract run`` runs them."""
    writer = FrameWriter(writer_threads)
    _sync(dev)
    t0 = time.perf_counter()
    for b in range(batches):
        outs = forward()
        for j in range(batch_size):
            waits = [copier.submit(o[j]) for o in outs]

            def store(waits=waits, k=b * batch_size + j):
                for arr, w in zip(arrays, waits):
                    write_chunk(arr, k, w())

            writer.submit(store)
    writer.close()
    return time.perf_counter() - t0
