"""The HTML report's frame browser (``analyze report --html --cache``): per dataset, model and scorer, the frames sorted by their
AP (worst first), each with its image, ground truth and anomaly map.

The order comes from the per-frame table ``analyze score`` writes (``results_frames.parquet``,
each frame's AP at T = 1); the pictures from the cache the rows were scored on (matched by
its digest): the cache's thumbnail, the ground truth (:func:`analyze.maps.write.ground_truth_rgb`)
and the scorer's map (:func:`analyze.maps.write.frame_maps`, the map ``analyze score`` scored), scaled
to its 1st-99th percentile for display and coloured with :data:`analyze.maps.write.CMAP`, all at the
thumbnail's size and embedded as PNG data URIs. At most ``per_group`` frames per scorer.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from analyze.report.cells import at_t

PER_GROUP = 12


def png_bytes_uri(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a PNG ``data:`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def coloured(score: np.ndarray, valid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map as display RGB (uint8) at ``shape``: :func:`analyze.maps.write.display_range` scaling, CMAP."""
    from matplotlib import colormaps

    from analyze.maps.write import CMAP, _display, display_range

    lo, hi = display_range(score, valid)
    return (colormaps[CMAP](_display(score, lo, hi, shape))[..., :3] * 255).astype(np.uint8)


def _cache_groups(cache: str, frames_df: pd.DataFrame, per_group: int) -> list[tuple[str, str, list]]:
    """``[(group id, title, [(frame id, AP, image uri, truth uri, map uri)])]`` of one cache."""
    from analyze.compose.frame_scores import choose_scorers
    from analyze.maps.write import frame_maps, ground_truth_rgb
    from analyze.report.names import dataset_name, model_name, scorer_name, slug
    from schemas import cache as C

    root, spec = C.open_cache(cache, mode="r")
    rows = frames_df[frames_df["cache_digest"].astype(str) == C.cache_digest(spec)]
    target = "query" if spec.kind == "query" else "logits"
    chosen, stats = choose_scorers(cache, spec, "all", (1.0,), "query" if spec.kind == "query" else "pixel")
    chosen = [s for s in chosen if s.name in set(rows["scorer"].astype(str))]
    order = {}
    for s in chosen:
        r = at_t(rows[rows["scorer"].astype(str) == s.name], 1.0)
        r = r[r["temp_target"].astype(str).isin([target, "pixel"])].drop_duplicates("frame")
        order[s.name] = r.sort_values(["ap", "frame"], na_position="last").head(per_group)
    pos = {f: i for i, f in enumerate(spec.frame_ids)}
    shown = sorted({pos[f] for r in order.values() for f in r["frame"].astype(str) if f in pos})
    pictures = {}
    for i in shown:
        thumb = C.read_thumbnail(root, spec, i)
        label = C.read_label(root, spec, i)
        maps = frame_maps(root, spec, i, chosen, 1.0, "query", stats)
        shape = thumb.shape[:2]
        pictures[spec.frame_ids[i]] = (png_bytes_uri(thumb), png_bytes_uri(ground_truth_rgb(label, shape)),
                                       {n: png_bytes_uri(coloured(m, label != 255, shape)) for n, m in maps.items()})
    prov = spec.provenance
    out = []
    for s in chosen:
        items = [(str(f), float(ap), *pictures[str(f)][:2], pictures[str(f)][2][s.name])
                 for f, ap in zip(order[s.name]["frame"], order[s.name]["ap"]) if str(f) in pictures]
        gid = f"fb-{slug(prov.dataset)}-{slug(prov.model)}-{slug(C.cache_digest(spec))}-{slug(s.name)}"
        out.append((gid, f"{dataset_name(prov.dataset)} · {model_name(prov.model)} · {scorer_name(s.name)}", items))
    return out


def browser_html(caches: Sequence[str | os.PathLike], frames_df: pd.DataFrame | None, protocol: str, frames: str,
                 per_group: int = PER_GROUP) -> str:
    """The frame browser's HTML (a group picker and one block per group), or a line saying why
    there is none (no cache given, no per-frame table)."""
    if not caches:
        return "<p>No frame browser: give the caches (<code>analyze report --html --cache ...</code>).</p>"
    if frames_df is None or frames_df.empty:
        return "<p>No frame browser: no per-frame table (<code>results_frames.parquet</code>) beside the results.</p>"
    sel = frames_df[(frames_df["protocol"].astype(str) == protocol) & (frames_df["frames"].astype(str) == frames)]
    groups = [g for c in caches for g in _cache_groups(str(c), sel, per_group)]
    if not groups:
        return "<p>No frame browser: no per-frame rows of the given caches at T = 1.</p>"
    options = "".join(f'<option value="{g}">{html.escape(t)}</option>' for g, t, _ in groups)
    blocks = []
    for gid, title, items in groups:
        rows = "".join(
            f'<div class="frame"><div class="meta">#{k + 1} <b>{html.escape(f)}</b><br>AP {100 * ap:.2f} %</div>'
            f'<img src="{img}" alt="image {html.escape(f)}"><img src="{gt}" alt="ground truth {html.escape(f)}">'
            f'<img src="{m}" alt="map {html.escape(f)}"></div>' for k, (f, ap, img, gt, m) in enumerate(items))
        blocks.append(f'<div class="group" id="{gid}"><h3>{html.escape(title)}</h3>{rows}</div>')
    return ('<p class="caption">Frames by AP at T = 1, worst first (at most '
            f"{per_group} per scorer): image, ground truth (anomaly white, void grey), map (brighter = more "
            "anomalous, scaled to its 1st-99th percentile for display).</p>"
            f'<label>Dataset, model, scorer: <select id="frame-group">{options}</select></label>'
            f'<div class="browser">{"".join(blocks)}</div>')


def frame_browser(caches: Sequence[str | os.PathLike], per_group: int = PER_GROUP
                  ) -> Callable[[pd.DataFrame | None, str, str], str]:
    """The ``frame_browser`` argument of :func:`analyze.report.write_report` for ``caches``."""
    return lambda frames_df, protocol, frames: browser_html(caches, frames_df, protocol, frames, per_group)
