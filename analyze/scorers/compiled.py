"""The scorers of ``x`` on the CPU: compiled loops between numpy's SIMD transcendentals, per chunk.

:class:`CompiledTile` evaluates what :func:`analyze.scorers.pixel.score_tile` (the torch
reference, any device) evaluates, with the same float64 operations in the same order, so the
maps are the same bits (tested on every scorer, parameter and temperature). It works on
chunks of ``CHUNK_PIXELS`` pixels, whose float64 temporaries (``(K, P)``: ``x / T``, ``x / T - max``,
the exps, the softmax, GEN's terms) stay in the core's cache, and it keeps them from chunk to
chunk instead of allocating a dozen full-size temporaries per tile: one pass per step where
the reference makes one per operation. The transcendentals (``exp``, ``log``, ``log1p``,
``tanh``) are numpy's, vectorised: compiled scalar versions would take 3-9x longer.

Shared work: ``t = x / T``, its max and first argmax (the semantic map), ``d = t - max`` and
``e = exp(d)`` with the maximal class left out, ``r = sum e`` and ``log1p(r)`` serve MSP,
MaxLogit, Energy, MaxEntropy, GEN, KL matching and SML alike; RbA adds one ``tanh`` per class,
GEN one ``log`` and one ``exp`` per class and parameter value.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from analyze.scorers import kernels as K
from analyze.scorers import masks
from analyze.scorers.registry import Scorer

CHUNK_PIXELS = 2048  # pixels per chunk: five (K, P) float64 temporaries of 19 classes in ~1.5 MB
_EXP = {"msp", "energy", "maxentropy", "gen", "kl"}
_EMPTY = np.empty(0, np.float64)


class CompiledTile:
    """Every scorer of ``scorers`` (results spec -> :class:`Scorer`, none averaging two passes) of
    ``x / T`` at one temperature, chunk by chunk; ``stats`` as in :func:`analyze.scorers.pixel.score_many`.

    :meth:`__call__` takes one chunk ``x`` (K, P) and its query channels (P,) and returns views of
    its own buffers (valid until the next call): ``{name: (P,) float64}`` and the first maximal
    class (P,) int64 (SML smooths its map afterwards, :mod:`analyze.scorers.sml`); ``dest``
    ({name: (P,) float64, contiguous}), if given, receives the scores instead (the rows of the
    maps themselves: no copy).
    """

    def __init__(self, scorers: Mapping[str, Scorer], temperature: float, stats, k: int,
                 capacity: int = CHUNK_PIXELS):
        self.scorers = dict(scorers)
        self.t = float(temperature)
        self.k = k
        self.capacity = capacity
        bases = {s.base for s in self.scorers.values()}
        self._bases = bases
        self._by = {b: [name for name, s in self.scorers.items() if s.base == b] for b in bases}
        self._stats: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        if stats is not None:
            self._stats = (stats.mean.numpy(), stats.std.numpy(), np.ascontiguousarray(stats.log_d.numpy()),
                           np.zeros(stats.log_d.shape, np.bool_) if stats.d_zero is None else stats.d_zero.numpy(),
                           stats.d_zero is not None)
        self._gammas = sorted({s.kwargs["gamma"] for s in self.scorers.values() if s.base == "gen"})
        p = capacity
        kp = lambda: np.empty((k, p), np.float64)  # noqa: E731
        self._t, self._d = kp(), kp()
        self._e = kp() if bases & _EXP else None
        self._p = kp() if bases & {"gen", "kl"} else None
        self._g = kp() if self._gammas else None
        self._top, self._r, self._log_z, self._ent, self._dots = (np.empty(p, np.float64) for _ in range(5))
        self._arg = np.empty(p, np.int64)
        self._out = {n: np.empty(p, np.float64) for n in self.scorers}

    def __call__(self, x: np.ndarray, channels: Mapping[str, np.ndarray],
                 dest: Mapping[str, np.ndarray] | None = None) -> tuple[Mapping[str, np.ndarray], np.ndarray]:
        n = x.shape[1]
        if n > self.capacity or x.shape[0] != self.k:
            raise ValueError(f"a chunk of {self.k} classes and at most {self.capacity} pixels; got {x.shape}")
        bases, sc, by = self._bases, self.scorers, self._by
        t, d, top, arg = self._t[:, :n], self._d[:, :n], self._top[:n], self._arg[:n]
        out = {name: o[:n] for name, o in self._out.items()} if dest is None else dest
        K.prepare(x, self.t, self.t != 1.0, t, d, top, arg)
        r, log_z = self._r[:n], self._log_z[:n]
        if bases & _EXP:
            e = _columns(self._e, n)
            np.exp(d, out=e)
            K.others_sum(e, arg, r)
            np.log1p(r, out=log_z)
            K.first_scores(top, r, log_z, self.t, _first(out, by, "msp"), _EMPTY, _first(out, by, "energy"))
            for name in by.get("msp", [])[1:] + by.get("energy", [])[1:]:
                out[name][:] = out[by[sc[name].base][0]]
            if bases & {"gen", "kl"}:
                p = _columns(self._p, n)
                K.probabilities(e, r, arg, p)
            for gamma in self._gammas:
                g = _columns(self._g, n)
                K.gen_terms(p, r, arg, g)
                with np.errstate(divide="ignore"):  # p (1 - p) = 0 (an underflowed p): log -inf, exp 0 = 0^g
                    np.log(g, out=g)
                g *= gamma
                np.exp(g, out=g)
                for name in by["gen"]:
                    kw = sc[name].kwargs
                    if kw["gamma"] != gamma:
                        continue
                    if kw["m"] is None or kw["m"] >= self.k:
                        K.class_sum(g, out[name])
                    else:
                        K.top_m_sum(g, p, kw["m"], out[name])
            if bases & {"maxentropy", "kl"}:
                ent = self._ent[:n]
                K.entropy(e, d, r, log_z, ent)
                for name in by.get("maxentropy", ()):
                    out[name][:] = ent
                if "kl" in bases:
                    mean, std, log_d, d_zero, has_zero = self._class_stats()
                    first = by["kl"][0]
                    K.kl_matching(p, ent, log_d, d_zero, has_zero, out[first], self._dots[:n])
                    for name in by["kl"][1:]:
                        out[name][:] = out[first]
        for name in by.get("maxlogit", ()):
            np.negative(top, out=out[name])
        if "rba" in bases:
            np.tanh(t, out=t)  # t is not needed after this
            K.negated_sum(t, out[by["rba"][0]])
            for name in by["rba"][1:]:
                out[name][:] = out[by["rba"][0]]
        sml = by.get("sml_raw", []) + by.get("sml", [])  # sml: smoothed over the whole map afterwards
        if sml:
            mean, std = self._class_stats()[:2]
            K.standardized(top, arg, mean, std, out[sml[0]])
            for name in sml[1:]:
                out[name][:] = out[sml[0]]
        for b in bases & {"eam", "noobject", "m2a"}:
            for name in by[b]:
                masks.score_chunk(sc[name], top, channels, out[name])
        return out, arg

    def _class_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """(mean, std, log_d, d_zero, has_zero) of the ``stats`` given at construction."""
        if self._stats is None:
            raise ValueError("KL matching and SML need in-distribution statistics (stats=)")
        return self._stats


def _columns(buffer: np.ndarray | None, n: int) -> np.ndarray:
    """The first ``n`` columns of a (K, P) buffer that the scorers of the chunk allocated."""
    if buffer is None:
        raise ValueError("a buffer of a scorer that was not given at construction")
    return buffer[:, :n]


def _first(out: Mapping[str, np.ndarray], by: Mapping[str, list[str]], base: str) -> np.ndarray:
    names = by.get(base, ())
    return out[names[0]] if names else _EMPTY
