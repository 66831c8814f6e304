"""Dataset copies as researchers have them, through the CLI: official SMIYC release layouts,
both RoadObstacle21 spellings, RoadAnomaly labels 1 and 2, macOS/Windows system files,
upper-case extensions, unexpected files, excluded ids, natural frame order, and caches that
are identical whichever copy of the same content they were extracted from."""

import shutil

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from extract.cli import main as extract_main

SIZE = "16x32"


def _cli(*args):
    return CliRunner().invoke(extract_main, [str(a) for a in args])


def _synth(out, dataset, n, layout=None, seed=0):
    res = _cli("datasets", "synth", "--dataset", dataset, "--out", out, "--n", n, "--size", SIZE, "--seed", seed,
               *(["--layout", layout] if layout else []))
    assert res.exit_code == 0, res.output
    return res


def _check(root, dataset, *opts, code=0):
    res = _cli("datasets", "check", "--dataset", dataset, "--data-root", root, *opts)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


def _extract(root, dataset, cache, ckpt, *opts, code=0):
    res = _cli("run", "--model", "erfnet", "--dataset", dataset, "--data-root", root, "--checkpoint", ckpt,
               "--cache", cache, "--input-height", 16, "--no-progress", *opts)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


def _content(path):
    """Arrays and frame list of a cache (provenance such as creation time left out)."""
    g = zarr.open_group(str(path), mode="r")
    attrs = g.attrs.asdict()
    return {k: np.asarray(g[k][:]) for k in sorted(g.array_keys())}, attrs


def _assert_same_content(a, b):
    (A, attrs_a), (B, attrs_b) = _content(a), _content(b)
    assert A.keys() == B.keys()
    for k in A:
        np.testing.assert_array_equal(A[k], B[k], err_msg=k)
    assert attrs_a["frame_ids"] == attrs_b["frame_ids"] and attrs_a["sizes"] == attrs_b["sizes"]
    pa, pb = dict(attrs_a["provenance"]), dict(attrs_b["provenance"])
    pa.pop("created"), pb.pop("created")
    assert pa == pb  # manifest_digest included: the same whichever copy was read


def _frame_ids(cache):
    return zarr.open_group(str(cache), mode="r").attrs["frame_ids"]


# ---- layouts: detection, refusals ----------------------------------------------------------

def test_check_and_run_say_which_layout_and_refuse_two_copies(tmp_path, checkpoints):
    root = tmp_path / "data"
    _synth(root, "smiyc_ro21", 3)
    _synth(root, "smiyc_ro21", 3, layout="smiyc_release")
    for out in (_check(root, "smiyc_ro21", code=1),
                _extract(root, "smiyc_ro21", tmp_path / "c.zarr", checkpoints["erfnet"], code=1)):
        assert f"2 copies of smiyc_ro21 found: {root / 'RoadObsticle21'} (validation_dataset); " \
               f"{root / 'dataset_ObstacleTrack'} (smiyc_release); choose one with --layout NAME" in out
    assert not (tmp_path / "c.zarr").exists()
    out = _check(root, "smiyc_ro21", "--layout", "smiyc_release")
    assert f"3 frames OK in {root / 'dataset_ObstacleTrack'} (layout smiyc_release)" in out
    out = _extract(root, "smiyc_ro21", tmp_path / "c.zarr", checkpoints["erfnet"], "--layout", "validation_dataset")
    assert f"smiyc_ro21: layout validation_dataset in {root / 'RoadObsticle21'}, 3 frames" in out
    attrs = zarr.open_group(str(tmp_path / "c.zarr"), mode="r").attrs.asdict()
    assert attrs["extra"]["dataset_copy"] == {"layout": "validation_dataset", "folder": "RoadObsticle21"}
    # a usage error lists the valid layouts, for every command that takes --layout
    for args in (["datasets", "check", "--dataset", "smiyc_ro21", "--data-root", root],
                 ["datasets", "synth", "--dataset", "smiyc_ro21", "--out", root],
                 ["run", "--model", "erfnet", "--dataset", "smiyc_ro21", "--data-root", root, "--checkpoint",
                  checkpoints["erfnet"]]):
        res = _cli(*args, "--layout", "official")
        assert res.exit_code == 2 and "smiyc_ro21 has no layout 'official'; valid: validation_dataset, smiyc_release" \
            in res.output, res.output


