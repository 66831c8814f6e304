"""Rows of ``analyze temperature --select-on`` (``selected_on`` set) and when new rows make them stale.

A selected row reports a temperature chosen on other datasets; once its run and model are
scored again on the dataset it reports or on one it chose T on, the choice no longer describes
the rows beside it, and :func:`schemas.results.write_results` removes it (with a note).
"""

from __future__ import annotations

import pandas as pd


def stale_selections(old: pd.DataFrame, new: pd.DataFrame) -> pd.Series:
    """Bool per row of ``old``: a row of ``analyze temperature --select-on`` (``selected_on`` set)
    that ``new`` makes stale, because ``new`` scores again (plain rows) its run and model on the
    dataset it reports or on one of the datasets its T was chosen on."""
    plain = new[new["selected_on"] == ""]
    if plain.empty or old.empty:
        return pd.Series(False, index=old.index)
    scored = set(zip(plain["run"], plain["model"], plain["dataset"]))

    def stale(row) -> bool:
        datasets = [row["dataset"], *str(row["selected_on"]).split(",")]
        return any((row["run"], row["model"], d) in scored for d in datasets)

    selected = old["selected_on"] != ""
    return selected & old.apply(stale, axis=1) if selected.any() else selected
