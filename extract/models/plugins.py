"""Models from outside this package: installed plugins and ``python:MODULE:FUNCTION`` factories.

A package registers a model under the entry-point group :data:`ENTRY_POINT_GROUP`
(``anomaly_seg_cache.models``); the entry point's object is a :class:`extract.models.ModelSpec`
or a function without arguments returning one, e.g. in the package's ``pyproject.toml``::

    [project.entry-points."anomaly_seg_cache.models"]
    mynet = "mylab.models:mynet_spec"

``extract run --model mynet`` then uses it. A built-in model's name always means the built-in
model (a plugin of that name is listed as shadowed), so installing a package changes no cache of
a built-in model.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata

from extract.models.spec import ModelSpec
from schemas.errors import OptionError

ENTRY_POINT_GROUP = "anomaly_seg_cache.models"


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed model plugins by name (the first of a name, in the order importlib lists them)."""
    out: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, ep)
    return out


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def load_plugin(ep: metadata.EntryPoint) -> ModelSpec:
    """The spec an entry point names; a plugin that cannot give one is an OptionError naming it."""
    where = f"model plugin {ep.name} ({ep.value}, from {_distribution(ep)})"
    try:
        obj = ep.load()
        spec = obj if isinstance(obj, ModelSpec) else obj() if callable(obj) else obj
    except Exception as exc:  # noqa: BLE001  (a broken plugin is one line, whatever it raised)
        raise OptionError(f"{where}: cannot load it ({type(exc).__name__}: {exc})") from None
    if not isinstance(spec, ModelSpec):
        raise OptionError(f"{where}: expected an extract.models.ModelSpec, got {type(spec).__name__}")
    return replace(spec, name=ep.name, source=f"{_distribution(ep)} ({ep.value})")
