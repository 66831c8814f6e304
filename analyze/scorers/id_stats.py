"""In-distribution statistics of a scorer input: the mergeable state, the file, its refusals.

KL matching and SML compare a pixel with statistics of in-distribution pixels, grouped by the
class the model predicts there (``analyze fit``, :mod:`analyze.run.fit`). The *scorer input* at
a temperature T is what the scorers of ``x`` see (:mod:`analyze.scorers.pixel`): ``u = x / T``
with ``x`` the ERFNet logits at label size (void channel dropped) or, for EoMT, the class
scores ``s`` composed at T (target ``query``: ``u = s_T``) or at 1 (target ``pixel``:
``u = s_1 / T``). Per class c, over every pixel whose first maximal class of ``u`` is c:

* the number of pixels, the mean and the variance (``ddof=1``, as ``torch.var``) of
  ``max_k u_k`` (SML: ``shjung13/Standardized-max-logits``, ``calculate_statistics.py``);
* the mean of ``softmax(u)`` (KL matching: ``XixiLiu95/GEN``, ``benchmark.py``,
  ``mean_softmax_train``).

Every pixel of each frame counts, void-labelled ones included: the official statistics use
the model's predictions on every pixel of its training crops, no labels (they stop after the
first 50 batches of the training loader; here every frame of the cache counts).

:class:`IdStatsState` holds these per temperature as counts, means and sums of squared
deviations (merged with Chan et al.'s pairwise formula) and sums of softmax vectors, in
float64, tile by tile and frame by frame, so the fit streams over frames like the metrics
and gives the same numbers under any Dask scheduler (the frames are merged in a fixed tree).
:class:`IdStats` is the file ``analyze fit`` writes (JSON: provenance and scorer-input
definition, per T the statistics) and the checks ``analyze score --id-stats`` applies.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from analyze.scorers.pixel import SCORE_DTYPE, ClassStats, first_argmax, row_tiles
from schemas import cache as C
from schemas.errors import DataError
from schemas.files import publish
from schemas.version import tool_version

FORMAT = "anomaly-seg-cache/id-stats"
#: 2 records what the scored cache must share with the fit cache (:data:`IDENTITY`); 1 did not
VERSION = 2
#: fields of the fit cache that change the statistics and must equal the scored cache's
#: (besides model and checkpoint): a statistic of another input size or precision describes
#: another distribution of the scorer input
#: (a flipped pass does not: the statistics describe the unflipped scorer input)
IDENTITY = ("model_config", "preprocessing", "dtype")
PIXELS = ("every pixel of every scored frame at label resolution (void-labelled ones too), grouped by the "
          "first maximal class of u")


class StatsError(DataError):
    """An in-distribution statistics file that cannot be read or does not fit the cache scored."""


def input_definition(kind: str, target: str) -> str:
    """The scorer input ``u`` at temperature T for a cache ``kind`` and temperature target."""
    if kind == "pixel":
        return "u = z / T, z = the logits bilinearly resized to the label size, void channel dropped"
    s = ("s = sum_q softmax(c_q / T')_k sigmoid(m_q) composed as the official semantic inference (crop "
         "overlaps averaged, bilinear resize to the label size)")
    return f"u = s at T' = T ({s})" if target == "query" else f"u = s / T with {s} at T' = 1"


@dataclass
class _Moments:
    """Per class: pixel count, mean and sum of squared deviations of ``max u``; sum of ``softmax(u)``."""

    count: np.ndarray  # (K,) int64
    mean: np.ndarray  # (K,) float64
    m2: np.ndarray  # (K,) float64
    softmax_sum: np.ndarray  # (K, K) float64: row c = sum of softmax(u) over the pixels predicted c

    @classmethod
    def empty(cls, k: int) -> "_Moments":
        return cls(np.zeros(k, np.int64), np.zeros(k), np.zeros(k), np.zeros((k, k)))

    def merge(self, other: "_Moments") -> "_Moments":
        """Chan et al. (1979): the moments of the union of two pixel sets."""
        n = self.count + other.count
        safe = np.maximum(n, 1)
        delta = other.mean - self.mean
        mean = np.where(n > 0, self.mean + delta * (other.count / safe), 0.0)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / safe)
        return _Moments(n, mean, m2, self.softmax_sum + other.softmax_sum)


def tile_moments(u: torch.Tensor) -> _Moments:
    """The moments of one (K, R, W) float64 tile of the scorer input (one pass for the means, one
    for the squared deviations from them)."""
    k = u.shape[0]
    top2 = u.amax(0)  # (R, W)
    arg = first_argmax(u, top2).reshape(-1)  # (N,)
    top = top2.reshape(-1)  # (N,)
    count = torch.bincount(arg, minlength=k)
    total = torch.zeros(k, dtype=SCORE_DTYPE).index_add_(0, arg, top)
    mean = total / count.clamp(min=1)
    m2 = torch.zeros(k, dtype=SCORE_DTYPE).index_add_(0, arg, (top - mean[arg]) ** 2)
    p = torch.softmax(u.reshape(k, -1), dim=0)  # (K, N)
    soft = torch.zeros((k, k), dtype=SCORE_DTYPE).index_add_(0, arg, p.T)
    return _Moments(count.numpy().astype(np.int64), mean.numpy(), m2.numpy(), soft.numpy())


@dataclass
class IdStatsState:
    """Mergeable per-temperature moments of the scorer input (:class:`_Moments` per T), with the
    frames they came from."""

    moments: dict[float, _Moments] = field(default_factory=dict)
    frames: int = 0

    def update(self, t: float, x: torch.Tensor, t_scorer: float) -> "IdStatsState":
        """Add the pixels of one frame's scorer input ``u = x / t_scorer`` (K, H, W) at temperature ``t``."""
        x = torch.as_tensor(x)
        acc = None
        for rows in row_tiles(x.shape):
            u = x[:, rows].to(SCORE_DTYPE)
            if t_scorer != 1.0:
                u /= t_scorer
            m = tile_moments(u)
            acc = m if acc is None else acc.merge(m)
        if acc is None:
            raise ValueError(f"scorer input of shape {tuple(x.shape)} has no pixel")
        self.moments[t] = self.moments[t].merge(acc) if t in self.moments else acc
        return self

    def merge(self, other: "IdStatsState") -> "IdStatsState":
        out = IdStatsState(dict(self.moments), self.frames + other.frames)
        for t, m in other.moments.items():
            out.moments[t] = out.moments[t].merge(m) if t in out.moments else m
        return out


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class IdStats:
    """An ``analyze fit`` file: provenance, scorer-input definition, statistics per temperature."""

    meta: Mapping[str, Any]  # cache, cache_digest, model, checkpoint_sha256, run, dataset, kind, ...
    temperatures: Mapping[float, Mapping[str, Any]]  # T -> count, max_mean, max_var, mean_softmax, pooled
    path: str = ""

    @classmethod
    def from_state(cls, state: IdStatsState, spec: C.CacheSpec, cache: str, run: str, target: str) -> "IdStats":
        prov = spec.provenance
        meta = {"format": FORMAT, "version": VERSION, "tool_version": tool_version(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cache": str(cache),
                "cache_digest": C.cache_digest(spec), "model": prov.model, "checkpoint_sha256": prov.checkpoint_sha256,
                "checkpoint_file": prov.checkpoint_file, "run": run, "dataset": prov.dataset, "kind": spec.kind,
                "n_classes": spec.n_classes, "n_frames": state.frames, "temp_target": target,
                **cache_identity(spec),
                "input": input_definition(spec.kind, target), "pixels": PIXELS}
        temps = {}
        for t, m in sorted(state.moments.items()):
            var = np.where(m.count >= 2, m.m2 / np.maximum(m.count - 1, 1), np.nan)
            n = int(m.count.sum())
            pooled = m.mean @ m.count / max(n, 1)
            pooled_m2 = float((m.m2 + m.count * (m.mean - pooled) ** 2).sum())
            soft = [(row / c).tolist() if c else None for row, c in zip(m.softmax_sum, m.count)]
            temps[float(t)] = {"count": m.count.tolist(), "max_mean": [_num(v) if c else None for v, c in zip(m.mean, m.count)],
                               "max_var": [_num(v) for v in var], "mean_softmax": soft,
                               "pooled": {"count": n, "mean": float(pooled), "var": pooled_m2 / max(n - 1, 1)}}
        return cls(meta, temps, "")

    def to_json(self) -> dict:
        return {**self.meta, "statistics": [{"temperature": t, **v} for t, v in sorted(self.temperatures.items())]}

    def write(self, path: str | os.PathLike) -> None:
        """Write the file atomically (temporary file + rename)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(_dumps(self.to_json()))
            publish(tmp, path)  # the umask's mode, not mkstemp's 0600
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def read(cls, path: str | os.PathLike) -> "IdStats":
        """Read and check a file written by :meth:`write` (StatsError naming the file otherwise)."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise StatsError(f"{path}: no such statistics file (make one with `analyze fit`)") from None
        except (OSError, ValueError) as exc:
            raise StatsError(f"{path}: not a statistics file of `analyze fit` ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise StatsError(f"{path}: not a statistics file of `analyze fit` (no format {FORMAT!r})")
        if d.get("version") != VERSION:
            why = (" (version 1 does not record the model config, input size and dtype of the cache it was fit on, "
                   "so it cannot be checked against the cache scored): fit it again with `analyze fit`"
                   if d.get("version") == 1 else "")
            raise StatsError(f"{path}: statistics format version {d.get('version')!r}; this tool reads {VERSION}{why}")
        try:
            temps = {float(e["temperature"]): {k: e[k] for k in ("count", "max_mean", "max_var", "mean_softmax",
                                                                  "pooled")} for e in d["statistics"]}
            meta = {k: v for k, v in d.items() if k != "statistics"}
            for k in ("model", "checkpoint_sha256", "dataset", "kind", "n_classes", "temp_target", "cache_digest",
                      *IDENTITY):
                meta[k]  # noqa: B018 - a KeyError names the missing field
        except (KeyError, TypeError, ValueError) as exc:
            raise StatsError(f"{path}: malformed statistics file ({type(exc).__name__}: {exc})") from None
        return cls(meta, temps, str(path))

    def fits(self, spec: C.CacheSpec) -> bool:
        """Whether the statistics come from the model and checkpoint of ``spec``."""
        return (self.meta["model"], self.meta["checkpoint_sha256"]) == (
            spec.provenance.model, spec.provenance.checkpoint_sha256)

    def describe(self) -> str:
        m = self.meta
        return f"{self.path} ({m['model']}, checkpoint {m['checkpoint_sha256'][:8]}, fit on {m['dataset']})"

    def class_stats(self, spec: C.CacheSpec, cache: str, target: str, temps: Sequence[float]) -> dict[float, ClassStats]:
        """The scorers' statistics at each of ``temps`` for scoring ``cache`` with ``target``.

        Refused (StatsError naming the file and the cache): statistics of another model or
        checkpoint; statistics fit on the dataset of the cache being scored (test data);
        another temperature target or scorer input; a temperature the file does not have.
        """
        prov = spec.provenance
        if not self.fits(spec):
            raise StatsError(f"{self.describe()} cannot score {cache}: it was fit on {self.meta['model']} checkpoint "
                             f"{self.meta['checkpoint_sha256'][:8]}, the cache holds {prov.model} checkpoint "
                             f"{prov.checkpoint_sha256[:8]}")
        if self.meta["dataset"] == prov.dataset:
            raise StatsError(f"{self.describe()} was fit on {prov.dataset}, the dataset {cache} scores: in-distribution "
                             "statistics must not come from the test data (fit them on cityscapes_val)")
        if (self.meta["kind"], int(self.meta["n_classes"])) != (spec.kind, spec.n_classes):
            raise StatsError(f"{self.describe()}: {self.meta['kind']} outputs of {self.meta['n_classes']} classes, "
                             f"{cache} has {spec.kind} outputs of {spec.n_classes}")
        differs = identity_differences(self.meta, spec)
        if differs:
            field_, fitted, scored = differs[0]
            raise StatsError(f"{self.describe()} cannot score {cache}: {field_} differs (fit cache "
                             f"{self.meta['cache']}: {fitted}; {cache}: {scored}); fit the statistics on a cache "
                             "extracted with the same settings")
        if self.meta["temp_target"] != target:
            raise StatsError(f"{self.describe()} describes the scorer input of temperature target "
                             f"{self.meta['temp_target']}; scoring {cache} uses {target} (`analyze fit --temp-target`)")
        missing = [t for t in temps if t not in self.temperatures]
        if missing:
            have = ", ".join(f"{t:g}" for t in sorted(self.temperatures))
            raise StatsError(f"{self.describe()} has statistics at T = {have}, not at T = "
                             f"{', '.join(f'{t:g}' for t in missing)}: fit them with `analyze fit --temps` "
                             "covering every temperature scored")
        return {t: _class_stats(self.temperatures[t]) for t in temps}

    def poorly_covered(self) -> list[int]:
        """Classes with fewer than 2 fitted pixels at some temperature (their SML uses the pooled statistics)."""
        return sorted({c for v in self.temperatures.values() for c, n in enumerate(v["count"]) if n < 2})


def cache_identity(spec: C.CacheSpec) -> dict[str, Any]:
    """What of a cache, besides model and checkpoint, changes the statistics fit on it (:data:`IDENTITY`)."""
    prov = spec.provenance
    return {"model_config": dict(prov.model_config), "preprocessing": dict(prov.preprocessing), "dtype": prov.dtype}


def identity_differences(meta: Mapping[str, Any], spec: C.CacheSpec) -> list[tuple[str, Any, Any]]:
    """(field, fitted value, scored value) for each field of :data:`IDENTITY` that differs; within
    ``model_config`` and ``preprocessing`` the field is the key that differs (e.g.
    ``model_config.input_height``)."""
    scored = cache_identity(spec)
    out = []
    for name in IDENTITY:
        a, b = meta[name], scored[name]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                if a.get(key) != b.get(key):
                    out.append((f"{name}.{key}", a.get(key), b.get(key)))
        elif a != b:
            out.append((name, a, b))
    return out


def _dumps(d: Mapping[str, Any]) -> str:
    """JSON with one field per line and one line per temperature (floats round-trip exactly)."""
    def line(v) -> str:
        return json.dumps(v, allow_nan=False)

    fields = [f" {line(k)}: {line(v)}" for k, v in d.items() if k != "statistics"]
    stats = ",\n".join(f"  {line(e)}" for e in d["statistics"])
    return "{\n" + ",\n".join(fields + [f' "statistics": [\n{stats}\n ]']) + "\n}\n"


def _class_stats(v: Mapping[str, Any]) -> ClassStats:
    k = len(v["count"])
    nan = float("nan")
    soft = np.array([row if row is not None else [0.0] * k for row in v["mean_softmax"]], np.float64)
    return ClassStats.from_moments(
        v["count"], np.array([nan if m is None else m for m in v["max_mean"]], np.float64),
        np.array([nan if s is None else s for s in v["max_var"]], np.float64), soft,
        v["pooled"]["mean"], v["pooled"]["var"])


def match_stats(files: Sequence[IdStats], spec: C.CacheSpec, cache: str) -> IdStats | None:
    """The one file of ``files`` fit on the model and checkpoint of ``spec`` (None if none;
    StatsError if several)."""
    hits = [f for f in files if f.fits(spec)]
    if len(hits) > 1:
        raise StatsError(f"{cache}: several --id-stats files fit its model and checkpoint "
                         f"({', '.join(f.path for f in hits)}): give one")
    return hits[0] if hits else None


def check_files_used(files: Sequence[IdStats], specs: Mapping[str, C.CacheSpec]) -> None:
    """Refuse a file whose model and checkpoint match none of the caches scored (``specs``:
    cache -> spec), naming what it was fit on and what the caches hold."""
    for f in files:
        if not any(f.fits(s) for s in specs.values()):
            held = "; ".join(f"{c}: {s.provenance.model} {s.provenance.checkpoint_sha256[:8]}" for c, s in specs.items())
            raise StatsError(f"{f.describe()} fits none of the caches scored (another model or checkpoint: {held})")
