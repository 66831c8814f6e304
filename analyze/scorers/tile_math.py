"""The scorers of ``x`` on one tile, in torch: the reference implementation, on any device.

:func:`score_tile` evaluates every requested scorer of a ``(K, R, W)`` float64 tile of ``x / T``
with torch operations, so the same code runs on the CPU and on a GPU (``analyze score
--device cuda``). On the CPU, :mod:`analyze.scorers.compiled` evaluates the same operations in
the same order as compiled loops (faster: no full-size temporaries) and is tested against this
module bit for bit; the transcendental functions are numpy's on the CPU (its float64 ``exp``,
``log``, ``log1p`` and ``tanh`` are SIMD, 2-3x torch's here) and torch's elsewhere, which is
where a GPU's maps differ from the CPU's (by rounding: 1e-5 on maps, tested where CUDA exists).

Shared pieces: ``d = x/T - max`` and ``e = exp(d)`` with the maximal class left out, ``r = sum
e`` (so ``sum_k exp(x_k/T - max) = 1 + r``), ``p = softmax(x/T)``:

* msp = ``r / (1 + r)`` (no cancellation of ``1 - p`` near ``p = 1``);
* maxlogit = ``-max``;
* energy = ``-T (max + log1p(r))``;
* maxentropy = ``log1p(r) - sum_k e_k d_k / (1 + r)`` (= ``-sum p log p``; a term whose
  ``e_k`` underflows to 0 counts as 0, never ``0 * -inf``);
* rba = ``-sum_k tanh(x_k / T)``;
* gen = ``sum_{M largest p_k} (p_k (1 - p_k))^g`` (:func:`_gen`);
* kl = ``min_k KL(p || d_k)`` = ``-maxentropy - max_k sum_j p_j log d_kj`` (:func:`_kl`);
* sml_raw = ``-(max - mu_c) / sigma_c``, ``c`` the first maximal class;
* eam, noobject, m2a from the composed query channels (:func:`analyze.scorers.masks.score_tile`).

Sums over classes run in class order (:func:`_sum0`), so a pixel's scores depend on its own
values only, never on the size of the map or the tiling.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from analyze.scorers import masks
from analyze.scorers.registry import Scorer

SCORE_DTYPE = torch.float64
_TOP = {"msp", "maxlogit", "maxentropy", "energy", "gen", "kl", "sml", "sml_raw", "m2a"}
_ARG = {"msp", "maxentropy", "energy", "gen", "kl", "sml", "sml_raw"}
_EXP = {"msp", "maxentropy", "energy", "gen", "kl"}


def first_argmax(x, top: torch.Tensor | None = None) -> torch.Tensor:
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
    weights = torch.arange(k, 0, -1, dtype=torch.uint8, device=t.device).view(k, *([1] * (t.ndim - 1)))  # K .. 1
    hit = (t == top).to(torch.uint8).mul_(weights).amax(0)  # K - first index, 0 where NaN
    return (k - hit.to(torch.int64)).clamp_(max=k - 1)


def _fn(name: str, x: torch.Tensor) -> torch.Tensor:
    """``exp``, ``log1p``, ``tanh`` of ``x`` into a new tensor: numpy's on the CPU (float64 SIMD,
    AVX-512, where torch's CPU kernels are not: 2-3x faster here; like torch's it gives every
    element the same bits wherever it lies in the array, tested by tiling), torch's elsewhere."""
    if x.device.type == "cpu":
        return torch.from_numpy(getattr(np, name)(x.numpy()))
    return getattr(torch, name)(x)


def _sum0(x: torch.Tensor) -> torch.Tensor:
    """Sum over dim 0 in index order (``x[0] + x[1] + ...``), vectorised over the pixels.

    ``Tensor.sum(0)`` groups its float additions by the tensor's size, so a pixel's value
    would depend on the size of the map or tile; this order does not.
    """
    acc = x[0].clone()
    for k in range(1, x.shape[0]):
        acc += x[k]
    return acc


