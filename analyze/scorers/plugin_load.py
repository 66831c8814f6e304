"""Finding, importing and declaring scorer plugins: a user's function of ``x`` named beside the built-ins.

A plugin is named in ``--scorers`` in one of three ways:

* ``mypkg.scores:my_score``: any importable ``module:function``;
* ``/path/to/file.py:my_score``: a module given by its file (imported under a private name);
* ``my_score``: an installed plugin, registered by its distribution under the entry-point group
  :data:`ENTRY_POINT_GROUP` (``[project.entry-points."anomaly_seg_cache.scorers"]``). Built-in
  names win over entry points of the same name; ``all`` never includes a plugin.

Parameters follow as for the built-ins (``mypkg.scores:my_score:alpha=0.5,beta=2``).

The contract (docs/plugins.md): ``fn(x, temperature, **params)`` takes ``x``, float64
``(K, H, W)`` (pixel caches: the class logits at label size without the void channel; query
caches: the composed class scores ``s``) and the temperature the built-ins receive with it, and
returns an ``(H, W)`` map, higher = more anomalous. An optional declaration (:func:`scorer`, or
the same dict set as the function attribute :data:`DECLARATION`) gives a display name,
parameters with defaults, the cache kinds, whether it needs in-distribution statistics (then it
is called with ``stats=``, an :class:`analyze.scorers.pixel.ClassStats`), how the temperature
enters (:data:`TEMPERATURE_MODES`) and whether the function is pixelwise (then it is fed the
fused tiles and no full-size ``x`` is built).

Nothing here runs the function: :mod:`analyze.scorers.plugins` calls it and checks its maps.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from schemas.errors import DataError, one_line

ENTRY_POINT_GROUP = "anomaly_seg_cache.scorers"
DECLARATION = "anomaly_scorer"  # the function attribute that holds the declaration
#: how the temperature enters a plugin: "argument" = fn(x, T) applies T itself (as every
#: built-in of x does: it scores x / T); "divided" = fn(x / T), the division done by the tool
#: in float64 as for the built-ins
TEMPERATURE_MODES = {
    "argument": "fn(x, T): the function applies T (the built-ins score x / T)",
    "divided": "fn(x / T): the tool divides x by T in float64",
}
KINDS = ("pixel", "query")
_KEYS = {"display", "params", "kinds", "needs_stats", "temperature", "pixelwise", "formula"}


class PluginError(DataError, ValueError):
    """A scorer plugin that cannot be loaded or that broke its contract (one line, exit 1)."""


@dataclass(frozen=True)
class Plugin:
    """What a plugin is and where it comes from (its function: :func:`function`).

    ``name``: the base name of its rows' ``scorer`` (the reference as given, or the entry-point
    name); ``target``: ``module:function`` (a file: its absolute path); ``version``: the
    version of the distribution that provides the module ('' when none); ``digest``: the first
    16 hex digits of the sha256 of the module's source file, so a changed file is a new scorer.
    ``params``: ``(name, default, doc)`` per declared parameter."""

    name: str
    target: str
    version: str
    digest: str
    display: str
    formula: str
    params: tuple[tuple[str, Any, str], ...]
    kinds: tuple[str, ...]
    needs_stats: bool
    temperature: str
    pixelwise: bool


def scorer(display: str | None = None, *, params: dict[str, Any] | None = None, kinds=KINDS,
           needs_stats: bool = False, temperature: str = "argument", pixelwise: bool = False,
           formula: str | None = None) -> Callable[[Callable], Callable]:
    """Declare a scorer plugin: sets the function attribute :data:`DECLARATION` (a dict of these
    arguments, which a package may also set by hand without importing this tool).

    ``params``: name -> default (int, float or str) or ``(default, doc)``; ``kinds``: the cache
    kinds it accepts; ``needs_stats``: called with ``stats=`` (``analyze fit`` statistics of this
    T); ``temperature``: a key of :data:`TEMPERATURE_MODES`; ``pixelwise``: each pixel's score
    depends on that pixel's ``x`` only, so the function may be fed tiles."""
    decl = dict(display=display, params=dict(params or {}), kinds=tuple(kinds), needs_stats=needs_stats,
                temperature=temperature, pixelwise=pixelwise, formula=formula)

    def mark(fn: Callable) -> Callable:
        setattr(fn, DECLARATION, decl)
        return fn

    return mark


def is_reference(name: str) -> bool:
    """Whether a scorer name is a ``module:function`` or ``file.py:function`` reference."""
    return ":" in name


@lru_cache(maxsize=1)
def installed() -> dict[str, md.EntryPoint]:
    """The installed plugins: entry-point name (lower case) -> entry point of :data:`ENTRY_POINT_GROUP`."""
    return {ep.name.lower(): ep for ep in md.entry_points(group=ENTRY_POINT_GROUP)}


def help_line(builtin) -> str:
    """The plugin part of the ``--scorers`` help: the syntax and the installed plugins' names
    (those not shadowed by a name in ``builtin``)."""
    names = ", ".join(f"{n} ({ep.value})" for n, ep in sorted(installed().items()) if n not in builtin)
    return ("Your own scorer: module:function or path/to/file.py:function, parameters as above (see `analyze "
            f"scorers`); installed plugins: {names or 'none'}; 'all' is the built-ins only.")


def find(name: str) -> Plugin | None:
    """The plugin ``name`` refers to (a reference or an installed entry-point name), loaded and
    its declaration checked; None when ``name`` is neither. Raises :class:`PluginError`.

    A file is loaded again when it changed (its size or modification time), so a session that
    edits its plugin scores the new code; an imported module stays as Python imported it."""
    if is_reference(name):
        module_ref, _, fn_name = name.rpartition(":")
        if _is_file(module_ref):
            path = str(Path(module_ref).resolve())
            return _load(name, f"{path}:{fn_name}", None, file_state(path))
        return _load(name, name, None, None)
    ep = installed().get(name.lower())
    return None if ep is None else _load(name.lower(), ep.value, ep, None)


