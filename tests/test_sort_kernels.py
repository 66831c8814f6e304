"""The radix sorts (:mod:`analyze.metrics.radix64`, :mod:`analyze.metrics.radix32`) against the
stable argsort of the keys.

Oracle: the key maps a float64 bit pattern to an unsigned integer in value order (``-0.0``
just below ``+0.0``); a sort returns ``x[np.argsort(key, kind="stable")]`` bit for bit (so
``np.sort(x)`` value for value), and the indexed sort moves the companion the same way.
The distributions reach every branch of the sort: arrays of at most 32 keys (insertion
only), prefixes that cover every differing bit (float32 and float16 values, ties), three and
four scatter passes (spread and crowded scores), runs of equal prefixes long enough to be
sorted on their own (MSP near 1, nested clusters) and runs of equal keys. The float32 sort is
held to the same oracle on the same distributions in float32 and on more that reach its one-,
two-, three- and four-pass plans and its skipped digits.
"""

from __future__ import annotations

import numpy as np
import pytest

from analyze.bench.sorting import score_distributions
from analyze.metrics import radix32
from analyze.metrics.radix32 import sort_f32
from analyze.metrics.radix64 import sort_f64, sort_f64_indexed

SIZES = (0, 1, 2, 17, 32, 33, 1000, 5000, 300_000)


def keys(x: np.ndarray) -> np.ndarray:
    """The uint64 keys in value order: sign bit set for non-negative values, all bits flipped
    for negative ones."""
    return x.view(np.uint64) ^ np.where(np.signbit(x), np.uint64(2**64 - 1), np.uint64(2**63))


def nested_clusters(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clusters of ~100 scores that share their top bits and differ in the low 30 (and in
    them, sub-clusters differing in the low 8): runs of equal prefixes at every level."""
    centers = rng.normal(size=max(1, n // 100)) * 10.0 ** rng.integers(-5, 5, size=max(1, n // 100))
    bits = centers[rng.integers(0, centers.size, size=n)].view(np.uint64)
    sub = rng.integers(0, 1 << 22, size=max(1, n // 20), dtype=np.uint64) << np.uint64(8)
    bits = (bits & ~np.uint64((1 << 30) - 1)) | sub[rng.integers(0, sub.size, size=n)]
    return (bits | rng.integers(0, 256, size=n, dtype=np.uint64)).view(np.float64)


def distributions(n: int, seed: int) -> dict[str, np.ndarray]:
    """The benchmark's distributions (:func:`analyze.bench.sorting.score_distributions`) and
    more that reach other branches."""
    rng = np.random.default_rng([seed, 2])
    return score_distributions(n, seed) | {
        "ties_f16_positive": np.abs(rng.normal(size=n)).astype(np.float16).astype(np.float64),
        "one_differs": np.where(np.arange(n) == n // 2, 0.25, 0.75),
        "signed_zeros": rng.choice(np.array([-0.0, 0.0]), size=n),
        "extremes": rng.choice(np.array([5e-324, -5e-324, 1.7e308, -1.7e308, np.inf, -np.inf, 0.0, -0.0, 1.0]), size=n),
        "float32_signed": rng.normal(size=n).astype(np.float32).astype(np.float64),
        "nested_clusters": nested_clusters(rng, n),
    }


@pytest.mark.parametrize("n", SIZES)
def test_sort_f64_equals_stable_argsort_of_the_keys(n):
    for name, x in distributions(n, seed=n).items():
        y = x.copy()
        sort_f64(y, np.empty(n + 3))  # a scratch longer than needed is fine
        want = x[np.argsort(keys(x), kind="stable")]
        np.testing.assert_array_equal(y.view(np.uint64), want.view(np.uint64), err_msg=name)
        np.testing.assert_array_equal(y, np.sort(x), err_msg=name)


@pytest.mark.parametrize("n", SIZES)
def test_indexed_sort_is_stable(n):
    rng = np.random.default_rng(n + 1)
    for name, x in distributions(n, seed=n).items():
        idx = rng.permutation(n).astype(np.uint32)
        y, i = x.copy(), idx.copy()
        sort_f64_indexed(y, i, np.empty(n), np.empty(n + 1, np.uint32))
        order = np.argsort(keys(x), kind="stable")
        np.testing.assert_array_equal(y.view(np.uint64), x[order].view(np.uint64), err_msg=name)
        np.testing.assert_array_equal(i, idx[order], err_msg=name)  # equal keys keep their order


def test_sorts_of_large_maps_equal_the_oracle():
    """Two 2 M maps, the size of a frame's class at 1024x2048 (the digit width and the choice of
    three or four passes depend on the size)."""
    for name in ("uniform [0, 1)", "MSP-like 1 - u^8 / 1000"):
        x = score_distributions(2_000_000, seed=5)[name]
        order = np.argsort(keys(x), kind="stable")
        y = x.copy()
        sort_f64(y, np.empty_like(y))
        np.testing.assert_array_equal(y.view(np.uint64), x[order].view(np.uint64), err_msg=name)
        y, i = x.copy(), np.arange(x.size, dtype=np.uint32)
        sort_f64_indexed(y, i, np.empty_like(y), np.empty_like(i))
        np.testing.assert_array_equal(i, order.astype(np.uint32), err_msg=name)


def test_sorts_refuse_short_scratch_and_mismatched_index():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="scratch"):
        sort_f64(x, np.empty(9))
    with pytest.raises(ValueError, match="idx"):
        sort_f64_indexed(x, np.arange(9, dtype=np.uint32), np.empty(10), np.empty(10, np.uint32))
    with pytest.raises(ValueError, match="idx"):
        sort_f64_indexed(x, np.arange(10, dtype=np.uint32), np.empty(10), np.empty(9, np.uint32))


def test_sort_frames_section_checks_its_rows_against_numpy():
    from analyze.bench.sorting import run_sort_frames

    md, data, ok = run_sort_frames(3000, 1)
    assert ok and set(data) == set(score_distributions(10, 0))
    assert all(row["ok"] and row["sort"] > 0 for row in data.values())
    assert md.count("\n| ") == len(data) + 1  # the header row and one row per distribution


def keys32(x: np.ndarray) -> np.ndarray:
    """The uint32 keys of float32 scores in value order (as :func:`keys`)."""
    return x.view(np.uint32) ^ np.where(np.signbit(x), np.uint32(2**32 - 1), np.uint32(2**31))


def distributions32(n: int, seed: int) -> dict[str, np.ndarray]:
    """The float64 distributions in float32, and more that reach the float32 sort's plans."""
    rng = np.random.default_rng([seed, 3])
    with np.errstate(over="ignore"):  # the extremes: float64's largest become infinities
        out = {name: x.astype(np.float32) for name, x in distributions(n, seed).items()}
    return out | {
        "narrow: 300 ulps above 1": (1.0 + rng.integers(0, 300, size=n) * 2.0**-23).astype(np.float32),  # one pass
        "16 bits differ": (1.0 + rng.integers(0, 1 << 16, size=n) * 2.0**-23).astype(np.float32),  # two passes
        "middle digit constant": ((rng.integers(0, 512, size=n) | (rng.integers(0, 4, size=n) << 18)).astype(np.uint32)
                                  + np.uint32(0x3F000000)).view(np.float32),
        "spread over 70 binades, both signs": (rng.normal(size=n) * 2.0 ** rng.integers(-35, 35, size=n)).astype(np.float32),
    }


