"""Which frames a results row pools (the ``frames`` column of :mod:`schemas.results`).

Kept apart from the results table's reading and writing (pandas, pyarrow) so that the command
line offers the choices without importing them.
"""

from __future__ import annotations

#: frames pooled into a row: every done frame (as SMIYC), or only frames with an anomaly
#: pixel (as the course evaluation code, which also drops those frames' in-distribution pixels)
FRAMES = ("all", "with-anomaly")
