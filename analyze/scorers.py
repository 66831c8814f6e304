"""Anomaly scorers: a registry of small pure functions, higher score = more anomalous.

Every scorer maps "logits" ``x`` of shape ``(K, H, W)`` (numpy array or CPU tensor) and a
temperature ``T > 0`` to an ``(H, W)`` float64 numpy array, computed on ``x / T`` in float64:

===========  ==============================================  ==============================
name         score                                           reference
===========  ==============================================  ==============================
msp          ``1 - max_k softmax(x / T)_k``                  Hendrycks & Gimpel 2017
maxlogit     ``-max_k x_k / T``                              Hendrycks et al. 2022
maxentropy   ``-sum_k p_k log p_k``, ``p = softmax(x / T)``  Chan et al. 2021
energy       ``-T * logsumexp_k(x_k / T)``                   Liu et al. 2020 (eq. 1)
rba          ``-sum_k tanh(x_k / T)``                        Nayal et al. 2023 (``NazirNayal8/
                                                             RbA``, ``evaluate_ood.py::get_RbA``)
===========  ==============================================  ==============================

What ``x`` is depends on the model (see :mod:`analyze.compose`):

* pixel model (ERFNet): the class logits ``z`` with the void channel already dropped, so the
  void channel never enters a softmax;
* mask model (EoMT): the per-pixel class scores ``s_k = sum_q softmax(c_q)_k sigmoid(m_q)``.
  As in the RbA reference, which applies its scores to this ``sem_seg`` map, ``s`` is
  treated as logits: MSP is ``1 - max softmax(s)``, MaxEntropy the entropy of
  ``softmax(s)``, Energy ``-logsumexp(s)``.

RbA is defined only for mask models (the reference applies it to the class scores of
mask classification, not to pixel logits); the registry marks it ``supports_pixel=False`` and
:func:`get_scorers` / :func:`check_supported` refuse it for pixel caches.

Numerics: MSP sums the non-maximal probabilities instead of computing ``1 - max softmax``,
which keeps resolution for confident pixels where ``1 - p`` rounds to 0 and creates ties;
MaxEntropy uses ``log_softmax`` and counts ``p log p`` as 0 where ``p`` underflows (never
``p.log()``).

Why float64: the metrics depend on the order of the scores, and float32 runs out of
resolution away from T = 1 (measured on the demo's ERFNet cache against a float64
evaluation: MSP and MaxEntropy at T = 0.01 underflow to ties and move FPR95 by 0.19; Energy
at T = 0.1 loses ``T log(1 + r)`` beside ``max x`` and moves AUROC by 5e-6; MaxEntropy at
T = 100 flattens near ``log K`` (2e-5) and at T = 1000 moves AuPRC by 1e-3). Computing in
float64 and keeping float64 scores makes the metrics those of a float64 evaluation at every
temperature in :data:`T_RANGE` (tested to 1e-6), for 1.8x the time of this step (0.50 s
instead of 0.28 s for five scorers and the semantic map of a 1024x2048 frame, one thread). The
inputs ``x`` (ERFNet logits resized to the label size, EoMT class scores) stay float32, as
in the official inference code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch

from schemas.cache import parse_kind

ArrayLike = Union[np.ndarray, torch.Tensor]


TILE_ELEMENTS = 1 << 18  # floats of one (K, rows, W) tile of score_many: 2 MiB of float64, stays in cache
SCORE_DTYPE = torch.float64
#: temperatures the CLIs accept (README "Scorers and temperature"): the metrics equal those of
#: a float64 evaluation of the formulas over this range (tested at both ends, for ERFNet
#: logits and EoMT class scores). Below it float64 itself saturates: RbA's tanh(s / T) of
#: EoMT class scores (s <= 1) reaches 1.0 at s / T ~ 19, so ties depend on the last bit of
#: the tanh implementation, and MSP / MaxEntropy underflow for logit gaps above ~700 T.
T_RANGE = (0.1, 1000.0)


def _prepare(x: ArrayLike, temperature: float) -> torch.Tensor:
    """``x`` as a CPU tensor of shape (K, H, W) in its float dtype (not yet divided by ``T``)."""
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.ndim != 3:
        raise ValueError(f"scorers take (K, H, W) logits, got shape {tuple(t.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return t


def row_tiles(shape: Sequence[int]) -> list[slice]:
    """Row slices of the (K, rows, W) tiles of a (K, H, W) map, ~``TILE_ELEMENTS`` floats each."""
    k, h, w = shape
    step = max(1, TILE_ELEMENTS // max(1, k * w))
    return [slice(r0, min(r0 + step, h)) for r0 in range(0, h, step)]


def first_argmax(x: ArrayLike, top: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the first maximum over dim 0 of ``x`` (K, ...), int64; ``top`` = ``x.amax(0)`` if known.

    Same result as ``x.max(0).indices`` (first maximum on ties, tested) at a fraction of
    its cost on the CPU: ``amax`` and an equality test are vectorised along the pixels,
    the indexed reduction is not. A NaN pixel gets index ``K - 1``.
    """
    t = torch.as_tensor(x)
    k = t.shape[0]
    if k > 255:
        return t.max(0).indices
    if top is None:
        top = t.amax(0)
    weights = torch.arange(k, 0, -1, dtype=torch.uint8).view(k, *([1] * (t.ndim - 1)))  # K .. 1
    hit = (t == top).to(torch.uint8).mul_(weights).amax(0)  # K - first index, 0 where NaN
    return (k - hit.to(torch.int64)).clamp_(max=k - 1)


