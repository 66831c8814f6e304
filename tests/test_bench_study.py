"""The study benchmark's reference computes what `analyze score` computes (the same maps), and its
projection adds up each dataset of the report at its plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyze.bench import reference as R
from analyze.bench import study as S
from analyze.bench.caches import build_cache
from analyze.compose.frame_scores import Scoring, frame_inputs, score_frame
from analyze.scorers import get_scorers
from schemas import cache as C

TEMPS = (0.5, 1.0, 1.1)


@pytest.mark.parametrize("kind", ["pixel", "query"])
def test_reference_maps_are_the_tools(tmp_path, kind):
    root, spec = build_cache(tmp_path / "c.zarr", kind, 1, scale=16)
    inputs = frame_inputs(root, spec, 0)
    tool = score_frame(inputs, Scoring(get_scorers(",".join(R.study_scorers(kind))), TEMPS)).scores
    # float64 scorers agree to rounding on ERFNet; on EoMT the tool's class-score product (composed
    # beside the mask scorers' query channels) sums in another order than numpy's GEMM: float32 rounding of s
    for dtype, tol in ((torch.float64, 1e-12 if kind == "pixel" else 1e-6), (torch.float32, 1e-5)):
        if kind == "query":
            clock, kept = R.eomt_frame(inputs.mask_logits, inputs.class_logits, TEMPS, spec.crop_size, dtype,
                                       keep_rows=spec.crop_size)
        else:
            clock, kept = R.erfnet_frame(inputs.logits, spec.void_channel, spec.sizes[0], TEMPS, dtype,
                                         keep_rows=spec.sizes[0][0])
        assert set(clock) and all(v >= 0 for v in clock.values())
        names = {n for maps in kept.values() for n in maps} - {"semantic"}
        assert names == set(R.study_scorers(kind))
        assert R.max_difference(kept, tool, spec.crop_size if kind == "query" else None) < tol
        rows = sum(m["msp"].shape[0] for (c, t, _), m in kept.items() if c == 0 and t == 1.0)
        assert rows == (spec.crop_size if kind == "query" else spec.sizes[0][0])  # every row was kept and checked


def test_upsampled_rows_equal_the_whole_upsampling():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 9, 7)).astype(np.float32))
    whole = torch.nn.functional.interpolate(x[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    for r0, r1 in ((0, 5), (3, 17), (30, 36), (0, 36)):
        torch.testing.assert_close(R._upsampled_rows(x, 4, r0, r1), whole[:, r0:r1], rtol=0, atol=1e-6)


def test_projection_adds_every_dataset_at_its_plan(monkeypatch):
    monkeypatch.setattr(S, "_study_frames", lambda: [("small", 10, 2_000_000, "anomaly"),
                                                     ("big", 100, 2_000_000, "anomaly"),
                                                     ("city", 500, 2_000_000, "semantic")])
    monkeypatch.setattr("schemas.machine.usable_cpus", lambda: 2)
    monkeypatch.setattr("schemas.machine.usable_memory", lambda: 64 * 2**30)

    def r(s):
        return {"per_frame_s": s, "per_frame_cpu_s": 2 * s}

    per_frame = {k: {"grid": r(1.0), "grid + intervals + components": r(1.2), "two-pass grid": r(2.0),
                     "two-pass grid + intervals + components": r(2.2), "semantic": r(0.5)} for k in S.MODEL}
    _, out = S.project(per_frame, {"pixel": 1.0, "query": 2.0})
    # 10 frames fit the default budget in one pass (4 GiB of scores beside the tasks), 100 do not; both models
    assert out["grid only"]["wall_min"] == pytest.approx(2 * (10 * 1.0 + 100 * 2.0 + 500 * 0.5) / 60)
    assert out["with intervals + components"]["wall_min"] == pytest.approx(2 * (10 * 1.2 + 100 * 2.2 + 500 * 0.5) / 60)
    assert out["grid only"]["cpu_min"] == pytest.approx(out["grid only"]["wall_min"])  # 2 CPU s on 2 CPUs
    assert out["reference_min"] == pytest.approx(610 * (1.0 + 2.0) / 2 / 60)
    assert S._plan(10, 2_000_000, 20, False) == "one-pass" and S._plan(100, 2_000_000, 20, False) == "two-pass"
    # a machine with 8 GiB: the automatic budget is half of it, 4 GiB, and the two tasks (0.54 GiB
    # each) leave too little beside them for the 10 frames' scores (3.0 GiB)
    monkeypatch.setattr("schemas.machine.usable_memory", lambda: 8 * 2**30)
    assert S._plan(10, 2_000_000, 20, False) == "two-pass"


def test_benchmark_caches_have_the_shapes_of_the_study(tmp_path):
    _, spec = build_cache(tmp_path / "e.zarr", "query", 1)
    assert spec.sizes[0] == (1024, 2048) and spec.n_queries == 100 and spec.crop_size == 1024
    assert spec.windows(0).n_crops == 2
    root, spec = build_cache(tmp_path / "p.zarr", "pixel", 1, label_kind="semantic")
    assert spec.logit_sizes[0] == (512, 1024) and spec.n_channels == 20
    assert spec.provenance.dataset == "cityscapes_val" and C.read_label(root, spec, 0).shape == (1024, 2048)


def test_measured_counts_the_new_pages_a_step_touches():
    """The study's worker reports each run's system time and minor page faults beside its times."""
    held = []
    small = S.measured(lambda: held.append(np.empty(1 << 20, np.uint8)))  # allocated, never touched
    big = S.measured(lambda: held.append(np.ones(64 << 20, np.uint8)))  # 64 MiB written
    assert set(big) == set(S.MEASURES) and all(v >= 0 for v in big.values())
    # at least one fault per huge page (2 MiB, where the kernel gives them), a fault per 4 KiB page where not
    assert big["faults"] >= (64 << 20) // (2 << 20) and big["faults"] > small["faults"]


def test_a_study_row_shows_the_system_share_and_the_ratio_to_its_grid():
    def r(cpu, sys_s, faults):
        return {"many_s": 8.0, "one_s": 1.0, "per_frame_s": cpu / 2, "per_frame_cpu_s": cpu,
                "per_frame_sys_s": sys_s, "per_frame_faults": faults}

    row = S.per_frame_row("EoMT", "grid + intervals + components", r(3.0, 0.6, 84_000), r(2.0, 0.5, 80_000))
    assert row == "| EoMT | grid + intervals + components | 8.0 | 1.0 | 1.50 | 3.00 | 0.60 (84 k) | 1.50x, 1.50x |"
    old = {k: v for k, v in r(2.0, 0, 0).items() if k not in ("per_frame_sys_s", "per_frame_faults")}  # a saved run
    assert S.per_frame_row("ERFNet", "semantic", old, old).endswith("| 1.00 | 2.00 |  |  |")


def test_later_passes_report_gives_each_case_its_ratio():
    from analyze.bench import later as L

    def r(cpu):
        return {"per_frame_s": cpu / 2, "per_frame_cpu_s": cpu}

    data = {"EoMT": {d: {p: {"grid": r(4.0), "later": r(6.0 if d == "uninformative" else 4.4),
                             "ratio_cpu": 1.5 if d == "uninformative" else 1.1, "ratio_wall": 1.0}
                         for p in L.PLANS} for d in L.DATA}}
    lines = [x for x in L.report(data, "1", "2").splitlines() if x.startswith("| EoMT")]
    assert len(lines) == len(L.DATA) * len(L.PLANS)
    assert "| EoMT | uninformative | two passes | 2.00 (4.00) | 3.00 (6.00) | **1.50x** (1.00x) |" in lines


def test_uninformative_cache_differs_only_in_the_anomalies_logits(tmp_path):
    a_root, spec = build_cache(tmp_path / "a.zarr", "pixel", 1, scale=16)
    b_root, _ = build_cache(tmp_path / "b.zarr", "pixel", 1, scale=16, informative=False)
    label = C.read_label(a_root, spec, 0)
    np.testing.assert_array_equal(label, C.read_label(b_root, spec, 0))
    za, zb = C.read_pixel_logits(a_root, spec, 0), C.read_pixel_logits(b_root, spec, 0)
    anomaly = label[::2, ::2] == 1
    assert anomaly.any() and np.array_equal(za[:, ~anomaly], zb[:, ~anomaly])
    assert not np.array_equal(za[:, anomaly], zb[:, anomaly])


def test_a_sections_scratch_folder_is_removed_and_on_error_only_its_caches(tmp_path, monkeypatch):
    """The study's caches take about 1 GB: each run of the section left them in the temporary folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with S.scratch("bench_x_") as tmp:
        build_cache(tmp / "q1.zarr", "query", 1, scale=16)
        (tmp / "per_frame.json").write_text("{}")
    assert not tmp.exists()
    with pytest.raises(RuntimeError), S.scratch("bench_x_") as tmp:
        build_cache(tmp / "q1.zarr", "query", 1, scale=16)
        (tmp / "per_frame.json").write_text("{}")
        raise RuntimeError("a later step failed")
    assert sorted(p.name for p in tmp.iterdir()) == ["per_frame.json"] and tmp.parent == tmp_path
