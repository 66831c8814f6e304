"""Device -> host copies and writer threads that compress and store frames in the cache.

On CUDA, outputs are copied into pinned host buffers with non-blocking copies on a
separate stream, so the GPU keeps computing while the previous batch travels (pageable
``.cpu()`` copies cut ERFNet throughput ~8x on an H200, REFERENCE.md section 7). Writer
threads then compress (Blosc releases the GIL) and store the chunks; a frame's ``done``
flag is set only after all its chunks are written.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from schemas.machine import usable_cpus


def default_writer_threads() -> int:
    """Half the CPUs this process may use, between 4 and 16.

    Compression is the slowest stage of extraction on a GPU: on an H100 host (16 cores),
    ERFNet fp16 batch 8 with zstd3 stored 30 frames/s with 4 writer threads, 40 with 8 and
    54 with 14 (``extract bench``); the other half of the cores decode images.
    """
    return max(4, min(16, usable_cpus() // 2))


class HostCopier:
    """Copies device tensors to host numpy arrays without stalling the compute stream.

    ``submit(tensor)`` returns a callable that blocks until the copy is complete and returns
    the numpy array. On CPU tensors it is a plain conversion.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._pool: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def _buffer(self, shape, dtype) -> torch.Tensor:
        key = (tuple(shape), dtype)
        with self._lock:
            free = self._pool.setdefault(key, deque())
            if free:
                return free.popleft()
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def _release(self, buf: torch.Tensor) -> None:
        with self._lock:
            self._pool[(tuple(buf.shape), buf.dtype)].append(buf)

    def submit(self, tensor: torch.Tensor) -> Callable[[], np.ndarray]:
        if not self.cuda:
            arr = tensor.detach().numpy()
            return lambda: arr
        buf = self._buffer(tensor.shape, tensor.dtype)
        ready = torch.cuda.Event()
        compute_done = torch.cuda.current_stream(self.device).record_event()
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(compute_done)
            buf.copy_(tensor, non_blocking=True)
            tensor.record_stream(self.stream)  # keep the source alive until the copy ran
            ready.record(self.stream)

        def wait() -> np.ndarray:
            ready.synchronize()
            out = buf.numpy().copy()
            self._release(buf)
            return out

        return wait


class FrameWriter:
    """A bounded pool of writer threads; ``submit`` blocks when too many frames are in flight.

    A write that fails (disk full, read-only folder, a store error) does not stop the others
    in flight: each either completes (its frame is done) or fails. The first failure is kept in
    :attr:`error` for the caller, which stops submitting; :attr:`written` counts the writes
    that completed.
    """

    def __init__(self, threads: int = 4, max_pending: int | None = None):
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="cache-writer")
        self.max_pending = max_pending or 2 * max(1, threads)
        self.pending: deque[Future] = deque()
        self.written = 0
        self.error: BaseException | None = None

    def submit(self, fn: Callable[[], None]) -> None:
        while len(self.pending) >= self.max_pending:
            self._reap(block=True)
        self.pending.append(self.pool.submit(fn))
        self._reap(block=False)

    def _reap(self, block: bool) -> None:
        while self.pending and (block or self.pending[0].done()):
            fut = self.pending.popleft()
            exc = fut.exception()
            if exc is None:
                self.written += 1
            elif self.error is None:
                self.error = exc
            block = False

    def drain(self) -> None:
        while self.pending:
            self._reap(block=True)

    def close(self, wait: bool = True) -> None:
        try:
            if wait:
                self.drain()
        finally:
            self.pool.shutdown(wait=wait, cancel_futures=not wait)
