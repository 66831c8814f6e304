"""Benchmark: EoMT scoring of a temperature grid against a single T (``python -m analyze.bench
--section eomt_temperature_grid``, a section of :mod:`analyze.bench.sections`)."""

from __future__ import annotations

import time

import numpy as np


def run_eomt_temperature_grid(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """EoMT scoring of a full T grid (1, 0.5, 0.75, 1.1) against a single T, same frame.

    One synthetic EoMT-L-shaped frame: 1024x2048 -> 2 crops of 1024, 100 queries, 19 classes,
    256x256 mask logits; all five scorers; one thread. Also times the parts: the shared mask
    composition, and one temperature's class-score map + scorers + semantic map.
    """
    import torch

    from analyze.compose.queries import FrameComposer
    from analyze.compose.frame_scores import FrameInputs, Scoring, iter_frame_scores
    from analyze.scorers import STUDY_SCORERS, get_scorers, score_many
    from schemas.windows import frame_windows

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    geom = frame_windows(1024, 2048, 1024)
    mask_logits = (rng.normal(size=(2, 100, 256, 256)) * 3).astype(np.float16)
    class_logits = rng.normal(size=(2, 100, 20)).astype(np.float32) * 2
    scorers = get_scorers(",".join(STUDY_SCORERS), "query")  # the study's five (every scorer: bench_scorers)
    grid = (0.5, 0.75, 1.0, 1.1)

    def run(temps):
        t0 = time.perf_counter()
        frame = FrameInputs("query", mask_logits=mask_logits, class_logits=class_logits, geom=geom)
        for _ in iter_frame_scores(frame, Scoring(scorers, temps)):
            pass
        return time.perf_counter() - t0

    run((1.0,))  # warm-up
    single = min(run((1.0,)) for _ in range(2))
    full = min(run(grid) for _ in range(2))
    t0 = time.perf_counter()
    s = FrameComposer(mask_logits, class_logits, geom).resized_scores((1.0,))[1.0]
    t_compose = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_many(s, 1.0, [sc.name for sc in scorers], argmax_out=np.empty(s.shape[1:], np.uint8))  # + semantic map
    t_scores = time.perf_counter() - t0
    ratio = full / single
    md = "\n".join([
        "## eomt_temperature_grid: one 1024x2048 frame, 2 crops, 100 queries, 5 scorers, 1 thread",
        "",
        "| T grid | seconds | ratio to single T |",
        "|---|---:|---:|",
        f"| single T (1.0) | {single:.2f} | 1.00 |",
        f"| {', '.join(map(str, grid))} | {full:.2f} | {ratio:.2f} |",
        "",
        f"Parts: mask composition for one T {t_compose:.2f} s (sigmoid masks computed once per crop and shared "
        f"by every T); five scorers + semantic map for one T {t_scores:.2f} s (needed again for every T).",
        "Goal: full grid <= 1.5x a single T.",
        "",
    ])
    return md, {"single_s": single, "grid_s": full, "ratio": ratio, "compose_s": t_compose,
                "scores_per_t_s": t_scores}, True
