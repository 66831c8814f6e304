"""The results table: tidy metric rows in ``results.parquet`` (pyarrow schema + validation).

One row per :data:`KEY`: (run, model, dataset, scorer, temperature, temp_target, protocol,
frames, metric, selected_on). ``run`` names what produced the row (by default the
checkpoint's file stem and the first 8 hex digits of its sha256, :func:`default_run`), so
several checkpoints of one model coexist in one file; ``frames`` says which frames were
pooled (:data:`schemas.pooling.FRAMES`). Metric values are fractions in [0, 1] (NaN when undefined, e.g.
AuPRC without anomaly pixels). Rows that are not about an anomaly scorer (mIoU) use
``scorer = "semantic"``.

Writes are atomic (temporary file + rename) and serialised: read, merge and replace run
under a file lock beside the table (``.results.parquet.lock``, :func:`schemas.table_files.table_lock`), so any
number of processes writing to one file keep every row. Re-running a subset replaces the
rows with the same key instead of duplicating them; a write that itself holds two rows with
one key is refused (:func:`check_unique`).

Schema versions: 1 had no ``run`` and no ``frames`` (rows of two checkpoints of one model
shared a key); version 2 adds both to every key. Older files are refused with a message
that says so (their rows cannot be given a run after the fact).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from schemas.plugin_rows import PLUGIN_COLUMNS, changed_plugin_rows
from schemas.pooling import FRAMES
from schemas.selections import stale_selections
from schemas.side_tables import FRAME_KEY, check_side_table, side_table_paths, write_side_table
from schemas.table_files import ResultsError, atomic_write_table, read_checked, table_lock, table_metadata

SEMANTIC_SCORER = "semantic"
KEY = ("run", "model", "dataset", "scorer", "temperature", "temp_target", "protocol", "frames", "metric",
       "selected_on")
METRICS = ("auprc", "fpr95", "auroc", "miou", "siou", "ppv", "mean_f1", "ece", "nll")
#: what a run name may hold (it appears in file names, LaTeX and pandas queries)
RUN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,99}")

_cat = pa.dictionary(pa.int32(), pa.string())
RESULTS_SCHEMA = pa.schema(
    [
        pa.field("run", _cat, nullable=False),
        pa.field("model", _cat, nullable=False),
        pa.field("dataset", _cat, nullable=False),
        pa.field("scorer", _cat, nullable=False),
        pa.field("temperature", pa.float64(), nullable=False),
        pa.field("temp_target", _cat, nullable=False),
        pa.field("protocol", _cat, nullable=False),
        pa.field("frames", _cat, nullable=False),
        pa.field("metric", _cat, nullable=False),
        pa.field("value", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("n_pixels", pa.int64(), nullable=False),
        pa.field("cache_digest", _cat, nullable=False),
        pa.field("selected_on", _cat, nullable=False),
    ]
    + [pa.field(c, _cat, nullable=False) for c in PLUGIN_COLUMNS]  # a scorer plugin's record (schemas.plugin_rows)
)
COLUMNS = tuple(RESULTS_SCHEMA.names)
_STRING_COLS = [f.name for f in RESULTS_SCHEMA if pa.types.is_dictionary(f.type)]


#: why rows of one unchanged cache may carry two digests
DIGEST_NOTE = ("rows scored by version 0.2.0 or before carry a cache digest that left out the dtype, the flip pass "
               "and the output sizes, so they differ from the rows scored now even for the same cache")


def default_run(model: str, checkpoint_sha256: str, checkpoint_name: str | None = None) -> str:
    """The run name of a cache: ``<checkpoint file stem>-<sha256[:8]>``, or ``<model>-<sha256[:8]>``
    for caches that did not record the file name. Characters a run name may not hold
    (:data:`RUN_PATTERN`) become ``_``."""
    stem = Path(checkpoint_name).stem if checkpoint_name else model
    stem = re.sub(r"[^A-Za-z0-9._+=@-]+", "_", stem).strip("_.") or model
    return f"{stem[:90]}-{checkpoint_sha256[:8]}"


def parse_run(name: str) -> str:
    """``name`` when it is a valid run name, else ``ValueError`` saying what is allowed."""
    if not RUN_PATTERN.fullmatch(name or ""):
        raise ValueError(f"run name {name!r} must be 1 to 100 characters from A-Z a-z 0-9 . _ + = @ - "
                         "and start with a letter or digit")
    return name


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Fill optional columns, order columns, and check values (raises ResultsError)."""
    df = df.copy()
    defaults = {"ci_low": float("nan"), "ci_high": float("nan"), "selected_on": "", "temp_target": "none",
                **dict.fromkeys(PLUGIN_COLUMNS, "")}
    for col, default in defaults.items():
        if col not in df:
            df[col] = default
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ResultsError(f"results rows lack columns {missing}")
    df = df[list(COLUMNS)]
    for col, default in defaults.items():
        if isinstance(default, str):
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
    frames = set(df["frames"]) - set(FRAMES)
    if frames:
        raise ResultsError(f"unknown frames {sorted(frames)}; valid: {list(FRAMES)}")
    runs = sorted(r for r in set(df["run"]) if not RUN_PATTERN.fullmatch(r))
    if runs:
        raise ResultsError(f"invalid run name(s) {runs}")
    return df.reset_index(drop=True)


