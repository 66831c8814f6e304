"""EoMT (Kerssies et al., CVPR 2025) on a timm DINOv2 ViT with registers, for inference.

Follows ``tue-mps/eomt``: the network is ``models/eomt.py`` + ``models/vit.py`` +
``models/scale_block.py``; windowed semantic inference follows
``training/lightning_module.py`` (``scale_img_size_semantic``, ``window_imgs_semantic``,
``revert_window_logits_semantic``, ``to_per_pixel_logits_semantic``) and
``training/mask_classification_semantic.py`` (``eval_step``).

Module names reproduce the official state_dict (``encoder.backbone.*``,
``encoder.pixel_mean``/``pixel_std``, ``q.weight``, ``class_head.*``,
``mask_head.{0,2,4}.*``, ``upscale.{i}.{conv1,conv2,norm}.*``, ``attn_mask_probs``); the
released Lightning checkpoint adds the ``network.`` prefix and ``criterion.empty_weight``.
Only the final-layer prediction is computed: inference runs with masked attention
disabled, so the intermediate per-block predictions that drive it are not needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from extract.models.checkpoint import (
    CheckpointError,
    check_state_dict,
    expect_kind,
    load_weights_only,
    unwrap_state_dict,
)
from extract.models.eomt_windows import predict_semantic, semantic_map, window_image  # noqa: F401  (the model's API)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# embed dim -> (timm DINOv2-with-registers variant, number of attention heads)
VIT_SIZES: dict[int, tuple[str, int]] = {
    384: ("vit_small_patch14_reg4_dinov2", 6),
    768: ("vit_base_patch14_reg4_dinov2", 12),
    1024: ("vit_large_patch14_reg4_dinov2", 16),
    1536: ("vit_giant_patch14_reg4_dinov2", 24),
}
# Every DINOv2 size has 64-dimensional attention heads (the table above); a state_dict
# does not show the head count (qkv is (3D, D) for any split), so it is D / 64.
HEAD_DIM = 64
# Other widths (e.g. the demo's toy model) use ViT-S/B/L's block recipe (GELU MLP with
# ratio 4, layer scale, registers) with width, depth and heads given explicitly.
CUSTOM_BACKBONE = "vit_small_patch14_reg4_dinov2"

_BACKBONE = "encoder.backbone."


@dataclass(frozen=True)
class EoMTConfig:
    """Everything needed to rebuild an EoMT network; inferred from a checkpoint.

    ``img_size`` is the square crop side (``grid * patch_size``); ``num_classes`` excludes
    the no-object class; ``num_blocks`` is the number of final ViT blocks that see the queries.
    """

    embed_dim: int
    depth: int
    num_heads: int
    num_register_tokens: int
    patch_size: int
    img_size: int
    num_q: int
    num_classes: int
    num_blocks: int

    @property
    def backbone(self) -> str:
        """The timm model the encoder is created from (width, depth and heads are passed
        to it explicitly, so sizes other than the released ones use ViT-S's recipe)."""
        return VIT_SIZES.get(self.embed_dim, (CUSTOM_BACKBONE,))[0]

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_upscale(self) -> int:
        return max(1, int(math.log2(self.patch_size)) - 2)

    @property
    def mask_size(self) -> int:
        """Side of the mask logits: the token grid upsampled 2x per ScaleBlock."""
        return self.grid * 2**self.num_upscale

    def to_dict(self) -> dict:
        return {**asdict(self), "backbone": self.backbone, "mask_size": self.mask_size}


# The two released configurations this tool is used with.
CITYSCAPES_LARGE_1024 = EoMTConfig(
    embed_dim=1024, depth=24, num_heads=16, num_register_tokens=4, patch_size=16,
    img_size=1024, num_q=100, num_classes=19, num_blocks=4,
)
COURSE_BASE_1024 = EoMTConfig(
    embed_dim=768, depth=12, num_heads=12, num_register_tokens=4, patch_size=16,
    img_size=1024, num_q=100, num_classes=19, num_blocks=3,
)


class ScaleBlock(nn.Module):
    """2x upsampling: ConvTranspose2d(2, s2) -> GELU -> depthwise 3x3 (no bias) -> LayerNorm2d.

    Follows ``models/scale_block.py``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))))  # (B, D, 2h, 2w)


class ViTEncoder(nn.Module):
    """timm DINOv2 ViT plus the ImageNet normalisation buffers (``models/vit.py``)."""

    def __init__(self, cfg: EoMTConfig, init_weights: bool = True):
        super().__init__()
        if cfg.num_heads < 1 or cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"embed dim {cfg.embed_dim} is not divisible into {cfg.num_heads} heads")
        self.backbone = timm.create_model(
            cfg.backbone,
            pretrained=False,
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            num_classes=0,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            reg_tokens=cfg.num_register_tokens,
            weight_init="" if init_weights else "skip",
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))


class EoMT(nn.Module):
    """Encoder-only Mask Transformer, final-layer prediction (``models/eomt.py``).

    ``forward(x)`` takes crops (B, 3, S, S) with values in [0, 1] (uint8 / 255, as the
    official Lightning wrapper feeds) and normalises them once with the ImageNet buffers.
    Returns ``(mask_logits (B, Q, S/4, S/4), class_logits (B, Q, K + 1))`` for patch 16.
    """

    def __init__(self, cfg: EoMTConfig, init_weights: bool = True):
        super().__init__()
        self.config = cfg
        dim = cfg.embed_dim
        self.encoder = ViTEncoder(cfg, init_weights)
        # Per-block masked-attention keep probabilities; unused at inference, kept for the keys.
        self.register_buffer("attn_mask_probs", torch.ones(cfg.num_blocks))
        self.q = nn.Embedding(cfg.num_q, dim)
        self.class_head = nn.Linear(dim, cfg.num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.upscale = nn.Sequential(*[ScaleBlock(dim) for _ in range(cfg.num_upscale)])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet normalisation of [0, 1] input, done once inside the model."""
        return (x - self.encoder.pixel_mean) / self.encoder.pixel_std

    def forward_normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on already-normalised input (B, 3, S, S)."""
        cfg = self.config
        vit = self.encoder.backbone
        x = vit.patch_embed(x)  # (B, N, D)
        x = vit._pos_embed(x)  # (B, P + N, D), P = cls + registers
        x = vit.norm_pre(x)
        first_query_block = len(vit.blocks) - cfg.num_blocks
        for i, block in enumerate(vit.blocks):
            if i == first_query_block:
                q = self.q.weight[None].expand(x.shape[0], -1, -1)  # (B, Q, D)
                x = torch.cat((q, x), dim=1)  # (B, Q + P + N, D)
            x = block(x)
        return self._predict(vit.norm(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_normalized(self.normalize(x))

    def _predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits of the queries and their masks over the upscaled patch tokens."""
        vit = self.encoder.backbone
        nq = self.config.num_q
        q = x[:, :nq]  # (B, Q, D)
        class_logits = self.class_head(q)  # (B, Q, K + 1)
        tokens = x[:, nq + vit.num_prefix_tokens :]  # (B, N, D)
        grid = vit.patch_embed.grid_size
        tokens = tokens.transpose(1, 2).reshape(x.shape[0], -1, *grid)  # (B, D, g, g)
        pixels = self.upscale(tokens)  # (B, D, 4g, 4g)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_head(q), pixels)  # (B, Q, 4g, 4g)
        return mask_logits, class_logits


def build_eomt(cfg: EoMTConfig, device: str | torch.device | None = None) -> EoMT:
    """A randomly initialised EoMT for ``cfg``.

    ``device='meta'`` gives shapes only; the ViT's weight initialisation is skipped there
    (it is slow on meta tensors and meaningless).
    """
    if device is None:
        return EoMT(cfg)
    device = torch.device(device)
    with device:
        return EoMT(cfg, init_weights=device.type != "meta")


def _strip_eomt(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Unwrap ``state_dict``, drop ``criterion.empty_weight``, remove the ``network.`` prefix."""
    sd = unwrap_state_dict(obj, source)
    sd = {k: v for k, v in sd.items() if k != "criterion.empty_weight"}
    if sd and all(k.startswith("network.") for k in sd):
        sd = {k[len("network."):]: v for k, v in sd.items()}
    return sd


def infer_eomt_config(state_dict: object, source: str = "checkpoint") -> EoMTConfig:
    """Read the architecture from key names and shapes of an EoMT state_dict.

    Accepts our keys or the released Lightning format. Width = rows of
    ``patch_embed.proj.weight``; heads = width / 64 (the DINOv2 head size at every
    released size; shapes do not show the head count); depth = number of ``blocks.N``
    (any width and depth load, e.g. the demo's toy model); registers from ``reg_token``; patch size from
    ``patch_embed.proj.weight``; crop = sqrt(len(pos_embed)) * patch (DINOv2 pos_embed
    holds patch positions only); queries from ``q.weight``; classes = class-head rows - 1;
    query blocks = len(``attn_mask_probs``).
    """
    sd = _strip_eomt(state_dict, source)
    needed = {
        "pos_embed": _BACKBONE + "pos_embed",
        "patch": _BACKBONE + "patch_embed.proj.weight",
        "q": "q.weight",
        "cls": "class_head.weight",
        "probs": "attn_mask_probs",
    }
    absent = sorted(v for v in needed.values() if v not in sd)
    if absent:
        raise CheckpointError(f"{source} is not an EoMT checkpoint: missing keys {absent}")
    embed_dim = int(sd[needed["patch"]].shape[0])
    if embed_dim % HEAD_DIM:
        raise CheckpointError(
            f"{source}: ViT width {embed_dim} is not a multiple of the DINOv2 head size {HEAD_DIM}"
        )
    patch = int(sd[needed["patch"]].shape[-1])
    n_pos = int(sd[needed["pos_embed"]].shape[1])
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise CheckpointError(f"{source}: pos_embed has {n_pos} positions, not a square grid")
    block_ids = {
        int(k[len(_BACKBONE + "blocks.") :].split(".")[0])
        for k in sd
        if k.startswith(_BACKBONE + "blocks.")
    }
    reg = sd.get(_BACKBONE + "reg_token")
    return EoMTConfig(
        embed_dim=embed_dim,
        depth=len(block_ids),
        num_heads=embed_dim // HEAD_DIM,
        num_register_tokens=0 if reg is None else int(reg.shape[1]),
        patch_size=patch,
        img_size=grid * patch,
        num_q=int(sd[needed["q"]].shape[0]),
        num_classes=int(sd[needed["cls"]].shape[0]) - 1,
        num_blocks=int(sd[needed["probs"]].shape[0]),
    )


def convert_eomt_checkpoint(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Our state_dict from a released EoMT checkpoint (pure function).

    Accepts an optional Lightning ``{'state_dict': ...}`` wrapper and the ``network.``
    prefix, drops ``criterion.empty_weight`` (a loss buffer), then checks every key and
    shape against the network rebuilt from :func:`infer_eomt_config`; differences raise
    :class:`CheckpointError` (``training/lightning_module.py::_load_ckpt`` does the same
    unwrapping but loads non-strictly).
    """
    raw = unwrap_state_dict(obj, source)
    expect_kind(raw, "eomt", source)
    sd = _strip_eomt(raw, source)
    cfg = infer_eomt_config(sd, source)
    expected = build_eomt(cfg, "meta").state_dict()
    check_state_dict(expected, sd, f"EoMT ({cfg.backbone})", source)
    return {k: sd[k] for k in expected}


def eomt_config_dict(cfg: EoMTConfig) -> dict:
    """The ``config`` dict handed to the extractor alongside the model."""
    return {
        "name": "eomt",
        "kind": "query",
        **cfg.to_dict(),
        "crop": cfg.img_size,
        "input_range": [0.0, 1.0],
        "normalization": "ImageNet mean/std inside the model",
        "resize": "PIL bilinear, short side to crop",
    }


def load_eomt(path: str | Path, device: str | torch.device = "cpu") -> tuple[EoMT, dict]:
    """Load a released-format EoMT checkpoint; returns (model in eval mode, config dict).

    The network is built on the meta device and takes the checkpoint tensors directly,
    so no time is spent on a random initialisation.
    """
    source = f"checkpoint {path}"
    sd = convert_eomt_checkpoint(load_weights_only(path), source)
    cfg = infer_eomt_config(sd, source)
    model = build_eomt(cfg, "meta")
    model.load_state_dict(sd, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"EoMT tensors not set by the checkpoint: {leftover}")
    return model.to(device).eval(), eomt_config_dict(cfg)


def official_eomt_checkpoint(model: EoMT, no_object_coefficient: float = 0.1) -> dict:
    """``model`` in the released Lightning format.

    Keys get the ``network.`` prefix; ``criterion.empty_weight`` (the loss's class weights,
    no-object last) is added as ``training/mask_classification_loss.py`` registers it.
    """
    sd = {"network." + k: v.detach().cpu() for k, v in model.state_dict().items()}
    empty_weight = torch.ones(model.config.num_classes + 1)
    empty_weight[-1] = no_object_coefficient
    sd["criterion.empty_weight"] = empty_weight
    return {"state_dict": sd}
