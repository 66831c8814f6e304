"""ERFNet network, released-checkpoint converter and preprocessing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extract.models import (
    CheckpointError,
    detect_checkpoint_kind,
    get_model_spec,
    load_model,
    save_official_checkpoint,
)
from extract.models.eomt import EoMTConfig, build_eomt
from extract.models.erfnet import (
    ERFNet,
    config,
    convert_erfnet_checkpoint,
    erfnet_input_size,
    load_erfnet,
    preprocess_erfnet,
)

DATA = Path(__file__).parent / "data"


def read_inventory(name: str) -> dict[str, tuple[int, ...]]:
    """``key shape`` lines (``#`` comments skipped) -> {key: shape}."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def random_erfnet(seed: int = 0) -> ERFNet:
    """ERFNet with perturbed weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = ERFNet()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(5 + 20 * torch.rand_like(t))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn_like(t))
            elif t.dtype.is_floating_point:
                t.add_(0.1 * torch.randn_like(t))
    return model.eval()


@pytest.fixture(scope="module")
def erfnet_ckpt(tmp_path_factory) -> tuple[ERFNet, Path]:
    model = random_erfnet()
    path = tmp_path_factory.mktemp("erfnet") / "erfnet_pretrained.pth"
    save_official_checkpoint(model, path, "erfnet")
    return model, path


def test_key_inventory_matches_official():
    ours = {k: tuple(v.shape) for k, v in ERFNet().state_dict().items()}
    assert ours == read_inventory("erfnet_official_keys.txt")


def test_parameter_count_matches_paper():
    n = sum(p.numel() for p in ERFNet().parameters())
    assert n == 2_066_836  # "about 2.06 M" (official class, 20 outputs)


def test_forward_shape_dtype_and_determinism():
    model = random_erfnet()
    x = torch.rand(2, 3, 64, 128)
    with torch.inference_mode():
        a, b = model(x), model(x)
    assert a.shape == (2, 20, 64, 128)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)


def test_official_checkpoint_round_trip(erfnet_ckpt):
    model, path = erfnet_ckpt
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    assert detect_checkpoint_kind(raw) == "erfnet"

    loaded, cfg = load_model("erfnet", path)
    assert not loaded.training
    assert cfg["kind"] == "pixel" and cfg["num_classes"] == 20 and cfg["void_channel"] == 19
    got = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(got[k], v), k
    x = torch.rand(1, 3, 32, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_convert_accepts_unprefixed_and_pre_041_checkpoints(erfnet_ckpt):
    model, _ = erfnet_ckpt
    plain = {k: v for k, v in model.state_dict().items()}
    assert convert_erfnet_checkpoint(plain).keys() == plain.keys()
    # Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked counters.
    old = {"module." + k: v for k, v in plain.items() if not k.endswith("num_batches_tracked")}
    converted = convert_erfnet_checkpoint(old)
    assert converted.keys() == plain.keys()
    assert torch.equal(converted["decoder.output_conv.weight"], plain["decoder.output_conv.weight"])


def test_convert_rejects_foreign_and_mismatched_checkpoints():
    with pytest.raises(CheckpointError, match="not a valid ERFNet checkpoint: missing keys") as err:
        convert_erfnet_checkpoint({"fc.weight": torch.zeros(3, 3)})
    assert "unexpected keys (1): fc.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="neither an ERFNet nor an EoMT"):
        detect_checkpoint_kind({"fc.weight": torch.zeros(3, 3)})
    sd = ERFNet().state_dict()
    del sd["decoder.layers.1.bn2.weight"]
    sd["decoder.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        convert_erfnet_checkpoint(sd)
    msg = str(err.value)
    assert "missing keys (1): decoder.layers.1.bn2.weight" in msg
    assert "unexpected keys (1): decoder.extra" in msg
    expected = r"mismatches \(4\): decoder.output_conv.bias: checkpoint \(19,\) vs model \(20,\)"
    with pytest.raises(CheckpointError, match=expected):
        convert_erfnet_checkpoint(ERFNet(num_classes=19).state_dict())
    with pytest.raises(CheckpointError, match="holds a list"):
        convert_erfnet_checkpoint([1, 2])


def test_eomt_checkpoint_is_refused_by_name(tmp_path):
    cfg = EoMTConfig(
        embed_dim=384, depth=2, num_heads=6, num_register_tokens=4, patch_size=16,
        img_size=32, num_q=4, num_classes=3, num_blocks=1,
    )
    path = save_official_checkpoint(build_eomt(cfg), tmp_path / "eomt.ckpt", "eomt")
    with pytest.raises(CheckpointError, match=r"eomt\.ckpt is an EoMT checkpoint, not ERFNet"):
        load_erfnet(path)


def test_truncated_file_gives_one_line_error(erfnet_ckpt, tmp_path):
    _, good = erfnet_ckpt
    bad = tmp_path / "cut.pth"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError) as err:
        load_model("erfnet", bad)
    assert str(bad) in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_model("erfnet", tmp_path / "missing.pth")


class _Payload:
    """Pickles to a call that would create a file when unpickled without weights_only."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (str(self.target),))


def test_pickle_with_code_is_not_executed(tmp_path):
    target = tmp_path / "created_by_pickle"
    path = tmp_path / "evil.pth"
    torch.save({"module.encoder.initial_block.conv.weight": _Payload(target)}, path)
    with pytest.raises(CheckpointError, match="not a weights-only file") as err:
        load_erfnet(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not target.exists()


def test_preprocess_matches_torchvision_resize_and_to_tensor():
    from torchvision.transforms import Compose, Resize, ToTensor

    rng = np.random.default_rng(0)
    official = Compose([Resize(512, Image.BILINEAR), ToTensor()])
    for h, w in [(72, 128), (300, 200), (512, 700)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = preprocess_erfnet(img, multiple=1)  # exactly torchvision's size
        ref = official(Image.fromarray(img))
        assert ours.shape == ref.shape and ours.dtype == torch.float32
        assert torch.equal(ours, ref)


def test_preprocess_size_and_range_without_normalisation():
    assert erfnet_input_size(1024, 2048) == (512, 1024)
    assert erfnet_input_size(720, 1280, multiple=1) == (512, 910)  # int(512 * 1280 / 720) = 910
    assert erfnet_input_size(1920, 1080, multiple=1) == (910, 512)  # short side, as torchvision
    # ERFNet needs sides divisible by 8: 910 is rounded to the nearest multiple, 912
    assert erfnet_input_size(720, 1280) == (512, 912)
    assert erfnet_input_size(1080, 1920) == (512, 912)
    assert erfnet_input_size(1920, 1080) == (912, 512)
    white = np.full((64, 128, 3), 255, np.uint8)
    x = preprocess_erfnet(white)
    assert x.shape == (3, 512, 1024)
    assert torch.all(x == 1.0)  # ToTensor only: no mean/std
    x = preprocess_erfnet(np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        preprocess_erfnet(np.zeros((8, 8, 3), np.float32))


def test_config_and_registry():
    assert config["num_classes"] == 20 and config["void_channel"] == 19
    assert config["input_height"] == 512 and config["normalization"] is None
    assert get_model_spec("erfnet").kind == "pixel"
    with pytest.raises(KeyError, match="valid names: eomt, erfnet"):
        get_model_spec("deeplab")
    with pytest.raises(TypeError, match="needs an instance of ERFNet"):
        save_official_checkpoint(torch.nn.Linear(1, 1), "x.pth", "erfnet")


def test_rounded_input_runs_where_torchvision_size_breaks_the_network():
    model = ERFNet().eval()
    img = np.zeros((45, 80, 3), np.uint8)  # like 720x1280 at 1/16 scale: short side 32 -> width 56.9
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
            model(preprocess_erfnet(img, 36, multiple=1)[None])  # 36x64: 36/4 = 9 is odd
        out = model(preprocess_erfnet(img, 36)[None])
    assert out.shape == (1, 20, 32, 64)  # 36 -> 32 (nearest multiple of 8, ties to even)
