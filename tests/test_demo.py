"""The demo world (procedural road scenes in real dataset layouts) and the toy ERFNet training."""

from __future__ import annotations

import itertools
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from extract.demo import classes, matching, scene, summary, world
from extract.demo import train_erfnet as terf
from extract.demo.train_eomt import demo_eomt_config, random_crops, train_eomt
from extract.models import load_model, read_checkpoint_kind
from extract.models.eomt import build_eomt
from extract.models.erfnet import ERFNet

ROOT = Path(__file__).resolve().parent.parent
ID_CLASSES = {classes.ROAD, classes.SIDEWALK, classes.BUILDING, classes.VEGETATION, classes.SKY, classes.CAR}


def _scene(seed, anomalies, h=96, w=192):
    return scene.render_scene(np.random.default_rng(seed), h, w, anomalies)


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
        assert classes.VOID not in ids  # in-distribution scenes are fully labelled
        assert set(np.unique(ids)) <= set(classes.WORLD_CLASSES)
        assert ids[0].tolist().count(classes.ROAD) == 0  # the top row is never road
        assert (ids[-1] == classes.ROAD).any()  # the road reaches the bottom of the frame
        assert rgb.std() > 10  # textured, not flat
        seen |= set(np.unique(ids).tolist())
    assert ID_CLASSES <= seen
    n_anom = 0
    for seed in range(6):
        rgb, ids, mask = _scene(100 + seed, True)
        assert mask.any(), "a scene with anomalies must contain anomaly pixels"
        assert (~mask).sum() > 0.5 * mask.size  # and mostly in-distribution pixels
        assert np.array_equal(ids == classes.VOID, mask)  # anomalies are void in the trainIds
        n_anom += int(mask.sum())
    assert n_anom > 0


def _files(root: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file())


def test_write_world_layouts(tmp_path):
    info = world.write_world(tmp_path, seed=1, n_train=3, n_val=2, n_anomaly=2, size=(64, 128))
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
    again = Path(world.write_world(tmp_path / "again", seed=1, n_train=3, n_val=2, n_anomaly=2, size=(64, 128))["root"])
    for rel in [f"train/{imgs[0]}", f"train/{gts[-1]}", f"anomaly/RoadAnomaly/{labels[1]}"]:
        assert np.array_equal(np.asarray(Image.open(tmp_path / rel)), np.asarray(Image.open(again / rel)))


def test_road_anomaly_label_void_ring():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    lab = world.road_anomaly_label(m, void_border=1)
    assert lab[3, 3] == 2
    assert (lab[[2, 4, 3, 3], [3, 3, 2, 4]] == 255).all()
    assert lab[0, 0] == 0 and (lab == 255).sum() == 4
    assert set(np.unique(world.road_anomaly_label(m, 0)).tolist()) == {0, 2}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world.write_world(root, seed=0, n_train=4, n_val=1, n_anomaly=1, size=(64, 128))
    return root


def _train(root, out, **kw):
    args = dict(steps=8, height=32, batch_size=4, lr=3e-3, seed=0, threads=1)
    args.update(kw)
    return terf.train_erfnet(root / "train", out, **args)


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
    a = terf.logitnorm_loss(z, y)
    b = terf.logitnorm_loss(5.0 * z, y)
    assert torch.allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- EoMT objective


def _softplus(x):
    return math.log1p(math.exp(x)) if x < 30 else x


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _nll(logits, k):
    return math.log(sum(math.exp(v) for v in logits)) - logits[k]


def _oracle_mask_losses(m, t):
    """Mean BCE over the points and the Dice loss of one (logits, target) pair, by hand."""
    bce = sum(_softplus(-x) if y else _softplus(x) for x, y in zip(m, t)) / len(m)
    p = [_sigmoid(x) for x in m]
    dice = 1 - (2 * sum(a * b for a, b in zip(p, t)) + 1) / (sum(p) + sum(t) + 1)
    return bce, dice


# Two segments on a 2x2 image: class 1 on the top row, class 0 on the bottom row (K = 2,
# index 2 = no-object). Query 0 says "class 0, bottom row", query 1 "class 1, top row".
SEG_LABELS = torch.tensor([1, 0])
SEG_MASKS = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]])
Q_CLASS = [[2.0, -1.0, 0.5], [-0.5, 1.5, 0.0]]
Q_MASK = [[-2.0, -1.0, 2.5, 1.0], [3.0, 1.5, -2.0, -3.0]]