def _sum0(x: torch.Tensor) -> torch.Tensor:
    """Sum over dim 0 in index order (``x[0] + x[1] + ...``), vectorised over the pixels.

    ``Tensor.sum(0)`` groups its float additions by the tensor's size, so a pixel's value
    would depend on the size of the map or tile; this order does not.
    """
    acc = x[0].clone()
    for k in range(1, x.shape[0]):
        acc += x[k]
    return acc


def score_many(x: ArrayLike, temperature: float, names: Sequence[str],
               argmax_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Several scorers on the same ``x / T`` in one pass over the data.

    Every scorer is evaluated here, so a score does not depend on which other scorers were
    requested. Shared pieces: ``d = x/T - max`` and ``e = exp(d)`` with the maximal class left
    out, ``r = sum e`` (so ``sum_k exp(x_k/T - max) = 1 + r``):

    * msp = ``r / (1 + r)`` (no cancellation of ``1 - p`` near ``p = 1``);
    * maxlogit = ``-max``;
    * energy = ``-T (max + log1p(r))``;
    * maxentropy = ``log1p(r) - sum_k e_k d_k / (1 + r)`` (= ``-sum p log p``; a term whose
      ``e_k`` underflows to 0 counts as 0, never ``0 * -inf``);
    * rba = ``-sum_k tanh(x_k / T)``.

    ``argmax_out`` (an (H, W) uint8 array), if given, receives the first-maximum class of
    ``x`` per pixel (the semantic map, :func:`first_argmax`), taken from the same tiles.

    The map is processed in tiles of whole rows (``TILE_ELEMENTS`` floats), so the dozen
    elementwise passes run in cache. Sums over classes run in class order
    (:func:`_sum0`), so a pixel's scores depend on its own logits only, never on the size of
    the map or the tiling.
    """
    t = _prepare(x, temperature)  # (K, H, W)
    want = set(names)
    unknown = want - set(_FUSED)
    if unknown:
        raise ValueError(f"unknown scorer(s) {sorted(unknown)}; valid: {', '.join(_FUSED)}")
    out = {n: torch.empty(t.shape[1:], dtype=SCORE_DTYPE) for n in want}
    sem = None
    if argmax_out is not None:
        if argmax_out.shape != tuple(t.shape[1:]) or argmax_out.dtype != np.uint8 or t.shape[0] > 255:
            raise ValueError(f"argmax_out must be a uint8 array of shape {tuple(t.shape[1:])}")
        sem = torch.from_numpy(argmax_out)
    for rows in row_tiles(t.shape):
        tile = t[:, rows].to(SCORE_DTYPE)  # (K, R, W): a copy, divided in place
        if temperature != 1.0:
            tile /= temperature
        _score_tile(tile, temperature, want, {n: o[rows] for n, o in out.items()},
                    None if sem is None else sem[rows])
    return {n: out[n].numpy() for n in names}


def _score_tile(t: torch.Tensor, temperature: float, want: set, out: dict[str, torch.Tensor],
                sem: torch.Tensor | None = None) -> None:
    """:func:`score_many` on one (K, rows, W) tile of ``x / T``, written into ``out``'s views
    (and the first-maximum class into ``sem``)."""
    if want & {"msp", "maxlogit", "energy", "maxentropy"} or sem is not None:
        top = t.amax(0)  # (R, W)
        if "maxlogit" in want:
            torch.neg(top, out=out["maxlogit"])
        arg = first_argmax(t, top) if (sem is not None or want & {"msp", "energy", "maxentropy"}) else None
        if sem is not None:
            sem.copy_(arg)
        if want & {"msp", "energy", "maxentropy"}:
            d = t - top  # (K, R, W), <= 0
            e = torch.exp(d).scatter_(0, arg[None], 0.0)  # (K, R, W), the maximum left out
            r = _sum0(e)  # (R, W)
            if "msp" in want:
                torch.div(r, 1 + r, out=out["msp"])
            log_z = torch.log1p(r)  # (R, W): logsumexp - max
            if "energy" in want:
                torch.mul(top + log_z, -temperature, out=out["energy"])
            if "maxentropy" in want:
                ed = _sum0(e.mul_(d).nan_to_num_(nan=0.0))  # (R, W), sum e_k d_k
                torch.sub(log_z, ed / (1 + r), out=out["maxentropy"])
    if "rba" in want:
        torch.neg(_sum0(torch.tanh(t)), out=out["rba"])


def _single(name: str) -> Callable[[ArrayLike, float], np.ndarray]:
    def fn(x: ArrayLike, temperature: float = 1.0) -> np.ndarray:
        return score_many(x, temperature, (name,))[name]

    fn.__name__ = name
    fn.__doc__ = f"``{_FUSED[name]}`` on ``x / T``; see :func:`score_many`."
    return fn


_FUSED = {
    "msp": "1 - max_k softmax(x / T)_k",
    "maxlogit": "-max_k x_k / T",
    "maxentropy": "-sum_k p_k log p_k, p = softmax(x / T)",
    "energy": "-T logsumexp(x / T)",
    "rba": "-sum_k tanh(x_k / T)",
}
msp, maxlogit, maxentropy, energy, rba = (_single(n) for n in _FUSED)


@dataclass(frozen=True)
class Scorer:
    """One anomaly scorer: ``fn(x (K, H, W), temperature) -> (H, W)`` float64."""

    name: str
    fn: Callable[[ArrayLike, float], np.ndarray]
    supports_pixel: bool
    supports_mask: bool
    description: str

    def __call__(self, x: ArrayLike, temperature: float = 1.0) -> np.ndarray:
        return self.fn(x, temperature)

    def supports(self, kind: str) -> bool:
        """Whether the scorer is defined for a cache of ``kind`` ('pixel' or 'query')."""
        return {"pixel": self.supports_pixel, "query": self.supports_mask}[parse_kind(kind)]


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("msp", msp, True, True, "1 - max softmax(x/T)"),
        Scorer("maxlogit", maxlogit, True, True, "-max(x/T)"),
        Scorer("maxentropy", maxentropy, True, True, "entropy of softmax(x/T)"),
        Scorer("energy", energy, True, True, "-T logsumexp(x/T)"),
        Scorer("rba", rba, False, True, "-sum tanh(x/T) (mask models only)"),
    )
}


def get_scorers(spec: str, kind: str | None = None) -> tuple[Scorer, ...]:
    """Scorers named by ``spec``: ``'all'`` or a comma list such as ``'msp,maxlogit'``.

    Names are case-insensitive; duplicates are dropped; order follows ``spec`` (registry
    order for ``'all'``). With ``kind`` ('pixel' or 'query'), ``'all'`` keeps only the
    scorers defined for that kind and naming an unsupported one raises ``ValueError``.
    """
    valid = ", ".join(SCORERS)
    names = [n.strip().lower() for n in spec.split(",")]
    if "all" in names and len(names) > 1:
        raise ValueError(f"'all' cannot be combined with other scorers (got {spec!r})")
    if names == ["all"]:
        chosen = list(SCORERS.values())
        if kind is not None:
            chosen = [s for s in chosen if s.supports(kind)]
        return tuple(chosen)
    out: list[Scorer] = []
    for n in names:
        if n not in SCORERS:
            raise ValueError(f"unknown scorer {n!r}; valid: {valid} (or 'all')")
        if SCORERS[n] not in out:
            out.append(SCORERS[n])
    if kind is not None:
        check_supported(out, kind)
    return tuple(out)


def check_supported(scorers: Sequence[Scorer], kind: str) -> None:
    """Raise ``ValueError`` naming every scorer in ``scorers`` not defined for ``kind``."""
    bad = [s.name for s in scorers if not s.supports(kind)]
    if bad:
        model = "pixel models (ERFNet)" if kind == "pixel" else "mask models (EoMT)"
        ok = ", ".join(s.name for s in SCORERS.values() if s.supports(kind))
        raise ValueError(f"scorer(s) {', '.join(bad)} not defined for {model}; use: {ok}")


def check_temperature(t: float, name: str | None = None) -> float:
    """``t`` as a float when it lies in :data:`T_RANGE`, else ``ValueError`` saying why
    (naming the temperature as ``name``, default ``repr(t)``)."""
    t = float(t)
    name = repr(t) if name is None else name
    lo, hi = T_RANGE
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature {name} must be a finite number > 0")
    if not lo <= t <= hi:
        raise ValueError(f"temperature {name} is outside [{lo:g}, {hi:g}], the range where the scores are tested to "
                         "give the metrics of a float64 evaluation (beyond it x / T saturates float64: scores tie)")
    return t


def parse_temperatures(spec: str) -> tuple[float, ...]:
    """Temperatures from ``'0.5,0.75,1.1'``: sorted, unique, always including 1.0.

    An empty ``spec`` gives ``(1.0,)``. Raises ``ValueError`` naming the first item that is
    not a number in :data:`T_RANGE`.
    """
    temps = {1.0}
    if spec.strip():
        for item in spec.split(","):
            try:
                t = float(item)
            except ValueError:
                raise ValueError(f"temperature {item.strip()!r} is not a number (in {spec!r})") from None
            temps.add(check_temperature(t, f"{item.strip()!r} (in {spec!r})"))
    return tuple(sorted(temps))
