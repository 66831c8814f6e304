"""How chunks are compressed: the presets of ``extract run --compression``."""

from __future__ import annotations

from typing import Literal, TypedDict

from zarr.codecs import BloscCodec, Crc32cCodec

from schemas.cache.spec import CacheError

class BloscPreset(TypedDict):
    """The arguments of a preset's ``zarr.codecs.BloscCodec``."""

    cname: Literal["zstd", "lz4"]
    clevel: int
    shuffle: Literal["shuffle", "bitshuffle", "noshuffle"]


#: Chunk compression presets (``extract run --compression``), each followed by a crc32c
#: checksum so that ``analyze inspect --verify`` detects corruption. Measured on the demo's
#: fp16 ERFNet logits, one thread (docs/formats.md "Cache format"): zstd3 1.43x at 91 MiB/s, zstd1
#: 1.37x at 186 MiB/s, lz4 1.25x at 588 MiB/s; byte shuffle beats bit shuffle and no shuffle.
COMPRESSION: dict[str, BloscPreset | None] = {
    "zstd3": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle"},
    "zstd1": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle"},
    "lz4": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"},
    "none": None,
}
DEFAULT_COMPRESSION = "zstd3"


def default_compressors(compression: str = DEFAULT_COMPRESSION) -> list:
    """The codec chain of a preset of :data:`COMPRESSION` (Blosc + crc32c, or crc32c alone)."""
    if compression not in COMPRESSION:
        raise CacheError(f"unknown compression {compression!r}; valid: {', '.join(COMPRESSION)}")
    blosc = COMPRESSION[compression]
    return ([BloscCodec(**blosc)] if blosc else []) + [Crc32cCodec()]
