"""What both demo trainers share: a deterministic torch session and a seeded batch order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic_torch(seed: int, threads: int | None):
    """Seed torch, request deterministic algorithms and use ``threads`` intra-op threads
    for the block; the previous settings are restored afterwards. Equal seeds then give
    bit-identical training on one machine (float summation order depends on the thread
    count and the CPU's instruction set, so other machines may differ slightly)."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


def batch_indices(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` batches of indices into ``n`` items: a fresh permutation from ``gen`` each
    epoch, a permutation's last incomplete batch dropped (every batch has ``batch_size``
    items, or ``n`` when ``n < batch_size``)."""
    size = min(batch_size, n)
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos : pos + size]
        pos += size


def cosine_lr(step: int, steps: int, floor: float = 0.05) -> float:
    """Learning-rate factor: cosine decay from 1 at step 0 to ``floor`` at ``steps``."""
    return 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))) * (1.0 - floor) + floor


def warmup_poly_lr(step: int, steps: int, warmup: int, power: float = 0.9) -> float:
    """Learning-rate factor of EoMT's schedule (``training/two_stage_warmup_poly_schedule.py``,
    one stage): linear warm-up ``step / warmup``, then ``(1 - t) ** power`` with ``t`` the
    fraction of the remaining steps done."""
    if warmup > 0 and step < warmup:
        return step / warmup
    return max(0.0, 1.0 - (step - warmup) / max(1, steps - warmup)) ** power
