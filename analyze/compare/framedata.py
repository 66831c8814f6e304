"""The per-frame data a scoring pass keeps for paired comparisons: ``<stem>_bootstrap.parquet``
beside ``results.parquet``.

``analyze score --bootstrap N`` already makes, for its intervals, what each (scorer, T) of a
cache needs to be resampled by frames without composing a map again: per-frame histograms
over shared bins (exact protocol, :class:`analyze.metrics.bootstrap.FrameHistograms`) or each frame's
own percentile bins (smiyc, :meth:`analyze.metrics.SmiycState.frame_bins`). This module turns
them into one row per key (:data:`schemas.side_tables.SIDE_KEY`, plus the cache digest and the ids
of the pooled frames, in pooling order) and back:

* ``offsets`` (F + 1): frame f's counts are ``pos[offsets[f]:offsets[f+1]]`` and ``neg[...]``;
* ``bins``: exact, the B + 1 shared bin edges (decreasing, ``offsets[f] = f B``); smiyc, frame
  f's bin lower edges at the same positions as its counts.

The file is a side table like ``results_frames.parquet`` (atomic writes, rows of a key replaced).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from schemas.results import ResultsError
from schemas.side_tables import SIDE_KEY, read_side_table, side_table_path, write_side_table

COLUMNS = SIDE_KEY + ("cache_digest", "frame_ids", "offsets", "bins", "pos", "neg")


def frame_data_path(results_path: str | os.PathLike) -> Path:
    """``<stem>_bootstrap.parquet`` beside ``results_path`` (named as the other side tables)."""
    return side_table_path(results_path, "bootstrap")


def exact_row(hist) -> dict:
    """The stored columns of one key's :class:`analyze.metrics.bootstrap.FrameHistograms`."""
    pos, neg = hist.stacked()  # (F, B)
    f, b = pos.shape
    return {"offsets": np.arange(f + 1, dtype=np.int64) * b, "bins": np.asarray(hist.edges, np.float64),
            "pos": pos.ravel().astype(np.int64), "neg": neg.ravel().astype(np.int64)}


def smiyc_row(frame_bins: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """The stored columns of one key's SMIYC per-frame bins (lower edges, anomaly, ID counts)."""
    sizes = [e.size for e, _, _ in frame_bins]
    return {"offsets": np.concatenate(([0], np.cumsum(sizes))).astype(np.int64),
            "bins": np.concatenate([e for e, _, _ in frame_bins]).astype(np.float64),
            "pos": np.concatenate([p for _, p, _ in frame_bins]).astype(np.int64),
            "neg": np.concatenate([n for _, _, n in frame_bins]).astype(np.int64)}


def frame_data_rows(base: Mapping, target: str, frame_ids: Sequence[str], per_key: Mapping) -> pd.DataFrame:
    """One row per (scorer, T) of ``per_key`` (``{(scorer, T): exact_row(...) or smiyc_row(...)}``),
    with the key columns of ``base`` (run, model, dataset, protocol, frames, cache_digest)."""
    rows = []
    for (scorer, t), cols in sorted(per_key.items()):
        if cols["offsets"].size - 1 != len(frame_ids):
            raise ValueError(f"{scorer} T={t}: {cols['offsets'].size - 1} frames kept, {len(frame_ids)} pooled")
        rows.append({**{k: base[k] for k in ("run", "model", "dataset", "protocol", "frames", "cache_digest")},
                     "scorer": scorer, "temperature": float(t), "temp_target": target,
                     "frame_ids": list(frame_ids), **cols})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def kept_frame_data(frame_ids: Sequence[str], job, states: Mapping, histograms: Mapping, base: Mapping,
                    target: str) -> pd.DataFrame:
    """What ``analyze score``'s intervals resampled, per key: the exact protocol's per-frame
    histograms (``histograms``; none when the pass recomposed them), smiyc's per-frame bins
    (``states``), over the pooled frames ``job.frames`` (indices into ``frame_ids``)."""
    if job.protocol == "smiyc":
        per_key = {k: smiyc_row(s.frame_bins()) for k, s in states.items()}
    else:
        per_key = {k: exact_row(h) for k, h in histograms.items()}
    return frame_data_rows(base, target, [frame_ids[i] for i in job.frames], per_key)


def write_frame_data(results_path: str | os.PathLike, rows: pd.DataFrame) -> None:
    """Merge ``rows`` into the file beside ``results_path`` (rows with their key replaced)."""
    write_side_table(rows, frame_data_path(results_path))


def read_frame_data(results_path: str | os.PathLike) -> pd.DataFrame:
    """Every stored row (empty, with :data:`COLUMNS`, when there is no file); ResultsError when
    the file is not a side table of this schema version."""
    path = frame_data_path(results_path)
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    df = read_side_table(path)
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ResultsError(f"{path}: lacks columns {missing}")
    return df
