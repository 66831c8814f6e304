"""The results table: tidy metric rows in ``results.parquet`` (pyarrow schema + validation).

One row per (model, dataset, scorer, temperature, temp_target, protocol, metric). Metric
values are fractions in [0, 1] (NaN when undefined, e.g. AuPRC without anomaly pixels).
Rows that are not about an anomaly scorer (mIoU) use ``scorer = "semantic"``.

Writes are atomic (temporary file + rename) and re-running a subset replaces the rows with
the same key instead of duplicating them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import DataError

RESULTS_SCHEMA_VERSION = 1
SEMANTIC_SCORER = "semantic"
KEY = ("model", "dataset", "scorer", "temperature", "temp_target", "protocol", "metric", "selected_on")
METRICS = ("auprc", "fpr95", "auroc", "miou", "siou", "ppv", "mean_f1", "ece", "nll")

_cat = pa.dictionary(pa.int32(), pa.string())
RESULTS_SCHEMA = pa.schema(
    [
        pa.field("model", _cat, nullable=False),
        pa.field("dataset", _cat, nullable=False),
        pa.field("scorer", _cat, nullable=False),
        pa.field("temperature", pa.float64(), nullable=False),
        pa.field("temp_target", _cat, nullable=False),
        pa.field("protocol", _cat, nullable=False),
        pa.field("metric", _cat, nullable=False),
        pa.field("value", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("n_pixels", pa.int64(), nullable=False),
        pa.field("cache_digest", _cat, nullable=False),
        pa.field("selected_on", _cat, nullable=False),
    ]
)
COLUMNS = tuple(RESULTS_SCHEMA.names)
_STRING_COLS = [f.name for f in RESULTS_SCHEMA if pa.types.is_dictionary(f.type)]


class ResultsError(DataError):
    """A results file is missing, malformed or from another schema version."""


def _metadata() -> dict[bytes, bytes]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = version("anomaly-seg-cache")
    except PackageNotFoundError:
        tool = "0+unknown"
    return {b"results_schema_version": str(RESULTS_SCHEMA_VERSION).encode(), b"tool_version": tool.encode()}


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Fill optional columns, order columns, and check values (raises ResultsError)."""
    df = df.copy()
    defaults = {"ci_low": float("nan"), "ci_high": float("nan"), "selected_on": "", "temp_target": "none"}
    for col, default in defaults.items():
        if col not in df:
            df[col] = default
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ResultsError(f"results rows lack columns {missing}")
    df = df[list(COLUMNS)]
    for col, default in defaults.items():
        if col in ("selected_on", "temp_target"):
            df[col] = df[col].fillna(default)
    for c in _STRING_COLS:
        df[c] = df[c].astype(str)
    bad = df["value"].notna() & ((df["value"] < 0) | (df["value"] > 1))
    if bad.any():
        row = df[bad].iloc[0]
        raise ResultsError(f"metric {row['metric']} value {row['value']} is not a fraction in [0, 1]")
    unknown = set(df["metric"]) - set(METRICS)
    if unknown:
        raise ResultsError(f"unknown metrics {sorted(unknown)}; valid: {list(METRICS)}")
    return df.reset_index(drop=True)


def to_table(df: pd.DataFrame) -> pa.Table:
    df = normalise(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.cast(pa.schema([RESULTS_SCHEMA.field(n) for n in table.column_names]))
    return table.replace_schema_metadata(_metadata())


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate ``results.parquet`` (raises ResultsError naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no results file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ResultsError(f"{path}: not a parquet file ({exc})") from None
    meta = table.schema.metadata or {}
    version = meta.get(b"results_schema_version", b"?").decode()
    if version != str(RESULTS_SCHEMA_VERSION):
        raise ResultsError(
            f"{path}: results schema version {version} is not supported (this tool reads {RESULTS_SCHEMA_VERSION}); "
            "re-run `analyze score` to regenerate it"
        )
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ResultsError(f"{path}: missing columns {missing}")
    df = table.to_pandas()
    for c in _STRING_COLS:
        df[c] = df[c].astype(str)
    return df


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a parquet file via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_rows(old: pd.DataFrame | None, new: pd.DataFrame, key=KEY) -> pd.DataFrame:
    """Rows of ``old`` whose key is not in ``new``, followed by ``new``."""
    new = normalise(new)
    if old is None or old.empty:
        return new
    old = normalise(old)
    k = list(key)
    new_keys = pd.MultiIndex.from_frame(new[k].astype({"temperature": float}))
    old_keys = pd.MultiIndex.from_frame(old[k].astype({"temperature": float}))
    kept = old[~old_keys.isin(new_keys)]
    return pd.concat([kept, new], ignore_index=True)


def write_results(df: pd.DataFrame, path: str | os.PathLike, replace: bool = True) -> pd.DataFrame:
    """Atomically write results, replacing existing rows with the same key; returns the table."""
    path = Path(path)
    old = read_results(path) if (replace and path.exists()) else None
    merged = merge_rows(old, df)
    atomic_write_table(to_table(merged), path)
    return merged


SIDE_KEY = ("model", "dataset", "scorer", "temperature", "temp_target", "protocol")


def write_side_table(df: pd.DataFrame, path: str | os.PathLike, key=SIDE_KEY) -> None:
    """Per-frame and curve tables beside results.parquet: atomic, rows with ``key`` replaced."""
    path = Path(path)
    if df.empty:
        return
    if path.exists():
        old = pq.read_table(path).to_pandas()
        k = list(key)
        new_keys = pd.MultiIndex.from_frame(df[k].astype(str))
        old = old[~pd.MultiIndex.from_frame(old[k].astype(str)).isin(new_keys)]
        df = pd.concat([old, df], ignore_index=True)
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(_metadata())
    atomic_write_table(table, path)
