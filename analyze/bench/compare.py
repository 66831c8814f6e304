"""``make bench`` section ``compare_every_pair``: ``analyze compare`` on every pair of 12 scorers
x 4 T of one dataset against the intervals of ``analyze score --bootstrap`` for those cells.

The goal (issue 28): comparing every pair (48 cells, 1128 pairs, 3 metrics each) with 1000
resamples costs at most 2x the ``--bootstrap 1000`` intervals of the 48 cells. Both read what
the scoring pass keeps, so the data here are such kept data, made as the pass makes them: per
cell and frame the histograms of :class:`analyze.metrics.bootstrap.FrameHistograms` on the bins of
:func:`analyze.metrics.bootstrap.edges_from_counts` (2048 quantile bins, 4096 edges, as many distinct
anomaly scores as a 1024x2048 dataset has), written beside a results file by
:mod:`analyze.compare.framedata`. Timed:

* intervals: :func:`analyze.metrics.bootstrap.bootstrap_ci` of every cell (the step of ``analyze score``
  after its passes, when a pass kept the histograms);
* compare: reading the results and the kept data from disk, then
  :func:`analyze.compare.cells.compare_pairs` of every pair (what ``analyze compare --all`` runs).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_SCORERS, TEMPS, N_BOOT, GOAL = 12, (0.5, 0.75, 1.0, 1.1), 1000, 2.0


def kept_data(path: Path, n_frames: int, pixels: int, seed: int) -> list[tuple]:
    """Write results rows and kept per-frame histograms of 12 x 4 synthetic cells beside ``path``;
    returns each cell's (pos, neg) (F, B) histograms."""
    from analyze.metrics.bootstrap import FrameHistograms, edges_from_counts, resample_metrics
    from analyze.compare.framedata import exact_row, frame_data_rows, write_frame_data
    from schemas.results import write_results

    rng = np.random.default_rng(seed)
    per_frame = max(1000, pixels // n_frames)
    base = dict(run="bench", model="erfnet", dataset="road_anomaly", protocol="exact", frames="all",
                cache_digest="b" * 16)
    rows, kept, hists = [], {}, []
    for k in range(N_SCORERS * len(TEMPS)):
        scorer, t = f"gen:gamma={0.1 + k // len(TEMPS) / 10:g}", TEMPS[k % len(TEMPS)]
        labels = [rng.random(per_frame) < 0.03 for _ in range(n_frames)]
        scores = [rng.normal(size=per_frame) + 1.5 * y for y in labels]
        pos = np.sort(np.concatenate([s[y] for s, y in zip(scores, labels)]))[::-1]
        edges = edges_from_counts(pos, np.arange(1, pos.size + 1))
        h = FrameHistograms(edges)
        for s, y in zip(scores, labels):
            h.update(s, y.astype(np.uint8))
        hists.append(h.stacked())
        kept[(scorer, t)] = exact_row(h)
        values = {m: float(v[0]) for m, v in resample_metrics(*h.stacked(), np.ones((1, n_frames))).items()}
        rows += [{**base, "scorer": scorer, "temperature": t, "temp_target": "logits", "metric": m, "value": v,
                  "n_frames": n_frames, "n_pixels": n_frames * per_frame} for m, v in values.items()]
    write_results(pd.DataFrame(rows), path)
    write_frame_data(path, frame_data_rows(base, "logits", [f"f{i:03d}" for i in range(n_frames)], kept))
    return hists


def run_compare_every_pair(n_pixels: int, seed: int, n_frames: int = 100) -> tuple[str, dict, bool]:
    from analyze.metrics.bootstrap import bootstrap_ci
    from analyze.compare.cells import all_pairs, compare_pairs, kept_cells
    from analyze.compare.framedata import read_frame_data
    from schemas.results import read_results

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.parquet"
        hists = kept_data(path, n_frames, min(n_pixels, 2_000_000), seed)  # enough for 2048 quantile bins
        t0 = time.perf_counter()
        for pos, neg in hists:
            bootstrap_ci(pos, neg, N_BOOT, seed)
        t_ci = time.perf_counter() - t0
        t0 = time.perf_counter()
        kept = kept_cells(read_results(path), read_frame_data(path))
        rows = compare_pairs(all_pairs(sorted(kept)), kept, N_BOOT, seed)
        t_cmp = time.perf_counter() - t0
    ratio = t_cmp / t_ci
    n_bins = hists[0][0].shape[1]
    lines = [
        "## compare_every_pair",
        "",
        f"{N_SCORERS} scorers x {len(TEMPS)} T on one dataset ({n_frames} frames, {n_bins} bins per cell), "
        f"{N_BOOT} resamples.",
        "",
        "| step | seconds |",
        "|:--|--:|",
        f"| `--bootstrap {N_BOOT}` intervals of the {len(hists)} cells | {t_ci:.2f} |",
        f"| `analyze compare --all`: {len(rows) // 3} pairs x 3 metrics (read + resample + pairs) | {t_cmp:.2f} |",
        "",
        f"Ratio compare / intervals: **{ratio:.2f}x** (goal <= {GOAL:g}x: {'met' if ratio <= GOAL else 'NOT met'}).",
        "",
    ]
    data = {"intervals_s": t_ci, "compare_s": t_cmp, "ratio": ratio, "pairs": len(rows) // 3, "cells": len(hists),
            "frames": n_frames, "bins": n_bins}
    return "\n".join(lines), data, True
