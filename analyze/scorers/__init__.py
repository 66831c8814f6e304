"""Anomaly scorers: one registry of declarations and small pure functions, higher score = more anomalous.

* :mod:`analyze.scorers.registry`: what each scorer is, needs and takes (:data:`SCORERS`),
  the ``--scorers`` syntax with parameters (``gen:gamma=0.2,m=10``); no torch, so the report
  can name scorers without loading the math. :mod:`analyze.scorers.temperatures`: the
  accepted temperature range and ``--temps``.
* :mod:`analyze.scorers.pixel`: the scorers of the per-pixel scores ``x`` (MSP, MaxLogit,
  MaxEntropy, Energy, RbA, GEN, KL matching, SML) in one tiled float64 pass (``score_many``).
* :mod:`analyze.scorers.masks`: the scorers of a mask model's query outputs (EAM, no-object,
  Mask2Anomaly) and the per-query channels they need from the composition.
* :mod:`analyze.scorers.sml`: SML's boundary suppression and dilated smoothing.
* :mod:`analyze.scorers.kept_maps`: the full-size maps a thread's frame tasks reuse from frame to frame.
* :mod:`analyze.scorers.plugin_load` and :mod:`analyze.scorers.plugins`: a user's function of ``x``
  (``--scorers mypkg.scores:fn``, ``file.py:fn`` or an installed entry point) declared, loaded,
  scored inside :class:`~analyze.scorers.pixel.MapScorer` beside the built-ins and recorded in the rows.

The names below are importable from ``analyze.scorers``; the torch-backed ones
(``score``, ``score_many``, ``first_argmax``, ``row_tiles``, ``ClassStats``, ``SCORE_DTYPE``,
``TILE_ELEMENTS``) load :mod:`analyze.scorers.pixel` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analyze.scorers.registry import (  # noqa: F401
    NEEDS,
    SCORERS,
    STUDY_SCORERS,
    T_ENTRIES,
    Param,
    Scorer,
    all_notes,
    check_supported,
    get_scorer,
    get_scorers,
    parse_spec,
    scorer_display,
    scorer_order,
)
from analyze.scorers.catalogue import catalogue, help_text  # noqa: F401
from analyze.scorers.temperatures import T_RANGE, check_temperature, parse_temperatures  # noqa: F401

if TYPE_CHECKING:  # what type checkers and editors see of the names loaded on first use below
    from analyze.scorers.pixel import (  # noqa: F401
        SCORE_DTYPE,
        TILE_ELEMENTS,
        ClassStats,
        first_argmax,
        row_tiles,
        score,
        score_many,
    )

_PIXEL = ("score", "score_many", "first_argmax", "row_tiles", "ClassStats", "SCORE_DTYPE", "TILE_ELEMENTS")


def __getattr__(name: str) -> Any:
    if name in _PIXEL:  # torch-backed: imported when first asked for (PEP 562)
        from analyze.scorers import pixel

        return getattr(pixel, name)
    raise AttributeError(f"module 'analyze.scorers' has no attribute {name!r}")
