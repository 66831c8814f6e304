"""The label values every label map of the project uses (no imports: the metrics read it at start-up).

Anomaly labels: 0 in-distribution, 1 anomaly, :data:`VOID` ignored. Semantic labels: the
train ids 0..K-1, :data:`VOID` ignored. The manifest's label maps
(:mod:`schemas.manifest`) turn each dataset's own values into these.
"""

VOID = 255  # canonical label of void / ignored pixels, in every label kind
