"""``analyze maps``: each frame's anomaly maps as ``.npy`` and image panels (:mod:`analyze.maps.write`).

Maps come from :mod:`analyze.compose.frame_scores`, the path ``analyze score`` scores; names
from :mod:`analyze.report.names`.
"""
