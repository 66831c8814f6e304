"""Build step, not run-time code: setuptools runs these commands (``[tool.setuptools.cmdclass]``
in pyproject.toml) so that the wheel carries the dataset manifest.

The top-level ``data_manifest.yaml`` stays the one file people edit; the sdist takes it along
and the wheel gets a copy at ``schemas/data_manifest.yaml``, which :func:`schemas.manifest.default_manifest`
reads through ``importlib.resources``. An editable install reads the top-level file itself.
Nothing in the tools imports this module.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

MANIFEST = "data_manifest.yaml"


def _source() -> Path:
    path = Path(__file__).resolve().parents[1] / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the dataset manifest the package ships is missing")
    return path


class BuildPy(build_py):
    """build_py that also copies the manifest into the built ``schemas`` package."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "schemas" / MANIFEST
            self.mkpath(str(target.parent))
            self.copy_file(str(_source()), str(target))


class SDist(sdist):
    """sdist that takes the top-level manifest along (the wheel is built from the sdist)."""

    def make_distribution(self) -> None:
        _source()
        if MANIFEST not in self.filelist.files:
            self.filelist.append(MANIFEST)
        super().make_distribution()
