"""Synthetic datasets in all six real layouts round-trip through the readers."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from extract.cli import main as extract_main
from extract.datasets import DatasetError, DatasetReader, check_dataset, load_manifest, read_label
from extract.synth import write_synth_dataset

MANIFEST = load_manifest()


def test_manifest_has_the_six_datasets():
    assert set(MANIFEST) == {"smiyc_ra21", "smiyc_ro21", "fs_lost_found", "fs_static", "road_anomaly", "cityscapes_val"}
    assert MANIFEST["smiyc_ro21"].folder == "RoadObsticle21"  # sic, as distributed
    assert MANIFEST["road_anomaly"].label_map[2] == 1


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_synth_round_trip(tmp_path, name):
    spec = MANIFEST[name]
    write_synth_dataset(spec, tmp_path, 4, (24, 48), seed=1)
    reader = DatasetReader(spec, tmp_path)
    frames = list(reader)
    assert len(frames) == 4 and reader.sizes() == [(24, 48)] * 4
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (24, 48, 3)
        assert f.size == (24, 48)
        # the label read from disk went through the manifest mapping
        raw = np.asarray(Image.open(f.label_path))
        np.testing.assert_array_equal(f.label, spec.lut[raw])
        allowed = set(range(19)) | {255} if spec.kind == "semantic" else {0, 1, 255}
        assert set(np.unique(f.label)) <= allowed
    assert frames[0].image_path.suffix[1:] in spec.image_exts
    report = check_dataset(spec, tmp_path)
    assert report.ok, report.errors
    assert report.warnings  # 4 frames != release count is a warning, not an error


def test_road_anomaly_maps_2_to_1_and_other_values_to_void(tmp_path):
    spec = MANIFEST["road_anomaly"]
    write_synth_dataset(spec, tmp_path, 2, (16, 32), seed=3)
    raw = np.array([[0, 2, 255, 7]], dtype=np.uint8)
    p = tmp_path / "lab.png"
    Image.fromarray(raw, mode="L").save(p)
    np.testing.assert_array_equal(read_label(spec, p), [[0, 1, 255, 255]])
    on_disk = {int(v) for f in DatasetReader(spec, tmp_path) for v in np.unique(np.asarray(Image.open(f.label_path)))}
    assert 2 in on_disk and 1 not in on_disk  # raw files carry RoadAnomaly's value 2


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


def test_label_value_outside_mapping_is_an_error(tmp_path):
    spec = MANIFEST["fs_lost_found"]
    write_synth_dataset(spec, tmp_path, 2, (16, 32))
    ref = DatasetReader(spec, tmp_path).refs[1]
    bad = np.zeros((16, 32), np.uint8)
    bad[0, 0] = 7
    Image.fromarray(bad, mode="L").save(ref.label_path)
    report = check_dataset(spec, tmp_path)
    assert not report.ok
    assert any(str(ref.label_path) in e and "[7]" in e for e in report.errors)


def test_check_reports_missing_label_corrupt_image_extra_and_size_mismatch(tmp_path):
    spec = MANIFEST["fs_static"]
    write_synth_dataset(spec, tmp_path, 4, (16, 32))
    refs = DatasetReader(spec, tmp_path).refs
    refs[0].label_path.unlink()
    refs[1].image_path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(refs[2].label_path)
    (tmp_path / spec.folder / "images" / "notes.txt").write_text("x")
    Image.fromarray(np.zeros((16, 32), np.uint8), mode="L").save(tmp_path / spec.folder / "labels_masks" / "orphan.png")
    errors = check_dataset(spec, tmp_path).errors
    joined = "\n".join(errors)
    assert f"{refs[0].image_path}: image has no label" in joined
    assert f"{refs[1].image_path}: cannot decode image" in joined
    assert "differs from image size" in joined and refs[2].label_path.name in joined
    assert "notes.txt: unexpected file" in joined
    assert "orphan.png: label has no image" in joined
    with pytest.raises(DatasetError, match="more problems"):
        DatasetReader(spec, tmp_path)


def test_cli_check_and_synth(tmp_path):
    runner = CliRunner()
    res = runner.invoke(extract_main, ["datasets", "synth", "--dataset", "smiyc_ra21", "--out", str(tmp_path), "--n", "2", "--size", "16x32"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(extract_main, ["datasets", "check", "--dataset", "smiyc_ra21", "--data-root", str(tmp_path)])
    assert res.exit_code == 0 and "2 frames OK" in res.output
    res = runner.invoke(extract_main, ["datasets", "check", "--dataset", "road_anomaly", "--data-root", str(tmp_path)])
    assert res.exit_code == 1 and "not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(extract_main, ["datasets", "synth", "--dataset", "smiyc_ra21", "--out", str(tmp_path), "--size", "big"])
    assert res.exit_code == 2 and "--size" in res.output
    res = runner.invoke(extract_main, ["datasets", "check", "--dataset", "nope", "--data-root", str(tmp_path)])
    assert res.exit_code == 2 and "road_anomaly" in res.output  # lists the valid names
