"""read_slice(mapped=True): a large uncompressed TIFF page comes back as a read-only memory
map of the file with exactly the values of the eager read; every other page is decoded."""
from __future__ import annotations

import mmap

import numpy as np
import pytest
import tifffile

from engine.errors import ImageReadError
from engine.imageio import probe, read_slice
from engine.imageio import tiff as tiff_mod


def _is_mapped(a: np.ndarray) -> bool:
    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


def _both(path, index=0):
    src = probe(path)[0]
    return read_slice(src, index), read_slice(src, index, mapped=True)


@pytest.fixture
def small_maps(monkeypatch):
    monkeypatch.setattr(tiff_mod, "MAP_MIN_BYTES", 0)  # map the small test files too


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_grey_page_is_mapped_and_equal(tmp_path, small_maps, dtype):
    rng = np.random.default_rng(1)
    a = (rng.normal(0, 1000, (301, 517))).astype(dtype)
    p = tmp_path / "g.tif"
    tifffile.imwrite(p, a)
    eager, mapped = _both(p)
    assert _is_mapped(mapped) and not mapped.flags.writeable
    assert not _is_mapped(eager)
    assert mapped.dtype == eager.dtype and mapped.shape == eager.shape
    assert np.array_equal(mapped, eager) and np.array_equal(mapped, a)


def test_rgb_and_stack_page(tmp_path, small_maps):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    eager, mapped = _both(tmp_path / "rgb.tif")
    assert _is_mapped(mapped) and np.array_equal(mapped, eager) and np.array_equal(mapped, rgb)
    stack = rng.integers(0, 60000, (3, 40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    for k in range(3):
        eager, mapped = _both(tmp_path / "s.tif", k)
        assert _is_mapped(mapped) and np.array_equal(mapped, stack[k]) and np.array_equal(eager, mapped)


@pytest.mark.parametrize("case", ["bigendian", "zlib", "float64", "rgba", "planar"])
def test_pages_not_stored_as_returned_are_decoded(tmp_path, small_maps, case):
    rng = np.random.default_rng(3)
    p = tmp_path / f"{case}.tif"
    if case == "bigendian":
        a = rng.integers(0, 60000, (50, 60), dtype=np.uint16)
        tifffile.imwrite(p, a, byteorder=">")
    elif case == "zlib":
        a = rng.integers(0, 60000, (50, 60), dtype=np.uint16)
        tifffile.imwrite(p, a, compression="zlib")
    elif case == "float64":
        a = rng.normal(size=(50, 60))
        tifffile.imwrite(p, a)
    elif case == "rgba":
        a = rng.integers(0, 256, (50, 60, 4), dtype=np.uint8)
        tifffile.imwrite(p, a, photometric="rgb", extrasamples=["unassalpha"])
    else:
        a = rng.integers(0, 256, (3, 50, 60), dtype=np.uint8)
        tifffile.imwrite(p, a, photometric="rgb", planarconfig="separate")
    eager, mapped = _both(p)
    assert not _is_mapped(mapped)
    assert mapped.dtype == eager.dtype and np.array_equal(mapped, eager)


def test_small_pages_are_read_not_mapped(tmp_path):
    a = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(tmp_path / "s.tif", a)
    eager, mapped = _both(tmp_path / "s.tif")
    assert not _is_mapped(mapped) and np.array_equal(mapped, a)


def test_truncated_file_is_an_error_not_a_map(tmp_path, small_maps):
    a = np.arange(200 * 300, dtype=np.uint16).reshape(200, 300)
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, a)
    src = probe(p)[0]
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_slice(src, 0, mapped=True)