def passes32(x: np.ndarray) -> int:
    """Scatter passes the float32 sort plans for ``x`` (steps 1-2 of :mod:`analyze.metrics.radix32`)."""
    a = x.view(np.uint32).copy()
    k_min, k_max, low = radix32._to_keys(a)
    radix32._less(a, k_min)
    return radix32._plan(a, k_max - k_min, low, np.empty((4, 2), np.int64))


@pytest.mark.parametrize("n", SIZES + (2_000_000,))
def test_sort_f32_equals_stable_argsort_of_the_keys(n):
    for name, x in distributions32(n, seed=n).items():
        y = x.copy()
        sort_f32(y, np.empty(n + 3, np.float32))  # a scratch longer than needed is fine
        want = x[np.argsort(keys32(x), kind="stable")]
        np.testing.assert_array_equal(y.view(np.uint32), want.view(np.uint32), err_msg=name)
        np.testing.assert_array_equal(y, np.sort(x), err_msg=name)


def test_sort_f32_distributions_reach_every_plan():
    plans = {name: passes32(x) for name, x in distributions32(300_000, seed=1).items() if np.ptp(keys32(x))}
    assert plans["narrow: 300 ulps above 1"] == 1 and plans["16 bits differ"] == 2
    assert plans["uniform [0, 1)"] == plans["normal logits (x3)"] == 3
    assert plans["spread over 70 binades, both signs"] == 4  # the top digit's values are too many
    assert plans["middle digit constant"] == 3  # digit 1 (bits 9-17) is 0 in every key: its pass is skipped


def test_sort_f32_refuses_short_scratch():
    with pytest.raises(ValueError, match="scratch"):
        sort_f32(np.arange(10, dtype=np.float32), np.empty(9, np.float32))