def test_no_copy_lists_what_each_layout_expects(tmp_path):
    (tmp_path / "dataset_AnomalyTrack" / "images").mkdir(parents=True)
    out = _check(tmp_path, "smiyc_ra21", code=1)
    assert f"{tmp_path}: no smiyc_ra21 copy found; expected " in out
    assert "validation_dataset: RoadAnomaly21/ with images/{id}.png|jpg and labels_masks/{id}.png" in out
    assert "smiyc_release: dataset_AnomalyTrack/ with images/{id}.jpg and labels_masks/{id}_labels_semantic.png" in out
    assert f"(found {tmp_path / 'dataset_AnomalyTrack'} but no images in it)" in out
    _synth(tmp_path, "road_anomaly", 2)
    out = _check(tmp_path / "RoadAnomaly", "road_anomaly", code=1)  # the dataset folder given as the root
    assert f"--data-root is the folder that holds RoadAnomaly/, e.g. {tmp_path}" in out


# ---- official SMIYC release + both obstacle spellings: identical caches ----------------------

def test_obstacle_copies_in_every_layout_and_spelling_give_identical_caches(tmp_path, checkpoints):
    ckpt = checkpoints["erfnet"]
    release, sic, spelled = tmp_path / "release", tmp_path / "sic", tmp_path / "spelled"
    out = _synth(release, "smiyc_ro21", 12, layout="smiyc_release", seed=3).output
    assert f"wrote 12 smiyc_ro21 frames in layout smiyc_release under {release / 'dataset_ObstacleTrack'}" in out
    labels = sorted(p.name for p in (release / "dataset_ObstacleTrack" / "labels_masks").iterdir())
    assert "validation_10_labels_semantic_color.png" in labels and len(labels) == 24
    assert sorted(p.name for p in (release / "dataset_ObstacleTrack" / "images").glob("c*")) == \
        ["curvy-street_1.webp", "curvy-street_2.webp"]  # unlabelled test images
    _synth(sic, "smiyc_ro21", 12, seed=3)
    _synth(spelled, "smiyc_ro21", 12, seed=3)
    (spelled / "RoadObsticle21").rename(spelled / "RoadObstacle21")

    out = _check(release, "smiyc_ro21")
    assert "12 frames OK" in out and "(layout smiyc_release)" in out
    assert "left out 2 unlabelled image(s) (only labelled frames are used)" in out and "curvy-street_1.webp" in out
    assert "label has no image" not in out  # colour masks are ignored
    assert "12 frames OK" in _check(sic, "smiyc_ro21") and "12 frames OK" in _check(spelled, "smiyc_ro21")
    out = _extract(release, "smiyc_ro21", tmp_path / "release.zarr", ckpt)
    assert "left out 2 unlabelled image(s)" in out
    _extract(sic, "smiyc_ro21", tmp_path / "sic.zarr", ckpt)
    _extract(spelled, "smiyc_ro21", tmp_path / "spelled.zarr", ckpt)
    _assert_same_content(tmp_path / "release.zarr", tmp_path / "sic.zarr")
    _assert_same_content(tmp_path / "release.zarr", tmp_path / "spelled.zarr")
    # natural order of ids, in the cache as on disk
    assert _frame_ids(tmp_path / "release.zarr") == [f"validation_{n}" for n in range(1, 13)]

    # a cache started from one copy is finished from another (same digest, same frames)
    part = tmp_path / "part.zarr"
    _extract(release, "smiyc_ro21", part, ckpt, "--shard", "0/2")
    _extract(spelled, "smiyc_ro21", part, ckpt)
    _assert_same_content(part, tmp_path / "release.zarr")

    # both spellings in one root: refused, listing both
    shutil.copytree(sic / "RoadObsticle21", spelled / "RoadObsticle21")
    out = _check(spelled, "smiyc_ro21", code=1)
    assert f"{spelled / 'RoadObsticle21'} (validation_dataset); {spelled / 'RoadObstacle21'} (validation_dataset); " \
           "keep one of them" in out


