"""Work buffers that a thread's metric states reuse from frame to frame.

A frame's split, sorts and rank walks need arrays as long as the frame's scores (16 MB of
float64 at 1024x2048) that no state keeps. New ones for every frame and key came from the
system as new pages, faulted in and zeroed: on the 2-core machine that cost about as much
system time as the sort itself. :func:`thread_buffer` lends each thread one buffer per role and
dtype instead, grown to the longest asked.
"""

from __future__ import annotations

import threading

import numpy as np

_THREAD = threading.local()  # (role, dtype) -> this thread's buffer


def thread_buffer(role: str, dtype, n: int) -> np.ndarray:
    """This thread's buffer of ``role`` and ``dtype``, its first ``n`` entries (contents undefined,
    valid until the thread asks for ``role`` again)."""
    dtype = np.dtype(dtype)
    bufs = _THREAD.__dict__.setdefault("bufs", {})
    buf = bufs.get((role, dtype.str))
    if buf is None or buf.size < n:
        buf = bufs[(role, dtype.str)] = np.empty(n, dtype)
    return buf[:n]
