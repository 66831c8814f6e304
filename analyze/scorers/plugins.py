"""Scorer plugins at work: a user's function scored as a map scorer beside the built-ins.

:class:`PluginMaps` is the part of :class:`analyze.scorers.pixel.MapScorer` that holds the
plugins of a frame at one temperature: it is fed the same tiles of ``x`` as the built-ins
(not yet divided by T) and calls each function with ``x`` in float64 and the temperature the
built-ins apply (:data:`analyze.scorers.plugin_load.TEMPERATURE_MODES`). A pixelwise plugin is
called per tile; any other once per frame on the whole ``(K, H, W)`` input, which it keeps
(8 bytes per class and pixel). Each map is checked: ``(H, W)``, finite; a broken contract or an
exception inside the function is a :class:`~analyze.scorers.plugin_load.PluginError` naming the
plugin. :func:`plugin_columns` gives the rows' record of a plugin; :func:`listing` every scorer
with its source (``analyze scorers``). Declaring and loading: :mod:`analyze.scorers.plugin_load`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from analyze.scorers import plugin_load
from analyze.scorers.plugin_load import PluginError, scorer  # noqa: F401  (the decorator users import)
from analyze.scorers.registry import SCORERS, Scorer, get_scorer
from schemas.errors import one_line

#: the results columns that record a plugin ('' for the built-ins): schemas.results.PLUGIN_COLUMNS
RECORD = ("scorer_plugin", "scorer_version", "scorer_digest")


class PluginMaps:
    """The maps of the plugin scorers of one temperature (``temperature``: what the built-ins
    apply, 1 for a query cache's query target), fed tile by tile, returned by :meth:`finish`."""

    def __init__(self, scorers: Mapping[str, Scorer], temperature: float, shape: tuple[int, int], stats=None):
        self.scorers = {n: s for n, s in scorers.items() if s.plugin is not None}
        self.temperature = temperature
        self.shape = tuple(shape)
        self.stats = stats
        pixelwise = {n for n, s in scorers.items() if s.plugin is not None and s.plugin.pixelwise}
        self.maps = {n: np.empty(self.shape, np.float64) for n in pixelwise}
        self._whole = [n for n in self.scorers if n not in pixelwise]
        self._x: np.ndarray | None = None

    def add(self, x, rows: slice, cols: slice) -> None:
        """Tile ``x`` (K, R, Wc) of ``x`` at ``[rows, cols]`` of the maps."""
        if not self.scorers:
            return
        tile = torch.as_tensor(x).to("cpu", torch.float64).numpy()  # (K, R, Wc)
        for n in self.maps:
            self.maps[n][rows, cols] = self._call(n, tile, self.maps[n][rows, cols].shape)
        if self._whole:
            if self._x is None:
                self._x = np.empty((tile.shape[0], *self.shape), np.float64)  # (K, H, W)
            self._x[:, rows, cols] = tile

    def blank(self, rows: slice, cols: slice = slice(None)) -> None:
        """Rows not scored (:meth:`analyze.scorers.pixel.MapScorer.blank`): 0 in the pixelwise maps.
        A whole-frame plugin reads every row (:attr:`pixelwise`): its frame is composed whole."""
        if self._whole:
            raise ValueError(f"plugin(s) {', '.join(self._whole)} read the whole frame: every row must be scored")
        for m in self.maps.values():
            m[rows, cols] = 0

    @property
    def pixelwise(self) -> bool:
        """Whether every plugin scores each pixel from that pixel alone (rows may be left out)."""
        return not self._whole

    def finish(self) -> dict[str, np.ndarray]:
        """``{name: (H, W) float64}``; the whole-frame plugins are called here."""
        x = self._x
        if self._whole and x is None:
            raise ValueError("no tile of x was added")
        for n in self._whole:
            assert x is not None
            self.maps[n] = self._call(n, x, self.shape)
        self._x = None
        return self.maps

    def _call(self, name: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        s = self.scorers[name]
        p = s.plugin
        assert p is not None
        fn = plugin_load.function(p)
        kw: dict[str, Any] = dict(s.kwargs)
        if p.needs_stats:
            kw["stats"] = self.stats
        what = f"scorer plugin {s.name} ({p.target})"
        try:
            if p.temperature == "argument":
                out = fn(x.copy(), self.temperature, **kw)
            else:
                out = fn(x / self.temperature if self.temperature != 1.0 else x.copy(), **kw)
        except Exception as exc:
            raise PluginError(f"{what} raised {type(exc).__name__}: {one_line(exc)}") from None
        return check_map(out, shape, what)


def check_map(out, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``out`` as a float64 array when it is a finite map of ``shape``, else PluginError saying why."""
    try:
        m = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{what} returned {type(out).__name__}, not an (H, W) array of numbers: {one_line(exc)}") from None
    if m.shape != tuple(shape):
        raise PluginError(f"{what} returned a map of shape {m.shape}; the contract is (H, W) = {tuple(shape)}")
    bad = ~np.isfinite(m)
    if bad.any():
        kinds = [w for w, f in (("NaN", np.isnan), ("inf", np.isinf)) if f(m).any()]
        raise PluginError(f"{what} returned {int(bad.sum())} non-finite value(s) ({' and '.join(kinds)}) in its "
                          f"{shape[0]}x{shape[-1]} map; every pixel needs a finite score")
    return m


def plugin_columns(name: str) -> dict[str, str]:
    """The rows' record of scorer ``name`` (:data:`RECORD`): ``module:function``, its
    distribution's version and its source digest; '' for the built-ins and ``semantic``."""
    try:
        p = get_scorer(name).plugin
    except ValueError:  # 'semantic', the rows of no scorer
        p = None
    return dict(zip(RECORD, ("", "", "") if p is None else (p.target, p.version, p.digest)))


def listing() -> list[tuple[str, str, str]]:
    """``(name, source, what)`` of every scorer: the built-ins, then the installed plugins
    (entry point, distribution and version; those shadowed by a built-in name say so)."""
    rows = [(s.base, "built-in", s.display) for s in SCORERS.values()]
    for name, ep in sorted(plugin_load.installed().items()):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
        what = f"shadowed by the built-in {name}" if name in SCORERS else _display(name)
        rows.append((name, f"plugin {ep.value} ({dist})", what))
    return rows


def _display(name: str) -> str:
    try:
        return get_scorer(name).display
    except PluginError as exc:
        return f"broken: {exc}"


def records(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """:func:`plugin_columns` of each name."""
    return {n: plugin_columns(n) for n in dict.fromkeys(names)}


def with_records(rows: pd.DataFrame) -> pd.DataFrame:
    """Results ``rows`` with the :data:`RECORD` columns of their scorers (:func:`plugin_columns`)."""
    if rows.empty:
        return rows
    rec = records(rows["scorer"])
    return rows.assign(**{c: rows["scorer"].map(lambda n, c=c: rec[n][c]) for c in RECORD})
