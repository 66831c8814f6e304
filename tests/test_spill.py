"""The spill's map files (analyze.run.spill): what is written is read back bit for bit, through
O_DIRECT where the file system allows it and buffered where it does not (the same bytes on disk
either way), and a file that is not the map asked for is a one-line error naming it."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from analyze.plan.passes import SPILL_BLOCK
from analyze.run import spill as S


def _map(shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    m = rng.random(shape).astype(dtype)
    m.flat[:3] = (0.0, -0.0, 1e-300)  # signed zero and a subnormal neighbour keep their bits
    return m


def _buffered(monkeypatch):
    """The system without O_DIRECT (as macOS and Windows): the buffered fallback."""
    monkeypatch.delattr(os, "O_DIRECT", raising=False)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 1024), (64, 65), (512, 1024)])
@pytest.mark.parametrize("direct", [True, False])
def test_a_map_reads_back_bit_for_bit(tmp_path, monkeypatch, shape, direct):
    if not direct:
        _buffered(monkeypatch)
    m = _map(shape)
    S.write_map(str(tmp_path / "k0"), 3, m)
    path = tmp_path / "k0-3.map"
    assert path.stat().st_size == SPILL_BLOCK + -(-m.nbytes // SPILL_BLOCK) * SPILL_BLOCK  # header, whole blocks
    back = S.read_map(str(tmp_path / "k0"), 3, shape)
    assert back.shape == shape and back.dtype == np.float64
    np.testing.assert_array_equal(back.view(np.uint64), m.view(np.uint64))


def test_direct_and_buffered_write_the_same_bytes_and_read_each_other(tmp_path, monkeypatch):
    """Views that are not contiguous and float32 maps (stored as float64, as scored) alike."""
    m = _map((33, 70))
    maps = {"plain": m, "transposed": m.T.copy().T, "strided": _map((66, 70))[::2], "float32": _map((33, 70), 1, np.float32)}
    direct = tmp_path / "direct"
    buffered = tmp_path / "buffered"
    direct.mkdir()
    buffered.mkdir()
    for i, a in enumerate(maps.values()):
        S.write_map(str(direct / "k"), i, a)
    with monkeypatch.context() as mp:
        _buffered(mp)
        for i, a in enumerate(maps.values()):
            S.write_map(str(buffered / "k"), i, a)
        for i, a in enumerate(maps.values()):  # buffered reads of O_DIRECT's files
            np.testing.assert_array_equal(S.read_map(str(direct / "k"), i, a.shape), np.asarray(a, np.float64))
    for i, a in enumerate(maps.values()):
        assert (direct / f"k-{i}.map").read_bytes() == (buffered / f"k-{i}.map").read_bytes()
        np.testing.assert_array_equal(S.read_map(str(buffered / "k"), i, a.shape), np.asarray(a, np.float64))


def test_a_file_system_that_refuses_o_direct_gets_buffered_io(tmp_path, monkeypatch):
    """tmpfs (and others) refuse O_DIRECT at open with EINVAL: the same file, written and read buffered."""
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this system")
    real_open, refused = os.open, []

    def no_direct(path, flags, *args, **kw):
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args, **kw)

    m = _map((40, 50))
    monkeypatch.setattr(os, "open", no_direct)
    S.write_map(str(tmp_path / "k"), 0, m)
    np.testing.assert_array_equal(S.read_map(str(tmp_path / "k"), 0, m.shape), m)
    assert len(refused) == 2  # the write and the read both tried O_DIRECT first


def test_other_errors_are_not_swallowed(tmp_path):
    with pytest.raises(FileNotFoundError):
        S.read_map(str(tmp_path / "k"), 0, (4, 4))
    with pytest.raises(OSError):
        S.write_map(str(tmp_path / "missing" / "k"), 0, _map((4, 4)))


def test_a_file_that_is_not_the_map_asked_for_names_itself(tmp_path):
    prefix = str(tmp_path / "k")
    S.write_map(prefix, 0, _map((16, 256)))  # 32 KiB: 8 blocks
    with pytest.raises(ValueError, match=r"k-0\.map.*16x300") as e:  # another size: the file's size says so
        S.read_map(prefix, 0, (16, 300))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"k-0\.map: not a spilled 32x128 map"):  # same bytes, another shape
        S.read_map(prefix, 0, (32, 128))
    path = tmp_path / "k-0.map"
    raw = bytearray(path.read_bytes())
    raw[:4] = b"\x93NUM"  # e.g. an .npy of the former format
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"k-0\.map: not a spilled 16x256 map"):
        S.read_map(prefix, 0, (16, 256))
    path.write_bytes(bytes(raw[:-SPILL_BLOCK]))  # cut short
    with pytest.raises(ValueError, match=r"k-0\.map: \d+ bytes, not those of a spilled 16x256 map"):
        S.read_map(prefix, 0, (16, 256))


def test_a_map_is_two_dimensional(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        S.write_map(str(tmp_path / "k"), 0, np.zeros(5))


def test_the_buffers_start_on_a_block_boundary():
    for n in (SPILL_BLOCK, 3 * SPILL_BLOCK, 100 * SPILL_BLOCK):
        for role in ("spill write", "spill read", "another role"):
            b = S._aligned(role, n)
            assert b.size == n and b.ctypes.data % SPILL_BLOCK == 0