def test_anomaly_track_release_equals_the_validation_dataset_png_copy(tmp_path, checkpoints):
    """The Validation_Dataset RA21 holds png images: a copy made from the release's decoded jpgs
    (and its labels renamed) has the same content, hence the same cache."""
    release, png = tmp_path / "release", tmp_path / "png"
    _synth(release, "smiyc_ra21", 4, layout="smiyc_release", seed=1)
    src = release / "dataset_AnomalyTrack"
    (png / "RoadAnomaly21" / "images").mkdir(parents=True)
    (png / "RoadAnomaly21" / "labels_masks").mkdir()
    for lab in src.glob("labels_masks/*_labels_semantic.png"):
        fid = lab.name[: -len("_labels_semantic.png")]
        Image.open(src / "images" / f"{fid}.jpg").save(png / "RoadAnomaly21" / "images" / f"{fid}.png")
        shutil.copy(lab, png / "RoadAnomaly21" / "labels_masks" / f"{fid}.png")
    assert "(layout validation_dataset)" in _check(png, "smiyc_ra21")
    out = _check(release, "smiyc_ra21")
    assert "4 frames OK" in out and "left out 2 unlabelled image(s)" in out
    _extract(release, "smiyc_ra21", tmp_path / "a.zarr", checkpoints["erfnet"])
    _extract(png, "smiyc_ra21", tmp_path / "b.zarr", checkpoints["erfnet"])
    _assert_same_content(tmp_path / "a.zarr", tmp_path / "b.zarr")
    assert _frame_ids(tmp_path / "a.zarr") == [f"validation{i:04d}" for i in range(4)]


def test_release_validation_frame_without_label_is_an_error(tmp_path):
    _synth(tmp_path, "smiyc_ra21", 3, layout="smiyc_release")
    lab = tmp_path / "dataset_AnomalyTrack" / "labels_masks" / "validation0001_labels_semantic.png"
    lab.unlink()
    out = _check(tmp_path, "smiyc_ra21", code=1)
    assert f"{tmp_path / 'dataset_AnomalyTrack' / 'images' / 'validation0001.jpg'}: image has no label " \
           f"(expected {lab})" in out


# ---- excluded ids ---------------------------------------------------------------------------

def test_obstacle_track_validation_excluded_ids(tmp_path, checkpoints):
    _synth(tmp_path / "all", "smiyc_ro21", 40, layout="smiyc_release")
    out = _check(tmp_path / "all", "smiyc_ro21")
    assert "30 frames OK" in out and "warning" not in out  # the benchmark's 30
    assert "left out 10 frame(s) the layout excludes: validation_19, validation_21, validation_22, validation_23, " \
           "validation_24 and 5 more" in out
    assert "ObstacleTrack-validation uses 30 of the 40" in out and "--include-excluded keeps them" in out
    out = _check(tmp_path / "all", "smiyc_ro21", "--include-excluded")
    assert "40 frames OK" in out and "kept 10 frame(s) the layout excludes (--include-excluded)" in out

    # extraction: a copy holding validation_1 .. validation_22
    _synth(tmp_path / "some", "smiyc_ro21", 22, layout="smiyc_release")
    ckpt = checkpoints["erfnet"]
    out = _extract(tmp_path / "some", "smiyc_ro21", tmp_path / "a.zarr", ckpt)
    assert "left out 3 frame(s) the layout excludes: validation_19, validation_21, validation_22" in out
    ids = _frame_ids(tmp_path / "a.zarr")
    assert ids == [f"validation_{n}" for n in [*range(1, 19), 20]]
    _extract(tmp_path / "some", "smiyc_ro21", tmp_path / "b.zarr", ckpt, "--include-excluded")
    assert _frame_ids(tmp_path / "b.zarr") == [f"validation_{n}" for n in range(1, 23)]
    # the same ids in a Validation_Dataset copy are not excluded (the rule belongs to the release layout)
    _synth(tmp_path / "vd", "smiyc_ro21", 22)
    out = _check(tmp_path / "vd", "smiyc_ro21")
    assert "22 frames OK" in out and "excludes" not in out


# ---- RoadAnomaly labels 1 and 2 ---------------------------------------------------------------

def test_road_anomaly_labels_1_and_2_give_the_same_cache_other_values_fail(tmp_path, checkpoints):
    orig, pre = tmp_path / "orig", tmp_path / "pre"
    _synth(orig, "road_anomaly", 4, seed=2)
    shutil.copytree(orig, pre)
    raw_values = set()
    for lab in (pre / "RoadAnomaly" / "labels_masks").glob("*.png"):
        raw = np.asarray(Image.open(lab)).copy()
        raw_values |= set(np.unique(raw).tolist())
        raw[raw == 2] = 1  # how preprocessed copies of other projects store anomalies
        Image.fromarray(raw, mode="L").save(lab)
    assert raw_values == {0, 2, 255}
    assert "4 frames OK" in _check(orig, "road_anomaly") and "4 frames OK" in _check(pre, "road_anomaly")
    _extract(orig, "road_anomaly", tmp_path / "a.zarr", checkpoints["erfnet"])
    _extract(pre, "road_anomaly", tmp_path / "b.zarr", checkpoints["erfnet"])
    _assert_same_content(tmp_path / "a.zarr", tmp_path / "b.zarr")
    labels = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["labels"][:]
    assert (labels == 1).any()  # the anomaly pixels survived

    lab = sorted((pre / "RoadAnomaly" / "labels_masks").glob("*.png"))[2]
    raw = np.asarray(Image.open(lab)).copy()
    raw[0, :3] = [3, 7, 7]
    Image.fromarray(raw, mode="L").save(lab)
    out = _check(pre, "road_anomaly", code=1)
    assert f"{lab}: label values [3, 7] outside the road_anomaly mapping [0, 1, 2, 255]" in out
    out = _extract(pre, "road_anomaly", tmp_path / "c.zarr", checkpoints["erfnet"], code=1)
    assert f"{lab}: label values [3, 7]" in out