def test_matching_loss_two_queries_two_segments():
    cl = torch.tensor([Q_CLASS])  # (1, 2, 3)
    ml = torch.tensor(Q_MASK).reshape(1, 2, 2, 2)  # (1, Q, h, w), same grid as the targets
    q, s = matching.hungarian_match(cl[0], ml[0].flatten(1), SEG_LABELS, SEG_MASKS.flatten(1))
    assert dict(zip(q.tolist(), s.tolist())) == {0: 1, 1: 0}
    out = matching.mask_classification_loss(cl, ml, [(SEG_LABELS, SEG_MASKS)])

    flat = [m.flatten().tolist() for m in SEG_MASKS]
    b0, d0 = _oracle_mask_losses(Q_MASK[0], flat[1])
    b1, d1 = _oracle_mask_losses(Q_MASK[1], flat[0])
    ce = (_nll(Q_CLASS[0], 0) + _nll(Q_CLASS[1], 1)) / 2  # class weights 1, no query unmatched
    assert float(out["mask"]) == pytest.approx((b0 + b1) / 2, rel=1e-6)
    assert float(out["dice"]) == pytest.approx((d0 + d1) / 2, rel=1e-6)
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-6)
    total = 5 * (b0 + b1) / 2 + 5 * (d0 + d1) / 2 + 2 * ce
    assert float(out["total"]) == pytest.approx(total, rel=1e-6)

    # the swapped assignment costs more: the matcher picked the cheaper one
    cost = matching.match_cost(cl[0], ml[0].flatten(1), SEG_LABELS, SEG_MASKS.flatten(1))
    assert float(cost[0, 1] + cost[1, 0]) < float(cost[0, 0] + cost[1, 1])
    p = torch.tensor(Q_CLASS).softmax(-1)
    bce01, dice01 = _oracle_mask_losses(Q_MASK[0], flat[1])
    assert float(cost[0, 1]) == pytest.approx(5 * bce01 - 2 * float(p[0, 0]) + 5 * dice01, abs=1e-5)


def test_unmatched_query_learns_no_object_with_weight_0_1():
    extra = [0.3, -0.2, 1.0]
    cl = torch.tensor([Q_CLASS + [extra]])  # (1, 3, 3)
    ml = torch.tensor(Q_MASK + [[-4.0, -4.0, -4.0, -4.0]]).reshape(1, 3, 2, 2)
    out = matching.mask_classification_loss(cl, ml, [(SEG_LABELS, SEG_MASKS)])
    ce = (_nll(Q_CLASS[0], 0) + _nll(Q_CLASS[1], 1) + 0.1 * _nll(extra, 2)) / 2.1
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-6)


def test_hungarian_match_is_the_cheapest_assignment():
    rng = np.random.default_rng(0)
    for _ in range(20):
        nq, ns, k, p = int(rng.integers(2, 6)), int(rng.integers(1, 4)), 4, 12
        ns = min(ns, nq)
        cl = torch.tensor(rng.normal(size=(nq, k + 1)), dtype=torch.float32)
        ml = torch.tensor(rng.normal(size=(nq, p)) * 3, dtype=torch.float32)
        labels = torch.tensor(rng.integers(0, k, ns))
        masks = torch.tensor(rng.random((ns, p)) < 0.5, dtype=torch.float32)
        cost = matching.match_cost(cl, ml, labels, masks).numpy()
        q, s = matching.hungarian_match(cl, ml, labels, masks)
        assert sorted(s.tolist()) == list(range(ns)) and len(set(q.tolist())) == ns
        best = min(sum(cost[perm[j], j] for j in range(ns)) for perm in itertools.permutations(range(nq), ns))
        assert cost[q, s].sum() == pytest.approx(best, abs=1e-5)


def test_pairwise_costs_match_per_pair_oracle():
    rng = np.random.default_rng(1)
    ml = torch.tensor(rng.normal(size=(3, 6)) * 2, dtype=torch.float32)
    masks = torch.tensor(rng.random((2, 6)) < 0.5, dtype=torch.float32)
    bce, dice = matching.pairwise_sigmoid_ce(ml, masks), matching.pairwise_dice(ml, masks)
    for i in range(3):
        for j in range(2):
            b, d = _oracle_mask_losses(ml[i].tolist(), masks[j].tolist())
            assert float(bce[i, j]) == pytest.approx(b, rel=1e-5)
            assert float(dice[i, j]) == pytest.approx(d, rel=1e-5)


