"""The scorers of the per-pixel scores ``x``, evaluated together in one tiled float64 pass.

Every scorer maps "logits" ``x`` of shape ``(K, H, W)`` (numpy array or CPU tensor) and a
temperature ``T > 0`` to an ``(H, W)`` float64 map, computed on ``x / T`` in float64
(:func:`score_many`). What ``x`` is depends on the model (see :mod:`analyze.compose`):

* pixel model (ERFNet): the class logits ``z`` with the void channel already dropped, so the
  void channel never enters a softmax;
* mask model (EoMT): the per-pixel class scores ``s_k = sum_q softmax(c_q)_k sigmoid(m_q)``.
  As in the RbA reference, which applies its scores to this ``sem_seg`` map, ``s`` is
  treated as logits: MSP is ``1 - max softmax(s)``, MaxEntropy the entropy of
  ``softmax(s)``, Energy ``-logsumexp(s)``, GEN, KL matching and SML likewise.

The mask scorers (EAM, no-object, Mask2Anomaly) are evaluated in the same tiles from the query
channels that :class:`analyze.compose.FrameComposer` composes beside ``s``
(:mod:`analyze.scorers.masks`); SML's boundary suppression and smoothing run on the whole map
afterwards (:mod:`analyze.scorers.sml`).

Numerics: MSP sums the non-maximal probabilities instead of computing ``1 - max softmax``,
which keeps resolution for confident pixels where ``1 - p`` rounds to 0 and creates ties;
MaxEntropy uses ``log_softmax`` and counts ``p log p`` as 0 where ``p`` underflows (never
``p.log()``); GEN takes ``p (1 - p)`` of the top class as ``r / (1 + r)^2`` for the same reason.

Why float64: the metrics depend on the order of the scores, and float32 runs out of
resolution away from T = 1 (measured on the demo's ERFNet cache against a float64
evaluation: MSP and MaxEntropy at T = 0.01 underflow to ties and move FPR95 by 0.19; Energy
at T = 0.1 loses ``T log(1 + r)`` beside ``max x`` and moves AUROC by 5e-6; MaxEntropy at
T = 100 flattens near ``log K`` (2e-5) and at T = 1000 moves AuPRC by 1e-3). Computing in
float64 and keeping float64 scores makes the metrics those of a float64 evaluation at every
temperature in :data:`analyze.scorers.temperatures.T_RANGE` (tested to 1e-6). The inputs ``x``
(ERFNet logits resized to the label size, EoMT class scores) stay float32, as in the official
inference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch

from analyze.scorers import masks, sml
from analyze.scorers.registry import Scorer, get_scorer

ArrayLike = Union[np.ndarray, torch.Tensor]
TILE_ELEMENTS = 1 << 18  # floats of one (K, rows, W) tile of score_many: 2 MiB of float64, stays in cache
SCORE_DTYPE = torch.float64
_TOP = {"msp", "maxlogit", "maxentropy", "energy", "gen", "kl", "sml", "sml_raw", "m2a"}
_ARG = {"msp", "maxentropy", "energy", "gen", "kl", "sml", "sml_raw"}
_EXP = {"msp", "maxentropy", "energy", "gen", "kl"}


@dataclass(frozen=True)
class ClassStats:
    """In-distribution statistics of one scorer input (one temperature), ready for the scorers.

    ``mean``, ``std`` (K,): of the max of ``x / T`` over the pixels predicted as each class (SML);
    ``log_d`` (Ka, K): ``log`` of the mean ``softmax(x / T)`` of the pixels predicted as each of
    the Ka classes in ``classes`` that have any (KL matching), with ``-inf`` (a mean
    probability of exactly 0) stored as 0 and flagged in ``d_zero``. Built by
    :meth:`from_moments`.
    """

    mean: torch.Tensor
    std: torch.Tensor
    classes: torch.Tensor
    log_d: torch.Tensor
    d_zero: torch.Tensor | None

    @classmethod
    def from_moments(cls, count, mean, var, mean_softmax, pooled_mean: float, pooled_var: float) -> "ClassStats":
        """From per-class pixel counts, max-logit means and (ddof=1) variances and mean softmax
        vectors. Classes with fewer than 2 pixels or no variance standardise with the pooled
        mean and variance of all pixels (the official code would give NaN); KL matching takes
        its minimum over the classes with at least one pixel (the official mean of no sample is NaN)."""
        count = np.asarray(count, np.int64)
        ok = (count >= 2) & np.isfinite(var) & (np.asarray(var, np.float64) > 0)
        m = np.where(ok, mean, pooled_mean).astype(np.float64)
        sd = np.sqrt(np.where(ok, var, pooled_var).astype(np.float64))
        have = np.flatnonzero(count > 0)
        d = np.asarray(mean_softmax, np.float64)[have]  # (Ka, K)
        zero = d == 0
        with np.errstate(divide="ignore"):
            log_d = np.where(zero, 0.0, np.log(np.where(zero, 1.0, d)))
        return cls(torch.from_numpy(m), torch.from_numpy(sd), torch.from_numpy(have), torch.from_numpy(log_d),
                   torch.from_numpy(zero) if zero.any() else None)


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


def _np(ufunc, x: torch.Tensor) -> torch.Tensor:
    """``ufunc(x)`` by numpy into a new tensor: numpy's float64 exp, log1p and tanh are SIMD
    (AVX-512) where torch's CPU kernels are not, 2-3x faster here, and like torch's they
    give every element the same bits wherever it lies in the array (tested by tiling)."""
    return torch.from_numpy(ufunc(x.numpy()))


def _sum0(x: torch.Tensor) -> torch.Tensor:
    """Sum over dim 0 in index order (``x[0] + x[1] + ...``), vectorised over the pixels.

    ``Tensor.sum(0)`` groups its float additions by the tensor's size, so a pixel's value
    would depend on the size of the map or tile; this order does not.
    """
    acc = x[0].clone()
    for k in range(1, x.shape[0]):
        acc += x[k]
    return acc


def score_many(x: ArrayLike, temperature: float, names: Sequence[str], argmax_out: np.ndarray | None = None, *,
               stats: ClassStats | None = None,
               channels: Mapping[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Several scorers (results ``scorer`` specs, e.g. ``gen:gamma=0.2``) on the same ``x / T``
    in one pass over the data.

    Every scorer is evaluated here, so a score does not depend on which other scorers were
    requested. Shared pieces: ``d = x/T - max`` and ``e = exp(d)`` with the maximal class left
    out, ``r = sum e`` (so ``sum_k exp(x_k/T - max) = 1 + r``), ``p = softmax(x/T)``:

    * msp = ``r / (1 + r)`` (no cancellation of ``1 - p`` near ``p = 1``);
    * maxlogit = ``-max``;
    * energy = ``-T (max + log1p(r))``;
    * maxentropy = ``log1p(r) - sum_k e_k d_k / (1 + r)`` (= ``-sum p log p``; a term whose
      ``e_k`` underflows to 0 counts as 0, never ``0 * -inf``);
    * rba = ``-sum_k tanh(x_k / T)``;
    * gen = ``sum_{M largest p_k} (p_k (1 - p_k))^g`` (:func:`_gen`);
    * kl = ``min_k KL(p || d_k)`` = ``-maxentropy - max_k sum_j p_j log d_kj`` (:func:`_kl`;
      ``stats`` at this T);
    * sml_raw = ``-(max - mu_c) / sigma_c``, ``c`` the first maximal class (``stats``); sml
      then applies :func:`analyze.scorers.sml.suppress_and_smooth` to the whole map;
    * eam, noobject, m2a from the composed query ``channels`` (:func:`analyze.scorers.masks.score_tile`).

    ``argmax_out`` (an (H, W) uint8 array), if given, receives the first-maximum class of
    ``x`` per pixel (the semantic map, :func:`first_argmax`), taken from the same tiles.

    The map is processed in tiles of whole rows (``TILE_ELEMENTS`` floats), so the dozen
    elementwise passes run in cache. Sums over classes run in class order
    (:func:`_sum0`), so a pixel's scores depend on its own values only, never on the size of
    the map or the tiling (SML's smoothing, a spatial filter, excepted).
    """
    t = _prepare(x, temperature)  # (K, H, W)
    scorers = {n: get_scorer(n) for n in dict.fromkeys(names)}
    _check_inputs(scorers.values(), stats, channels, t.shape)
    out = {n: torch.empty(t.shape[1:], dtype=SCORE_DTYPE) for n in scorers}
    sem = None
    if argmax_out is not None:
        if argmax_out.shape != tuple(t.shape[1:]) or argmax_out.dtype != np.uint8 or t.shape[0] > 255:
            raise ValueError(f"argmax_out must be a uint8 array of shape {tuple(t.shape[1:])}")
        sem = torch.from_numpy(argmax_out)
    elif any(s.base == "sml" for s in scorers.values()):
        sem = torch.empty(t.shape[1:], dtype=torch.uint8)  # SML's boundaries come from the prediction
    for rows in row_tiles(t.shape):
        tile = t[:, rows].to(SCORE_DTYPE)  # (K, R, W): a copy, divided in place
        if temperature != 1.0:
            tile /= temperature
        _score_tile(tile, temperature, scorers, {n: o[rows] for n, o in out.items()},
                    None if sem is None else sem[rows], stats,
                    {k: c[rows] for k, c in (channels or {}).items()})
    for n, s in scorers.items():
        if s.base == "sml":
            kw = s.kwargs
            out[n] = sml.suppress_and_smooth(out[n], sem, kw["width"], kw["iterations"], kw["dilation"])
    return {n: out[n].numpy() for n in scorers}