# ---- files that are not frames -----------------------------------------------------------------

def _add_system_files(folder):
    for sub in ("images", "labels_masks"):
        d = folder / sub
        for p in sorted(d.glob("*.*")):
            (d / f"._{p.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # matches the regex, no image
        (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (d / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (d / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / "images" / "Desktop.ini").write_text("x")


def test_system_files_and_upper_case_extensions_change_nothing(tmp_path, checkpoints):
    clean, messy = tmp_path / "clean", tmp_path / "messy"
    _synth(clean, "fs_static", 3, seed=5)
    shutil.copytree(clean, messy)
    folder = messy / "fs_static"
    for p in folder.glob("images/*.jpg"):
        p.rename(p.with_suffix(".JPG"))
    for p in list(folder.glob("labels_masks/*.png"))[:2]:
        p.rename(p.with_suffix(".PNG"))
    _add_system_files(folder)
    n_system = 2 * 3 + 3 + 3 + 1  # per folder: .DS_Store, Thumbs.db, desktop.ini; ._ of 3 images / labels; Desktop.ini
    out = _check(messy, "fs_static")
    assert "3 frames OK" in out and f"skipped {n_system} system file(s)" in out
    out = _extract(messy, "fs_static", tmp_path / "m.zarr", checkpoints["erfnet"])
    assert f"skipped {n_system} system file(s)" in out
    _extract(clean, "fs_static", tmp_path / "c.zarr", checkpoints["erfnet"])
    _assert_same_content(tmp_path / "m.zarr", tmp_path / "c.zarr")


def test_unexpected_files_strict_message_and_skip_option(tmp_path, checkpoints):
    _synth(tmp_path, "road_anomaly", 2)
    images = tmp_path / "RoadAnomaly" / "images"
    extra = [images / f"frame{i}.tiff" for i in range(6)] + [images / "README"]
    for p in extra:
        p.write_bytes(b"x")
    shown = ", ".join(str(p) for p in sorted(extra)[:5])
    for out in (_check(tmp_path, "road_anomaly", code=1),
                _extract(tmp_path, "road_anomaly", tmp_path / "c.zarr", checkpoints["erfnet"], code=1)):
        assert f"{tmp_path / 'RoadAnomaly'}: 7 file(s) do not fit layout validation_dataset: RoadAnomaly/ with " \
               f"images/{{id}}.jpg and labels_masks/{{id}}.png: {shown} and 2 more; " \
               "--skip-unexpected leaves them out" in out
    out = _check(tmp_path, "road_anomaly", "--skip-unexpected")
    assert "2 frames OK" in out and "skipped 7 file(s) that do not fit layout validation_dataset" in out
    out = _extract(tmp_path, "road_anomaly", tmp_path / "c.zarr", checkpoints["erfnet"], "--skip-unexpected")
    assert "skipped 7 file(s)" in out and len(_frame_ids(tmp_path / "c.zarr")) == 2


@pytest.mark.parametrize("ids", [["2", "10", "1"], ["img_9", "img_10", "img_100", "IMG_1"]])
def test_frames_follow_natural_order(tmp_path, ids, checkpoints):
    _synth(tmp_path, "fs_lost_found", len(ids))
    folder = tmp_path / "FS_LostFound_full"
    for i, new in enumerate(ids):
        for sub in ("images", "labels_masks"):
            (folder / sub / f"synth_{i:04d}.png").rename(folder / sub / f"{new}.png")
    _extract(tmp_path, "fs_lost_found", tmp_path / "c.zarr", checkpoints["erfnet"])
    expected = {"2": ["1", "2", "10"], "img_9": ["IMG_1", "img_9", "img_10", "img_100"]}[ids[0]]
    assert _frame_ids(tmp_path / "c.zarr") == expected
