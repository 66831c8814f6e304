"""The benchmarks' per-frame submission formats that ``analyze export`` writes (:mod:`analyze.export.submission`).

Kept apart from the writer, which needs numpy, h5py and the cache, so that the command line
lists the formats in its help without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportFormat:
    """A benchmark's per-frame submission format."""

    name: str
    benchmark: str
    suffix: str
    doc: str

    def folder(self, out: Path, method: str, dataset: str) -> Path:
        return out / "anomaly_p" / method / dataset


FORMATS: dict[str, ExportFormat] = {
    "smiyc": ExportFormat("smiyc", "SegmentMeIfYouCan", ".hdf5",
                          "anomaly_p/<method>/<dataset>/<frame id>.hdf5, HDF5 dataset `value`, float16, gzip 9"),
}
