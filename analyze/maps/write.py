"""Per-frame anomaly maps from a cache: ``.npy`` at full resolution and image/map panels (PNG).

The panels are the seed paper's Figures 3-4: the input image next to one anomaly map per
scorer (brighter = more anomalous) and the ground truth (anomaly white, void grey,
in-distribution black). Each map is scaled to its own 1st-99th percentile **for display
only** (the scorers' ranges differ by orders of magnitude); the ``.npy`` files keep the raw
float64 scores exactly as :func:`analyze.compose.frame_scores.iter_frame_scores` computes them for
``analyze score``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from analyze.compose.frame_scores import Scoring, choose_scorers, frame_inputs, iter_frame_scores
from analyze.report.names import dataset_name, model_name, scorer_name, slug
from schemas import cache as C
from schemas import integrity

DEFAULT_N_FRAMES = 4
DISPLAY_LONG_SIDE = 512
CMAP = "inferno"
CAPTION = ("Each map is scaled to its own 1st-99th percentile for display only (brighter = more anomalous); "
           "raw scores are in the .npy files. Ground truth: anomaly white, void grey, in-distribution black.")


def _slug(s: str) -> str:
    return slug(s, empty="frame")


def _t_tag(t: float) -> str:
    return f"T{float(t):g}"


def map_filename(frame: str, scorer: str, temperature: float) -> str:
    """``<frame>_<scorer>_T<T>.npy`` (frame id and scorer spec with path separators and odd characters as ``_``)."""
    return f"{_slug(frame)}_{slug(scorer)}_{_t_tag(temperature)}.npy"


def display_range(score: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """1st and 99th percentile of the finite scores (of the ``valid`` pixels when given)."""
    v = score[valid] if valid is not None and valid.any() else score.ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [1, 99])
    return float(lo), float(hi)


def _display(score: np.ndarray, lo: float, hi: float, shape: tuple[int, int]) -> np.ndarray:
    """Scaled to [0, 1] by (lo, hi), then resized (bilinear) to ``shape`` for drawing."""
    from PIL import Image

    x = (score.astype(np.float32) - lo) / (hi - lo) if hi > lo else np.zeros_like(score, np.float32)
    x = np.clip(np.nan_to_num(x, nan=0.0), 0, 1).astype(np.float32)
    if x.shape != shape:
        x = np.asarray(Image.fromarray(x, mode="F").resize((shape[1], shape[0]), Image.BILINEAR))
    return x


def _display_shape(h: int, w: int) -> tuple[int, int]:
    s = min(1.0, DISPLAY_LONG_SIDE / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def ground_truth_rgb(label: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Label -> RGB uint8: anomaly (1) white, void (255) grey, everything else black."""
    from PIL import Image

    rgb = np.zeros((*label.shape, 3), np.uint8)
    rgb[label == 255] = 128
    rgb[label == 1] = 255
    if shape is not None and shape != label.shape:
        rgb = np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.NEAREST))
    return rgb


def _frame_indices(spec: C.CacheSpec, done: np.ndarray, frames: Sequence[str] | None, where: str) -> list[int]:
    if frames is None:
        idx = [int(i) for i in np.flatnonzero(done)[:DEFAULT_N_FRAMES]]
        if not idx:
            raise C.CacheError(f"{where}: no frame is done")
        return idx
    pos = {f: i for i, f in enumerate(spec.frame_ids)}
    unknown = [f for f in frames if f not in pos]
    if unknown:
        raise C.CacheError(f"{where}: frame(s) {', '.join(unknown)} not in the cache "
                           f"(e.g. {', '.join(spec.frame_ids[:3])})")
    idx = [pos[f] for f in dict.fromkeys(frames)]
    undone = [spec.frame_ids[i] for i in idx if not done[i]]
    if undone:
        raise C.CacheError(f"{where}: frame(s) {', '.join(undone)} are not done; finish `extract run` first")
    return idx


