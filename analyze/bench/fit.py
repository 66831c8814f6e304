"""Benchmark: peak memory of ``analyze temperature --fit nll`` on a Cityscapes-val-shaped cache.

Run it with ``python -m analyze.bench --section fit_nll_memory`` (a section of
:mod:`analyze.bench.sections`). The cache has Cityscapes val's shape: 1024x2048 labels, ERFNet logits
of 20 channels at 512x1024 in float16, 500 frames (and a 100-frame one, to show that memory
does not grow with the frame count). Its contents are cheap to make and to compress (smooth
random logits, labels = their argmax with a void band) and its scores mean nothing; only the
shapes, dtypes and the ~90 % labelled pixels matter for memory.

Each measurement runs in a fresh Python process: the growth of the process's peak resident
set (``ru_maxrss``) over its value after the imports (torch alone adds ~700 MB). ``reference`` is the sampling step the
fit used before (``np.flatnonzero`` of every frame's labelled pixels, kept for all frames,
then one draw), measured on the 100-frame cache; it holds 8 bytes per labelled pixel.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME = (1024, 2048)
LOGITS = (20, 512, 1024)
MAX_PIXELS = 200_000  # the CLI default of --max-pixels


def build_cache(path: Path, n_frames: int, seed: int = 0) -> None:
    """A pixel cache of ``n_frames`` Cityscapes-val-shaped frames, every frame done."""
    from schemas.cache import CacheSpec, Provenance, create_cache, mark_done, thumbnail_size
    from schemas.cache import write_frame_common, write_frame_pixel

    prov = Provenance(model="erfnet", model_config={"num_classes": 20}, checkpoint_sha256="0" * 64,
                      dataset="cityscapes_val", manifest_digest="0" * 64, preprocessing={"bench": "fit_nll"},
                      versions={"package": "bench", "torch": "-", "timm": "-", "zarr": "-"}, device="cpu", dtype="fp32", created="2026-01-01T00:00:00+00:00")
    spec = CacheSpec(kind="pixel", label_kind="semantic", frame_ids=tuple(f"f{i:04d}" for i in range(n_frames)),
                     sizes=(FRAME,) * n_frames, provenance=prov, n_classes=19, n_channels=20, void_channel=19,
                     logit_sizes=(LOGITS[1:],) * n_frames)
    root = create_cache(path, spec, compression="lz4")
    thumb = np.zeros((*thumbnail_size(*FRAME), 3), np.uint8)
    for i in range(n_frames):
        rng = np.random.default_rng([seed, i])
        coarse = (rng.normal(size=(20, 16, 32)) * 3).astype(np.float16)  # (C, 16, 32)
        logits = coarse.repeat(32, axis=1).repeat(32, axis=2)  # (C, 512, 1024)
        label = coarse[:19].argmax(0).astype(np.uint8).repeat(64, axis=0).repeat(64, axis=1)  # (1024, 2048)
        label[: FRAME[0] // 10] = 255  # ~10 % void, as the ego-vehicle and out-of-ROI pixels
        write_frame_pixel(root, spec, i, logits)
        write_frame_common(root, spec, i, label, thumb)
        mark_done(root, i)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _worker(method: str, cache: str) -> dict:
    """In a fresh process: peak memory growth of one method on ``cache``."""
    import scipy.optimize  # noqa: F401  (imports outside the measurement: torch alone is ~700 MB)

    import analyze.compose.queries  # noqa: F401
    from analyze.report import temperature
    from schemas.cache import done_mask, open_cache, read_label

    base = _peak_mb()
    t0 = time.perf_counter()
    if method == "fit":
        res = temperature.fit_temperature_nll(cache, max_pixels=MAX_PIXELS, seed=0)
        out = {"T": res["T"], "n_pixels": res["n_pixels"], "n_frames": res["n_frames"]}
    else:  # the previous sampling step, transcribed
        root, spec = open_cache(cache)
        frames = np.flatnonzero(done_mask(root))
        valid = {i: np.flatnonzero(read_label(root, spec, i).ravel() != 255) for i in frames}
        total = sum(v.size for v in valid.values())
        take = np.random.default_rng(0).choice(total, size=MAX_PIXELS, replace=False)
        out = {"n_pixels": int(take.size), "n_frames": len(frames), "labelled": int(total)}
    return out | {"peak_mb": _peak_mb() - base, "seconds": time.perf_counter() - t0}


def _run_worker(method: str, cache: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "analyze.bench.fit", method, str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"worker {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_fit_nll_memory(n_pixels: int, seed: int) -> tuple[str, dict, bool]:
    """Section ``fit_nll_memory`` of :mod:`analyze.bench.sections` (``n_pixels`` is not used)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_fit_"))
    try:
        runs = {}
        for n in (100, 500):
            cache = tmp / f"city_{n}.zarr"
            t0 = time.perf_counter()
            build_cache(cache, n, seed)
            build_s = time.perf_counter() - t0
            runs[f"fit_{n}"] = _run_worker("fit", cache) | {"build_s": build_s}
            if n == 100:
                runs["reference_100"] = _run_worker("reference", cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = runs["reference_100"]
    per_pixel = ref["peak_mb"] / ref["labelled"]
    ok = runs["fit_500"]["n_pixels"] == runs["fit_100"]["n_pixels"] == MAX_PIXELS
    lines = [
        f"## fit_nll_memory: `analyze temperature --fit nll`, --max-pixels {MAX_PIXELS:,}, 1024x2048 frames, "
        "ERFNet logits 20x512x1024 fp16",
        "",
        "| run | frames | peak memory growth (MB) | seconds |",
        "|---|---:|---:|---:|",
        f"| fit (bounded reservoir) | 100 | {runs['fit_100']['peak_mb']:.0f} | {runs['fit_100']['seconds']:.1f} |",
        f"| fit (bounded reservoir) | 500 | {runs['fit_500']['peak_mb']:.0f} | {runs['fit_500']['seconds']:.1f} |",
        f"| reference: every frame's labelled-pixel indices, then one draw | 100 | {ref['peak_mb']:.0f} | "
        f"{ref['seconds']:.1f} |",
        "",
        f"The reference holds {ref['labelled']:,} labelled pixels at 100 frames ({per_pixel * 1e6:.1f} bytes each), "
        f"so ~{per_pixel * ref['labelled'] * 5 / 1024:.1f} GB at 500 frames (not run). "
        f"Caches built in {runs['fit_100']['build_s']:.0f} s and {runs['fit_500']['build_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines), runs, ok


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1], sys.argv[2])))
