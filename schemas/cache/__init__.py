"""The on-disk cache format: a versioned, frozen description, creation, validation, access.

One module per concept: :mod:`schemas.cache.spec` (what a cache is: attributes, arrays,
provenance), :mod:`schemas.cache.codecs` (chunk compression), :mod:`schemas.cache.store`
(creating, opening and validating a cache; its sizes), :mod:`schemas.cache.frames` (writing
and reading one frame). Their public names are all importable from ``schemas.cache``.

A cache is one Zarr v3 group per (model, dataset). Its root attributes are described by the
JSON Schema ``schemas/cache_attrs.schema.json`` and mirrored by :class:`CacheSpec`; its
arrays by :data:`ARRAYS`. Everything that depends only on the dataset and the model
configuration (frame sizes, window geometry) is written when the cache is created; the
extractor then writes, per frame, only chunks that belong to that frame (one frame or one
crop per chunk), every one of them even when it equals the fill value, and flips
``done[i]`` last (so a done frame always has all its chunks: :mod:`schemas.integrity`). Several writers (shards) can therefore fill
one cache without touching each other's chunks.

A cache made with ``extract run --hflip`` (attribute ``hflip``) also holds the outputs of a
horizontally flipped pass (:data:`FLIP_ARRAYS`: ``<array>_hflip``, same shapes, dtypes and
chunks, written with the frame before ``done``), for the flip-averaged scorers; caches
without it are valid and unchanged.

Ragged frame sizes are padded to the largest frame; ``sizes``/``logit_sizes`` say how much
of each padded slot is real. Labels are padded with 255 (void).

``labelled`` says which frames have a label (a benchmark's test images have none): the label
of an unlabelled frame is void (255) everywhere and no metric ever sees the frame. Caches
written before the attribute existed have no ``labelled``: every frame is labelled.
"""

from __future__ import annotations

from schemas.cache.spec import (  # noqa: F401
    ARRAYS,
    ATTRS_SCHEMA_PATH,
    ArraySpec,
    CACHE_KINDS,
    CacheError,
    CacheSpec,
    FLIP_ARRAYS,
    HFLIP_SUFFIX,
    Provenance,
    SCHEMA_VERSION,
    THUMB_LONG_SIDE,
    arrays_for,
    cache_digest,
    parse_kind,
    parse_schema_version,
    thumbnail_size,
    validate_attrs,
)
from schemas.cache.codecs import (  # noqa: F401
    COMPRESSION,
    DEFAULT_COMPRESSION,
    default_compressors,
)
from schemas.cache.metadata import metadata_problems  # noqa: F401
from schemas.cache.store import (  # noqa: F401
    check_metadata,
    consolidate,
    create_cache,
    disk_bytes,
    done_mask,
    open_cache,
    raw_bytes,
    read_spec,
    static_values,
    validate_cache,
)
from schemas.cache.frames import (  # noqa: F401
    mark_done,
    read_error_reason,
    read_label,
    read_pixel_logits,
    read_query_outputs,
    read_thumbnail,
    unlabelled_not_void,
    write_chunk,
    write_frame_common,
    write_frame_pixel,
    write_frame_query,
)
from schemas.manifest import LABEL_KINDS  # noqa: F401  (the label kinds a cache records)
