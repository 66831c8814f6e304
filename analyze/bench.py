"""Benchmarks: ``python -m analyze.bench [--pixels 50_000_000] [--out bench_out]``.

Each entry of :data:`SECTIONS` is one benchmark (a name, a help line, a function that returns
a Markdown report); add a section by appending to that list. ``--section NAME`` runs one.

Section ``pixel_metrics``: exact pooled AuPRC / AUROC / FPR95 of :mod:`analyze.metrics`
against the reference approach (concatenate every frame, then scikit-learn
``average_precision_score`` + ``roc_auc_score`` + ``ood_metrics.fpr_at_95_tpr``) on synthetic
frames (ragged sizes, ~8 % void, ~2 % anomaly, float32 scores; every other frame is
quantised to float16 values, which makes the ties of a float16 cache).

How it measures: every method runs in its own fresh Python process (same frames, rebuilt
from the same seeds and held in memory before the clock starts). Time is
``time.perf_counter`` (wall) and ``time.process_time`` (CPU of the process, summed over its
threads, less sensitive to other load on a shared machine) around the metric work only: one
``pixel_metrics`` call for ours (on its default threads, and again on one thread), the
masking, concatenation and three calls for the reference. Memory is the
growth of the process's peak resident set (``resource.getrusage(...).ru_maxrss``) over its
value after the frames, the imports and a warm-up call: the real peak, including buffers that
numpy and scikit-learn allocate outside Python's allocator (``tracemalloc`` sees numpy's
own arrays but not every native buffer, and it slows the code it measures).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import click
import numpy as np

DEFAULT_PIXELS = 50_000_000
FRAME_SHAPES = ((1024, 2048), (720, 1280), (1080, 1920))
TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------
# synthetic data


def synthetic_frames(n_pixels: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(y_score float32 (H, W), y_true uint8 (H, W)) frames totalling ``n_pixels`` pixels.

    Labels: a void band at the top (~8 %), a few anomaly rectangles (~2 % of the frame).
    Scores: anomalies skew high, in-distribution low, overlapping; 1 % of the
    in-distribution pixels are exactly 0 (saturated); odd frames are rounded to float16.
    """
    done, i = 0, 0
    while done < n_pixels:
        h, w = FRAME_SHAPES[i % len(FRAME_SHAPES)]
        h = min(h, -(-(n_pixels - done) // w))
        rng = np.random.default_rng([seed, i])
        y = np.zeros((h, w), np.uint8)
        y[: int(0.08 * h)] = 255
        target = 0.02 * h * w
        while np.count_nonzero(y == 1) < target:
            rh = rng.integers(max(2, h // 30), max(3, h // 8))
            rw = rng.integers(max(2, w // 30), max(3, w // 8))
            r0, c0 = rng.integers(0, max(1, h - rh)), rng.integers(0, max(1, w - rw))
            y[r0 : r0 + rh, c0 : c0 + rw] = 1
        r = rng.random((h, w), dtype=np.float32)
        s = np.where(y == 1, 1.0 - 0.9 * r**1.5, 0.95 * r**3).astype(np.float32)
        s[(y == 0) & (rng.random((h, w)) < 0.01)] = 0.0
        if i % 2:
            s = s.astype(np.float16).astype(np.float32)
        yield s, y
        done += h * w
        i += 1


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


def _worker(method: str, n_pixels: int, seed: int) -> dict:
    from analyze import metrics

    from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: F401  (import cost outside)

    fpr95_fn, fpr95_source = _reference_fpr95()
    frames = list(synthetic_frames(n_pixels, seed))  # the input, made before the baseline
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
    out["result"] = {k: (float(v) if k in ("auprc", "auroc", "fpr95") else int(v)) for k, v in res.items()}
    return out


def _run_worker(method: str, n_pixels: int, seed: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "analyze.bench", "--worker", method, "--pixels", str(n_pixels), "--seed", str(seed)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise click.ClickException(f"worker {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    run: Callable[[int, int], tuple[str, dict, bool]]  # (pixels, seed) -> (markdown, data, ok)


def run_pixel_metrics(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """Exact metrics vs concatenate + scikit-learn + ood_metrics; checks agreement to 1e-9."""
    runs = {m: _run_worker(m, n_pixels, seed) for m in ("exact", "exact1", "smiyc", "sklearn")}
    ref, ours = runs["sklearn"], runs["exact"]
    diffs = {k: abs(ours["result"][k] - ref["result"][k]) for k in ("auprc", "auroc", "fpr95")}
    counts_ok = all(ours["result"][k] == ref["result"][k] for k in ("n_pos", "n_neg"))
    ok = counts_ok and all(d <= TOLERANCE for d in diffs.values()) and runs["exact1"]["result"] == ours["result"]
    r = ref["result"]
    lines = [
        f"## pixel_metrics: {n_pixels:,} pixels "
        f"({r['n_pos']:,} anomaly, {r['n_neg']:,} in-distribution, rest void)",
        "",
        f"FPR95 reference: {ref['fpr95_source']}. One process per method, OMP/BLAS threads = 1; "
        "frames are made in memory before the clock starts. pixel_metrics uses its default "
        "threads (ANALYZE_THREADS or the usable CPUs, here "
        f"{ours['threads']}); the 1-thread row is the same code on one thread. CPU time sums all threads.",
        "",
        "| method | wall (s) | CPU (s) | peak memory growth (MB) | speed-up wall / CPU "
        "| memory vs reference | AuPRC | AUROC | FPR95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "exact": f"pixel_metrics exact, {ours['threads']} threads",
        "exact1": "pixel_metrics exact, 1 thread",
        "smiyc": "pixel_metrics smiyc (binned, not comparable)",
        "sklearn": "reference: concatenate + sklearn + ood_metrics",
    }
    for m in ("exact", "exact1", "sklearn", "smiyc"):
        x = runs[m]
        res = x["result"]
        lines.append(
            f"| {labels[m]} | {x['total_s']:.2f} | {x['cpu_s']:.2f} | {x['peak_mb']:.0f} | "
            f"{ref['total_s'] / x['total_s']:.0f}x / {ref['cpu_s'] / max(x['cpu_s'], 1e-9):.0f}x | "
            f"{x['peak_mb'] / max(ref['peak_mb'], 1e-9):.3f} | "
            f"{res['auprc']:.6f} | {res['auroc']:.6f} | {res['fpr95']:.6f} |"
        )
    lines += [
        "",
        "Wall-time breakdown (s): "
        + "; ".join(
            f"{m}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[m]["times"].items()) for m in ("exact1", "sklearn")
        ),
        "",
        "Agreement exact vs reference (|difference|, tolerance 1e-9): "
        + ", ".join(f"{k} {d:.2e}" for k, d in diffs.items())
        + f"; n_pos/n_neg {'equal' if counts_ok else 'DIFFER'} -> {'OK' if ok else 'MISMATCH'}",
        "",
    ]
    return "\n".join(lines), runs, ok


def run_eomt_temperature_grid(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """EoMT scoring of a full T grid (1, 0.5, 0.75, 1.1) against a single T, same frame.

    One synthetic EoMT-L-shaped frame: 1024x2048 -> 2 crops of 1024, 100 queries, 19 classes,
    256x256 mask logits; all five scorers; one thread. Also times the parts: the shared mask
    composition, and one temperature's class-score map + scorers + semantic map.
    """
    import torch

    from analyze.compose import FrameComposer
    from analyze.frame_scores import iter_frame_scores
    from analyze.scorers import get_scorers, score_many
    from schemas.windows import frame_windows

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    geom = frame_windows(1024, 2048, 1024)
    mask_logits = (rng.normal(size=(2, 100, 256, 256)) * 3).astype(np.float16)
    class_logits = rng.normal(size=(2, 100, 20)).astype(np.float32) * 2
    scorers = get_scorers("all", "query")
    grid = (0.5, 0.75, 1.0, 1.1)

    def run(temps):
        t0 = time.perf_counter()
        for _ in iter_frame_scores("query", scorers=scorers, temperatures=temps, mask_logits=mask_logits,
                                   class_logits=class_logits, geom=geom):
            pass
        return time.perf_counter() - t0

    run((1.0,))  # warm-up
    single = min(run((1.0,)) for _ in range(2))
    full = min(run(grid) for _ in range(2))
    t0 = time.perf_counter()
    s = FrameComposer(mask_logits, class_logits, geom).resized_scores((1.0,))[1.0]
    t_compose = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_many(s, 1.0, [sc.name for sc in scorers], argmax_out=np.empty(s.shape[1:], np.uint8))  # + semantic map
    t_scores = time.perf_counter() - t0
    ratio = full / single
    md = "\n".join([
        "## eomt_temperature_grid: one 1024x2048 frame, 2 crops, 100 queries, 5 scorers, 1 thread",
        "",
        "| T grid | seconds | ratio to single T |",
        "|---|---:|---:|",
        f"| single T (1.0) | {single:.2f} | 1.00 |",
        f"| {', '.join(map(str, grid))} | {full:.2f} | {ratio:.2f} |",
        "",
        f"Parts: mask composition for one T {t_compose:.2f} s (sigmoid masks computed once per crop and shared "
        f"by every T); five scorers + semantic map for one T {t_scores:.2f} s (needed again for every T).",
        "Goal: full grid <= 1.5x a single T.",
        "",
    ])
    return md, {"single_s": single, "grid_s": full, "ratio": ratio, "compose_s": t_compose,
                "scores_per_t_s": t_scores}, True


SECTIONS: list[Section] = [
    Section(
        "pixel_metrics",
        "exact pooled AuPRC/AUROC/FPR95 vs concatenate + scikit-learn + ood_metrics",
        run_pixel_metrics,
    ),
    Section(
        "eomt_temperature_grid",
        "EoMT scoring of a full T grid against a single T",
        run_eomt_temperature_grid,
    ),
    Section(
        "fit_nll_memory",
        "peak memory of `analyze temperature --fit nll` on 100 and 500 Cityscapes-val-shaped frames",
        lambda pixels, seed: __import__("analyze.bench_fit", fromlist=["x"]).run_fit_nll_memory(pixels, seed),
    ),
]


@click.command()
@click.option("--pixels", default=DEFAULT_PIXELS, show_default=True, type=int, help="pixels in the synthetic data")
@click.option(
    "--out", "out_dir", default="bench_out", show_default=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--section", "sections", multiple=True, type=click.Choice([s.name for s in SECTIONS]), help="run only these"
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--worker", default=None, hidden=True)
def main(pixels: int, out_dir: Path, sections: tuple[str, ...], seed: int, worker: str | None) -> None:
    """Run the benchmarks and write bench.md and bench.json under --out.

    Example: python -m analyze.bench --pixels 20_000_000 --out bench_out
    """
    if worker is not None:
        click.echo(json.dumps(_worker(worker, pixels, seed)))
        return
    chosen = [s for s in SECTIONS if not sections or s.name in sections]
    reports, data, all_ok = [], {}, True
    for section in chosen:
        click.echo(f"running {section.name}: {section.help} ...", err=True)
        md, d, ok = section.run(pixels, seed)
        reports.append(md)
        data[section.name] = d
        all_ok &= ok
        click.echo(md)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.md").write_text("\n".join(reports))
    (out_dir / "bench.json").write_text(json.dumps(data, indent=2))
    if not all_ok:
        raise click.ClickException("a benchmark's results disagree with its reference")


if __name__ == "__main__":
    main()
