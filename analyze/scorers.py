"""Anomaly scorers: a registry of small pure functions, higher score = more anomalous.

Every scorer maps "logits" ``x`` of shape ``(K, H, W)`` (float32; numpy array or CPU
tensor) and a temperature ``T > 0`` to an ``(H, W)`` float32 numpy array, computed on
``x / T``:

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
which keeps resolution for confident pixels where ``1 - p`` rounds to 0 in float32 and
creates ties; MaxEntropy uses ``log_softmax`` and counts ``p log p`` as 0 where ``p``
underflows (never ``p.log()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
KINDS = ("pixel", "query")  # cache kinds: pixel model (ERFNet), query/mask model (EoMT)


def _prepare(x: ArrayLike, temperature: float) -> torch.Tensor:
    """``x / T`` as a float32 CPU tensor of shape (K, H, W)."""
    t = torch.as_tensor(x).to(dtype=torch.float32)
    if t.ndim != 3:
        raise ValueError(f"scorers take (K, H, W) logits, got shape {tuple(t.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return t if temperature == 1.0 else t / temperature


def _out(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float32).numpy()


def score_many(x: ArrayLike, temperature: float, names: Sequence[str]) -> dict[str, np.ndarray]:
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
    """
    t = _prepare(x, temperature)  # (K, H, W)
    want = set(names)
    unknown = want - set(_FUSED)
    if unknown:
        raise ValueError(f"unknown scorer(s) {sorted(unknown)}; valid: {', '.join(_FUSED)}")
    out: dict[str, np.ndarray] = {}
    if want & {"msp", "maxlogit", "energy", "maxentropy"}:
        top, arg = t.max(0)  # (H, W)
        if "maxlogit" in want:
            out["maxlogit"] = _out(-top)
        if want & {"msp", "energy", "maxentropy"}:
            d = t - top  # (K, H, W), <= 0
            e = torch.exp(d).scatter_(0, arg[None], 0.0)  # (K, H, W), the maximum left out
            r = e.sum(0)  # (H, W)
            if "msp" in want:
                out["msp"] = _out(r / (1 + r))
            log_z = torch.log1p(r)  # (H, W): logsumexp - max
            if "energy" in want:
                out["energy"] = _out(-temperature * (top + log_z))
            if "maxentropy" in want:
                ed = e.mul_(d).nan_to_num_(nan=0.0).sum(0)  # (H, W), sum e_k d_k
                out["maxentropy"] = _out(log_z - ed / (1 + r))
    if "rba" in want:
        out["rba"] = _out(-torch.tanh(t).sum(0))
    return {n: out[n] for n in names}


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
    """One anomaly scorer: ``fn(x (K, H, W), temperature) -> (H, W)`` float32."""

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


def parse_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"cache kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind


def get_scorers(spec: str, kind: str | None = None) -> tuple[Scorer, ...]:
    """Scorers named by ``spec``: ``'all'`` or a comma list such as ``'msp,maxlogit'``.

    Names are case-insensitive; duplicates are dropped; order follows ``spec`` (registry
    order for ``'all'``). With ``kind`` ('pixel' or 'query'), ``'all'`` keeps only the
    scorers defined for that kind and naming an unsupported one raises ``ValueError``.
    """
    valid = ", ".join(SCORERS)
    names = [n.strip().lower() for n in spec.split(",")]
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


def parse_temperatures(spec: str) -> tuple[float, ...]:
    """Temperatures from ``'0.5,0.75,1.1'``: sorted, unique, always including 1.0.

    An empty ``spec`` gives ``(1.0,)``. Raises ``ValueError`` naming the first item that is
    not a finite number > 0.
    """
    temps = {1.0}
    if spec.strip():
        for item in spec.split(","):
            try:
                t = float(item)
            except ValueError:
                raise ValueError(f"temperature {item.strip()!r} is not a number (in {spec!r})") from None
            if not math.isfinite(t) or t <= 0:
                raise ValueError(f"temperature {item.strip()!r} must be a finite number > 0 (in {spec!r})")
            temps.add(t)
    return tuple(sorted(temps))
