"""Files the tools write atomically (a temporary file renamed over the target) with the
permissions any other file of the user would get, and read whole whatever replaces them.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, so a results table
or statistics file renamed from it could be read by its owner only: colleagues sharing a study
folder could not open it. :func:`publish` gives the temporary file ``0o666 & ~umask`` (what
``open(path, "w")`` gives) before the rename.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (Linux: read from /proc without changing it; elsewhere set and
    restored under a lock)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the mode a newly created file gets (``0o666 & ~umask``) and rename it to ``path``."""
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)


def read_table(path: str | os.PathLike):
    """``pyarrow.parquet.read_table`` of ``path`` through one open file. pyarrow opens a path
    twice (to find the file, then to read it), so a table that another process replaces in
    between (:func:`publish`) could be read as the footer of one file and the pages of the other:
    "Deserializing page header failed", or rows of neither. One descriptor reads one file, the
    old or the new."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pa.OSFile(os.fspath(path)) as f:
        return pq.read_table(f)
