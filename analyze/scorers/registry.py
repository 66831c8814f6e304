"""The scorer registry: what each anomaly scorer is, needs and takes (no math here, no torch).

Each :class:`Scorer` declares its display name, formula, the official file and function it
follows, what it needs (:data:`NEEDS`: the per-pixel scores ``x``, the query outputs of a mask
model, in-distribution statistics from ``analyze fit``, the flipped pass of ``extract run
--hflip``), which cache kinds it supports, its parameters with their defaults, and how the
temperature enters (:data:`T_ENTRIES`). The command-line help, the ``all`` expansion and its
notes, the refusals, the report's names and the catalogue of docs/scorers.md (:mod:`analyze.scorers.catalogue`) all come from
:data:`SCORERS` (the accepted temperatures: :mod:`analyze.scorers.temperatures`); the math is in :mod:`analyze.scorers.pixel` (scorers of ``x``),
:mod:`analyze.scorers.masks` (scorers of the query outputs) and :mod:`analyze.scorers.sml`.

A scorer with parameters is named in results by its *spec*: the registry name alone when
every parameter has its default, else ``name:key=value,...`` with the non-default ones in
declaration order (``gen:gamma=0.2``), so rows of two settings never share a key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

from analyze.scorers import plugin_load

#: what a scorer may need: the per-pixel scores x (ERFNet logits, EoMT class scores), the
#: per-query outputs of a mask model, in-distribution statistics, a flipped second pass
NEEDS = {
    "scores": "pixel scores x",
    "queries": "query outputs",
    "id_stats": "in-distribution statistics (`analyze fit`, `--id-stats`)",
    "flip": "flip pass (`extract run --hflip`)",
}
#: how the temperature enters: "input" = the scorer sees x / T (on EoMT with the default
#: query target, x = s at that T and the scorer applies 1); "query" = only through the query
#: class softmax softmax(c_q / T) (with --temp-target pixel such a scorer is scored at T = 1 only)
T_ENTRIES = {
    "input": "x / T (EoMT query target: s at T)",
    "query": "softmax(c_q / T) only (pixel target: T = 1 only)",
}
CACHE_KINDS = ("pixel", "query")


@dataclass(frozen=True)
class Param:
    """One scorer parameter: ``int``, ``float`` or ``str`` (one of a few words, lower case), a
    default (``None``: see ``doc``) and a check."""

    name: str
    type: type
    default: Any
    doc: str
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""  # what check demands, for the error message

    def parse(self, text: str, scorer: str):
        if self.type is str:
            word = text.lower()
            if not self.check(word):
                raise ValueError(f"scorer {scorer}: parameter {self.name}={text} must be {self.rule}")
            return word
        try:
            number: float | int = float(text) if self.type is float else int(text, 10)
        except ValueError:
            raise ValueError(f"scorer {scorer}: parameter {self.name}={text!r} is not {'a number' if self.type is float else 'an integer'}") from None
        if self.type is float and not math.isfinite(number) or not self.check(number):
            raise ValueError(f"scorer {scorer}: parameter {self.name}={text} must be {self.rule}")
        return number


def fmt_value(v) -> str:
    """A parameter value as a spec and the docs write it (floats in %g)."""
    return format(v, "g") if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Scorer:
    """One anomaly scorer (higher score = more anomalous), with its parameter values bound.

    ``name`` is the spec written in results rows (:func:`spec_name`); ``base`` the registry
    name. The scorers of ``x`` are evaluated by :func:`analyze.scorers.pixel.score_many` (one
    alone: :func:`analyze.scorers.pixel.score`), those of the query outputs by
    :func:`analyze.compose.frame_scores.iter_frame_scores`.
    """

    base: str
    display: str
    formula: str
    source: str
    needs: tuple[str, ...]
    kinds: tuple[str, ...]
    temperature: str
    param_specs: tuple[Param, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    check_params: Callable[[dict], str | None] = field(default=lambda p: None, compare=False, repr=False)
    uses: str | None = None  # the scorer whose query channels and formula this one averages (m2a_flip: m2a)
    plugin: plugin_load.Plugin | None = None  # a user's function (analyze.scorers.plugins), None for the built-ins

    @property
    def name(self) -> str:
        return spec_name(self.base, self.params, self.param_specs)

    @property
    def description(self) -> str:
        return self.formula

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def needs_stats(self) -> bool:
        return "id_stats" in self.needs

    @property
    def needs_flip(self) -> bool:
        return "flip" in self.needs

    @property
    def needs_queries(self) -> bool:
        return "queries" in self.needs

    def supports(self, kind: str) -> bool:
        """Whether the scorer is defined for a cache of ``kind`` ('pixel' or 'query')."""
        if kind not in CACHE_KINDS:
            raise ValueError(f"cache kind must be one of {', '.join(CACHE_KINDS)}; got {kind!r}")
        return kind in self.kinds

    def with_params(self, **values) -> "Scorer":
        """This scorer with parameters set (checked); the others keep their defaults."""
        known = {p.name: p for p in self.param_specs}
        unknown = sorted(set(values) - set(known))
        if unknown:
            have = ", ".join(known) or "none"
            raise ValueError(f"scorer {self.base} has no parameter {', '.join(unknown)} (parameters: {have})")
        bound = {**{p.name: p.default for p in self.param_specs}, **dict(self.params), **values}
        reason = self.check_params(bound)
        if reason:
            raise ValueError(f"scorer {self.base}: {reason}")
        return replace(self, params=tuple((p.name, bound[p.name]) for p in self.param_specs))


def spec_name(base: str, params: Iterable[tuple[str, Any]], specs: Sequence[Param]) -> str:
    """``base`` alone when every parameter has its default, else ``base:k=v,...`` (non-defaults,
    declaration order)."""
    values = dict(params)
    extra = [f"{p.name}={fmt_value(values[p.name])}" for p in specs if p.name in values and values[p.name] != p.default]
    return f"{base}:{','.join(extra)}" if extra else base


def _positive(v) -> bool:
    return v > 0


def _sml_check(p: dict) -> str | None:
    if p["iterations"] and p["width"] % p["iterations"]:
        return (f"width={p['width']} must be a multiple of iterations={p['iterations']} (the official "
                "BoundarySuppressionWithSmoothing asserts it)")
    return None


def _m2a_check(p: dict) -> str | None:
    return None if p["first"] <= p["last"] else f"first={p['first']} must not exceed last={p['last']}"


_M2A_PARAMS = (
    Param("conf", float, 0.95, "a query is kept when its top probability (over K + 1) exceeds this",
          lambda v: 0 <= v < 1, "in [0, 1)"),
    Param("first", int, 2, "first class id a kept query may predict (Cityscapes: building)", lambda v: v >= 0, ">= 0"),
    Param("last", int, 10, "last class id a kept query may predict (Cityscapes: sky)", lambda v: v >= 0, ">= 0"),
)
_SML_PARAMS = (
    Param("width", int, 4, "initial boundary width", lambda v: v >= 0, ">= 0"),
    Param("iterations", int, 4, "boundary iterations", lambda v: v >= 0, ">= 0"),
    Param("dilation", int, 6, "dilation of the 7x7 Gaussian (sigma 1)", lambda v: v >= 1, ">= 1"),
    Param("border", str, "pinned", "image border of the boundary morphology: pinned = kornia af948c5 as SML's "
          "requirements.txt pins it (erosion pads with 1, so border pixels of class >= 2 are boundaries), "
          "geodesic = later kornia (only pixels inside the image count)", lambda v: v in ("pinned", "geodesic"),
          "pinned or geodesic"),
)

_ALL: tuple[Scorer, ...] = (
    Scorer("msp", "MSP", "1 - max_k softmax(x/T)_k", "Hendrycks & Gimpel 2017", ("scores",), ("pixel", "query"),
           "input"),
    Scorer("maxlogit", "MaxLogit", "-max_k x_k / T", "Hendrycks et al. 2022", ("scores",), ("pixel", "query"), "input"),
    Scorer("maxentropy", "MaxEntropy", "-sum_k p_k log p_k, p = softmax(x/T)", "Chan et al. 2021", ("scores",),
           ("pixel", "query"), "input"),
    Scorer("energy", "Energy", "-T logsumexp_k(x_k / T)", "Liu et al. 2020 (eq. 1)", ("scores",), ("pixel", "query"),
           "input"),
    Scorer("rba", "RbA", "-sum_k tanh(x_k / T)", "`NazirNayal8/RbA` `evaluate_ood.py` `get_RbA`", ("scores",),
           ("query",), "input"),
    Scorer("gen", "GEN", "sum over the M largest p_k of p_k^g (1 - p_k)^g, p = softmax(x/T)",
           "`XixiLiu95/GEN` `benchmark.py` `generalized_gamma_entropy`", ("scores",), ("pixel", "query"), "input",
           (Param("gamma", float, 0.1, "exponent g", _positive, "> 0"),
            Param("m", int, None, "classes summed (default: all K)", _positive, ">= 1"))),
    Scorer("kl", "KL matching", "min_k KL(p, d_k), p = softmax(x/T), d_k = mean p of ID pixels predicted k",
           "`XixiLiu95/GEN` `benchmark.py` (KL-Matching, `kl`)", ("scores", "id_stats"), ("pixel", "query"), "input"),
    Scorer("sml", "SML", "-(max_k x_k/T - mu_c) / sigma_c, c = argmax; boundary suppression, dilated smoothing",
           "`shjung13/Standardized-max-logits` `network/deepv3.py` (`DeepV3Plus.forward`, "
           "`BoundarySuppressionWithSmoothing`), `calculate_statistics.py`", ("scores", "id_stats"),
           ("pixel", "query"), "input", _SML_PARAMS, check_params=_sml_check),
    Scorer("sml_raw", "SML (raw)", "-(max_k x_k/T - mu_c) / sigma_c, c = argmax",
           "`shjung13/Standardized-max-logits` `network/deepv3.py` `DeepV3Plus.forward`", ("scores", "id_stats"),
           ("pixel", "query"), "input"),
    Scorer("eam", "EAM", "1 - sum_q sigmoid(m_q) max_{k<K} p_q,k, p_q = softmax(c_q/T)",
           "`matejgrcic/Open-set-M2F` `mask2former/evaluation/ood_detection_evaluation.py` "
           "`DenseOODDetectionEvaluator.process`", ("queries",), ("query",), "query"),
    Scorer("noobject", "No-object", "sum_q p_q,K sigmoid(m_q), p_q = softmax(c_q/T) (K = no-object)",
           "`NazirNayal8/RbA` `mask2former/maskformer_model.py` `semantic_inference_with_void` (its last channel; "
           "no paper scores with it)", ("queries",), ("query",),
           "query"),
    Scorer("m2a", "Mask2Anomaly", "(1 - max(max_k s_k, A)) [B < 0.5], A, B: confident stuff queries' p_q sigmoid(m_q)",
           "`shyam671/Mask2Anomaly-Unmasking-Anomalies-in-Road-Scene-Segmentation` "
           "`anomaly_utils/anomaly_inference.py`, `mask2former/maskformer_model.py` `semantic_inference`",
           ("queries",), ("query",), "query", _M2A_PARAMS, check_params=_m2a_check),
    Scorer("m2a_flip", "Mask2Anomaly (flip)", "(m2a + hflip(m2a of the flipped pass)) / 2",
           "`shyam671/Mask2Anomaly-Unmasking-Anomalies-in-Road-Scene-Segmentation` "
           "`anomaly_utils/anomaly_inference.py`", ("queries", "flip"), ("query",), "query", _M2A_PARAMS,
           check_params=_m2a_check, uses="m2a"),
)
SCORERS: dict[str, Scorer] = {s.base: s.with_params() for s in _ALL}
"""Registry name -> :class:`Scorer` with default parameters, in Table 1's row order."""
STUDY_SCORERS = ("msp", "maxlogit", "maxentropy", "energy", "rba")  # the seed study's five