def score(name: str, x: ArrayLike, temperature: float = 1.0, stats: ClassStats | None = None) -> np.ndarray:
    """One scorer of ``x`` (a results ``scorer`` spec, e.g. ``msp`` or ``gen:gamma=0.2``): :func:`score_many`."""
    return score_many(x, temperature, (name,), stats=stats)[get_scorer(name).name]


def _check_inputs(scorers, stats, channels, shape) -> None:
    for s in scorers:
        if s.uses is not None:
            raise ValueError(f"scorer {s.name} averages two passes: evaluate it with analyze.frame_scores")
        if s.needs_stats and stats is None:
            raise ValueError(f"scorer {s.name} needs in-distribution statistics (stats=)")
        if s.needs_queries:
            missing = [c.key for c in masks.channels_for(s) if c.key not in (channels or {})]
            if missing:
                raise ValueError(f"scorer {s.name} needs the composed query channels {', '.join(missing)}")
    if stats is not None and stats.mean.shape[0] != shape[0]:
        raise ValueError(f"statistics of {stats.mean.shape[0]} classes for scores of {shape[0]} classes")


def _score_tile(t: torch.Tensor, temperature: float, scorers: Mapping[str, Scorer], out: dict[str, torch.Tensor],
                sem: torch.Tensor | None, stats: ClassStats | None, channels: Mapping[str, torch.Tensor]) -> None:
    """:func:`score_many` on one (K, rows, W) tile of ``x / T``, written into ``out``'s views
    (and the first-maximum class into ``sem``)."""
    bases = {s.base for s in scorers.values()}
    by = {b: [n for n, s in scorers.items() if s.base == b] for b in bases}
    top = t.amax(0) if bases & _TOP or sem is not None else None  # (R, W)
    arg = first_argmax(t, top) if bases & _ARG or sem is not None else None  # (R, W)
    if sem is not None:
        sem.copy_(arg)
    for n in by.get("maxlogit", ()):
        torch.neg(top, out=out[n])
    if bases & _EXP:
        d = t - top  # (K, R, W), <= 0
        e = _np(np.exp, d).scatter_(0, arg[None], 0.0)  # (K, R, W), the maximum left out
        r = _sum0(e)  # (R, W)
        for n in by.get("msp", ()):
            torch.div(r, 1 + r, out=out[n])
        log_z = _np(np.log1p, r)  # (R, W): logsumexp - max
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
            for n in by.get("kl", ()):
                _kl(p, entropy, stats, out[n])
    for n in by.get("rba", ()):
        torch.neg(_sum0(_np(np.tanh, t)), out=out[n])
    for n in by.get("sml_raw", []) + by.get("sml", []):  # sml: smoothed by score_many afterwards
        _sml_raw(top, arg, stats, out[n])
    for b in bases & {"eam", "noobject", "m2a"}:
        for n in by[b]:
            masks.score_tile(scorers[n], top, channels, out[n])