def test_semantic_targets_and_sampled_masks():
    ids = torch.tensor([[13, 13, 0, 0], [255, 13, 0, 0]])
    labels, masks = matching.semantic_targets(ids)
    assert labels.tolist() == [0, 13]
    assert masks.shape == (2, 2, 4) and masks[:, 1, 0].sum() == 0  # void belongs to no segment
    assert torch.equal(masks[1], (ids == 13).float())
    small = matching.sample_masks(masks, (1, 2))  # each point is the centre of a 2x2 block
    assert torch.allclose(small, torch.tensor([[[0.0, 1.0]], [[0.75, 0.0]]]))


# ----------------------------------------------------------------------------- toy EoMT


def _train_eomt(root, out, **kw):
    args = dict(steps=3, batch_size=2, seed=0, threads=1, loss_points=32)
    args.update(kw)
    return train_eomt(root / "train", out, **args)


def test_train_eomt_saves_the_released_format_and_loads_unchanged(tiny_world, tmp_path):
    ckpt = tmp_path / "eomt_demo.ckpt"
    logs = []
    stats = _train_eomt(tiny_world, ckpt, steps=6, log=logs.append, log_seconds=0)
    assert stats["steps"] == 6 and len(logs) == 6 and "dice" in logs[0]
    assert stats["final_loss"] < stats["first_loss"]
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict"}
    sd = raw["state_dict"]
    assert all(k.startswith("network.") for k in set(sd) - {"criterion.empty_weight"})
    assert sd["criterion.empty_weight"].tolist() == pytest.approx([1.0] * 19 + [0.1])
    assert sd["network.class_head.weight"].shape == (20, 128)  # 19 classes + no-object
    assert read_checkpoint_kind(ckpt) == "eomt"

    model, cfg = load_model("eomt", ckpt)  # what `extract run --model eomt` does
    assert model.config == demo_eomt_config()
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["crop"]) == (128, 6, 2, 128)
    fresh = build_eomt(demo_eomt_config()).eval()
    fresh.load_state_dict({k[len("network."):]: v for k, v in sd.items() if k.startswith("network.")})
    x = torch.rand(2, 3, 128, 128)
    with torch.inference_mode():
        a, b = model(x), fresh(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (2, 16, 32, 32) and a[1].shape == (2, 16, 20)


def test_train_eomt_is_deterministic(tiny_world, tmp_path):
    a = _train_eomt(tiny_world, tmp_path / "a.ckpt")
    b = _train_eomt(tiny_world, tmp_path / "b.ckpt")
    c = _train_eomt(tiny_world, tmp_path / "c.ckpt", seed=1)
    assert a["final_loss"] == b["final_loss"] != c["final_loss"]
    sa, sb = (torch.load(tmp_path / f"{n}.ckpt", weights_only=True)["state_dict"] for n in "ab")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_crops_cut_aligned_windows():
    rgb = torch.arange(2 * 3 * 4 * 8, dtype=torch.uint8).reshape(2, 3, 4, 8)
    ids = rgb[:, 0].long()
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = random_crops(rgb, ids, 4, gen)
        assert x.shape == (2, 3, 4, 4) and y.shape == (2, 4, 4)
        assert torch.equal((x[:, 0] * 255).round().long(), y)  # image and label cut and flipped together
        assert x.max() <= 1.0


# ----------------------------------------------------------------------------- make demo, shortened


def _make_var(name: str) -> str:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.split(":=")[0].strip() == name:
            return line.split(":=", 1)[1].strip()
    raise KeyError(name)


def test_make_demo_shortened_has_both_models(tmp_path):
    """`make demo` itself on a tiny world with a few training steps: query-kind EoMT caches,
    EoMT rows with every mask scorer, mIoU per query temperature, Table 1 and the summary
    with both models, the mIoU-vs-T figure and one maps panel."""
    from analyze.scorers import get_scorers
    from extract.demo import settings
    from schemas.cache import open_cache
    from schemas.results import read_results

    venv = Path(sys.executable).parent.parent
    if shutil.which("make") is None or not (venv / "bin" / "extract").exists():
        pytest.skip("needs GNU make and the package's console scripts beside this Python")
    assert int(_make_var("D_ERF_H")) == settings.ERFNET["height"]  # extraction at the training height
    out = tmp_path / "demo"
    cmd = ["make", "-s", "-o", "install", "demo", f"VENV={venv}", f"DEMO={out}",
           "DEMO_WORLD_ARGS=--n-train 4 --n-val 2 --n-anomaly 2 --size 64x128",
           "DEMO_ERFNET_ARGS=--steps 2 --batch-size 2", "DEMO_EOMT_ARGS=--steps 2 --batch-size 2",
           "DEMO_SCORE_ARGS=--bootstrap 0 --scheduler sync"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # progress as in normal use: each training's step lines, then the extraction, fit and scoring bars
    for model in ("erfnet", "eomt"):
        assert re.search(rf"^{model}: step 2/2  loss \d+\.\d{{4}}.*  elapsed \S+  left ~0s$", res.stderr, re.M), \
            res.stderr[-3000:]
    assert "erfnet/road_anomaly" in res.stderr and "eomt/cityscapes_val" in res.stderr  # extract run bars
    assert "in-distribution statistics" in res.stderr and "pass 1/" in res.stderr  # analyze fit, score

    for model, kind in (("erfnet", "pixel"), ("eomt", "query")):
        for ds in ("road_anomaly", "cityscapes_val"):
            _, spec = open_cache(out / "caches" / model / f"{ds}.zarr")
            assert spec.kind == kind and spec.provenance.model == model
    df = read_results(out / "results.parquet")
    eomt = df[(df.model == "eomt") & (df.dataset == "road_anomaly") & (df.metric == "auprc")]
    # every scorer of a query cache: the demo fits in-distribution statistics (KL, SML) and has no flip pass
    mask_scorers = {s.name for s in get_scorers("all", "query") if not s.needs_flip}
    assert {"rba", "kl", "sml", "eam"} <= mask_scorers and set(eomt.scorer.astype(str)) == mask_scorers
    assert (out / "id_stats" / "eomt.json").is_file() and (out / "id_stats" / "erfnet.json").is_file()
    miou = df[(df.model == "eomt") & (df.metric == "miou")]
    assert sorted(miou.temperature) == [0.5, 0.75, 1.0, 1.1]  # query T changes EoMT's segmentation
    table = (out / "report" / "table1.md").read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:3]) for line in table.splitlines() if line.startswith("|")}
    assert {("EoMT", "RbA"), ("ERFNet", "MSP")} <= rows and table.strip() in res.stdout
    assert res.stdout.count("x chance") == 2 and "road_anomaly: chance level" in res.stdout
    assert (out / "report" / "temperature_eomt_query_road_anomaly.png").is_file()  # with its mIoU panel
    assert f"{(out / 'report' / 'index.html').resolve()}" in res.stdout and (out / "report" / "index.html").is_file()
    assert (out / "maps" / "panel.png").is_file() and (out / "maps" / "eomt" / "demo_anomaly_000_rba_T1.npy").is_file()