def describe_row(row) -> str:
    """``run/model dataset scorer T=.. target protocol frames metric`` (+ selection, cache)."""
    sel = f" selected_on={row['selected_on']}" if row.get("selected_on", "") else ""
    return (f"{row['run']}/{row['model']} {row['dataset']} {row['scorer']} T={float(row['temperature']):g} "
            f"{row['temp_target']} {row['protocol']} frames={row['frames']} {row['metric']}{sel} "
            f"(cache {row['cache_digest']}, value {row['value']:.6g})")


def check_unique(df: pd.DataFrame, key=KEY, what: str = "results", hint: str = "") -> None:
    """Raise ResultsError naming the first two rows of ``df`` that share ``key``."""
    k = list(key)
    dup = df.duplicated(k, keep=False)
    if not dup.any():
        return
    first = df[dup].iloc[0]
    same = df[dup & (df[k] == first[k]).all(axis=1)]
    a, b = same.iloc[0], same.iloc[1]
    raise ResultsError(f"{what}: two rows with one key: {describe_row(a)} and {describe_row(b)}"
                       + (f"; {hint}" if hint else ""))


def cache_conflicts(df: pd.DataFrame) -> list[str]:
    """One message per (run, model, dataset) whose rows come from more than one cache
    (``cache_digest``), naming a row of each of two of them."""
    out: list[str] = []
    if df.empty:
        return out
    for (run, model, dataset), g in df.groupby(["run", "model", "dataset"], observed=True, sort=True):
        digests = list(dict.fromkeys(g["cache_digest"]))
        if len(digests) > 1:
            a = g[g["cache_digest"] == digests[0]].iloc[0]
            b = g[g["cache_digest"] == digests[1]].iloc[0]
            out.append(f"rows of run {run} ({model}, {dataset}) come from {len(digests)} caches: "
                       f"{describe_row(a)} and {describe_row(b)}")
    return out


def check_one_cache(df: pd.DataFrame, what: str = "results") -> None:
    """ResultsError when rows of one (run, model, dataset) come from different caches: their
    numbers belong to different model outputs and must not be compared or combined."""
    conflicts = cache_conflicts(df)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ResultsError(f"{what}: {conflicts[0]}{more}; score the other rows again from one cache, "
                           "or score the other cache under another run name (`analyze score --name`); "
                           f"{DIGEST_NOTE}")


