"""Benchmark: the EoMT temperature grid with every scorer against the same grid with the study's
five (``python -m analyze.bench --section eomt_every_scorer``, a section of :mod:`analyze.bench.sections`).

Goal (issue 27): at most 1.5x (issue 15 asked 1.3x, withdrawn: GEN's and KL's arithmetic
does not fit it exactly). The mask scorers reuse the per-crop mask sigmoids that ``s`` needs
(EAM and no-object are two more rows of the class-score product, Mask2Anomaly a max over its
few kept queries), and every scorer of ``x`` runs in the same float64 tiles.
"""

from __future__ import annotations

import time

import numpy as np

GRID = (0.5, 0.75, 1.0, 1.1)


def synthetic_frame(seed: int, n_queries: int = 100, n_classes: int = 19):
    """One EoMT-L-shaped 1024x2048 frame (2 crops of 1024, 256x256 mask logits) whose queries look
    like a trained model's: 60 % confidently no-object, 25 % confidently one class, 15 % unsure."""
    from schemas.windows import frame_windows

    rng = np.random.default_rng(seed)
    geom = frame_windows(1024, 2048, 1024)
    mask_logits = (rng.normal(size=(2, n_queries, 256, 256)) * 3).astype(np.float16)
    class_logits = rng.normal(size=(2, n_queries, n_classes + 1)).astype(np.float32) * 2
    kind = rng.random((2, n_queries))
    class_logits[..., -1] += np.where(kind < 0.6, 8.0, 0.0)
    confident = (kind >= 0.6) & (kind < 0.85)
    top = rng.integers(0, n_classes, size=(2, n_queries))
    for j, q in zip(*np.nonzero(confident)):
        class_logits[j, q, top[j, q]] += 8.0
    return mask_logits, class_logits, geom


def synthetic_stats(seed: int, temps, k: int = 19) -> dict:
    """Plausible in-distribution statistics at each T (every class present)."""
    from analyze.scorers.pixel import ClassStats

    rng = np.random.default_rng(seed + 1)
    out = {}
    for t in temps:
        soft = rng.dirichlet(np.ones(k), size=k)
        out[t] = ClassStats.from_moments(np.full(k, 1000), rng.uniform(0.5, 1.5, k), rng.uniform(0.01, 0.1, k), soft,
                                         1.0, 0.05)
    return out


def run_eomt_every_scorer(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """The T grid (0.5, 0.75, 1, 1.1) on one EoMT frame, one thread: the study's five scorers,
    then every scorer without and with in-distribution statistics (and with a flip pass),
    timed alternately in the same run (min of 3 each). The ratio is of CPU time (one thread:
    the wall time of an idle machine), which a shared machine disturbs less than wall time."""
    import torch

    from analyze.compose.frame_scores import FrameInputs, Scoring, iter_frame_scores
    from analyze.run.scheduler import single_threaded_tasks
    from analyze.scorers.registry import STUDY_SCORERS, get_scorers

    torch.set_num_threads(1)
    masks, classes, geom = synthetic_frame(seed)
    flip = dict(mask_logits=masks[:, :, :, ::-1].copy(), class_logits=classes[::-1].copy())
    stats = synthetic_stats(seed, GRID)
    sets = {
        "five": (get_scorers(",".join(STUDY_SCORERS), "query"), {}),
        "every, no statistics": (get_scorers("all", "query", ()), {}),
        "every": (get_scorers("all", "query", ("id_stats",)), {"stats": stats}),
        "every + flip pass": (get_scorers("all", "query", ("id_stats", "flip")), {"stats": stats, "flip": flip}),
    }

    def run(name):
        scorers, kw = sets[name]
        t0, c0 = time.perf_counter(), time.process_time()
        frame = FrameInputs("query", mask_logits=masks, class_logits=classes, geom=geom, flip=kw.get("flip"))
        for _ in iter_frame_scores(frame, Scoring(scorers, GRID, stats=kw.get("stats"))):
            pass
        return time.perf_counter() - t0, time.process_time() - c0

    times = {name: [] for name in sets}
    with single_threaded_tasks():  # torch and BLAS on one thread, as in a frame task of `analyze score`
        run("every + flip pass")  # warm-up
        for _ in range(3):
            for name in sets:  # alternating, so that a busy moment of a shared machine hits every set
                times[name].append(run(name))
    wall = {name: min(w for w, _ in v) for name, v in times.items()}
    cpu = {name: min(c for _, c in v) for name, v in times.items()}
    ratio = {name: cpu[name] / cpu["five"] for name in sets}
    n_scorers = {name: len(sets[name][0]) for name in sets}
    lines = [
        "## eomt_every_scorer: one 1024x2048 frame, 2 crops, 100 queries, T grid "
        f"{', '.join(map(str, GRID))}, 1 thread",
        "",
        "| scorers | count | CPU seconds (min of 3) | wall seconds (min of 3) | ratio to the five (CPU) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {n_scorers[name]} | {cpu[name]:.2f} | {wall[name]:.2f} | {ratio[name]:.2f} |"
              for name in sets]
    lines += ["", "Goal: every scorer (with statistics, without a flip pass) <= 1.5x (issue 27) the study's five; the flip pass "
              "composes a second frame, so m2a_flip adds about one composition.", ""]
    return "\n".join(lines), {"cpu_s": cpu, "wall_s": wall, "ratio": ratio}, True