def _sml_raw(top: torch.Tensor, arg: torch.Tensor, stats: ClassStats, out: torch.Tensor) -> None:
    """Standardized Max Logits (Jung et al. 2021; ``shjung13/Standardized-max-logits``,
    ``network/deepv3.py``, ``DeepV3Plus.forward``, ``score_mode == 'standardized_max_logit'``):
    ``(max_k x_k - mu_c) / sqrt(var_c)`` with ``c`` the predicted class, negated (``eval.py``
    takes ``-1 *`` the map: higher = more anomalous). ``mu``, ``var`` are the statistics of
    ``analyze fit``; the official loop over classes with ``torch.where`` becomes a gather.
    Where a class has no usable statistics, :meth:`ClassStats.from_moments` substitutes the
    pooled ones (officially NaN)."""
    torch.div(top - stats.mean[arg], stats.std[arg], out=out).neg_()


def _gen(p: torch.Tensor, r: torch.Tensor, arg: torch.Tensor, gamma: float, m: int | None, out: torch.Tensor) -> None:
    """GEN (Liu et al. 2023; ``XixiLiu95/GEN``, ``benchmark.py``, ``generalized_gamma_entropy``):
    ``sum over the M largest p_k of p_k^g (1 - p_k)^g``. The official function returns the
    negative of this sum as an in-distribution score; here higher = more anomalous, so the sum
    itself. ``p^g (1 - p)^g`` is taken as ``(p (1 - p))^g``, with ``p (1 - p)`` of the top class
    as ``r / (1 + r)^2`` (no cancellation where ``p ~ 1``). ``m=None`` or ``m >= K``: all classes,
    in class order; else the M largest probabilities (the official code sorts them ascending
    and sums the last M: the same terms, another summation order)."""
    inv = 1 / (1 + r)
    terms = p * (1 - p)
    terms.scatter_(0, arg[None], (r * inv * inv)[None])  # (K, R, W)
    flat = terms.numpy()
    with np.errstate(divide="ignore"):  # p (1 - p) = 0 (an underflowed p): log -inf, exp 0 = 0^g
        np.log(flat, out=flat)  # x^g as exp(g log x): 3x torch's pow on float64 here, the same to rounding
    flat *= gamma
    np.exp(flat, out=flat)
    k = p.shape[0]
    if m is None or m >= k:
        out.copy_(_sum0(terms))
    else:
        out.copy_(_sum0(terms.gather(0, p.topk(m, dim=0).indices)))


def _kl(p: torch.Tensor, entropy: torch.Tensor, stats: ClassStats, out: torch.Tensor) -> None:
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
    # sum_j log d_kj p_j in class order, elementwise (as fast here as a BLAS product, whose
    # rounding depends on where a pixel falls in the matrix: a pixel's value must not)
    dots = stats.log_d[:, :1] * flat[0]  # (Ka, N)
    for j in range(1, k):
        dots.addcmul_(stats.log_d[:, j : j + 1], flat[j])
    if stats.d_zero is not None:  # p_j > 0 where d_kj = 0: KL(p || d_k) = inf
        for j in torch.nonzero(stats.d_zero.any(0)).flatten().tolist():
            dots.masked_fill_(stats.d_zero[:, j : j + 1] & (flat[j] > 0), float("-inf"))
    torch.sub(entropy.neg(), dots.amax(0).view_as(out), out=out)
