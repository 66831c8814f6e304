"""Benchmark section ``pixel_metrics`` of :mod:`analyze.bench.sections` (``python -m analyze.bench --section
pixel_metrics``): exact pooled AuPRC / AUROC / FPR95 of :mod:`analyze.metrics`
against the reference approach (concatenate every frame, then scikit-learn
``average_precision_score`` + ``roc_auc_score`` + ``ood_metrics.fpr_at_95_tpr``) on synthetic
frames (ragged sizes, ~8 % void, ~2 % anomaly, float32 scores; every other frame is
quantised to float16 values, which makes the ties of a float16 cache), and again on frames
whose float32 scores are all distinct (no frame can be kept as a float16 histogram: the
memory worst case).

How it measures: every method runs in its own fresh Python process (same frames, rebuilt
from the same seeds and held in memory before the clock starts). Time is
``time.perf_counter`` (wall) and ``time.process_time`` (CPU of the process, summed over its
threads, less sensitive to other load on a shared machine) around the metric work only: one
``pixel_metrics`` call for ours (on its default threads, and again on one thread), the
masking, concatenation and three calls for the reference. "Warm" processes have imported
everything and made a warm-up call before the clock starts. The cold process starts the
clock before ``import analyze.metrics`` (only numpy is loaded, to hold the frames) and stops
it after the first ``pixel_metrics`` call: import, numba loading its compiled kernels from
its cache, and the work. The first-ever run is the same with an empty numba cache
(``NUMBA_CACHE_DIR``), as in a fresh clone or on CI: numba compiles every kernel. Memory is
the growth of the process's peak resident set (``resource.getrusage(...).ru_maxrss``) over its
value after the frames (warm: also after the imports and the warm-up call): the real peak,
including buffers that numpy and scikit-learn allocate outside Python's allocator
(``tracemalloc`` sees numpy's own arrays but not every native buffer, and it slows the code it
measures).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click
import numpy as np

DEFAULT_PIXELS = 50_000_000
FRAME_SHAPES = ((1024, 2048), (720, 1280), (1080, 1920))
TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------
# synthetic data


def _frame_sizes(n_pixels: int) -> Iterator[tuple[int, int]]:
    """The (H, W) of the frames of :func:`synthetic_frames`: shapes in turn, the last one cut."""
    done, i = 0, 0
    while done < n_pixels:
        h, w = FRAME_SHAPES[i % len(FRAME_SHAPES)]
        h = min(h, -(-(n_pixels - done) // w))
        yield h, w
        done += h * w
        i += 1


DISTINCT_BASE = 0x30000000  # float32 bit pattern of ~4.7e-10: room for 1.3e9 distinct positive finite values
DISTINCT_BASE64 = 0x3E00000000000000  # float64 bit pattern of ~4.7e-10


def synthetic_frames(n_pixels: int, seed: int = 0, distinct: bool = False,
                     dtype: str = "float32") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(y_score float32 (H, W), y_true uint8 (H, W)) frames totalling ``n_pixels`` pixels.

    Labels: a void band at the top (~8 %), a few anomaly rectangles (~2 % of the frame).
    Scores: anomalies skew high, in-distribution low, overlapping; 1 % of the
    in-distribution pixels are exactly 0 (saturated); odd frames are rounded to float16.

    ``distinct``: every score of every frame is a different float32 value (no float16
    frames, no saturated pixels): the pixel of rank ``r`` in frame ``i`` of ``n`` frames gets
    the float32 whose bit pattern is ``DISTINCT_BASE + r * n + i``, so the order within a
    frame is kept and the frames interleave.

    ``dtype="float64"``: the maps ``analyze score`` passes: the same formulas evaluated in
    float64 (every mantissa bit used), no frame rounded to float16; ``distinct`` takes float64
    bit patterns from ``DISTINCT_BASE64`` with the low 24 bits random (above the rank), so the
    radix sort's low bytes are as varied as real scores'.
    """
    f64 = dtype == "float64"
    n_frames = sum(1 for _ in _frame_sizes(n_pixels))
    for i, (h, w) in enumerate(_frame_sizes(n_pixels)):
        rng = np.random.default_rng([seed, i])
        y = np.zeros((h, w), np.uint8)
        y[: int(0.08 * h)] = 255
        target = 0.02 * h * w
        while np.count_nonzero(y == 1) < target:
            rh = rng.integers(max(2, h // 30), max(3, h // 8))
            rw = rng.integers(max(2, w // 30), max(3, w // 8))
            r0, c0 = rng.integers(0, max(1, h - rh)), rng.integers(0, max(1, w - rw))
            y[r0 : r0 + rh, c0 : c0 + rw] = 1
        r = rng.random((h, w), dtype=np.float64 if f64 else np.float32)
        s = np.where(y == 1, 1.0 - 0.9 * r**1.5, 0.95 * r**3).astype(r.dtype)
        if distinct and f64:
            rank = np.empty(s.size, np.uint64)
            rank[np.argsort(s, axis=None, kind="stable")] = np.arange(s.size, dtype=np.uint64)
            key = (rank * np.uint64(n_frames) + np.uint64(i)) << np.uint64(24)
            low = rng.integers(0, 1 << 24, size=s.size, dtype=np.uint64)
            s = (np.uint64(DISTINCT_BASE64) + key + low).view(np.float64).reshape(h, w)
        elif distinct:
            rank = np.empty(s.size, np.uint32)
            rank[np.argsort(s, axis=None, kind="stable")] = np.arange(s.size, dtype=np.uint32)
            s = (DISTINCT_BASE + rank * np.uint32(n_frames) + np.uint32(i)).view(np.float32).reshape(h, w)
        else:
            s[(y == 0) & (rng.random((h, w)) < 0.01)] = 0.0
            if i % 2 and not f64:
                s = s.astype(np.float16).astype(np.float32)
        yield s, y


# --------------------------------------------------------------------------------------
# reference implementation (what the seed paper's code does)


def fpr_at_95_tpr_transcribed(preds, labels) -> float:
    """``ood_metrics.fpr_at_95_tpr`` (0.2.9 .. 1.1.2), transcribed: interp on sklearn's ROC."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, preds)
    if np.all(tpr < 0.95):
        return 0.0
    if np.all(tpr >= 0.95):
        return float(np.min(fpr[tpr >= 0.95]))
    return float(np.interp(0.95, tpr, fpr))


def _reference_fpr95() -> tuple[Callable, str]:
    try:
        from importlib.metadata import version

        from ood_metrics import fpr_at_95_tpr

        return fpr_at_95_tpr, f"ood_metrics {version('ood-metrics')}"
    except ImportError:
        source = "transcription of ood_metrics.fpr_at_95_tpr (ood-metrics not installed)"
        return fpr_at_95_tpr_transcribed, source


# --------------------------------------------------------------------------------------
# workers: one fresh process per method


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


class _Clock:
    """Accumulates wall (perf_counter) and CPU (process_time) seconds per named step."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c


def _frames(n_pixels: int, seed: int, distinct: bool, dtype: str = "float32") -> list[tuple[np.ndarray, np.ndarray]]:
    return list(synthetic_frames(n_pixels, seed, distinct, dtype))


def _result(res: dict) -> dict:
    return {k: (float(v) if k in ("auprc", "auroc", "fpr95") else int(v)) for k, v in res.items()}


def _cold_worker(n_pixels: int, seed: int, distinct: bool) -> dict:
    """Import + first ``pixel_metrics`` call in a process that has loaded only numpy."""
    frames = _frames(n_pixels, seed, distinct)
    if "analyze.metrics" in sys.modules or "numba" in sys.modules:
        raise click.ClickException("the cold worker must not have imported analyze.metrics or numba")
    base = _peak_mb()
    w0, c0 = time.perf_counter(), time.process_time()
    from analyze import metrics

    w1 = time.perf_counter()
    res = metrics.pixel_metrics([s for s, _ in frames], [y for _, y in frames])
    w2, c2 = time.perf_counter(), time.process_time()
    return {"method": "cold", "threads": metrics.num_threads(), "times": {"import": w1 - w0, "first call": w2 - w1},
            "total_s": w2 - w0, "cpu_s": c2 - c0, "peak_mb": _peak_mb() - base, "result": _result(res)}


def worker(method: str, n_pixels: int, seed: int, distinct: bool, dtype: str = "float32") -> dict:
    """One measurement in this (fresh) process: ``method`` (exact, exact1, smiyc, sklearn, cold,
    first) on the synthetic frames of ``n_pixels``, ``seed``, ``distinct`` and ``dtype``."""
    if method in ("cold", "first"):
        if dtype != "float32":
            raise click.UsageError("the cold workers measure float32 frames")
        return {**_cold_worker(n_pixels, seed, distinct), "method": method}
    from analyze import metrics

    from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: F401  (import cost outside)

    fpr95_fn, fpr95_source = _reference_fpr95()
    frames = _frames(n_pixels, seed, distinct, dtype)  # the input, made before the baseline
    metrics.pixel_metrics([frames[0][0]], [frames[0][1]], threads=1)  # warm-up (imports, tables)
    base = _peak_mb()
    out: dict = {"method": method}
    clock = _Clock()
    if method in ("exact", "smiyc", "exact1"):
        protocol, threads = ("exact", 1) if method == "exact1" else (method, None)
        out["threads"] = metrics.num_threads(threads)
        with clock("pixel_metrics"):
            res = metrics.pixel_metrics([s for s, _ in frames], [y for _, y in frames], protocol, threads=threads)
    elif method == "sklearn":
        scores, labels = [], []
        for s, y in frames:
            with clock("concatenate"):
                keep = y != metrics.VOID
                scores.append(s[keep])
                labels.append(y[keep])
        with clock("concatenate"):
            y_score, y_true = np.concatenate(scores), np.concatenate(labels)
            del scores, labels
        with clock("average_precision_score"):
            ap = average_precision_score(y_true, y_score)
        with clock("roc_auc_score"):
            auc = roc_auc_score(y_true, y_score)
        with clock("fpr_at_95_tpr"):
            fpr = fpr95_fn(y_score, y_true)
        res = {
            "auprc": float(ap),
            "auroc": float(auc),
            "fpr95": float(fpr),
            "n_pos": int(np.count_nonzero(y_true == 1)),
            "n_neg": int(np.count_nonzero(y_true == 0)),
        }
        out["fpr95_source"] = fpr95_source
    else:
        raise click.UsageError(f"unknown worker method {method!r}")
    out.update(times=clock.wall, total_s=sum(clock.wall.values()), cpu_s=sum(clock.cpu.values()))
    out["peak_mb"] = _peak_mb() - base
    out["result"] = _result(res)
    return out


def _run_worker(method: str, n_pixels: int, seed: int, distinct: bool = False, dtype: str = "float32") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "analyze.bench", "--worker", method, "--pixels", str(n_pixels), "--seed", str(seed),
           "--dtype", dtype]
    cmd += ["--distinct"] if distinct else []
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-numba-") as empty_cache:
        if method == "first":
            env["NUMBA_CACHE_DIR"] = empty_cache  # nothing compiled yet: numba compiles every kernel
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise click.ClickException(f"worker {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _agreement(ours: dict, ref: dict) -> tuple[dict, bool]:
    """|ours - reference| per metric and whether they agree (TOLERANCE, equal pixel counts)."""
    diffs = {k: abs(ours["result"][k] - ref["result"][k]) for k in ("auprc", "auroc", "fpr95")}
    counts_ok = all(ours["result"][k] == ref["result"][k] for k in ("n_pos", "n_neg"))
    return diffs, counts_ok and all(d <= TOLERANCE for d in diffs.values())


def _rows(runs: dict, labels: dict, ref: dict) -> list[str]:
    lines = []
    for m, label in labels.items():
        x = runs[m]
        res = x["result"]
        lines.append(
            f"| {label} | {x['total_s']:.2f} | {x['cpu_s']:.2f} | {x['peak_mb']:.0f} | "
            f"{ref['total_s'] / x['total_s']:.0f}x / {ref['cpu_s'] / max(x['cpu_s'], 1e-9):.0f}x | "
            f"{x['peak_mb'] / max(ref['peak_mb'], 1e-9):.3f} | "
            f"{res['auprc']:.6f} | {res['auroc']:.6f} | {res['fpr95']:.6f} |"
        )
    return lines


_HEADER = [
    "| method | wall (s) | CPU (s) | peak memory growth (MB) | speed-up wall / CPU "
    "| memory vs reference | AuPRC | AUROC | FPR95 |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def run_pixel_metrics(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """Exact metrics vs concatenate + scikit-learn + ood_metrics; checks agreement to 1e-9.

    Mixed frames: warm (default threads and one thread), a cold process, a first-ever run and
    the smiyc protocol; then all-distinct float32 scores (warm, default threads) against the
    reference on the same frames; then float64 maps, as ``analyze score`` passes them (mixed
    and all-distinct, warm, default threads and one thread), against the reference on them.
    """
    runs = {m: _run_worker(m, n_pixels, seed) for m in ("exact", "cold", "first", "exact1", "smiyc", "sklearn")}
    distinct = {m: _run_worker(m, n_pixels, seed, distinct=True) for m in ("exact", "sklearn")}
    f64 = {m: _run_worker(m, n_pixels, seed, dtype="float64") for m in ("exact", "exact1", "sklearn")}
    f64d = {m: _run_worker(m, n_pixels, seed, distinct=True, dtype="float64") for m in ("exact", "exact1", "sklearn")}
    ref, ours = runs["sklearn"], runs["exact"]
    diffs, ok = _agreement(ours, ref)
    same = all(runs[m]["result"] == ours["result"] for m in ("exact1", "cold", "first"))
    d_diffs, d_ok = _agreement(distinct["exact"], distinct["sklearn"])
    f64_md, f64_ok = _float64_report(n_pixels, f64, f64d)
    all_ok = ok and same and d_ok and f64_ok
    r, d = ref["result"], distinct["sklearn"]["result"]
    n = ours["threads"]
    lines = [
        f"## pixel_metrics: {n_pixels:,} pixels "
        f"({r['n_pos']:,} anomaly, {r['n_neg']:,} in-distribution, rest void)",
        "",
        f"FPR95 reference: {ref['fpr95_source']}. One process per method, OMP/BLAS threads = 1; "
        "frames are made in memory before the clock starts. pixel_metrics uses its default "
        f"threads (ANALYZE_THREADS or the usable CPUs, here {n}); the 1-thread row is the same "
        "code on one thread. CPU time sums all threads. Warm: imports and a warm-up call before "
        "the clock; cold: a fresh process timed from `import analyze.metrics` to the end of the "
        "first call (numba loads its cached kernels); first-ever: the same with an empty numba "
        "cache (numba compiles). Every ratio is against the reference's metric work alone "
        "(its imports excluded).",
        "",
        *_HEADER,
        *_rows(runs, {
            "exact": f"pixel_metrics exact, {n} threads, warm",
            "cold": f"same, cold process (import + first call), {n} threads",
            "first": "same, first-ever run (empty numba cache: compiles)",
            "exact1": "pixel_metrics exact, 1 thread, warm",
            "sklearn": "reference: concatenate + sklearn + ood_metrics",
            "smiyc": "pixel_metrics smiyc (binned, not comparable)",
        }, ref),
        "",
        "Wall-time breakdown (s): "
        + "; ".join(
            f"{m}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[m]["times"].items())
            for m in ("exact1", "cold", "first", "sklearn")
        ),
        "",
        "Agreement exact vs reference (|difference|, tolerance 1e-9): "
        + ", ".join(f"{k} {x:.2e}" for k, x in diffs.items())
        + f"; cold, first-ever and 1-thread results {'identical' if same else 'DIFFER'} -> {'OK' if ok and same else 'MISMATCH'}",
        "",
        f"### all-distinct float32 scores: {n_pixels:,} pixels ({d['n_pos']:,} anomaly, {d['n_neg']:,} in-distribution), "
        "no frame has float16 precision",
        "",
        *_HEADER,
        *_rows(distinct, {"exact": f"pixel_metrics exact, {n} threads, warm",
                          "sklearn": "reference: concatenate + sklearn + ood_metrics"}, distinct["sklearn"]),
        "",
        "Agreement (tolerance 1e-9): " + ", ".join(f"{k} {x:.2e}" for k, x in d_diffs.items())
        + f" -> {'OK' if d_ok else 'MISMATCH'}",
        "",
        f64_md,
    ]
    return "\n".join(lines), {**runs, "distinct": distinct, "float64": f64, "float64_distinct": f64d}, all_ok


def _float64_report(n_pixels: int, mixed: dict, distinct: dict) -> tuple[str, bool]:
    """The float64 rows: ours (default threads, one thread) against the reference on the same maps."""
    lines, all_ok = [], True
    for title, runs in (("float64 maps (what `analyze score` passes: every mantissa bit used)", mixed),
                        ("all-distinct float64 scores", distinct)):
        ref = runs["sklearn"]
        diffs, ok = _agreement(runs["exact"], ref)
        same = runs["exact1"]["result"] == runs["exact"]["result"]
        all_ok &= ok and same
        r, n = ref["result"], runs["exact"]["threads"]
        lines += [
            f"### {title}: {n_pixels:,} pixels ({r['n_pos']:,} anomaly, {r['n_neg']:,} in-distribution)",
            "",
            *_HEADER,
            *_rows(runs, {"exact": f"pixel_metrics exact, {n} threads, warm", "exact1": "same, 1 thread",
                          "sklearn": "reference: concatenate + sklearn + ood_metrics"}, ref),
            "",
            "Agreement (tolerance 1e-9): " + ", ".join(f"{k} {x:.2e}" for k, x in diffs.items())
            + f"; 1-thread result {'identical' if same else 'DIFFERS'} -> {'OK' if ok and same else 'MISMATCH'}",
            "",
        ]
    return "\n".join(lines), all_ok
