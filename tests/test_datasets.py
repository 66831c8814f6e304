"""The manifest and the readers: synthetic copies in every layout round-trip through them."""

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from extract.cli import main as extract_main
from extract.datasets.layouts import list_frames, locate, natural_key
from extract.datasets.reader import DatasetReader, check_dataset, read_label_file
from extract.datasets.synth import write_synth_dataset
from schemas.manifest import DatasetError, get_dataset_spec, load_manifest

MANIFEST = load_manifest()
LAYOUTS = [(name, lay.name) for name, spec in MANIFEST.items() for lay in spec.layouts]
REPO = Path(__file__).resolve().parents[1]


def test_manifest_datasets_and_layouts():
    assert set(MANIFEST) == {"smiyc_ra21", "smiyc_ro21", "smiyc_anomaly_track", "smiyc_obstacle_track",
                             "fs_lost_found", "fs_static", "road_anomaly", "cityscapes_val"}
    assert MANIFEST["smiyc_ra21"].layout_names == ("validation_dataset", "smiyc_release")
    assert MANIFEST["smiyc_ro21"].layout("validation_dataset").folders == ("RoadObsticle21", "RoadObstacle21")
    assert MANIFEST["smiyc_ro21"].layout("smiyc_release").folders == ("dataset_ObstacleTrack",)
    assert MANIFEST["smiyc_ra21"].layout("smiyc_release").label_template == "labels_masks/{id}_labels_semantic.png"
    ra = MANIFEST["road_anomaly"].layout().labels
    assert ra.values == {0: 0, 1: 1, 2: 1, 255: 255} and ra.unmapped == "error"
    # road-anomaly-benchmark datasets/tracks.py: the whole tracks, named as the benchmark stores them
    at, ot = MANIFEST["smiyc_anomaly_track"], MANIFEST["smiyc_obstacle_track"]
    assert (at.benchmark, at.count, at.frames) == ({"smiyc": "AnomalyTrack-all"}, 110, "all")
    assert (ot.benchmark, ot.count, ot.frames) == ({"smiyc": "ObstacleTrack-all"}, 452, "all")
    assert at.layout().folders == ("dataset_AnomalyTrack",) and at.layout().image_exts == ("jpg",)
    assert ot.layout().folders == ("dataset_ObstacleTrack",) and ot.layout().image_exts == ("webp",)
    assert ot.layout().exclude_prefixes == MANIFEST["smiyc_ro21"].layout("smiyc_release").exclude_prefixes
    assert ot.layout().exclude_keep == "unlabelled"
    assert all(not s.benchmark for n, s in MANIFEST.items() if not n.endswith("_track"))


def test_reading_modules_have_no_dataset_names():
    """Data-driven: no dataset, layout or folder name of the manifest is spelled in the readers."""
    names = set(MANIFEST) | {lay for _, lay in LAYOUTS}
    names |= {f for spec in MANIFEST.values() for lay in spec.layouts for f in lay.folders if f != "."}
    for module in ("extract/datasets/reader.py", "extract/datasets/layouts.py", "schemas/manifest.py", "extract/datasets/synth.py"):
        code = (REPO / module).read_text()
        code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may give examples
        found = [n for n in names if re.search(rf"\b{re.escape(n)}\b", code)]
        assert not found, (module, found)