def plugin_scorer(p: plugin_load.Plugin) -> Scorer:
    """The :class:`Scorer` of a loaded plugin (:mod:`analyze.scorers.plugin_load`), default parameters."""
    version = f" {p.version}" if p.version else ""
    return Scorer(p.name, p.display, p.formula, f"plugin `{p.target}`{version}",
                  ("scores", "id_stats") if p.needs_stats else ("scores",), p.kinds, "input",
                  tuple(Param(n, type(d), d, doc) for n, d, doc in p.params), plugin=p).with_params()


def _split_head(head: str) -> tuple[str, str]:
    """``name[:k=v]`` -> (name, 'k=v' or ''); a plugin's name holds ``:`` itself (``mod:fn:k=v``)."""
    name, sep, last = head.rpartition(":")
    return (name, last) if sep and "=" in last else (head, "")


def _lookup(name: str) -> Scorer | None:
    """A built-in (case-insensitive) or a plugin (:func:`analyze.scorers.plugin_load.find`) by name."""
    if name.lower() in SCORERS:
        return SCORERS[name.lower()]
    found = plugin_load.find(name)
    return None if found is None else plugin_scorer(found)


def _parse_params(scorer: Scorer, items: Sequence[str]) -> dict[str, Any]:
    base = scorer.base
    specs = {p.name: p for p in scorer.param_specs}
    out: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip().lower()
        if key not in specs:
            have = ", ".join(specs) or "none"
            raise ValueError(f"scorer {base} has no parameter {key!r} (parameters: {have})")
        if key in out:
            raise ValueError(f"scorer {base}: parameter {key} given twice")
        out[key] = specs[key].parse(text.strip(), base)
    return out