def frame_maps(root, spec: C.CacheSpec, i: int, scorers: Sequence, temperature: float,
               temp_target: str = "query", stats=None) -> dict[str, np.ndarray]:
    """Anomaly maps of frame ``i``: scorer name -> float64 (H, W) at the original resolution.

    The scores :func:`analyze.compose.frame_scores.iter_frame_scores` gives ``analyze score`` (higher = more
    anomalous, no rescaling), at one temperature; ``temp_target`` as there (EoMT only).
    The one map computation behind ``analyze maps`` and ``analyze export``. ``stats``:
    ``{T: ClassStats}`` for KL matching and SML (:func:`analyze.compose.frame_scores.choose_scorers`).
    """
    flip = any(s.needs_flip for s in scorers)
    (ts,) = iter_frame_scores(frame_inputs(root, spec, i, flip=flip),
                              Scoring(scorers, (float(temperature),), temp_target, stats))
    return {s.name: np.asarray(ts.scores[s.name]) for s in scorers}


def _cache_maps(cache_path, scorers: str, t: float, frames: list[str] | None, out: Path, temp_target: str,
                storage_options, id_stats=(), info=lambda m: None) -> tuple[C.CacheSpec, list, list[Path]]:
    """One cache's ``.npy`` maps and per-frame panels in ``out``; returns its panel rows."""
    root, spec = C.open_cache(cache_path, storage_options=storage_options)
    where = str(cache_path)
    chosen, stats = choose_scorers(where, spec, scorers, (t,), temp_target, id_stats, info, info)
    idx = _frame_indices(spec, C.done_mask(root, where), frames, where)
    problems = integrity.check_frames(root, spec, idx)
    if problems:
        raise C.CacheError(f"{where}: {integrity.describe(problems)}; the cache lost data")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = []  # per frame: (id, thumbnail, gt_rgb, [(scorer, display map, lo, hi)])
    for i in idx:
        fid = spec.frame_ids[i]
        try:
            label = C.read_label(root, spec, i)
            scores = frame_maps(root, spec, i, chosen, t, temp_target, stats)
        except C.CacheError as exc:  # a chunk that does not decode: name the cache too
            raise C.CacheError(f"{where}: {exc}") from None
        shape = _display_shape(*label.shape)
        valid = label != 255
        maps = []
        for s in chosen:
            score = scores[s.name]  # (H, W) float64
            p = out / map_filename(fid, s.name, t)
            np.save(p, score)
            written.append(p)
            lo, hi = display_range(score, valid)
            maps.append((s.name, _display(score, lo, hi, shape), lo, hi))
        rows.append((fid, C.read_thumbnail(root, spec, i), ground_truth_rgb(label, shape), maps))
    title = _title([spec], t, temp_target)
    for row in rows:
        written.append(_panel([row], out / f"{_slug(row[0])}_{_t_tag(t)}.png", f"{title}, frame {row[0]}",
                              scorer_name, ranges=True))
    return spec, rows, written


def _title(specs: Sequence[C.CacheSpec], t: float, temp_target: str) -> str:
    models = ", ".join(model_name(s.provenance.model) for s in specs)
    title = f"{models} on {dataset_name(specs[0].provenance.dataset)}, T = {t:g}"
    if any(s.kind == "query" for s in specs):
        title += f" (T on the {'query class logits' if temp_target == 'query' else 'per-pixel class scores'})"
    return title