def score_tile(t: torch.Tensor, temperature: float, scorers: Mapping[str, Scorer], out: Mapping[str, torch.Tensor],
               sem: torch.Tensor | None, stats, channels: Mapping[str, torch.Tensor]) -> None:
    """Every scorer of ``scorers`` (spec -> :class:`Scorer`) on one (K, R, W) float64 tile ``t`` of
    ``x / T``, written into ``out``'s (R, W) float64 views (SML's raw map: smoothed afterwards),
    and the first maximal class into ``sem`` ((R, W), if given). ``stats``: the
    :class:`analyze.scorers.pixel.ClassStats` of this T (KL matching, SML); ``channels``: the
    composed query channels of the mask scorers, (R, W) each."""
    bases = {s.base for s in scorers.values()}
    by = {b: [n for n, s in scorers.items() if s.base == b] for b in bases}
    top = t.amax(0) if bases & _TOP or sem is not None else None  # (R, W)
    arg = first_argmax(t, top) if bases & _ARG or sem is not None else None  # (R, W)
    # _EXP and _ARG lie within _TOP, and a given ``sem`` computes both: the ``is not None``
    # tests below never skip work, they say so to the type checker
    if sem is not None and arg is not None:
        sem.copy_(arg)
    if top is not None:
        for n in by.get("maxlogit", ()):
            torch.neg(top, out=out[n])
    if bases & _EXP and top is not None and arg is not None:
        _exp_scorers(t, top, arg, temperature, scorers, by, stats, out)
    for n in by.get("rba", ()):
        torch.neg(_sum0(_fn("tanh", t)), out=out[n])
    for n in by.get("sml_raw", []) + by.get("sml", []):  # sml: smoothed by the caller afterwards
        if top is not None and arg is not None:
            _sml_raw(top, arg, stats, out[n])
    for b in bases & {"eam", "noobject", "m2a"}:
        for n in by[b]:
            masks.score_tile(scorers[n], top, channels, out[n])


def _exp_scorers(t: torch.Tensor, top: torch.Tensor, arg: torch.Tensor, temperature: float,
                 scorers: Mapping[str, Scorer], by: Mapping[str, list[str]], stats,
                 out: Mapping[str, torch.Tensor]) -> None:
    """The scorers of :data:`_EXP` (softmax family) on tile ``t`` (K, R, W) of ``x / T``, given
    its maximum ``top`` and first maximal class ``arg`` (R, W): :func:`score_tile`'s part that
    shares ``exp(t - top)``."""
    bases = {s.base for s in scorers.values()}
    d = t - top  # (K, R, W), <= 0
    e = _fn("exp", d).scatter_(0, arg[None], 0.0)  # (K, R, W), the maximum left out
    r = _sum0(e)  # (R, W)
    for n in by.get("msp", ()):
        torch.div(r, 1 + r, out=out[n])
    log_z = _fn("log1p", r)  # (R, W): logsumexp - max
    for n in by.get("energy", ()):
        torch.mul(top + log_z, -temperature, out=out[n])
    p = None
    if bases & {"gen", "kl"}:
        inv = 1 / (1 + r)
        p = (e * inv).scatter_(0, arg[None], inv[None])  # (K, R, W) softmax(x / T)
        for n in by.get("gen", ()):
            kw = scorers[n].kwargs
            _gen(p, r, arg, kw["gamma"], kw["m"], out[n])
    if bases & {"maxentropy", "kl"}:
        ed = _sum0(e.mul_(d).nan_to_num_(nan=0.0))  # (R, W), sum e_k d_k
        entropy = log_z - ed / (1 + r)
        for n in by.get("maxentropy", ()):
            out[n].copy_(entropy)
        if p is not None:  # kl is in both sets: p was computed
            for n in by.get("kl", ()):
                _kl(p, entropy, stats, out[n])


def _sml_raw(top: torch.Tensor, arg: torch.Tensor, stats, out: torch.Tensor) -> None:
    """Standardized Max Logits (Jung et al. 2021; ``shjung13/Standardized-max-logits``,
    ``network/deepv3.py``, ``DeepV3Plus.forward``, ``score_mode == 'standardized_max_logit'``):
    ``(max_k x_k - mu_c) / sqrt(var_c)`` with ``c`` the predicted class, negated (``eval.py``
    takes ``-1 *`` the map: higher = more anomalous). ``mu``, ``var`` are the statistics of
    ``analyze fit``; the official loop over classes with ``torch.where`` becomes a gather.
    Where a class has no usable statistics, :meth:`ClassStats.from_moments` substitutes the
    pooled ones (officially NaN)."""
    mean, std = stats.mean.to(top.device), stats.std.to(top.device)
    torch.div(top - mean[arg], std[arg], out=out).neg_()