def parse_spec(spec: str) -> tuple[Scorer, ...]:
    """The scorers of a comma list such as ``'msp,gen:gamma=0.2,m=10,kl'`` (or ``'all'``, the built-ins).

    A name that is not a built-in is a plugin (:mod:`analyze.scorers.plugin_load`): an installed
    one's entry-point name, ``module:function`` or ``file.py:function``, parameters after a
    further ``:`` (``mypkg.scores:fn:alpha=0.5``); loading it may raise
    :class:`analyze.scorers.plugin_load.PluginError` (a ``ValueError``).

    An item ``name`` or ``name:key=value`` starts a scorer; an item ``key=value`` (no ``:``)
    continues the parameters of the scorer before it, so a scorer's parameters are separated
    by commas like the scorers (scorer names never hold ``=``). Names are case-insensitive
    (a plugin's module and function are not); duplicates (same name and parameter values) are
    dropped; order follows ``spec``.
    """
    return _parse_spec(spec, plugin_load.spec_files(spec))


@lru_cache(maxsize=256)
def _parse_spec(spec: str, files: tuple) -> tuple[Scorer, ...]:
    """:func:`parse_spec`, cached; ``files``: the state of the plugin files ``spec`` names."""
    groups: list[list[str]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if "=" in item and ":" not in item:
            if not groups:
                raise ValueError(f"parameter {item!r} has no scorer before it (in {spec!r})")
            groups[-1].append(item)
        else:
            groups.append([item])
    out: list[Scorer] = []
    for head, *rest in groups:
        name, first = _split_head(head)
        name = name.strip()
        if name.lower() == "all":
            if len(groups) > 1 or first or rest:
                raise ValueError(f"'all' cannot be combined with other scorers (got {spec!r})")
            return tuple(SCORERS.values())
        found = _lookup(name)
        if found is None:
            raise ValueError(f"unknown scorer {name!r}; valid: {', '.join(SCORERS)} (or 'all'), an installed "
                             "plugin (`analyze scorers`) or a module:function")
        scorer = found.with_params(**_parse_params(found, ([first] if first else []) + rest))
        if scorer not in out:
            out.append(scorer)
    return tuple(out)


def get_scorer(name: str) -> Scorer:
    """One scorer from its spec (a results ``scorer`` value such as ``gen:gamma=0.2``)."""
    (scorer,) = parse_spec(name)
    return scorer


def _missing(s: Scorer, available: frozenset) -> list[str]:
    return [n for n in ("id_stats", "flip") if n in s.needs and n not in available]


def get_scorers(spec: str, kind: str | None = None, available: Iterable[str] | None = None) -> tuple[Scorer, ...]:
    """Scorers named by ``spec`` (:func:`parse_spec`).

    With ``kind`` ('pixel' or 'query'), ``'all'`` keeps only the scorers defined for that kind
    and naming an unsupported one raises ``ValueError``. With ``available`` (a subset of
    ``{"id_stats", "flip"}``: what the run has), ``'all'`` keeps only the scorers whose needs
    are met (:func:`all_notes` says which were left out) and naming one whose needs are not
    met raises ``ValueError`` saying what it needs.
    """
    chosen = parse_spec(spec)
    is_all = spec.strip().lower() == "all"
    have = None if available is None else frozenset(available)
    if is_all:
        return tuple(s for s in chosen if (kind is None or s.supports(kind)) and (have is None or not _missing(s, have)))
    if kind is not None:
        check_supported(chosen, kind)
    if have is not None:
        for s in chosen:
            lacking = _missing(s, have)
            if lacking:
                raise ValueError(f"scorer {s.name} needs {' and '.join(NEEDS[n] for n in lacking)}")
    return chosen


def all_notes(kind: str, available: Iterable[str]) -> list[str]:
    """What ``--scorers all`` leaves out for a cache of ``kind`` given ``available``, and why."""
    have = frozenset(available)
    out = []
    for need in ("id_stats", "flip"):
        left = [s.name for s in SCORERS.values() if s.supports(kind) and need in s.needs and need not in have]
        if left:
            out.append(f"--scorers all leaves out {', '.join(left)}: {'they need' if len(left) > 1 else 'it needs'} "
                       f"{NEEDS[need]}")
    return out


def check_supported(scorers: Sequence[Scorer], kind: str) -> None:
    """Raise ``ValueError`` naming every scorer in ``scorers`` not defined for ``kind``."""
    bad = [s.name for s in scorers if not s.supports(kind)]
    if bad:
        model = "pixel models (ERFNet)" if kind == "pixel" else "mask models (EoMT)"
        ok = ", ".join(s.name for s in SCORERS.values() if s.supports(kind))
        raise ValueError(f"scorer(s) {', '.join(bad)} not defined for {model}; use: {ok}")


def scorer_display(name: str) -> str:
    """Display name of a results ``scorer`` value: ``GEN``, ``GEN (gamma=0.2)``; unknown names as given."""
    try:
        s = get_scorer(name)
    except ValueError:
        return name
    extra = _split_head(name)[1]
    return f"{s.display} ({extra.replace(',', ', ')})" if extra else s.display


def scorer_order(names: Iterable[str]) -> list[str]:
    """``names`` (results ``scorer`` values) in registry order, a scorer's variants after it, unknown last."""
    rank = {b: i for i, b in enumerate(SCORERS)}

    def key(n: str):
        base = _split_head(n)[0]
        return (rank.get(base, len(rank)), n != base, n)

    return sorted(set(names), key=key)
