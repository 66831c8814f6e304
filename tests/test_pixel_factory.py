"""Any pixel model into the cache (``--model python:MODULE:FUNCTION``) and model plugins (entry-point
group ``anomaly_seg_cache.models``): torchvision's DeepLabv3 built by a factory caches exactly what
the module gives on the same preprocessed input; the manual's worked example runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from extract.cli import main as extract_main
from extract.datasets.reader import DatasetReader
from extract.models import get_model_spec, list_models
from schemas.cache import open_cache, read_pixel_logits
from schemas.manifest import get_dataset_spec

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _doc_blocks(lang: str) -> list[str]:
    section = DOC.read_text().split("\n## Your own model\n", 1)[1]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The manual's factory module (verbatim), a random-weight DeepLabv3 checkpoint and a tiny dataset."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    from extract.datasets.synth import write_synth_dataset

    d = tmp_path_factory.mktemp("lab")
    (d / "mylab_models.py").write_text(_doc_blocks("python")[0])
    torch.manual_seed(0)
    net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=19).eval()
    torch.save(net.state_dict(), d / "deeplab.pth")
    write_synth_dataset(get_dataset_spec("road_anomaly"), d / "data", 2, (40, 70), seed=3)
    return d


@pytest.fixture
def on_path(lab, monkeypatch):
    monkeypatch.syspath_prepend(str(lab))
    monkeypatch.chdir(lab)
    return lab


def _run(args):
    return CliRunner().invoke(extract_main, [*args, "--device", "cpu", "--no-progress"])


def _direct(image: np.ndarray, height: int, net) -> np.ndarray:
    """The module on the input as the declaration describes it: short side ``height`` (PIL bilinear,
    sides rounded to 8), [0, 1], ImageNet mean/std; logits as float16."""
    h, w = image.shape[:2]
    new = (height, int(round(height * w / h / 8)) * 8) if h <= w else (int(round(height * h / w / 8)) * 8, height)
    x = np.asarray(Image.fromarray(image).resize(new[::-1], Image.BILINEAR), np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    with torch.inference_mode():
        return net(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])["out"][0].half().numpy()


def test_the_manual_example_caches_the_module_output(on_path):
    from mylab_models import build

    (command,) = [line for block in _doc_blocks("bash") for line in block.replace("\\\n", " ").splitlines()
                  if line.startswith("extract run --model python:")]
    args = shlex.split(command)[1:] + ["--input-height", "32"]  # the manual's command; small frames keep it fast
    res = _run(args)
    assert res.exit_code == 0, res.output
    cache = on_path / args[args.index("--cache") + 1]
    root, spec = open_cache(cache)
    assert spec.kind == "pixel" and spec.n_classes == spec.n_channels == 19 and spec.void_channel is None
    cfg = spec.provenance.model_config
    assert cfg["factory"] == "mylab_models:build" and len(cfg["factory_sha256"]) == 64
    assert cfg["class_names"][0] == "road" and cfg["input_height"] == 32
    net, _ = build(on_path / "deeplab.pth")
    net.eval()
    for i, frame in enumerate(DatasetReader(get_dataset_spec("road_anomaly"), on_path / "data")):
        direct = _direct(frame.image, 32, net)
        assert direct.shape == (19, 32, 56)
        np.testing.assert_array_equal(read_pixel_logits(root, spec, i), direct)


def test_options_override_the_declaration(on_path):
    res = _run(["run", "--model", "python:mylab_models:build", "--checkpoint", "deeplab.pth", "--dataset",
                "road_anomaly", "--data-root", "data", "--cache", "void.zarr", "--model-option", "input_height=24",
                "--model-option", "num_classes=18", "--model-option", "void_channel=18", "--limit", "1"])
    assert res.exit_code == 0, res.output
    _, spec = open_cache(on_path / "void.zarr")
    assert (spec.n_classes, spec.n_channels, spec.void_channel) == (18, 19, 18)
    assert spec.logit_sizes[0] == (24, 40)  # 40x70 -> short side 24, 42 rounded to 40


@pytest.mark.parametrize("args, message", [
    (["--model", "python:no_such_module:build"], "cannot import no_such_module"),
    (["--model", "python:mylab_models:nothing"], "has no function nothing"),
    (["--model", "python:mylab_models:build", "--model-option", "colour=red"], "--model-option colour"),
    (["--model", "python:mylab_models:build", "--model-option", "void_channel=x"], "void_channel='x'"),
    (["--model", "eomt", "--model-option", "a=1"], "takes no --model-option"),
    (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
])
def test_bad_models_are_one_line(on_path, args, message):
    res = _run(["run", *args, "--checkpoint", "deeplab.pth", "--dataset", "road_anomaly", "--data-root", "data",
                "--cache", "bad.zarr"])
    assert res.exit_code == 2 and message in res.output.strip().splitlines()[-1], res.output
    assert not (on_path / "bad.zarr").exists()


def _install_plugin(where: Path, body: str, entry: str) -> None:
    """A real installed distribution: a module and a dist-info with an entry point, on sys.path."""
    (where / "mylab_plugin.py").write_text(body)
    info = where / "mylab-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[anomaly_seg_cache.models]\n{entry}\n")


def test_an_installed_plugin_registers_a_model(on_path, tmp_path, monkeypatch):
    _install_plugin(tmp_path, "from extract.models.python_model import factory_spec\n\n\ndef mynet():\n"
                              "    return factory_spec('python:mylab_models:build')\n",
                    "mynet = mylab_plugin:mynet\nerfnet = mylab_plugin:mynet\nbroken = mylab_plugin:missing")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = get_model_spec("mynet")
    assert spec.name == "mynet" and spec.source == "mylab 0.3 (mylab_plugin:mynet)"
    assert get_model_spec("erfnet").source == "built-in"  # a plugin never shadows a built-in model
    rows = {name: (source, text) for name, source, text in list_models()}
    assert rows["mynet"][0].startswith("mylab 0.3") and "shadowed" in rows["erfnet"][1]
    assert "broken" in rows and rows["broken"][1].startswith("broken: model plugin broken")
    res = CliRunner().invoke(extract_main, ["models"])
    assert res.exit_code == 0 and "mynet" in res.output and "mask2former" in res.output
    res = _run(["run", "--model", "mynet", "--checkpoint", "deeplab.pth", "--dataset", "road_anomaly",
                "--data-root", "data", "--cache", str(tmp_path / "p.zarr"), "--input-height", "16", "--limit", "1"])
    assert res.exit_code == 0, res.output
    _, spec = open_cache(tmp_path / "p.zarr")
    assert spec.provenance.model == "mynet" and spec.logit_sizes[0] == (16, 32)
    res = _run(["run", "--model", "broken", "--checkpoint", "deeplab.pth", "--dataset", "road_anomaly",
                "--data-root", "data", "--cache", str(tmp_path / "b.zarr")])
    assert res.exit_code == 2 and "model plugin broken (mylab_plugin:missing, from mylab 0.3)" in res.output