def test_summary_chance_level_and_best_scorer():
    frames = pd.DataFrame({
        "model": ["erfnet"] * 4 + ["eomt"] * 2, "dataset": ["road_anomaly"] * 6, "protocol": ["exact"] * 6,
        "temp_target": ["logits"] * 4 + ["query"] * 2, "scorer": ["msp", "msp", "energy", "energy", "rba", "rba"],
        "temperature": [1.0] * 6, "frame": ["a", "b"] * 3, "n_pos": [10, 30, 10, 30, 10, 30],
        "n_neg": [190, 370, 190, 370, 190, 370]})
    assert summary.chance_levels(frames) == {"road_anomaly": pytest.approx(40 / 600)}
    res = pd.DataFrame({
        "model": ["erfnet", "erfnet", "eomt", "eomt", "eomt"], "dataset": ["road_anomaly"] * 5,
        "scorer": ["msp", "energy", "rba", "msp", "msp"], "temperature": [1.0, 1.0, 1.0, 1.0, 0.5],
        "protocol": ["exact"] * 5, "metric": ["auprc"] * 5, "value": [0.1, 0.2, 0.25, 0.3, 0.9],
        "selected_on": [""] * 5})
    best = summary.best_scorers(res)  # T = 0.5 is not Table 1's temperature
    assert dict(zip(best.model, zip(best.scorer, best.value))) == {"eomt": ("msp", 0.3), "erfnet": ("energy", 0.2)}