def test_docs_table_lists_every_layout():
    section = (REPO / "docs" / "datasets.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for name, lay_name in LAYOUTS:
        lay = MANIFEST[name].layout(lay_name)
        row = [r for r in rows if r.startswith(f"| `{name}` | `{lay_name}` |")]
        assert len(row) == 1, (name, lay_name)
        for folder in lay.folders:
            assert (f"`{folder}/" if folder != "." else "`leftImg8bit/") in row[0], (name, lay_name, folder)


@pytest.mark.parametrize("name,layout", LAYOUTS)
def test_synth_round_trip_in_every_layout(tmp_path, name, layout):
    spec = MANIFEST[name]
    lay = spec.layout(layout)
    write_synth_dataset(spec, tmp_path, 4, (24, 48), seed=1, layout=layout)
    reader = DatasetReader(spec, tmp_path)
    assert reader.copy.layout.name == layout and reader.copy.folder_name == lay.folders[0]
    unlabelled = lay.synth.get("unlabelled", {}).get("n", 0)
    everything = list(reader)
    frames = [f for f in everything if f.labelled]
    assert len(frames) == 4 and reader.sizes() == [(24, 48)] * len(everything)
    assert len(everything) == 4 + (unlabelled if spec.frames == "all" else 0)
    for f in everything:
        if not f.labelled:  # frames: all keeps the benchmark's test images, their labels void
            assert f.label.shape == f.size and (f.label == 255).all()
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (24, 48, 3) and f.size == (24, 48)
        # the label read from disk went through the layout's mapping
        raw = np.asarray(Image.open(f.label_path))
        np.testing.assert_array_equal(f.label, lay.labels.lut[raw])
        allowed = set(range(19)) | {255} if spec.kind == "semantic" else {0, 1, 255}
        assert set(np.unique(f.label)) <= allowed
    assert frames[0].image_path.suffix[1:] in lay.image_exts
    report = check_dataset(spec, tmp_path)
    assert report.ok, report.errors
    assert report.warnings  # 4 frames != release count is a warning, not an error
    assert len(reader.listing.unlabelled) == unlabelled


def test_same_seed_same_frames_in_every_layout(tmp_path):
    spec = MANIFEST["smiyc_ra21"]
    for lay in spec.layout_names:
        write_synth_dataset(spec, tmp_path / lay, 3, (16, 32), seed=4, layout=lay)
    a, b = (DatasetReader(spec, tmp_path / lay) for lay in spec.layout_names)
    assert a.ids == b.ids == ["validation0000", "validation0001", "validation0002"]
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.label, fb.label)
        assert fa.image_path.suffix == ".png" and fb.image_path.suffix == ".jpg"


def test_road_anomaly_raw_1_and_2_are_anomaly_other_values_an_error(tmp_path):
    spec = MANIFEST["road_anomaly"]
    labels = spec.layout().labels
    p = tmp_path / "lab.png"
    Image.fromarray(np.array([[0, 1, 2, 255]], dtype=np.uint8), mode="L").save(p)
    np.testing.assert_array_equal(read_label_file(labels, p), [[0, 1, 1, 255]])
    Image.fromarray(np.array([[0, 2, 7, 3]], dtype=np.uint8), mode="L").save(p)
    with pytest.raises(DatasetError, match=rf"{re.escape(str(p))}: label values \[3, 7\] outside the road_anomaly"):
        read_label_file(labels, p, "road_anomaly")
    write_synth_dataset(spec, tmp_path, 2, (16, 32), seed=3)
    on_disk = {int(v) for f in DatasetReader(spec, tmp_path) for v in np.unique(np.asarray(Image.open(f.label_path)))}
    assert 2 in on_disk and 1 not in on_disk  # synthetic copies carry the original value 2 (synth.raw_values)


def test_ro21_off_road_pixels_are_void(tmp_path):
    spec = MANIFEST["smiyc_ro21"]
    write_synth_dataset(spec, tmp_path, 3, (40, 80), seed=0)
    for f in DatasetReader(spec, tmp_path):
        assert f.image_path.suffix == ".webp"
        assert (f.label[:, 0] == 255).all() and (f.label[:, -1] == 255).all()  # road is in the middle
        assert (f.label == 0).any()


def test_cityscapes_layout_and_train_ids(tmp_path):
    spec = MANIFEST["cityscapes_val"]
    write_synth_dataset(spec, tmp_path, 3, (16, 32))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert "gtFine/val/frankfurt/frankfurt_000000_000000_gtFine_labelTrainIds.png" in files
    assert "leftImg8bit/val/lindau/lindau_000000_000001_leftImg8bit.png" in files


def test_natural_key_against_an_oracle():
    ids = ["validation_10", "validation_2", "validation_1", "a10b2", "a10b10", "a9", "b", "a", "10", "2", "x01", "x1"]

    def oracle(s):  # digit runs compared as numbers, the rest as text
        out, num = [], ""
        for ch in s + "\0":
            if ch.isdigit():
                num += ch
                continue
            if num:
                out.append((1, int(num), ""))
                num = ""
            if ch != "\0":
                out.append((2, 0, ch))
        return out, s

    assert sorted(ids, key=natural_key) == sorted(ids, key=oracle)
    assert sorted(ids, key=natural_key)[:2] == ["2", "10"]
    assert [i for i in sorted(ids, key=natural_key) if i.startswith("validation")] == \
        ["validation_1", "validation_2", "validation_10"]


