"""Benchmark section ``sort_frames`` (``python -m analyze.bench --section sort_frames``): a frame's
split and sort of its scores, :func:`analyze.metrics.framed.split_sorted`, against numpy.

Every score map ``analyze score`` reads is split into anomaly and in-distribution scores and
each class is sorted (:mod:`analyze.metrics.radix64`); with the component metrics, every
pixel's index moves with its score (``positions=1``, the indexed sort). Each row is one
1024x2048 float64 map of one distribution (``--pixels`` sets the size), labels ~5 % anomaly
and ~5 % void: ``split_sorted`` timed against the numpy reference of the same run (boolean
masks, then ``np.sort`` of each class; ``np.argsort(kind="stable")`` and a gather for the
indexed split), best of :data:`REPEATS` with the two alternating, one thread; and the float64
radix sort alone (:func:`analyze.metrics.ranks.radix_sort`) of the in-distribution class
(~1.9 M scores) against ``np.sort``. The split results are
checked against the reference (the same values; with the index, the same bit patterns and
pixels as a stable argsort of the keys).

The module runs on its own too, with the code of another checkout first on ``PYTHONPATH``
(``PYTHONPATH=<checkout> python analyze/bench/sorting.py``): it uses only ``split_sorted`` and
``radix_sort``, so the same rows time the sorts that checkout has.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from analyze.metrics.framed import split_sorted
from analyze.metrics.ranks import radix_sort

REPEATS = 5
FRAME_PIXELS = 1024 * 2048


def score_distributions(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` float64 scores of each distribution the sorts meet (or must survive)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    sorted_u = np.sort(u)
    return {
        "uniform [0, 1)": u,
        "MSP-like 1 - u^8 / 1000": 1.0 - u**8 * 1e-3,  # crowded just below 1.0, some exactly 1.0
        "normal logits (x3)": rng.normal(size=n) * 3.0,
        "negative [-6, -1)": -u * 5.0 - 1.0,
        "mixed signs, 60 decades": rng.normal(size=n) * 10.0 ** rng.integers(-30, 30, size=n),
        "ties: float16 values": rng.normal(size=n).astype(np.float16).astype(np.float64),
        "all equal": np.full(n, 0.75),
        "-0.0 / +0.0 / +-1": rng.choice(np.array([-0.0, 0.0, 1.0, -1.0]), size=n),
        "+-inf (20 %) in uniform": np.where(u < 0.1, np.inf, np.where(u > 0.9, -np.inf, u)),
        "float32 values": rng.random(n, dtype=np.float32).astype(np.float64),
        "sorted": sorted_u,
        "reversed": sorted_u[::-1].copy(),
    }


def _labels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    return rng.choice(np.array([0, 1, 255], np.uint8), size=n, p=[0.9, 0.05, 0.05])


def _reference(s: np.ndarray, t: np.ndarray, indexed: bool) -> tuple[np.ndarray, ...]:
    """numpy's split and sort: (pos, neg) sorted; indexed: (pos, pos pixels, neg, neg pixels), in
    the order of a stable argsort of the keys (the bits in value order, -0.0 before +0.0)."""
    out: tuple[np.ndarray, ...] = ()
    for label in (1, 0):
        where = np.flatnonzero(t == label)
        x = s[where]
        if indexed:
            keys = x.view(np.uint64) ^ np.where(np.signbit(x), np.uint64(2**64 - 1), np.uint64(2**63))
            order = np.argsort(keys, kind="stable")
            out += (x[order], where[order])
        else:
            out += (np.sort(x),)
    return out


def _best(s: np.ndarray, t: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """Best seconds of ``split_sorted`` and its reference, with and without pixels, and of the
    float64 radix sort alone against ``np.sort`` (the copy each sorts is made untimed),
    alternating; and the last result of each."""
    neg = s[t == 0]
    fns: dict[str, tuple[Callable[[], np.ndarray], Callable[[np.ndarray], object]]] = {
        "sort": (lambda: s, lambda x: split_sorted(x, t)), "numpy": (lambda: s, lambda x: _reference(x, t, False)),
        "indexed": (lambda: s, lambda x: split_sorted(x, t, positions=1.0)),
        "numpy_indexed": (lambda: s, lambda x: _reference(x, t, True)),
        "radix_alone": (neg.copy, lambda x: radix_sort(x, np.empty_like(x))),
        "np_sort_alone": (neg.copy, lambda x: x.sort())}
    best = {k: np.inf for k in fns}
    last: dict[str, Any] = {}
    for _ in range(REPEATS):
        for k, (prepare, fn) in fns.items():
            x = prepare()
            t0 = time.perf_counter()
            last[k] = fn(x)
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, last


def _same(split, ref: tuple[np.ndarray, ...], indexed: bool) -> bool:
    """The reference's values (indexed: its bit patterns and pixels)."""
    if not indexed:
        return np.array_equal(split.pos, ref[0]) and np.array_equal(split.neg, ref[1])
    return all(np.array_equal(a.view(np.uint64) if a.dtype.kind == "f" else a, b.view(np.uint64) if b.dtype.kind == "f" else b)
               for a, b in zip((split.pos, split.pos_index, split.neg, split.neg_index), ref))


def run_sort_frames(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """The section: one row per distribution (markdown, data, every result equal to numpy's)."""
    n = min(n_pixels, FRAME_PIXELS)
    t = _labels(n, seed)
    split_sorted(np.random.default_rng(0).random(64), t[:64])  # compile or load the kernels
    split_sorted(np.random.default_rng(0).random(64), t[:64], positions=1.0)
    rows, data, all_ok = [], {}, True
    for name, s in score_distributions(n, seed).items():
        best, last = _best(s, t)
        ok = _same(last["sort"], last["numpy"], False) and _same(last["indexed"], last["numpy_indexed"], True)
        all_ok &= ok
        data[name] = {k: round(v * 1e3, 2) for k, v in best.items()} | {"ok": ok}
        rows.append(f"| {name} | {best['sort'] * 1e3:.1f} | {best['numpy'] / best['sort']:.1f}x | "
                    f"{best['indexed'] * 1e3:.1f} | {best['numpy_indexed'] / best['indexed']:.1f}x | "
                    f"{best['radix_alone'] * 1e3:.1f} | {best['np_sort_alone'] / best['radix_alone']:.1f}x |"
                    + ("" if ok else " **differs** |"))
    head = (f"## Sorting a frame's scores (`split_sorted`, {n} float64 pixels, best of {REPEATS}, one thread)\n\n"
            "| distribution | split + sort (ms) | vs numpy | with pixel index (ms) | vs numpy "
            "| sort of the in-distribution class alone (ms) | vs np.sort |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "\n".join(rows) + "\n", data, all_ok


if __name__ == "__main__":
    import sys

    print(run_sort_frames(int(sys.argv[1]) if len(sys.argv) > 1 else FRAME_PIXELS, 0)[0])
