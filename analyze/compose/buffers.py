"""Work buffers a frame task reuses from frame to frame, one set per thread.

A 1024x2048 ERFNet frame's logits at label size are 160 MB of float32, and the cached float16
logits converted to float32 40 MB more. Allocated afresh for every frame they came from the
kernel as new pages (glibc maps allocations above 32 MB on their own), and faulting them in
took about a fifth of a frame's CPU time as system time on the 2-core machine. :func:`leased`
lends a thread the same buffer for each frame instead: the same values are written into it, so
no number changes.

A lease lasts until its ``with`` block ends; a second lease of a role while the first is held
(the flipped pass of a frame, composed beside it) gets a buffer of its own. Each thread keeps
one buffer per role, grown to the largest size asked (a dataset whose frame sizes vary keeps
the largest), and only on the CPU: other devices allocate as before.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

_KEPT = threading.local()  # role -> (buffer, leased?) of this thread


@contextmanager
def leased(role: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str = "cpu"
           ) -> Iterator[torch.Tensor]:
    """A contiguous ``shape`` tensor of ``dtype`` (uninitialised) for the ``with`` block: this
    thread's buffer of ``role`` where it is free and on the CPU, else a new one."""
    n = math.prod(int(s) for s in shape)
    kept = _KEPT.__dict__.setdefault("roles", {})
    buf, busy = kept.get(role, (None, False))
    if torch.device(device).type != "cpu" or busy:
        yield torch.empty(tuple(shape), dtype=dtype, device=device)
        return
    if buf is None or buf.dtype != dtype or buf.numel() < n:
        buf = torch.empty(n, dtype=dtype)
    kept[role] = (buf, True)
    try:
        yield buf[:n].view(tuple(shape))
    finally:
        kept[role] = (buf, False)
