"""The cache side of extraction: creating or reopening a cache, what it records, writing frames.

- :mod:`extract.writer.resume` creates a cache atomically, or reopens one a run may continue
  (same checkpoint, configuration, preprocessing, dataset content, dtype and frames);
- :mod:`extract.writer.provenance` is what a cache records about how its numbers were made
  (checkpoint hash, versions, device);
- :mod:`extract.writer.frames` copies outputs from the device to pinned host buffers and
  compresses and stores them on writer threads, a frame's ``done`` flag last.

Imports only :mod:`schemas` (the cache format), torch and numpy: never the models, the
datasets or the extraction loop.
"""
