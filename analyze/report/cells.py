"""Results rows -> table cells and figure lines: which rows a number may come from.

A cell of a table (or a point of a figure, or a selection score) must come from exactly one
results row, and the rows of one (run, model, dataset) from one cache. Where two rows would
fill one cell, :func:`one_row_each` raises an error that names both, never a silent pick.
The one deliberate merge is :func:`prefer_target`: at T = 1 the EoMT temperature targets
``query`` and ``pixel`` are the same computation, so their rows are merged there when
their values agree (and refused when they do not).

Used by :mod:`analyze.report` and :mod:`analyze.report.temperature`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from schemas.results import FRAMES, ResultsError, check_one_cache, describe_row

#: when the same (model, dataset, scorer, T) exists for several temperature targets (they
#: coincide at T = 1), the first of these is shown
TARGET_PREFERENCE = ("query", "logits", "pixel", "none")
T_ATOL = 1e-9


class RowConflict(ResultsError):
    """Two rows would give one number (or rows of one run come from two caches): never a
    silent pick, and never a figure skipped with a note."""


def target_rank(t: str) -> int:
    return TARGET_PREFERENCE.index(t) if t in TARGET_PREFERENCE else len(TARGET_PREFERENCE)


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not the output of a temperature selection."""
    if "selected_on" not in df:
        return df
    sel = df["selected_on"]
    return df[sel.isna() | sel.astype(str).isin(["", "nan", "None"])]


def at_t(df: pd.DataFrame, t: float) -> pd.DataFrame:
    return df[np.isclose(df["temperature"].astype(float), float(t), rtol=0, atol=T_ATOL)]


def choose_frames(df: pd.DataFrame, frames: str | None) -> str:
    """``frames`` if given (it must be present), else ``all`` when present, else the one present."""
    have = [f for f in FRAMES if f in set(df["frames"].astype(str))] if "frames" in df else []
    if frames is not None:
        if frames not in have:
            raise ResultsError(f"no rows with frames = {frames!r}; present: {', '.join(have) or 'none'}")
        return frames
    if not have:
        raise ResultsError("no rows")
    return have[0]


def one_row_each(df: pd.DataFrame, keys: Sequence[str], what: str = "a cell") -> pd.DataFrame:
    """``df`` unchanged when no two rows share ``keys``; else ResultsError naming two that do."""
    k = list(keys)
    dup = df.duplicated(k, keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        same = df[dup & (df[k] == first[k]).all(axis=1)]
        raise RowConflict(f"two rows would fill {what}: {describe_row(same.iloc[0])} and "
                           f"{describe_row(same.iloc[1])}; filter them (e.g. by run, protocol, frames or "
                           "temp_target) or score them under different run names")
    return df


def prefer_target(df: pd.DataFrame, keys: Sequence[str], what: str = "a cell") -> pd.DataFrame:
    """One row per ``keys``: rows that differ only in their temperature target are merged into
    the preferred target's row (:data:`TARGET_PREFERENCE`) when they are at T = 1 and their
    values agree (the same computation); any other two rows with equal ``keys`` raise
    (:func:`one_row_each`)."""
    if df.empty:
        return df
    d = df.assign(_rank=df["temp_target"].map(target_rank)).sort_values("_rank", kind="stable")
    k = list(keys)
    at_one = np.isclose(d["temperature"].astype(float), 1.0, rtol=0, atol=T_ATOL)
    dup = d.duplicated(k, keep="first")
    for i in np.flatnonzero(dup.to_numpy()):
        row = d.iloc[i]
        kept = d[(d[k] == row[k]).all(axis=1)].iloc[0]
        same = (kept["value"] == row["value"]) or (pd.isna(kept["value"]) and pd.isna(row["value"]))
        if not (at_one[i] and kept["temp_target"] != row["temp_target"] and same):
            one_row_each(pd.DataFrame([kept, row]), k, what)
    return d[~dup].drop(columns="_rank")


def checked(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """``df`` after :func:`schemas.results.check_one_cache` (one cache per run, model, dataset)."""
    try:
        check_one_cache(df, what)
    except ResultsError as exc:
        raise RowConflict(str(exc)) from None
    return df


def series_labels(keys: Sequence[tuple[str, str]], model_name) -> dict[tuple[str, str], str]:
    """Display label per (model, run): the model's name, followed by ``(run)`` when that
    model has more than one run among ``keys``."""
    runs: dict[str, set] = {}
    for m, r in keys:
        runs.setdefault(m, set()).add(r)
    return {(m, r): model_name(m) if len(runs[m]) == 1 else f"{model_name(m)} ({r})" for m, r in keys}