def _is_file(module_ref: str) -> bool:
    return module_ref.endswith(".py") or "/" in module_ref


def file_state(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a plugin file, None when it cannot be read (the load says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def spec_files(spec: str) -> tuple:
    """The plugin files a ``--scorers`` value names, each with its :func:`file_state`: the part of
    the value's meaning that a cache of parsed values must see change."""
    out = []
    for item in spec.split(","):
        head = item.strip()
        name, sep, last = head.rpartition(":")
        name = name if sep and "=" in last else head
        module_ref = name.rpartition(":")[0]
        if module_ref and _is_file(module_ref):
            path = str(Path(module_ref).resolve())
            out.append((path, file_state(path)))
    return tuple(out)


@lru_cache(maxsize=64)
def _load(name: str, ref: str, ep: md.EntryPoint | None, state) -> Plugin:
    """``state``: the file's :func:`file_state` (a key of the cache, so a changed file loads again)."""
    module_ref, _, fn_name = ref.rpartition(":")
    what = f"scorer plugin {name}"
    if not module_ref or not fn_name.isidentifier():
        raise PluginError(f"{what}: expected module:function or path/to/file.py:function")
    module = _import(module_ref, what)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise PluginError(f"{what}: module {module_ref} has no function {fn_name}")
    plugin = _declare(name, fn, what)
    source = _source_file(module)
    target = f"{source if _is_file(module_ref) else module_ref}:{fn_name}"
    version = ep.dist.version if ep is not None and ep.dist is not None else _version(module_ref)
    _FUNCTIONS[name] = fn
    return _with(plugin, target=target, version=version, digest=_digest(source, what))


_FUNCTIONS: dict[str, Callable] = {}


def function(plugin: Plugin) -> Callable:
    """The function of a loaded plugin."""
    if plugin.name not in _FUNCTIONS:
        find(plugin.name)
    return _FUNCTIONS[plugin.name]


def _with(p: Plugin, **changes) -> Plugin:
    return Plugin(**{**p.__dict__, **changes})


def _import(module_ref: str, what: str):
    try:
        if _is_file(module_ref):
            path = Path(module_ref).resolve()
            if not path.is_file():
                raise PluginError(f"{what}: no file {path}")
            private = "_anomaly_seg_cache_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(private, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"{what}: {path} is not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[private] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(module_ref)
    except PluginError:
        raise
    except BaseException as exc:  # SyntaxError, ImportError, anything its top level raises
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise PluginError(f"{what}: cannot import {module_ref}: {type(exc).__name__}: {one_line(exc)}") from None


def _declare(name: str, fn: Callable, what: str) -> Plugin:
    """The declaration of ``fn`` checked, and its signature against the contract."""
    decl = dict(getattr(fn, DECLARATION, None) or {})
    unknown = sorted(set(decl) - _KEYS)
    if unknown:
        raise PluginError(f"{what}: unknown declaration key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    kinds = tuple(decl.get("kinds") or KINDS)
    t_mode = decl.get("temperature") or "argument"
    if set(kinds) - set(KINDS) or not kinds:
        raise PluginError(f"{what}: kinds must be among {', '.join(KINDS)}; got {kinds}")
    if t_mode not in TEMPERATURE_MODES:
        raise PluginError(f"{what}: temperature must be one of {', '.join(TEMPERATURE_MODES)}; got {t_mode!r}")
    params = []
    for key, value in (decl.get("params") or {}).items():
        default, doc = value if isinstance(value, tuple) else (value, "")
        if not key.isidentifier() or type(default) not in (int, float, str):
            raise PluginError(f"{what}: parameter {key!r} needs an int, float or str default; got {default!r}")
        params.append((key.lower(), default, doc))
    needs_stats = bool(decl.get("needs_stats"))
    _check_signature(fn, t_mode, [p[0] for p in params], needs_stats, what)
    return Plugin(name=name, target="", version="", digest="", display=decl.get("display") or fn.__name__,
                  formula=decl.get("formula") or (inspect.getdoc(fn) or "").split("\n")[0] or "user function",
                  params=tuple(params), kinds=kinds, needs_stats=needs_stats, temperature=t_mode,
                  pixelwise=bool(decl.get("pixelwise")))


def _check_signature(fn: Callable, t_mode: str, params: list[str], needs_stats: bool, what: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or extension function without a signature: called as is
    args = (None, 1.0) if t_mode == "argument" else (None,)
    kw = {p: None for p in params} | ({"stats": None} if needs_stats else {})
    try:
        sig.bind(*args, **kw)
    except TypeError as exc:
        want = "fn(x, temperature" if t_mode == "argument" else "fn(x"
        want += "".join(f", {p}=..." for p in params) + (", stats=..." if needs_stats else "") + ")"
        raise PluginError(f"{what}: wrong signature {fn.__name__}{sig}: it must accept {want} ({exc})") from None


def _source_file(module) -> Path:
    path = getattr(module, "__file__", None)
    if not path:
        raise PluginError(f"scorer plugin module {module.__name__} has no source file to digest")
    return Path(path).resolve()


def _digest(path: Path, what: str) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise PluginError(f"{what}: cannot read its source {path}: {exc.strerror or exc}") from None


def _version(module_ref: str) -> str:
    """The version of the distribution that provides the top-level package of ``module_ref``."""
    if _is_file(module_ref):
        return ""
    top = module_ref.split(".")[0]
    dists = md.packages_distributions().get(top, [])
    for dist in dists:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return ""