def _gen(p: torch.Tensor, r: torch.Tensor, arg: torch.Tensor, gamma: float, m: int | None, out: torch.Tensor) -> None:
    """GEN (Liu et al. 2023; ``XixiLiu95/GEN``, ``benchmark.py``, ``generalized_gamma_entropy``):
    ``sum over the M largest p_k of p_k^g (1 - p_k)^g``. The official function returns the
    negative of this sum as an in-distribution score; here higher = more anomalous, so the sum
    itself. ``p^g (1 - p)^g`` is taken as ``(p (1 - p))^g``, with ``p (1 - p)`` of the top class
    as ``r / (1 + r)^2`` (no cancellation where ``p ~ 1``). ``m=None`` or ``m >= K``: all classes,
    in class order; else the M largest probabilities, largest first (the official code sorts
    them ascending and sums the last M: the same terms, another summation order)."""
    inv = 1 / (1 + r)
    terms = p * (1 - p)
    terms.scatter_(0, arg[None], (r * inv * inv)[None])  # (K, R, W)
    # x^g as exp(g log x): 3x torch's pow on float64 here, the same to rounding; p (1 - p) = 0
    # (an underflowed p): log -inf, exp 0 = 0^g
    if terms.device.type == "cpu":
        flat = terms.numpy()
        with np.errstate(divide="ignore"):
            np.log(flat, out=flat)
        flat *= gamma
        np.exp(flat, out=flat)
    else:
        terms.log_().mul_(gamma).exp_()
    k = p.shape[0]
    if m is None or m >= k:
        out.copy_(_sum0(terms))
    else:
        # the M largest, largest first, the lower class first among equal ones (a stable sort:
        # topk's order of ties is unspecified, and the order of the sum sets the last bit)
        out.copy_(_sum0(terms.gather(0, torch.sort(p, dim=0, descending=True, stable=True).indices[:m])))


def _kl(p: torch.Tensor, entropy: torch.Tensor, stats, out: torch.Tensor) -> None:
    """KL matching (Hendrycks et al. 2022, as implemented in ``XixiLiu95/GEN``, ``benchmark.py``,
    ``kl`` with ``pairwise_distances_argmin_min``): ``min_k KL(p || d_k)`` with ``d_k`` the mean
    softmax of the in-distribution pixels predicted as ``k``. The official score is its
    negative (an in-distribution score). ``KL(p || d) = sum_j p_j log p_j - sum_j p_j log d_j``
    with ``p_j log p_j = 0`` where ``p_j = 0`` (the official ``np.where(p != 0, ...)``), so
    ``min_k KL = -entropy - max_k (log d_k . p)``. Where
    ``d_kj = 0`` and ``p_j > 0`` the divergence is infinite, as officially. Classes no
    in-distribution pixel was predicted as are left out of the minimum."""
    k = p.shape[0]
    flat = p.reshape(k, -1)  # (K, N)
    log_d = stats.log_d.to(p.device)
    # sum_j log d_kj p_j in class order, elementwise (a BLAS product's rounding depends on where
    # a pixel falls in the matrix: a pixel's value must not). The product and the sum are rounded
    # apart, as the compiled loops do: torch's addcmul fuses them on some shapes and not others
    dots = log_d[:, :1] * flat[0]  # (Ka, N)
    for j in range(1, k):
        dots.add_(log_d[:, j : j + 1] * flat[j])
    if stats.d_zero is not None:  # p_j > 0 where d_kj = 0: KL(p || d_k) = inf
        d_zero = stats.d_zero.to(p.device)
        for j in torch.nonzero(stats.d_zero.any(0)).flatten().tolist():
            dots.masked_fill_(d_zero[:, j : j + 1] & (flat[j] > 0), float("-inf"))
    torch.sub(entropy.neg(), dots.amax(0).view_as(out), out=out)
