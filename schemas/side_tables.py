"""The tables beside ``results.parquet``: per-frame rows (``<stem>_frames.parquet``), curves
(``<stem>_curves.parquet``) and ``analyze compare``'s frame data, keyed by the cell of a results
row (:data:`SIDE_KEY`). Same schema version, same atomic writes under a lock as the results
table (:mod:`schemas.table_files`); rows with a new row's key are replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.table_files import ResultsError, atomic_write_table, check_version, read_checked, table_lock, table_metadata

SIDE_KEY = ("run", "model", "dataset", "scorer", "temperature", "temp_target", "protocol", "frames")
FRAME_KEY = SIDE_KEY + ("frame",)


def check_side_table(path: str | os.PathLike) -> None:
    """ResultsError when ``path`` exists and is not a side table of this schema version."""
    path = Path(path)
    if path.exists():
        try:
            meta = pq.read_schema(path).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise ResultsError(f"{path}: not a parquet file ({exc})") from None
        check_version(path, meta)


def write_side_table(df: pd.DataFrame, path: str | os.PathLike, key=SIDE_KEY) -> None:
    """Per-frame and curve tables beside results.parquet: atomic, rows with ``key`` replaced."""
    path = Path(path)
    if df.empty:
        return
    with table_lock(path):
        if path.exists():
            old = read_side_table(path)
            k = list(key)
            new_keys = pd.MultiIndex.from_frame(df[k].astype(str))
            old = old[~pd.MultiIndex.from_frame(old[k].astype(str)).isin(new_keys)]
            df = pd.concat([old, df], ignore_index=True)
        table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(table_metadata())
        atomic_write_table(table, path)


def side_table_path(path: str | os.PathLike, kind: str) -> Path:
    """The side table ``kind`` beside results file ``path``: ``<stem>_<kind>.parquet`` (``stem``:
    ``path`` less a ``.parquet`` suffix)."""
    text = os.fspath(path)
    stem = text[: -len(".parquet")] if text.endswith(".parquet") else text
    return Path(f"{stem}_{kind}.parquet")


def side_table_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The per-frame and curve tables beside results file ``path`` (:func:`side_table_path`)."""
    return side_table_path(path, "frames"), side_table_path(path, "curves")


def read_side_table(path: str | os.PathLike) -> pd.DataFrame:
    """A side table beside ``results.parquet`` (per-frame, curves, frame data), read once and checked
    as :func:`check_side_table` checks it."""
    return read_checked(Path(path)).to_pandas()