def test_frames_all_lists_unlabelled_images_and_the_reader_reads_them_with_void_labels(tmp_path):
    text = (REPO / "data_manifest.yaml").read_text()
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text.replace("    roi: road only (off-road pixels are 255 in the labels; the obstacle track scores the road)\n    synth",
                                     "    frames: all\n    roi: road only\n    synth", 1))
    spec = get_dataset_spec("smiyc_ro21", manifest)
    assert spec.frames == "all"
    write_synth_dataset(spec, tmp_path / "d", 3, (16, 32), layout="smiyc_release")
    copy = locate(spec, tmp_path / "d")
    listing = list_frames(copy)
    assert [r.id for r in listing.frames] == ["curvy-street_1", "curvy-street_2", "validation_1", "validation_2",
                                              "validation_3"]
    assert [r.labelled for r in listing.frames] == [False, False, True, True, True]
    assert [r.id for r in list_frames(copy, frames="labelled").frames] == ["validation_1", "validation_2", "validation_3"]
    reader = DatasetReader(spec, tmp_path / "d")
    assert reader.labelled == [False, False, True, True, True]
    assert "5 frames (2 unlabelled)" in reader.notes()[0]
    assert any(n.startswith("kept 2 unlabelled image(s) as frames") for n in reader.notes())
    f = reader[0]
    assert f.label_path is None and f.label.dtype == np.uint8 and (f.label == 255).all() and f.label.shape == f.size
    assert reader[2].labelled and (reader[2].label != 255).any()
    assert check_dataset(spec, tmp_path / "d").ok  # unlabelled images are decoded, not label-checked


def test_obstacle_track_keeps_excluded_ids_as_unlabelled_frames(tmp_path):
    """ObstacleTrack-all holds all 40 validation frames; ObstacleTrack-validation scores 30 of
    them: the 10 excluded ids are frames of the whole track whose labels are never read."""
    spec = MANIFEST["smiyc_obstacle_track"]
    write_synth_dataset(spec, tmp_path, 21, (8, 16), seed=2)
    copy = locate(spec, tmp_path)
    listing = list_frames(copy)
    ids = [r.id for r in listing.frames]
    assert len(ids) == 23 and ids[:2] == ["curvy-street_1", "curvy-street_2"] and ids[-1] == "validation_21"
    unlabelled = [r.id for r in listing.frames if not r.labelled]
    assert unlabelled == ["curvy-street_1", "curvy-street_2", "validation_19", "validation_21"]
    assert (tmp_path / "dataset_ObstacleTrack/labels_masks/validation_19_labels_semantic.png").is_file()
    assert not listing.orphan_labels  # the excluded frames' labels are theirs, not orphans
    scored = [r.id for r in list_frames(copy, include_excluded=True).frames if r.labelled]
    assert "validation_19" in scored and len(scored) == 21
    # the validation copy of the same folder scores exactly the labelled frames of the track
    ro = [r.id for r in list_frames(locate(MANIFEST["smiyc_ro21"], tmp_path, "smiyc_release")).frames]
    assert ro == [r.id for r in listing.frames if r.labelled]
    # a scene the benchmark does not know (its set_frames filter) does not fit the layout
    (tmp_path / "dataset_ObstacleTrack/images/parking_1.webp").write_bytes(b"x")
    assert [p.name for p in list_frames(copy).unexpected] == ["parking_1.webp"]


def test_digest_covers_the_label_mapping_not_the_folders(tmp_path):
    text = (REPO / "data_manifest.yaml").read_text()
    base = MANIFEST["road_anomaly"].digest()
    assert MANIFEST["smiyc_ro21"].digest("validation_dataset") == MANIFEST["smiyc_ro21"].digest("smiyc_release")
    variants = {
        "folder": text.replace("folder: RoadAnomaly\n", "folder: [RoadAnomaly, road_anomaly]\n"),
        "title": text.replace("title: RoadAnomaly (Lis et al. 2019)", "title: RA"),
        "count": text.replace("count: 60", "count: 61"),
    }
    for what, variant in variants.items():
        (tmp_path / f"{what}.yaml").write_text(variant)
        assert get_dataset_spec("road_anomaly", tmp_path / f"{what}.yaml").digest() == base, what
    (tmp_path / "map.yaml").write_text(text.replace("label_map: {0: 0, 1: 1, 2: 1, 255: 255}",
                                                    "label_map: {0: 0, 2: 1, 255: 255}"))
    assert get_dataset_spec("road_anomaly", tmp_path / "map.yaml").digest() != base


