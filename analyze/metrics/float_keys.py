"""IEEE float bit patterns in value order: the keys of lossless score histograms.

A float16 score, or a float32 score with at most 10 significant mantissa bits (every float16
value has), is determined by a short key: its 16 bits, or the top 19 bits of its float32
pattern (``bits >> Q_SHIFT``). The exact protocol keeps such in-distribution scores as sparse
histograms over these keys; the smiyc protocol counts float16 values the same way. The tables
here list the keys sorted by the value they stand for.
"""

from __future__ import annotations

import functools

import numpy as np

Q_SHIFT = 13  # float32 mantissa bits below float16 precision
Q_BINS = 1 << (32 - Q_SHIFT)


def value_order(inf_key: int, sign_key: int) -> np.ndarray:
    """Bit patterns of an IEEE float format in increasing value order, NaNs left out.

    Non-negative patterns ``0 .. inf_key`` increase with the pattern; negative ones
    (``sign_key + k``) decrease with ``k``. ``-0.0`` and ``+0.0`` are adjacent (equal values).
    """
    return np.concatenate((sign_key + np.arange(inf_key, -1, -1), np.arange(inf_key + 1)))


@functools.cache
def q_table() -> tuple[np.ndarray, np.ndarray]:
    """(order, values): the short-mantissa float32 keys (top 19 bits) sorted by value, no NaN."""
    order = value_order(0xFF << 10, 1 << 18)
    return order, (order.astype(np.uint32) << Q_SHIFT).view(np.float32)


@functools.cache
def q_nan_keys() -> np.ndarray:
    """Keys of NaN: exponent all ones, mantissa not zero, either sign."""
    nan = (0xFF << 10) + np.arange(1, 1 << 10)
    return np.concatenate((nan, (1 << 18) + nan))


@functools.cache
def f16_table() -> tuple[np.ndarray, np.ndarray]:
    """(order, values): the float16 bit patterns sorted by value (NaN patterns left out)."""
    order = value_order(0x7C00, 0x8000)
    return order, order.astype(np.uint16).view(np.float16)
