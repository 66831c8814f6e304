"""Dataset copies on disk, as the manifest (:mod:`schemas.manifest`) describes them.

- :mod:`extract.datasets.layouts` finds the one copy of a dataset under ``--data-root`` and
  lists its frames without decoding anything;
- :mod:`extract.datasets.reader` decodes a copy's frames (image, canonical label, size) and
  checks copies (``extract datasets check``);
- :mod:`extract.datasets.synth` writes tiny synthetic datasets in the exact real layouts
  (``extract datasets synth``, the tests, the demo world's textures).

Imports only :mod:`schemas`: never the models, the cache writer or the extraction loop.
"""