def to_table(df: pd.DataFrame) -> pa.Table:
    df = normalise(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.cast(pa.schema([RESULTS_SCHEMA.field(n) for n in table.column_names]))
    return table.replace_schema_metadata(table_metadata())


def results_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Results rows as ``pandas.read_parquet`` returns them from ``results.parquet``.

    The columns of :data:`COLUMNS` in that order (``ci_low``, ``ci_high``, ``selected_on``
    and ``temp_target`` filled in when missing, as :func:`normalise` does), categoricals where
    the file stores dictionary-encoded strings (unordered, their categories sorted: equal
    dtypes, and ``sort_values`` orders them as strings), float64 and int64 elsewhere. Rows with no
    column at all give an empty frame of those columns and dtypes. Raises
    :class:`ResultsError` for rows the file would refuse.
    """
    out = RESULTS_SCHEMA.empty_table().to_pandas() if df.empty and not len(df.columns) else to_table(df).to_pandas()
    for c in _STRING_COLS:  # categories in sorted order, so that sort_values sorts as on strings
        out[c] = out[c].cat.reorder_categories(sorted(out[c].cat.categories))
    return out


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate ``results.parquet`` (raises ResultsError naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no results file")
    table = read_checked(path)
    missing = [c for c in COLUMNS if c not in table.column_names and c not in PLUGIN_COLUMNS]
    if missing:
        raise ResultsError(f"{path}: missing columns {missing}")
    df = table.to_pandas()
    for c in PLUGIN_COLUMNS:  # files written before plugins: every row a built-in's
        if c not in df:
            df[c] = ""
    for c in _STRING_COLS:
        df[c] = df[c].astype(str)
    return df


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


def write_results(df: pd.DataFrame, path: str | os.PathLike, replace: bool = True,
                  note=lambda message: None) -> pd.DataFrame:
    """Atomically write results, replacing existing rows with the same key; returns the table.

    Rows of a temperature selection that the new rows make stale (:func:`stale_selections`)
    are removed, and ``note`` is told how many and of which run. ResultsError (nothing
    written) when ``df`` holds two rows with one key."""
    path = Path(path)
    new = normalise(df)
    check_unique(new, what=f"{path}: refusing to write",
                 hint="give each checkpoint its own run name (`analyze score --name`)")
    with table_lock(path):
        old = read_results(path) if (replace and path.exists()) else None
        if old is not None:
            old = normalise(old)
            stale = stale_selections(old, new)
            if stale.any():
                runs = ", ".join(sorted(set(old.loc[stale, "run"])))
                note(f"{path}: removed {int(stale.sum())} row(s) of `analyze temperature --select-on` of run(s) {runs}: "
                     "their run was scored again; run `analyze temperature --select-on` again for new ones")
                old = old[~stale]
            changed = changed_plugin_rows(old, new)
            if changed.any():
                note(f"{path}: removed {int(changed.sum())} row(s) of scorer plugin(s) "
                     f"{', '.join(sorted(set(old.loc[changed, 'scorer'])))} scored from an earlier version of "
                     "their source (scorer_digest): a changed plugin is a new scorer")
                old = old[~changed]
        merged = merge_rows(old, df)
        atomic_write_table(to_table(merged), path)
    return merged


def save_results(path: str | os.PathLike, results: pd.DataFrame, per_frame: pd.DataFrame | None = None,
                 curves: pd.DataFrame | None = None, note: Callable[[str], None] = lambda message: None
                 ) -> pd.DataFrame:
    """Write what :func:`analyze.run.driver.score_cache` returns, merged as ``analyze score`` merges.

    Parameters
    ----------
    path
        The results file (``results.parquet``); the per-frame and curve tables go beside it
        (:func:`schemas.side_tables.side_table_paths`). Folders are made as needed.
    results
        Metric rows (:data:`COLUMNS`). Rows of ``path`` with the key (:data:`KEY`) of a new
        row are replaced, every other row stays, so the rows of other runs, caches and scorers
        written by the CLI or by earlier calls are kept.
    per_frame, curves
        The side tables' rows (None or empty: that table is left as it is); rows with their
        key (:data:`schemas.side_tables.FRAME_KEY`, :data:`schemas.side_tables.SIDE_KEY`) are replaced likewise.
    note
        Called with a one-line message when the write removes rows it makes stale (a run's
        ``analyze temperature`` selections, when that run is scored again).

    Returns
    -------
    pandas.DataFrame
        Every row of the results file after the write.

    Each file is written atomically (a temporary file, then a rename). Raises
    :class:`ResultsError`, writing nothing, when ``results`` holds two rows with one key or
    ``path`` or a side table is not a results file of this schema version.
    """
    frames_path, curves_path = side_table_paths(path)
    for side in (frames_path, curves_path):
        check_side_table(side)
    table = write_results(results, path, note=note)
    if per_frame is not None:
        write_side_table(per_frame, frames_path, key=FRAME_KEY)
    if curves is not None:
        write_side_table(curves, curves_path)
    return table
