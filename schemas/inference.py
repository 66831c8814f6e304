"""Which semantic inference composes a query cache's outputs, and the geometry it implies (pure).

A query cache stores per-query class logits ``c`` (Q, K+1) and mask logits ``m`` (Q, h, w) of
each crop. Every inference below composes them the same way, ``s_k(x) = sum_q softmax(c_q)_k *
sigmoid(up(m_q)(x))`` for ``k < K``, then bilinearly resizes ``s`` to the frame; they differ only
in the size ``up`` upsamples the masks to and in how crops tile the frame. The geometry is one
:class:`schemas.windows.FrameWindows` per frame, so the analysis composes every inference with the
same code (:class:`analyze.compose.queries.FrameComposer`):

* ``eomt`` (caches without ``semantic_inference``): EoMT's windows, :func:`schemas.windows.frame_windows`.
* ``transformers``: Hugging Face ``Mask2FormerImageProcessor.post_process_semantic_segmentation``
  (``transformers/models/mask2former/image_processing_mask2former.py``): the mask logits are
  bilinearly resized (``align_corners=False``) to a fixed 384 x 384, whatever the input's size
  and aspect ratio, ``s`` is formed there and bilinearly resized to the frame. One crop, the
  frame resized to 384 x 384.
* ``detectron2``: Mask2Former's own semantic inference (``facebookresearch/Mask2Former``,
  ``mask2former/maskformer_model.py`` ``forward`` with ``sem_seg_postprocess_before_inference``
  False, the Cityscapes and ADE20K semantic configurations; ``detectron2/modeling/postprocessing.py``
  ``sem_seg_postprocess``): the masks are upsampled to the padded input size, ``s`` is formed
  there, cropped to the image's size before padding, and resized to the frame. One crop of the
  model input's size. The extractor runs one image (or images of one size) per forward, so the
  input is never padded beyond what the processor's resize gives, and the crop keeps it all.
"""

from __future__ import annotations

from schemas.windows import FrameWindows, Window

#: the inferences a cache may record besides EoMT's windows (attribute ``semantic_inference``)
SEMANTIC_INFERENCES = ("transformers", "detectron2")
#: the size transformers' post_process_semantic_segmentation resizes mask logits to, for all models
TRANSFORMERS_MASK_RESIZE = (384, 384)


def parse_inference(name: str) -> str:
    """``name`` when it is a recorded semantic inference (:data:`SEMANTIC_INFERENCES`), else ValueError."""
    if name not in SEMANTIC_INFERENCES:
        raise ValueError(f"semantic inference must be one of {', '.join(SEMANTIC_INFERENCES)}; got {name!r}")
    return name


def single_tile(original: tuple[int, int], tile: tuple[int, int]) -> FrameWindows:
    """One crop covering the whole resized frame of size ``tile``; ``s`` is resized from it to ``original``."""
    h, w = (int(v) for v in tile)
    if h <= 0 or w <= 0:
        raise ValueError(f"tile size must be positive, got {h}x{w}")
    return FrameWindows(original=(int(original[0]), int(original[1])), resized=(h, w), crop=min(h, w),
                        windows=(Window(0, max(h, w)),), tile_hw=(h, w))


def inference_windows(name: str, original: tuple[int, int], input_size: tuple[int, int]) -> FrameWindows:
    """The geometry of a frame of size ``original`` whose model input was ``input_size`` (H, W), under ``name``."""
    if parse_inference(name) == "transformers":
        return single_tile(original, TRANSFORMERS_MASK_RESIZE)
    return single_tile(original, input_size)
