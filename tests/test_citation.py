"""CITATION.cff is valid YAML with the fields CFF 1.2.0 requires, and cites the running version."""

import datetime
from pathlib import Path

import yaml

from schemas.version import __version__

REPO = Path(__file__).resolve().parents[1]


def test_citation_cff_cites_this_version():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for field in ("message", "title", "authors"):
        assert cff[field], field
    assert all(a.get("name") or a.get("family-names") for a in cff["authors"])
    assert str(cff["version"]) == __version__
    assert cff["license"] == "MIT"
    datetime.date.fromisoformat(str(cff["date-released"]))
