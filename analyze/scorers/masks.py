"""The scorers of a mask model's query outputs: EAM, no-object and Mask2Anomaly.

Each needs, besides the class scores ``s``, per-query quantities carried by the masks:
``sum_q w_q sigmoid(m_q)`` (a *sum* channel) or ``max_q w_q sigmoid(m_q)`` (a *max*
channel), with per-query weights ``w_q`` taken from ``p_q = softmax(c_q / T)`` over the K + 1
classes (:class:`QueryChannel`). :class:`analyze.compose.queries.FrameComposer` computes them from the
same per-crop mask sigmoids as ``s``, for every temperature: a sum channel is one more row
of the class-score product, a max channel a reduction over the few queries with ``w_q > 0``.
They are then composed exactly like ``s`` (crop overlaps averaged, bilinear resize to the
label size), and :func:`score_tile` turns them into scores, in float64.

Where the official code composes differently (it has no sliding windows: Mask2Former runs on
the whole image): EAM and Mask2Anomaly resize the mask *logits* to the image size and take
the sigmoid there (``sem_seg_postprocess`` before ``sigmoid`` in Open-set-M2F; Mask2Anomaly
resizes its ``p_q sigmoid(m_q)`` channels); here the sigmoid is taken per crop at the crop
size and the composed result is resized, as the official EoMT semantic inference does for
``s``. Mask2Anomaly's max over its kept queries is taken per crop before the composition
(officially after the resize of every kept channel): identical where crops do not overlap
and the frame is not resized (1024x2048 frames), a bilinear interpolation of the max
instead of the max of interpolations elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from analyze.scorers.registry import Scorer


@dataclass(frozen=True)
class QueryChannel:
    """``sum_q w_q sigmoid(m_q)`` (``reduce='sum'``) or ``max_q w_q sigmoid(m_q)`` over the
    queries with ``w_q > 0`` (``reduce='max'``, 0 where none), ``w = weights(probs)`` with
    ``probs`` = ``softmax(c / T)`` (Q, K + 1) float32, last column = no-object."""

    key: str
    reduce: str
    weights: Callable[[np.ndarray], np.ndarray]


def peaks(weights: Sequence[np.ndarray]) -> list[tuple[np.ndarray, list[float], int | None]]:
    """Per max channel: the queries with ``w > 0``, their weights, and the index of an earlier
    channel with the same weights (computed once: Mask2Anomaly's gate equals its kept max)."""
    out = []
    for c, w in enumerate(weights):
        same = next((d for d in range(c) if np.array_equal(weights[d], w)), None)
        idx = np.flatnonzero(w > 0)
        out.append((idx, [float(v) for v in w[idx]], same))
    return out


def max_channel(tile: torch.Tensor, idx: np.ndarray, w: Sequence[float]) -> torch.Tensor | None:
    """``max_q w_q tile[q]`` over the queries ``idx`` (R, crop); None when there is none."""
    if not idx.size:
        return None
    acc = tile[int(idx[0])] * w[0]
    for q, wq in zip(idx[1:], w[1:]):
        torch.maximum(acc, tile[int(q)] * wq, out=acc)
    return acc


def _eam_weights(probs: np.ndarray) -> np.ndarray:
    return probs[:, :-1].max(1)  # per query, the top class probability without no-object


def _noobject_weights(probs: np.ndarray) -> np.ndarray:
    return probs[:, -1]


def _m2a_kept(probs: np.ndarray, conf: float, first: int, last: int) -> np.ndarray:
    """Mask2Anomaly's confident in-distribution "stuff" queries (``maskformer_model.py``,
    ``semantic_inference``): top class over K + 1 not no-object, its probability above
    ``conf`` (strictly), its class in ``[first, last]`` (trainIds 2..10 officially: building ..
    sky, road and sidewalk excluded). Weight = that probability, 0 for the other queries."""
    labels = probs.argmax(1)
    scores = probs.max(1)
    keep = (labels != probs.shape[1] - 1) & (scores > conf) & (labels >= first) & (labels <= last)
    return np.where(keep, scores, 0).astype(probs.dtype)


def _m2a_gate(conf: float, first: int, last: int) -> Callable[[np.ndarray], np.ndarray]:
    def weights(probs: np.ndarray) -> np.ndarray:
        w = _m2a_kept(probs, conf, first, last)
        return w if np.count_nonzero(w) > 1 else np.zeros_like(w)  # the official `shape[0] > 1`

    return weights


def channels_for(scorer: Scorer) -> tuple[QueryChannel, ...]:
    """The query channels ``scorer`` reads (none for scorers of ``x`` alone)."""
    base = scorer.uses or scorer.base
    if base == "eam":
        return (QueryChannel("eam", "sum", _eam_weights),)
    if base == "noobject":
        return (QueryChannel("noobject", "sum", _noobject_weights),)
    if base == "m2a":
        kw = scorer.kwargs
        own = scorer.name.replace(scorer.base, "m2a", 1)  # m2a_flip reads m2a's channels
        return (QueryChannel(f"{own}/kept", "max", lambda p: _m2a_kept(p, kw["conf"], kw["first"], kw["last"])),
                QueryChannel(f"{own}/gate", "max", _m2a_gate(kw["conf"], kw["first"], kw["last"])))
    return ()


def score_tile(scorer: Scorer, top: torch.Tensor | None, channels: Mapping[str, torch.Tensor],
               out: torch.Tensor) -> None:
    """One mask scorer on a tile, float64, from the composed channels (R, W) and ``top`` = max_k s_k.

    * eam (Open-set-M2F, ``ood_detection_evaluation.py``, ``DenseOODDetectionEvaluator.process``):
      ``1 - sum_q sigmoid(m_q) max_{k<K} p_q,k`` (the max per query before the sum).
    * noobject: ``sum_q p_q,K sigmoid(m_q)``, the no-object probability the masks carry.
    * m2a (Mask2Anomaly, ``anomaly_utils/anomaly_inference.py``): ``1 - max`` over the channels
      of ``sem_seg``, which are the K class scores *and* the kept queries' ``p_q sigmoid(m_q)``:
      the official ``predictions_naa[0:19,:,:]`` slices the batch axis of a (1, C, H, W)
      tensor, so its max runs over every channel; reproduced, as ``1 - max(max_k s_k, A)``
      with ``A`` the max channel of the kept queries. Where the kept queries' max ``B`` is at
      least 0.5 the score is 0, only when more than one query is kept (the official
      ``shape[0] > 1``; ``B`` is 0 otherwise). The official score is ``(1 - max) * mask``,
      which gives -0.0 where ``1 - max < 0``; here +0.0 (the same value for every metric).
    """
    base = scorer.uses or scorer.base
    (ch, *rest) = [channels[c.key] for c in channels_for(scorer)]
    if base == "eam":
        torch.sub(1.0, ch.to(out.dtype), out=out)
    elif base == "noobject":
        out.copy_(ch)
    elif base == "m2a":
        if top is None:  # pragma: no cover - score_tile computes top for every scorer of _TOP, m2a among them
            raise ValueError("m2a needs top = max_k s_k of the tile")
        torch.sub(1.0, torch.maximum(top, ch.to(out.dtype)), out=out)
        out.masked_fill_(rest[0] >= 0.5, 0.0)
    else:  # pragma: no cover - the registry and this module list the same mask scorers
        raise ValueError(f"{scorer.name} is not a mask scorer")


def score_chunk(scorer: Scorer, top: np.ndarray, channels: Mapping[str, np.ndarray], out: np.ndarray) -> None:
    """:func:`score_tile` on numpy arrays (the compiled CPU path, :mod:`analyze.scorers.compiled`):
    the same float64 operations, the same bits."""
    base = scorer.uses or scorer.base
    (ch, *rest) = [channels[c.key] for c in channels_for(scorer)]
    if base == "eam":
        np.subtract(1.0, ch, out=out, dtype=np.float64)
    elif base == "noobject":
        out[:] = ch
    elif base == "m2a":
        np.maximum(top, ch, out=out, dtype=np.float64)
        np.subtract(1.0, out, out=out)
        out[rest[0] >= 0.5] = 0.0
    else:  # pragma: no cover - the registry and this module list the same mask scorers
        raise ValueError(f"{scorer.name} is not a mask scorer")
