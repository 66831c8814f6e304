"""Score maps that a thread's frame tasks reuse from frame to frame (analyze.scorers.kept_maps):
the same memory frame after frame, and maps that read exactly as new ones (zero wherever the
frame wrote nothing), whatever the frame before wrote into them."""

from __future__ import annotations

import threading

import numpy as np
import torch

from analyze.run.scheduler import Scheduler
from analyze.scorers import kept_maps as K
from analyze.scorers.pixel import MapScorer

SHAPE = (24, 40)
NAMES = ["msp", "maxlogit", "energy", "rba"]


def _tile(seed: int, rows: int, cols: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((7, rows, cols)) * 3).astype(np.float32)


def _frame(sparse: bool, plan: list[tuple[str, slice, slice]], seed: int):
    """One frame's MapScorer: ``plan`` steps ("add"/"blank", rows, cols); rows in no step are left alone."""
    m = MapScorer(NAMES, 0.75, SHAPE, semantic=True, sparse=sparse)
    for i, (what, rows, cols) in enumerate(plan):
        if what == "add":
            m.add(_tile(seed + i, rows.stop - rows.start, cols.stop - cols.start), rows, cols)
        else:
            m.blank(rows, cols)
    scores, sem = m.finish()
    return {n: s.copy() for n, s in scores.items()}, sem.copy()


DENSE = [("add", slice(r, r + 4), slice(0, SHAPE[1])) for r in range(0, SHAPE[0], 4)]
# a pass that reads a few pixels: rows 4-8 scored over columns 10-30, their sides and rows
# 8-12 blanked, and every other row neither scored nor blanked (new maps: zero there)
SPARSE = [("add", slice(4, 8), slice(10, 30)), ("blank", slice(4, 8), slice(0, 10)),
          ("blank", slice(4, 8), slice(30, 40)), ("blank", slice(8, 12), slice(0, 40))]


def test_a_kept_map_reads_as_a_new_one_after_any_frame():
    fresh_dense, fresh_sparse = _frame(False, DENSE, 1), _frame(True, SPARSE, 2)
    assert not fresh_sparse[0]["msp"][:4].any() and not fresh_sparse[0]["msp"][12:].any()
    ptrs = []
    for sparse, plan, seed, want in [(False, DENSE, 1, fresh_dense), (True, SPARSE, 2, fresh_sparse),
                                     (False, DENSE, 1, fresh_dense), (True, SPARSE, 2, fresh_sparse),
                                     (True, SPARSE, 2, fresh_sparse)]:
        with K.kept_maps():
            got = _frame(sparse, plan, seed)
            ptrs.append(sorted(k.tensor.data_ptr() for k in K._THREAD.lent))
        for n in NAMES:
            assert np.array_equal(got[0][n], want[0][n]), n
        assert np.array_equal(got[1], want[1])
    assert all(p == ptrs[0] for p in ptrs)  # the same maps, frame after frame
    K.drop()


def test_maps_are_kept_only_inside_a_block_and_only_those_of_the_last():
    K.drop()
    a = K.lend(SHAPE, torch.float64, torch.device("cpu"), True)
    b = K.lend(SHAPE, torch.float64, torch.device("cpu"), True)
    assert a.tensor.data_ptr() != b.tensor.data_ptr() and not K._THREAD.free  # outside a block: new, not kept
    with K.kept_maps():
        first = K.lend(SHAPE, torch.float64, torch.device("cpu"), True).tensor.data_ptr()
        other = K.lend((5, 6), torch.float64, torch.device("cpu"), False)
        assert other.dirty.all()  # uninitialised: every row may hold anything
    with K.kept_maps():
        assert K.lend(SHAPE, torch.float64, torch.device("cpu"), True).tensor.data_ptr() == first
        assert K.lend(SHAPE, torch.uint8, torch.device("cpu"), True).tensor.dtype == torch.uint8  # another dtype: new
        with K.kept_maps():  # nested: the outer block's
            assert K.lend(SHAPE, torch.float64, torch.device("cpu"), True).tensor.data_ptr() != first
    assert [tuple(k.tensor.shape) for k in K._THREAD.free] == [SHAPE, SHAPE, SHAPE]  # the (5, 6) map dropped
    seen = {}

    def other_thread():
        with K.kept_maps():
            seen["ptr"] = K.lend(SHAPE, torch.float64, torch.device("cpu"), True).tensor.data_ptr()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen["ptr"] not in {k.tensor.data_ptr() for k in K._THREAD.free}  # per thread
    K.drop()
    assert not K._THREAD.free


def test_a_pass_on_the_calling_thread_lets_go_of_its_maps():
    import dask

    def task(i):
        with K.kept_maps():
            return float(_frame(True, SPARSE, i)[0]["msp"].sum())

    sched, _ = Scheduler.resolve("sync")
    parts = [dask.delayed(task)(i) for i in range(3)]
    sched.start_passes(1)
    assert sched.map_reduce(parts, lambda p: dask.delayed(sum)(p), "test") > 0
    assert not K._THREAD.__dict__.get("free")