def test_malformed_manifest_names_the_file_and_layout(tmp_path):
    text = (REPO / "data_manifest.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace('labelled_ids: \'^validation\'', 'labelled_ids: \'^(validation\'', 1))
    with pytest.raises(DatasetError, match=rf"{re.escape(str(bad))}: dataset 'smiyc_ra21' layout 'smiyc_release' is malformed"):
        load_manifest(bad)
    bad.write_text(text.replace("schema_version: 2", "schema_version: 1"))
    with pytest.raises(DatasetError, match="schema_version 1, this version reads 2"):
        load_manifest(bad)


def test_check_reports_missing_label_corrupt_image_extra_and_size_mismatch(tmp_path):
    spec = MANIFEST["fs_static"]
    write_synth_dataset(spec, tmp_path, 4, (16, 32))
    refs = DatasetReader(spec, tmp_path).refs
    folder = tmp_path / "fs_static"
    refs[0].label_path.unlink()
    refs[1].image_path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(refs[2].label_path)
    (folder / "images" / "notes.txt").write_text("x")
    Image.fromarray(np.zeros((16, 32), np.uint8), mode="L").save(folder / "labels_masks" / "orphan.png")
    errors = check_dataset(spec, tmp_path).errors
    joined = "\n".join(errors)
    assert f"{refs[0].image_path}: image has no label (expected {folder / 'labels_masks' / refs[0].id}.png)" in joined
    assert f"{refs[1].image_path}: cannot decode image" in joined
    assert "differs from image size" in joined and refs[2].label_path.name in joined
    assert "1 file(s) do not fit layout validation_dataset: fs_static/ with images/{id}.jpg" in joined
    assert "notes.txt; --skip-unexpected leaves them out" in joined
    assert f"{folder / 'labels_masks' / 'orphan.png'}: label has no image" in joined
    assert len(errors) == 5
    with pytest.raises(DatasetError, match="notes.txt; --skip-unexpected leaves them out \\(and 1 more problems\\)"):
        DatasetReader(spec, tmp_path)


def test_cli_check_and_synth(tmp_path):
    runner = CliRunner()
    res = runner.invoke(extract_main, ["datasets", "synth", "--dataset", "smiyc_ra21", "--out", str(tmp_path), "--n", "2", "--size", "16x32"])
    assert res.exit_code == 0 and "layout validation_dataset" in res.output, res.output
    res = runner.invoke(extract_main, ["datasets", "check", "--dataset", "smiyc_ra21", "--data-root", str(tmp_path)])
    assert res.exit_code == 0 and "2 frames OK" in res.output and "(layout validation_dataset)" in res.output
    res = runner.invoke(extract_main, ["datasets", "check", "--dataset", "road_anomaly", "--data-root", str(tmp_path)])
    assert res.exit_code == 1 and "no road_anomaly copy found" in res.output and "Traceback" not in res.output
    res = runner.invoke(extract_main, ["datasets", "synth", "--dataset", "smiyc_ra21", "--out", str(tmp_path), "--size", "big"])
    assert res.exit_code == 2 and "--size" in res.output
    res = runner.invoke(extract_main, ["datasets", "check", "--dataset", "nope", "--data-root", str(tmp_path)])
    assert res.exit_code == 2 and "road_anomaly" in res.output  # lists the valid names


def test_system_file_names():
    from extract.datasets.layouts import is_system_file

    for rel in (".DS_Store", "images/.DS_Store", "images/._0.png", "images/Thumbs.db", "images/THUMBS.DB",
                "images/desktop.ini", "images/Desktop.ini", "__MACOSX/images/0.png", "images/.hidden/0.png"):
        assert is_system_file(rel), rel
    for rel in ("images/0.png", "images/thumbs.png", "images/desktop.jpg", "images/a.DS_Store.png"):
        assert not is_system_file(rel), rel
