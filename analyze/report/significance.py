"""Table 1's significance marks: which cells of a column are not significantly better or worse
than the column's best, by the paired frame bootstrap of :mod:`analyze.compare`.

For each column (dataset, metric) the best cell is the highest (↑) or lowest (↓) value. Every
other cell of the column with kept per-frame data (``analyze score --bootstrap``) is compared
with it on the same resampled frames (:func:`analyze.compare.cells.resamples`, one resampling
per dataset for all of its cells); a cell whose two-sided p-value (optionally Holm-corrected
across the column's comparisons, :func:`analyze.compare.paired.holm`) is at least ``alpha`` is
marked (:data:`MARK`): the data do not tell it from the best. Cells without kept data are not
tested and say so in the caption.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from analyze.compare.cells import kept_cells, resamples
from analyze.compare.paired import holm, paired_difference
from analyze.report.names import HIGHER_IS_BETTER
from analyze.report.text import MARK
from schemas.side_tables import SIDE_KEY



def _cell_of(kept: Mapping, row: tuple, dataset: str, attrs: Mapping) -> tuple | None:
    """The kept cell of a table row ``(model, run, scorer, T, temp target or None)`` on ``dataset``
    at the table's protocol and frames (any temp target at T = 1, where the targets give one number)."""
    model, run, scorer, t, target = row
    for c in kept:
        d = dict(zip(SIDE_KEY, c))
        if ((d["model"], d["run"], d["scorer"], d["dataset"], d["protocol"], d["frames"])
                == (model, run, scorer, dataset, attrs["protocol"], attrs["frames"])
                and abs(d["temperature"] - t) < 1e-9
                and (target is None or abs(t - 1.0) < 1e-9 or d["temp_target"] == target)):
            return c
    return None


def column_tests(values: Mapping[int, float], cells: Mapping[int, tuple], res: Mapping, metric: str,
                 alpha: float, use_holm: bool) -> tuple[int | None, dict[int, float]]:
    """(the best row, ``{row: p-value}`` of each other row with data against it; Holm-adjusted
    when ``use_holm``). ``values``: row -> value of the column."""
    ok = {i: v for i, v in values.items() if np.isfinite(v)}
    if len(ok) < 2:
        return None, {}
    up = HIGHER_IS_BETTER.get(metric, True)
    best = max(ok, key=lambda i: (ok[i] if up else -ok[i], -i))
    if best not in cells:
        return best, {}
    others = [i for i in ok if i != best and i in cells]
    p = np.array([paired_difference(res[cells[i]][metric], res[cells[best]][metric], ok[i], ok[best],
                                    1 - alpha)["p_value"] for i in others])
    if use_holm:
        p = holm(p)
    return best, dict(zip(others, p.tolist()))


def mark_table(table: pd.DataFrame, results: pd.DataFrame, frame_data: pd.DataFrame, alpha: float = 0.05,
               use_holm: bool = False, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``table`` (Table 1 or 2, with their ``attrs``) with ``attrs["marks"]``: the (row, column) positions
    not significantly different from their column's best, ``attrs["p_values"]`` the same
    positions' p-values, and the method in the caption. Unchanged when nothing was kept."""
    kept = kept_cells(results, frame_data)
    out = table.copy()
    out.attrs = dict(table.attrs)
    marks, p_values, tested = set(), {}, 0
    for dataset in dict.fromkeys(d for d, _ in table.attrs["cells"] if d is not None):
        cells = {i: c for i, row in enumerate(table.attrs["row_cells"])
                 if (c := _cell_of(kept, row, dataset, table.attrs)) is not None}
        if len(cells) < 2:
            continue
        res = resamples(list(cells.values()), kept, n_boot, seed)
        for j, (d, metric) in enumerate(table.attrs["cells"]):
            if d != dataset:
                continue
            values = {i: kept[cells[i]]["values"].get(metric, np.nan) if i in cells else np.nan
                      for i in range(len(table))}
            _, p = column_tests(values, cells, res, metric, alpha, use_holm)
            tested += len(p)
            for i, pv in p.items():
                p_values[(i, j)] = pv
                if not pv < alpha:
                    marks.add((i, j))
    out.attrs["marks"], out.attrs["p_values"] = marks, p_values
    if tested:
        out.attrs["caption"] = table.attrs["caption"] + (
            f" Bold: best of each column; {MARK}: not significantly different from it (paired frame bootstrap of "
            f"the difference, {n_boot} resamples, two-sided p >= {alpha:g}"
            + (", Holm-corrected across each column's comparisons" if use_holm else "") + ").")
    return out

