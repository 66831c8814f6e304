"""The demo world (procedural road scenes in real dataset layouts) and the toy ERFNet training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extract import demo
from extract.models.erfnet import ERFNet

ID_CLASSES = {demo.ROAD, demo.SIDEWALK, demo.BUILDING, demo.VEGETATION, demo.SKY, demo.CAR}


def _scene(seed, anomalies, h=96, w=192):
    return demo.render_scene(np.random.default_rng(seed), h, w, anomalies)


def test_render_scene_is_deterministic_and_typed():
    a = _scene(3, True)
    b = _scene(3, True)
    c = _scene(4, True)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    rgb, ids, mask = a
    assert rgb.shape == (96, 192, 3) and rgb.dtype == np.uint8
    assert ids.shape == (96, 192) and ids.dtype == np.uint8
    assert mask.shape == (96, 192) and mask.dtype == bool


def test_render_scene_classes_and_anomalies():
    seen = set()
    for seed in range(6):
        rgb, ids, mask = _scene(seed, False)
        assert not mask.any()
        assert demo.VOID not in ids  # in-distribution scenes are fully labelled
        assert set(np.unique(ids)) <= set(demo.WORLD_CLASSES)
        assert ids[0].tolist().count(demo.ROAD) == 0  # the top row is never road
        assert (ids[-1] == demo.ROAD).any()  # the road reaches the bottom of the frame
        assert rgb.std() > 10  # textured, not flat
        seen |= set(np.unique(ids).tolist())
    assert ID_CLASSES <= seen
    n_anom = 0
    for seed in range(6):
        rgb, ids, mask = _scene(100 + seed, True)
        assert mask.any(), "a scene with anomalies must contain anomaly pixels"
        assert (~mask).sum() > 0.5 * mask.size  # and mostly in-distribution pixels
        assert np.array_equal(ids == demo.VOID, mask)  # anomalies are void in the trainIds
        n_anom += int(mask.sum())
    assert n_anom > 0


def _files(root: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file())


def test_write_world_layouts(tmp_path):
    info = demo.write_world(tmp_path, seed=1, n_train=3, n_val=2, n_anomaly=2, size=(64, 128))
    assert info["n_train"] == 3 and info["n_val"] == 2 and info["n_anomaly"] == 2
    assert 0 < info["anomaly_pixel_fraction"] < 0.5

    train = Path(info["train_root"])
    assert train == tmp_path / "train"
    imgs = _files(train, "leftImg8bit/train/*/*_leftImg8bit.png")
    gts = _files(train, "gtFine/train/*/*_gtFine_labelTrainIds.png")
    assert len(imgs) == 3 and len(gts) == 3
    assert imgs[0].startswith("leftImg8bit/train/")
    for ip in imgs:
        city = Path(ip).parent.name
        stem = Path(ip).name[: -len("_leftImg8bit.png")]
        parts = stem.split("_")
        assert parts[0] == city and len(parts) == 3 and all(len(p) == 6 for p in parts[1:])
        gp = train / "gtFine" / "train" / city / f"{stem}_gtFine_labelTrainIds.png"
        assert gp.is_file()
        im, gt = Image.open(train / ip), Image.open(gp)
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (128, 64)
        assert gt.format == "PNG" and gt.mode == "L" and gt.size == (128, 64)
        vals = set(np.unique(np.asarray(gt)).tolist())
        assert vals <= set(range(19)) | {255}

    val = Path(info["cityscapes_root"])
    assert val == tmp_path / "cityscapes"
    assert len(_files(val, "leftImg8bit/val/*/*_leftImg8bit.png")) == 2
    assert len(_files(val, "gtFine/val/*/*_gtFine_labelTrainIds.png")) == 2

    ra = Path(info["road_anomaly_root"])
    assert ra == tmp_path / "anomaly" / "RoadAnomaly"
    images = _files(ra, "images/*")
    labels = _files(ra, "labels_masks/*")
    assert [Path(p).suffix for p in images] == [".jpg", ".jpg"]
    assert [Path(p).stem for p in images] == [Path(p).stem for p in labels]
    assert all(p.endswith(".png") for p in labels)
    any_anomaly = False
    for ip, lp in zip(images, labels):
        im, lab = Image.open(ra / ip), Image.open(ra / lp)
        assert im.format == "JPEG" and im.size == (128, 64)
        arr = np.asarray(lab)
        assert set(np.unique(arr).tolist()) <= {0, 2, 255}
        assert (arr == 0).any()
        any_anomaly |= bool((arr == 2).any())
    assert any_anomaly

    # same arguments -> same world
    again = Path(demo.write_world(tmp_path / "again", seed=1, n_train=3, n_val=2, n_anomaly=2, size=(64, 128))["root"])
    for rel in [f"train/{imgs[0]}", f"train/{gts[-1]}", f"anomaly/RoadAnomaly/{labels[1]}"]:
        assert np.array_equal(np.asarray(Image.open(tmp_path / rel)), np.asarray(Image.open(again / rel)))


def test_road_anomaly_label_void_ring():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    lab = demo.road_anomaly_label(m, void_border=1)
    assert lab[3, 3] == 2
    assert (lab[[2, 4, 3, 3], [3, 3, 2, 4]] == 255).all()
    assert lab[0, 0] == 0 and (lab == 255).sum() == 4
    assert set(np.unique(demo.road_anomaly_label(m, 0)).tolist()) == {0, 2}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    demo.write_world(root, seed=0, n_train=4, n_val=1, n_anomaly=1, size=(64, 128))
    return root


def _train(root, out, **kw):
    args = dict(steps=8, height=32, batch_size=4, lr=3e-3, seed=0, threads=1)
    args.update(kw)
    return demo.train_erfnet(root / "train", out, **args)


def test_train_erfnet_short_run_and_official_checkpoint(tiny_world, tmp_path):
    ckpt = tmp_path / "erfnet_demo.pth"
    logs = []
    stats = _train(tiny_world, ckpt, log=logs.append)
    assert logs and stats["steps"] == 8 and stats["height"] == 32
    assert stats["final_loss"] < stats["first_loss"]
    assert 0.0 <= stats["pixel_accuracy"] <= 1.0 and stats["seconds"] > 0
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(sd, dict) and sd
    assert all(k.startswith("module.") for k in sd)
    assert sd["module.decoder.output_conv.weight"].shape[1] == 20  # 19 classes + void
    model = ERFNet(20)
    model.load_state_dict({k[len("module.") :]: v for k, v in sd.items()}, strict=True)
    # and the tool's own loader accepts it as a released checkpoint
    from extract.models.erfnet import load_erfnet

    loaded, cfg = load_erfnet(ckpt)
    assert cfg["num_classes"] == 20
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_train_erfnet_is_deterministic(tiny_world, tmp_path):
    a = _train(tiny_world, tmp_path / "a.pth", steps=3)
    b = _train(tiny_world, tmp_path / "b.pth", steps=3)
    assert a["final_loss"] == b["final_loss"]
    sa = torch.load(tmp_path / "a.pth", weights_only=True)
    sb = torch.load(tmp_path / "b.pth", weights_only=True)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_erfnet_logitnorm_and_bad_loss(tiny_world, tmp_path):
    stats = _train(tiny_world, tmp_path / "ln.pth", steps=2, loss="logitnorm")
    assert np.isfinite(stats["final_loss"]) and stats["loss"] == "logitnorm"
    with pytest.raises(ValueError):
        _train(tiny_world, tmp_path / "x.pth", loss="focal")


def test_logitnorm_loss_is_scale_invariant():
    z = torch.randn(2, 20, 4, 4)
    y = torch.randint(0, 19, (2, 4, 4))
    y[0, 0, 0] = 255
    a = demo.logitnorm_loss(z, y)
    b = demo.logitnorm_loss(5.0 * z, y)
    assert torch.allclose(a, b, atol=1e-5)
