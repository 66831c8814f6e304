"""A parquet file of the results schema (``results.parquet`` and its side tables): the schema
version it records and checks, a read through one open file, an atomic replace, and the lock
that serialises read-merge-replace across processes (:mod:`schemas.results`,
:mod:`schemas.side_tables`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from schemas.errors import DataError
from schemas.files import publish, read_table
from schemas.version import tool_version

RESULTS_SCHEMA_VERSION = 2


class ResultsError(DataError):
    """A results file is missing, malformed or from another schema version."""


def table_metadata() -> dict[bytes, bytes]:
    return {b"results_schema_version": str(RESULTS_SCHEMA_VERSION).encode(), b"tool_version": tool_version().encode()}


def read_checked(path: Path) -> pa.Table:
    """The table at ``path``, read whole through one open file (another writer's replace cannot mix
    into it: :func:`schemas.files.read_table`); ResultsError unless it is a parquet file of this
    schema version."""
    try:
        table = read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ResultsError(f"{path}: not a parquet file ({exc})") from None
    check_version(path, table.schema.metadata)
    return table


def check_version(path, metadata) -> None:
    """Raise ResultsError unless ``metadata`` (a parquet schema's) is of this schema version."""
    version = (metadata or {}).get(b"results_schema_version", b"?").decode()
    if version == str(RESULTS_SCHEMA_VERSION):
        return
    why = (" (version 1 rows have no run and no frames column, so rows of two checkpoints of one model "
           "cannot be told apart)" if version == "1" else "")
    raise ResultsError(
        f"{path}: results schema version {version} is not supported (this tool reads {RESULTS_SCHEMA_VERSION}){why}; "
        "score again into a new file (`analyze score --out NEW.parquet`) or move this one aside")


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a parquet file via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        publish(tmp, path)  # mkstemp's 0600 would hide the table from colleagues: the umask's mode
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def table_lock(path: str | os.PathLike) -> FileLock:
    """The lock that serialises read-merge-replace of the table at ``path`` across processes:
    an OS lock (flock) on the hidden file ``.<name>.lock`` beside it, released by the OS when a
    holder dies. Without it, two writers that read the same old table each replace it with
    their own merge and the rows of one are lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.parent / f".{path.name}.lock")
