"""data_manifest.yaml as the only list of datasets: report titles and order, the in-distribution
role and the component track come from it, and no module spells a list of dataset names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analyze.metrics.components import TRACKS, track_for_dataset
from analyze.report import dataset_name
from schemas.manifest import (COMPONENT_TRACKS, DatasetError, in_distribution_dataset, load_manifest,
                              report_order)

REPO = Path(__file__).resolve().parents[1]
MANIFEST = load_manifest()


def test_report_fields_and_tracks():
    assert report_order(MANIFEST) == ["smiyc_ra21", "smiyc_ro21", "fs_lost_found", "fs_static", "road_anomaly"]
    assert in_distribution_dataset(MANIFEST) == "cityscapes_val"
    assert MANIFEST["fs_lost_found"].display_name == "FS L&F"
    assert MANIFEST["smiyc_anomaly_track"].display_name == "smiyc_anomaly_track"  # no report title
    assert {n for n, s in MANIFEST.items() if s.component_track == "obstacle"} == {"smiyc_ro21",
                                                                                  "smiyc_obstacle_track"}
    assert set(TRACKS) == set(COMPONENT_TRACKS)


def test_analyze_reads_titles_and_tracks_from_the_manifest(tmp_path, monkeypatch):
    text = (REPO / "data_manifest.yaml").read_text()
    variant = tmp_path / "m.yaml"
    variant.write_text(text.replace("report: {title: FS L&F, order: 3}", "report: {title: Lost and Found, order: 3}")
                       .replace("component_track: anomaly  # the benchmark README",
                                "component_track: obstacle  # the benchmark README"))
    assert dataset_name("fs_lost_found") == "FS L&F" and track_for_dataset("fs_lost_found") == "anomaly"
    monkeypatch.setenv("ANOMSEG_MANIFEST", str(variant))
    assert dataset_name("fs_lost_found") == "Lost and Found"
    assert track_for_dataset("fs_lost_found") == "obstacle"
    assert dataset_name("not_in_the_manifest") == "not_in_the_manifest"
    assert track_for_dataset("not_in_the_manifest") == "anomaly"


@pytest.mark.parametrize("old, new, message", [
    ("role: in_distribution  # Table 1", "role: mIoU  # Table 1", "role 'mIoU', expected one of"),
    ("component_track: obstacle  # ObstacleTrack-validation", "component_track: road  #",
     "component_track 'road', expected one of"),
    ("report: {title: FS Static, order: 4}", "report: {title: FS Static, rank: 4}", "report must be a mapping"),
    ("report: {title: RoadAnomaly, order: 5}", "report: {title: RoadAnomaly, order: 5}\n    role: in_distribution",
     "role in_distribution but kind 'anomaly'"),
])
def test_malformed_report_fields_name_the_file_and_dataset(tmp_path, old, new, message):
    text = (REPO / "data_manifest.yaml").read_text()
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(DatasetError, match=re.escape(str(bad)) + ".*" + re.escape(message)):
        load_manifest(bad)


def test_two_in_distribution_datasets_are_refused(tmp_path):
    text = (REPO / "data_manifest.yaml").read_text()
    twin = text[text.index("  cityscapes_val:"):].replace("cityscapes_val:", "cityscapes_twin:", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + twin)
    with pytest.raises(DatasetError, match="2 datasets have role in_distribution"):
        load_manifest(bad)


def test_no_module_lists_datasets():
    """Two or more manifest names as string literals in one module would be a second list."""
    for path in sorted(p for pkg in ("extract", "analyze", "schemas") for p in (REPO / pkg).rglob("*.py")):
        code = path.read_text()
        found = {n for n in MANIFEST if re.search(rf"""["']{re.escape(n)}["']""", code)}
        assert len(found) < 2, (path.relative_to(REPO), sorted(found))


def test_docs_layout_matches_the_tree():
    """Every module of the three packages is in the layout of docs/development.md, and everything listed exists."""
    text = (REPO / "docs" / "development.md").read_text()
    section = text[text.index("The layout ("):]
    block = section[section.index("```\n") + 4:]
    block = block[:block.index("```")]
    listed, top = set(), None
    for line in block.splitlines():
        if line.startswith("   "):
            continue  # the continuation of a description
        path = line.split()[0]
        if not line.startswith(" "):
            top = path
        else:
            listed.add(top + path)
    assert all((REPO / p).exists() for p in listed | {"extract/", "schemas/", "analyze/"}), \
        sorted(p for p in listed if not (REPO / p).exists())
    for pkg in ("extract", "schemas", "analyze"):
        for f in (REPO / pkg).rglob("*.py"):
            rel = f.relative_to(REPO).as_posix()
            if f.name == "__init__.py" and f.parent == REPO / pkg:
                continue
            assert rel in listed or any(rel.startswith(p) for p in listed if p.endswith("/")), rel
