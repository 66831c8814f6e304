"""The results columns that record a scorer plugin, and the rows a changed plugin makes stale.

A row of a user's scorer (``analyze score --scorers mypkg.scores:fn``) records the plugin:
``scorer_plugin`` (``module:function``, or the file's absolute path and the function),
``scorer_version`` (the version of the distribution that provides it, '' for a file) and
``scorer_digest`` (the first 16 hex digits of the sha256 of its source file). Built-in scorers
and ``semantic`` rows have '' in all three; files written before these columns existed read
as such. A plugin whose source changed is a new scorer: scoring it again into a table removes
the rows of its earlier source under the same run, model, dataset and scorer name
(:func:`changed_plugin_rows`), so no table mixes two versions of one scorer's code.
"""

from __future__ import annotations

import pandas as pd

PLUGIN_COLUMNS = ("scorer_plugin", "scorer_version", "scorer_digest")
_SAME = ["run", "model", "dataset", "scorer"]


def changed_plugin_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.Series:
    """Bool per row of ``old``: a row of a scorer that ``new`` scores again (same run, model,
    dataset and scorer) from another source digest."""
    if old.empty or new.empty:
        return pd.Series(False, index=old.index)
    digests = new[_SAME + ["scorer_digest"]].astype(str).drop_duplicates()
    joined = old[_SAME + ["scorer_digest"]].astype(str).reset_index().merge(digests, on=_SAME, suffixes=("", "_new"))
    stale = joined.loc[joined["scorer_digest"] != joined["scorer_digest_new"], "index"]
    return pd.Series(old.index.isin(stale), index=old.index)