def write_maps(cache_path: str | os.PathLike | Sequence[str | os.PathLike], scorers: str, temperature: float,
               frames: list[str] | None, out_dir: str | os.PathLike, temp_target: str = "query", *,
               storage_options=None, id_stats=(), info=lambda m: None) -> list[Path]:
    """Anomaly maps of ``frames`` (default: the first 4 done frames) for each of ``scorers``.

    Writes into ``out_dir``: ``<frame>_<scorer>_T<T>.npy`` (float64, original resolution, the
    scores ``analyze score`` uses), ``<frame>_T<T>.png`` (image | ground truth | one map per
    scorer) and ``panel.png`` (one row per frame, same columns).
    ``scorers`` is ``'all'`` or a comma list (as ``analyze score``); ``temp_target`` as there
    (EoMT only); ``id_stats``: :class:`analyze.scorers.id_stats.IdStats` files for KL matching and SML,
    each cache using the one fit on its checkpoint (``all`` leaves them out without one, and
    says so to ``info``). Several caches of one dataset (e.g. ERFNet and EoMT) put each cache's
    ``.npy`` files and frame panels in ``out_dir/<model>/`` and one ``panel.png`` in
    ``out_dir`` with a row per frame and model (frames chosen in the first cache; a
    scorer a model lacks, e.g. RbA for ERFNet, is an empty cell). Returns the written paths.
    """
    paths = [cache_path] if isinstance(cache_path, (str, os.PathLike)) else list(cache_path)
    out = Path(out_dir)
    t = float(temperature)
    if len(paths) == 1:
        spec, rows, written = _cache_maps(paths[0], scorers, t, frames, out, temp_target, storage_options,
                                          id_stats, info)
        written.append(_panel(rows, out / "panel.png", _title([spec], t, temp_target), scorer_name, ranges=False))
        return written
    specs, per_cache, written = [], [], []
    for path in paths:
        _, spec = C.open_cache(path, storage_options=storage_options)
        if specs and spec.provenance.dataset != specs[0].provenance.dataset:
            raise ValueError(f"{path}: dataset {spec.provenance.dataset}, but {paths[0]} holds "
                             f"{specs[0].provenance.dataset}; one panel shows one dataset")
        if spec.provenance.model in [s.provenance.model for s in specs]:
            raise ValueError(f"{path}: a second {spec.provenance.model} cache; give one cache per model")
        if frames is None and specs:  # the first cache's default frames, in every cache
            frames = [r[0] for r in per_cache[0][1]]
        spec, rows, w = _cache_maps(path, scorers, t, frames, out / _slug(spec.provenance.model), temp_target,
                                    storage_options, id_stats, info)
        specs.append(spec)
        per_cache.append((spec, rows))
        written += w
    columns = list(dict.fromkeys(m[0] for _, rows in per_cache for r in rows for m in r[3]))
    panel_rows = []
    for j in range(len(per_cache[0][1])):
        for spec, rows in per_cache:
            fid, thumb, gt, maps = rows[j]
            by_name = {m[0]: m for m in maps}
            panel_rows.append((f"{model_name(spec.provenance.model)}\n{fid}", thumb, gt,
                               [by_name.get(c, (c, None, 0.0, 0.0)) for c in columns]))
    written.append(_panel(panel_rows, out / "panel.png", _title(specs, t, temp_target), scorer_name, ranges=False))
    return written


def _panel(rows: list, path: Path, title: str, scorer_name, ranges: bool) -> Path:
    """One figure row per frame: image, ground truth, the scorers' maps; a shared colour bar."""
    from matplotlib import cm, colors
    from matplotlib.figure import Figure

    n_cols = 2 + len(rows[0][3])
    h, w = rows[0][2].shape[:2]
    cell_w = 2.6
    cell_h = cell_w * h / w + (0.45 if ranges else 0.2)
    fig = Figure(figsize=(cell_w * n_cols + 0.9, cell_h * len(rows) + 0.7), dpi=120, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), n_cols, squeeze=False))
    for r, (fid, thumb, gt, maps) in enumerate(rows):
        ax = axes[r]
        ax[0].imshow(thumb, aspect="equal")
        ax[1].imshow(gt, aspect="equal", interpolation="nearest")
        for c, (name, disp, lo, hi) in enumerate(maps):
            head = scorer_name(name)
            if disp is None:  # a scorer this row's model does not have
                ax[2 + c].axis("off")
                if ranges or r == 0:
                    ax[2 + c].set_title(head, fontsize=9)
                continue
            ax[2 + c].imshow(disp, cmap=CMAP, vmin=0, vmax=1, aspect="equal", interpolation="nearest")
            if ranges:
                head += f"\n1-99th pct: [{lo:.3g}, {hi:.3g}]"
            if ranges or r == 0:
                ax[2 + c].set_title(head, fontsize=9)
        if ranges or r == 0:
            ax[0].set_title("image", fontsize=9)
            ax[1].set_title("ground truth", fontsize=9)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        if len(rows) > 1:
            ax[0].set_ylabel(fid, fontsize=8)
    sm = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=CMAP)
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.8, fraction=0.04, pad=0.01, panchor=False)
    cb.set_ticks([0, 1], labels=["1st pct", "99th pct"])
    cb.set_label("anomaly score (display scale)", fontsize=8)
    cb.ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.supxlabel(CAPTION, fontsize=7, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
