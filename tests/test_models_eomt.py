"""EoMT network, checkpoint converter, config inference, windowing and semantic composition."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extract.models import (
    MODELS,
    CheckpointError,
    detect_checkpoint_kind,
    get_model_spec,
    load_model,
    read_checkpoint_kind,
    save_official_checkpoint,
)
from extract.models.eomt import (
    CITYSCAPES_LARGE_1024,
    COURSE_BASE_1024,
    HEAD_DIM,
    VIT_SIZES,
    EoMT,
    EoMTConfig,
    build_eomt,
    convert_eomt_checkpoint,
    infer_eomt_config,
    load_eomt,
    predict_semantic,
    semantic_map,
    window_image,
)
from extract.models.erfnet import ERFNet
from schemas.windows import frame_windows
from tests.oracles import compose_frame

DATA = Path(__file__).parent / "data"

TINY = EoMTConfig(
    embed_dim=384, depth=4, num_heads=6, num_register_tokens=4, patch_size=16,
    img_size=64, num_q=8, num_classes=5, num_blocks=2,
)


def read_inventory(name: str) -> dict[str, tuple[int, ...]]:
    """``key shape`` lines (``#`` comments skipped) -> {key: shape}."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def random_eomt(cfg: EoMTConfig = TINY, seed: int = 0) -> EoMT:
    """EoMT with perturbed weights; layer scales raised from 1e-5 so every block matters."""
    torch.manual_seed(seed)
    model = build_eomt(cfg)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "pixel_" in name or "attn_mask_probs" in name:
                continue
            if name.endswith("gamma"):
                t.copy_(0.3 + 0.2 * torch.rand_like(t))
            elif t.dtype.is_floating_point:
                t.add_(0.05 * torch.randn_like(t))
    return model.eval()


def official_meta_checkpoint(cfg: EoMTConfig) -> dict:
    """Released-format checkpoint of a meta-device model (shapes only, no memory)."""
    sd = {"network." + k: v for k, v in build_eomt(cfg, "meta").state_dict().items()}
    sd["criterion.empty_weight"] = torch.ones(cfg.num_classes + 1)
    return {"state_dict": sd}


@pytest.fixture(scope="module")
def tiny() -> EoMT:
    return random_eomt()


@pytest.fixture(scope="module")
def tiny_ckpt(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eomt") / "eomt_tiny.ckpt"
    return save_official_checkpoint(tiny, path, "eomt")


# ----------------------------------------------------------------------------- keys, config


def test_eomt_large_key_inventory_matches_official():
    sd = build_eomt(CITYSCAPES_LARGE_1024, "meta").state_dict()
    ours = {"network." + k: tuple(v.shape) for k, v in sd.items()}
    assert ours == read_inventory("eomt_large_1024_official_keys.txt")


@pytest.mark.parametrize(
    "cfg",
    [
        CITYSCAPES_LARGE_1024,
        COURSE_BASE_1024,
        TINY,
        EoMTConfig(384, 12, 6, 4, 16, 640, 200, 133, 4),
        EoMTConfig(768, 12, 12, 4, 16, 512, 100, 150, 4),
        EoMTConfig(1024, 24, 16, 4, 16, 512, 100, 19, 3),
        EoMTConfig(1536, 40, 24, 4, 16, 640, 200, 133, 4),
    ],
    ids=["L-1024-4blk", "B-1024-3blk", "S-tiny", "S-640", "B-512-4blk", "L-512-3blk", "g-640"],
)
def test_infer_config_from_checkpoint(cfg):
    ckpt = official_meta_checkpoint(cfg)
    assert infer_eomt_config(ckpt) == cfg
    assert detect_checkpoint_kind(ckpt) == "eomt"
    converted = convert_eomt_checkpoint(ckpt)
    assert "criterion.empty_weight" not in converted
    assert all(not k.startswith("network.") for k in converted)
    assert infer_eomt_config(converted) == cfg


@pytest.mark.parametrize(
    "cfg",
    [
        EoMTConfig(128, 6, 2, 4, 16, 128, 16, 19, 2),  # the demo's toy size
        EoMTConfig(192, 3, 3, 0, 16, 64, 5, 7, 1),  # no registers
        EoMTConfig(640, 7, 10, 4, 8, 96, 12, 19, 3),  # patch 8: one upscale block
    ],
    ids=["w128-d6", "w192-d3-noreg", "w640-d7-p8"],
)
def test_other_sizes_are_read_from_the_checkpoint(cfg, tmp_path):
    """Width, depth and heads come from the checkpoint, not from a table of released sizes."""
    assert infer_eomt_config(official_meta_checkpoint(cfg)) == cfg
    model = random_eomt(cfg)
    vit = model.encoder.backbone
    assert (vit.embed_dim, len(vit.blocks), vit.blocks[0].attn.num_heads) == (cfg.embed_dim, cfg.depth, cfg.num_heads)
    path = save_official_checkpoint(model, tmp_path / "small.ckpt", "eomt")
    loaded, out_cfg = load_model("eomt", path)
    assert loaded.config == cfg and out_cfg["num_heads"] == cfg.num_heads and out_cfg["depth"] == cfg.depth
    x = torch.rand(1, 3, cfg.img_size, cfg.img_size)
    with torch.inference_mode():
        a, b = loaded(x), model(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_released_sizes_have_64_dimensional_heads():
    """The rule the loader uses for the head count holds for every DINOv2 size."""
    for dim, (_, heads) in VIT_SIZES.items():
        assert dim // HEAD_DIM == heads and dim % HEAD_DIM == 0


def test_head_count_shows_in_the_outputs_only():
    """Two head splits of one width have identical key shapes but compute different
    functions: the head count must be right, it cannot be checked from shapes."""
    two, four = EoMTConfig(128, 2, 2, 4, 16, 32, 3, 2, 1), EoMTConfig(128, 2, 4, 4, 16, 32, 3, 2, 1)
    a, b = random_eomt(two), build_eomt(four).eval()
    sd_a = a.state_dict()
    assert {k: v.shape for k, v in sd_a.items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(sd_a)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert (a(x)[0] - b(x)[0]).abs().max() > 1e-4


def test_width_not_a_multiple_of_the_head_size_is_refused():
    ckpt = official_meta_checkpoint(EoMTConfig(96, 2, 2, 4, 16, 32, 3, 2, 1))
    with pytest.raises(CheckpointError, match="ViT width 96 is not a multiple of the DINOv2 head size 64"):
        infer_eomt_config(ckpt)


def test_named_configs_match_official_settings():
    assert CITYSCAPES_LARGE_1024.backbone == "vit_large_patch14_reg4_dinov2"
    assert (CITYSCAPES_LARGE_1024.num_q, CITYSCAPES_LARGE_1024.num_blocks) == (100, 4)
    assert CITYSCAPES_LARGE_1024.mask_size == 256  # 4x the 64x64 token grid
    assert CITYSCAPES_LARGE_1024.num_upscale == 2
    assert COURSE_BASE_1024.backbone == "vit_base_patch14_reg4_dinov2"
    assert COURSE_BASE_1024.num_blocks == 3


# ----------------------------------------------------------------------------- forward


def test_forward_shapes_dtypes_and_determinism(tiny):
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        m1, c1 = tiny(x)
        m2, c2 = tiny(x)
    assert m1.shape == (3, TINY.num_q, 16, 16) and m1.dtype == torch.float32
    assert c1.shape == (3, TINY.num_q, TINY.num_classes + 1) and c1.dtype == torch.float32
    assert torch.equal(m1, m2) and torch.equal(c1, c2)
    assert torch.isfinite(m1).all() and float(m1.std()) > 0.1


def test_input_is_normalised_exactly_once(tiny):
    mean = tiny.encoder.pixel_mean.expand(2, 3, 64, 64)  # the ImageNet mean, in [0, 1]
    with torch.inference_mode():
        m_mean, c_mean = tiny(mean)
        m_zero, c_zero = tiny.forward_normalized(torch.zeros(2, 3, 64, 64))
        x = torch.rand(2, 3, 64, 64)
        m_x, _ = tiny(x)
        m_pre, _ = tiny.forward_normalized((x - tiny.encoder.pixel_mean) / tiny.encoder.pixel_std)
        m_twice, _ = tiny((x - tiny.encoder.pixel_mean) / tiny.encoder.pixel_std)
    torch.testing.assert_close(m_mean, m_zero, rtol=0, atol=1e-5)
    torch.testing.assert_close(c_mean, c_zero, rtol=0, atol=1e-5)
    torch.testing.assert_close(m_x, m_pre, rtol=0, atol=1e-5)
    assert (m_twice - m_x).abs().max() > 1e-2  # feeding normalised input is a different model


# ----------------------------------------------------------------------------- checkpoints


def test_official_checkpoint_round_trip(tiny, tiny_ckpt):
    raw = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict"}
    keys = set(raw["state_dict"])
    assert "criterion.empty_weight" in keys
    assert all(k.startswith("network.") for k in keys - {"criterion.empty_weight"})
    assert raw["state_dict"]["criterion.empty_weight"][-1] == pytest.approx(0.1)
    assert read_checkpoint_kind(tiny_ckpt) == "eomt"

    model, cfg = load_model("eomt", tiny_ckpt)
    assert isinstance(model, EoMT) and not model.training
    assert model.config == TINY
    assert cfg["kind"] == "query" and cfg["crop"] == 64 and cfg["num_classes"] == 5
    assert cfg["backbone"] == "vit_small_patch14_reg4_dinov2"
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        a, b = model(x), tiny(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_plain_state_dict_without_wrapper_is_accepted(tiny):
    plain = {"network." + k: v for k, v in tiny.state_dict().items()}
    assert convert_eomt_checkpoint(plain).keys() == tiny.state_dict().keys()
    assert convert_eomt_checkpoint(tiny.state_dict()).keys() == tiny.state_dict().keys()


def test_mismatched_checkpoints_list_the_keys():
    ckpt = official_meta_checkpoint(CITYSCAPES_LARGE_1024)
    sd = ckpt["state_dict"]
    del sd["network.upscale.1.conv2.weight"]
    sd["network.extra.weight"] = torch.zeros(2)
    sd["network.mask_head.2.weight"] = torch.zeros(1024, 512, device="meta")
    with pytest.raises(CheckpointError) as err:
        convert_eomt_checkpoint(ckpt)
    msg = str(err.value)
    assert "not a valid EoMT (vit_large_patch14_reg4_dinov2) checkpoint" in msg
    assert "missing keys (1): upscale.1.conv2.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "mask_head.2.weight: checkpoint (1024, 512) vs model (1024, 1024)" in msg


def test_foreign_checkpoint_is_refused():
    foreign = {"state_dict": {"model.fc.weight": torch.zeros(2, 2)}}
    with pytest.raises(CheckpointError, match="not an EoMT checkpoint: missing keys"):
        convert_eomt_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="neither an ERFNet nor an EoMT"):
        detect_checkpoint_kind(foreign)


def test_erfnet_checkpoint_is_refused_by_name(tmp_path):
    path = save_official_checkpoint(ERFNet(), tmp_path / "erfnet_pretrained.pth", "erfnet")
    expected = r"erfnet_pretrained\.pth is an ERFNet checkpoint, not EoMT"
    with pytest.raises(CheckpointError, match=expected):
        load_model("eomt", path)


def test_truncated_file_gives_one_line_error(tiny_ckpt, tmp_path):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(tiny_ckpt.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        load_eomt(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


class _Payload:
    """Pickles to a call that would create a directory when unpickled without weights_only."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (str(self.target),))


def test_pickle_with_code_is_not_executed(tmp_path):
    target = tmp_path / "created_by_pickle"
    path = tmp_path / "evil.ckpt"
    obj = {"state_dict": {"network.q.weight": torch.zeros(2, 2)}, "hook": _Payload(target)}
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a weights-only file") as err:
        load_model("eomt", path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()


def test_registry():
    kinds = {name: spec.kind for name, spec in MODELS.items()}
    assert kinds == {"erfnet": "pixel", "eomt": "query", "mask2former": "query"}
    assert get_model_spec("eomt").loader is load_eomt
    with pytest.raises(KeyError, match="unknown model 'maskformer'; valid names: eomt, erfnet, mask2former, or python:"):
        load_model("maskformer", "x.ckpt")


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    "size, resized, windows, portrait",
    [
        ((1024, 2048), (1024, 2048), [(0, 1024), (1024, 2048)], False),
        ((720, 1280), (1024, 1820), [(0, 1024), (796, 1820)], False),
        ((1080, 1920), (1024, 1820), [(0, 1024), (796, 1820)], False),
        ((1920, 1080), (1820, 1024), [(0, 1024), (796, 1820)], True),
        ((1024, 1024), (1024, 1024), [(0, 1024)], False),
    ],
)
def test_window_geometry(size, resized, windows, portrait):
    geom = frame_windows(*size, 1024)
    assert geom.original == size and geom.resized == resized and geom.portrait == portrait
    assert [(w.start, w.end) for w in geom.windows] == windows


def test_720p_windows_overlap_by_228_pixels():
    geom = frame_windows(720, 1280, 1024)
    first, second = geom.windows
    assert first.end - second.start == 228


@pytest.mark.parametrize("size", [(720, 1280), (1080, 1920)])
def test_window_image_cuts_the_pil_resized_frame(size):
    img = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    crops, geom = window_image(img, 1024)
    assert crops.shape == (2, 3, 1024, 1024) and crops.dtype == torch.uint8
    ref = np.asarray(Image.fromarray(img).resize((1820, 1024), Image.BILINEAR))
    ref = torch.from_numpy(ref.copy()).permute(2, 0, 1)
    assert torch.equal(crops[0], ref[:, :, 0:1024])
    assert torch.equal(crops[1], ref[:, :, 796:1820])
    assert torch.equal(crops[0][:, :, 796:], crops[1][:, :, :228])


def test_window_image_portrait_crops_along_height():
    img = np.random.default_rng(1).integers(0, 256, (100, 60, 3), dtype=np.uint8)
    crops, geom = window_image(img, 64)
    assert geom.portrait and geom.resized == (107, 64)
    assert [(w.start, w.end) for w in geom.windows] == [(0, 64), (43, 107)]
    ref = np.asarray(Image.fromarray(img).resize((64, 107), Image.BILINEAR))
    ref = torch.from_numpy(ref.copy()).permute(2, 0, 1)
    assert torch.equal(crops[1], ref[:, 43:107, :])


# ----------------------------------------------------------------------------- composition


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bilinear resampling with half-pixel centres, edge clamp."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(w, (np.arange(n_out), i1), lam)
    return w


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) as separable matrix products."""
    rows, cols = _bilinear_matrix(x.shape[1], h), _bilinear_matrix(x.shape[2], w)
    return np.einsum("oh,chw,pw->cop", rows, x, cols)


def oracle_semantic_map(masks, classes, original, resized, windows, portrait, crop):
    """Independent float64 numpy version of the official semantic composition."""
    masks, classes = masks.astype(np.float64), classes.astype(np.float64)
    k = classes.shape[-1] - 1
    sums = np.zeros((k, *resized))
    counts = np.zeros(resized)
    for j, (start, end) in enumerate(windows):
        up = _resize(masks[j], crop, crop)  # (Q, S, S)
        e = np.exp(classes[j] - classes[j].max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True))[:, :k]  # (Q, K)
        per_pixel = np.einsum("qhw,qk->khw", 1.0 / (1.0 + np.exp(-up)), probs)
        sl = np.s_[start:end, :] if portrait else np.s_[:, start:end]
        sums[(slice(None), *sl)] += per_pixel
        counts[sl] += 1
    return _resize(sums / counts, *original)


@pytest.mark.parametrize(
    "original, resized, windows, portrait",
    [
        ((45, 80), (64, 114), [(0, 64), (50, 114)], False),
        ((100, 60), (107, 64), [(0, 64), (43, 107)], True),
        ((30, 100), (64, 213), [(0, 64), (49, 113), (99, 163), (149, 213)], False),
    ],
)
def test_semantic_map_matches_numpy_oracle(original, resized, windows, portrait):
    geom = frame_windows(*original, 64)
    assert geom.resized == resized and [(w.start, w.end) for w in geom.windows] == windows
    g = torch.Generator().manual_seed(0)
    n = len(windows)
    masks = 4 * torch.randn(n, 7, 16, 16, generator=g)
    classes = 3 * torch.randn(n, 7, 6, generator=g)
    got = semantic_map(masks, classes, geom)
    assert got.shape == (5, *original) and got.dtype == torch.float32
    ref = oracle_semantic_map(
        masks.numpy(), classes.numpy(), original, resized, windows, portrait, 64
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("size", [(45, 80), (100, 60), (30, 100), (64, 128)])
def test_semantic_map_equals_the_composition_oracle(size):
    """The model's own semantic inference and analyze's composition are held to one oracle
    (tests/oracles.py, the untiled composition), so they cannot drift apart."""
    geom = frame_windows(*size, 64)
    g = torch.Generator().manual_seed(1)
    masks = 4 * torch.randn(geom.n_crops, 7, 16, 16, generator=g)
    classes = 3 * torch.randn(geom.n_crops, 7, 6, generator=g)
    want = compose_frame(masks.numpy(), classes.numpy(), geom)
    torch.testing.assert_close(semantic_map(masks, classes, geom), want, rtol=0, atol=1e-6)


def test_semantic_map_rejects_wrong_crop_count():
    geom = frame_windows(45, 80, 64)
    with pytest.raises(ValueError, match="expected 2 crops"):
        semantic_map(torch.zeros(3, 4, 16, 16), torch.zeros(3, 4, 6), geom)


def test_predict_semantic_end_to_end(tiny):
    img = np.random.default_rng(3).integers(0, 256, (45, 80, 3), dtype=np.uint8)
    out = predict_semantic(tiny, img)
    assert out.shape == (TINY.num_classes, 45, 80) and out.dtype == torch.float32
    torch.testing.assert_close(out, predict_semantic(tiny, img, batch_size=1), rtol=0, atol=1e-5)
    crops, geom = window_image(img, 64)
    with torch.inference_mode():
        m, c = tiny(crops.float() / 255.0)
    torch.testing.assert_close(out, semantic_map(m, c, geom), rtol=0, atol=1e-6)
    # per-pixel class scores are sums of sigmoid * probability over queries
    assert float(out.min()) >= 0.0 and float(out.sum(0).max()) <= TINY.num_q
