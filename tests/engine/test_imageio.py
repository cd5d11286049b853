"""engine.imageio: formats, lazy stacks, bad files, display (DICOM: test_imageio_dicom.py)."""
from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from engine import imageio
from engine.errors import ImageReadError, MaskLoopError
from engine.imageio import Source

pytest.importorskip("pydicom")   # imageio_cases writes DICOM
from imageio_cases import consistent, one_source, truncate  # noqa: E402


# --- Source ------------------------------------------------------------------------------

def test_source_json_round_trip():
    s = Source("dicom_series", "ct/series1", ("a.dcm", "b.dcm"), 2, 64, 32, "int16", 1, "CT", "AX")
    back = Source.from_json(s.to_json())
    assert back == s
    assert isinstance(back.files, tuple)
    with pytest.raises(ValueError):
        Source.from_json({**s.to_json(), "kind": "movie"})
    with pytest.raises(ValueError):
        Source.from_json({**s.to_json(), "n_slices": 3})  # files do not match
    with pytest.raises(KeyError):
        Source.from_json({"kind": "image"})


# --- PNG / JPEG / BMP --------------------------------------------------------------------

def test_png_8_and_16_bit_grey_keep_raw_values(tmp_path):
    g8 = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    g16 = np.random.default_rng(1).integers(0, 65536, (37, 53), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g8.png"), g8)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    for name, ref in (("g8.png", g8), ("g16.png", g16)):
        src = one_source(tmp_path / name)
        assert (src.kind, src.n_slices, src.height, src.width) == ("image", 1, 37, 53)
        assert src.name == Path(name).stem and src.modality == ""
        arr = imageio.read_slice(src, 0)
        consistent(src, arr)
        assert np.array_equal(arr, ref)
        assert np.array_equal(imageio.read_image(tmp_path / name), ref)


def test_colour_png_is_rgb_and_alpha_dropped(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 7
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # cv2 writes BGR
    rgba = np.dstack([rgb, np.full((10, 12), 99, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    c16 = (np.arange(10 * 12 * 3, dtype=np.uint16) * 100).reshape(10, 12, 3)
    cv2.imwrite(str(tmp_path / "c16.png"), c16[..., ::-1])
    for name, ref in (("c.png", rgb), ("a.png", rgb), ("c16.png", c16)):
        src = one_source(tmp_path / name)
        assert src.channels == 3
        arr = imageio.read_slice(src, 0)
        consistent(src, arr)
        assert np.array_equal(arr, ref), name


def test_palette_and_grey_alpha_png_probe_matches_read(tmp_path):
    from PIL import Image
    idx = (np.arange(20 * 30) % 4).reshape(20, 30).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    im.save(tmp_path / "pal.png")
    Image.fromarray(np.dstack([idx * 50, np.full_like(idx, 200)]), mode="LA").save(tmp_path / "la.png")
    pal = one_source(tmp_path / "pal.png")
    arr = imageio.read_slice(pal, 0)
    consistent(pal, arr)
    assert tuple(arr[0, 1]) == (255, 0, 0)  # index 1 -> red, as RGB
    la = one_source(tmp_path / "la.png")
    arr = imageio.read_slice(la, 0)
    consistent(la, arr)
    assert np.array_equal(arr, idx * 50)


def test_jpeg_and_bmp(tmp_path):
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    rgb = np.dstack([grey, grey[::-1], np.full_like(grey, 128)])
    cv2.imwrite(str(tmp_path / "g.jpg"), grey, [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(tmp_path / "c.jpeg"), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(tmp_path / "c.bmp"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "g.bmp"), grey)
    for name, ref, tol in (("g.jpg", grey, 3), ("c.jpeg", rgb, 6), ("c.bmp", rgb, 0), ("g.bmp", grey, 0)):
        src = one_source(tmp_path / name)
        arr = imageio.read_slice(src, 0)
        consistent(src, arr)
        assert np.abs(arr.astype(int) - ref).max() <= tol, name


def test_jpeg_exif_rotation_probe_agrees_with_pixels_and_labelme(tmp_path):
    from PIL import Image
    img = np.zeros((30, 50, 3), np.uint8)
    img[:5, :, 0] = 255
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    src = one_source(tmp_path / "rot.jpg")
    arr = imageio.read_slice(src, 0)
    assert (src.height, src.width) == (50, 30) == arr.shape[:2]
    # labelme shows (and stores masks for) the rotated image: shapes must agree
    import labelme
    from labelme import utils as lmu
    shown = lmu.img_data_to_arr(labelme.LabelFile.load_image_file(str(tmp_path / "rot.jpg")))
    assert shown.shape[:2] == arr.shape[:2]


def test_unicode_path(tmp_path):
    a = np.full((4, 5), 9, np.uint8)
    p = tmp_path / "Schnitt µ 1.png"
    imageio.write_png(p, a)
    assert np.array_equal(imageio.read_image(p), a)


# --- TIFF --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32])
def test_tiff_dtypes_kept(tmp_path, dtype):
    rng = np.random.default_rng(3)
    a = (rng.random((21, 34)) * 1000 - (500 if np.dtype(dtype).kind in "if" else 0)).astype(dtype)
    tifffile.imwrite(tmp_path / "x.tif", a)
    src = one_source(tmp_path / "x.tif")
    assert (src.kind, src.dtype, src.channels) == ("image", np.dtype(dtype).name, 1)
    arr = imageio.read_slice(src, 0)
    consistent(src, arr)
    assert np.array_equal(arr, a)


def test_tiff_float64_becomes_float32_and_bigendian_native(tmp_path):
    a = np.linspace(-1, 1, 30 * 20).reshape(30, 20)
    tifffile.imwrite(tmp_path / "f64.tif", a)
    src = one_source(tmp_path / "f64.tif")
    arr = imageio.read_slice(src, 0)
    assert src.dtype == "float32" and arr.dtype == np.float32
    assert np.allclose(arr, a, atol=1e-6)
    b = np.arange(600, dtype=np.uint16).reshape(30, 20)
    tifffile.imwrite(tmp_path / "be.tif", b, byteorder=">")
    arr = imageio.read_image(tmp_path / "be.tif")
    assert arr.dtype.isnative and np.array_equal(arr, b)


def test_tiff_rgb_rgba_planar(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 65535, (16, 24, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "rgba.tif", np.dstack([rgb, rgb[..., :1]]), photometric="rgb",
                     extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "planar.tif", rgb.transpose(2, 0, 1).copy(), photometric="rgb",
                     planarconfig="separate")
    for name in ("rgb.tif", "rgba.tif", "planar.tif"):
        src = one_source(tmp_path / name)
        assert src.channels == 3 and src.dtype == "uint16", name
        arr = imageio.read_slice(src, 0)
        consistent(src, arr)
        assert np.array_equal(arr, rgb), name


def _stack(n=12, h=20, w=30):
    return (np.arange(n * h * w, dtype=np.uint32) % 60000).astype(np.uint16).reshape(n, h, w)


@pytest.mark.parametrize("layout", ["shaped", "imagej", "pages", "zlib", "rgb"])
def test_multipage_tiff_is_stack_and_reads_one_page(tmp_path, monkeypatch, layout):
    a = _stack()
    p = tmp_path / "stack.tif"
    if layout == "shaped":
        tifffile.imwrite(p, a)
    elif layout == "imagej":
        tifffile.imwrite(p, a, imagej=True)
    elif layout == "rgb":
        a = np.stack([a, a // 2, a // 3], axis=-1)
        tifffile.imwrite(p, a, photometric="rgb")
    else:  # page by page, no metadata: what most other tools write
        with tifffile.TiffWriter(p) as tw:
            for page in a:
                tw.write(page, metadata=None, contiguous=False,
                         compression="zlib" if layout == "zlib" else None)
    decoded = []
    for cls in (tifffile.TiffPage, tifffile.TiffFrame):
        orig = cls.asarray

        def spy(self, *args, _orig=orig, **kw):
            decoded.append(self.index)
            return _orig(self, *args, **kw)
        monkeypatch.setattr(cls, "asarray", spy)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", lambda *a, **k: pytest.fail("whole stack read"))
    src = one_source(p)
    assert (src.kind, src.n_slices, src.height, src.width) == ("stack", 12, 20, 30)
    assert decoded == []  # probe decodes no pixel data
    for k in (0, 7, 11):
        decoded.clear()
        arr = imageio.read_slice(src, k)
        assert len(decoded) == 1  # exactly one page decoded
        consistent(src, arr)
        assert np.array_equal(arr, a[k])


def test_lzw_tiff_stack_from_other_tools(tmp_path):
    # Pillow/scanners/ImageJ write LZW; tifffile needs imagecodecs for it, Pillow steps in
    from PIL import Image
    a = _stack(n=4)
    frames = [Image.fromarray(p) for p in a]
    frames[0].save(tmp_path / "lzw.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    src = one_source(tmp_path / "lzw.tif")
    assert (src.kind, src.n_slices, src.dtype) == ("stack", 4, "uint16")
    assert np.array_equal(imageio.read_slice(src, 2), a[2])


def test_tiff_stack_with_single_ifd_truncated_layout(tmp_path):
    # tifffile/ImageJ "truncated" files (used beyond 4 GB) describe all slices with one IFD
    a = _stack(n=5)
    tifffile.imwrite(tmp_path / "t.tif", a, truncate=True)
    src = one_source(tmp_path / "t.tif")
    assert src.n_slices == 5
    for k in range(5):
        assert np.array_equal(imageio.read_slice(src, k), a[k])


def test_thousand_page_tiff_probe_reads_headers_only(tmp_path, monkeypatch):
    a = np.zeros((1000, 8, 8), np.uint8)
    a[:, 0, 0] = np.arange(1000) % 256
    with tifffile.TiffWriter(tmp_path / "big.tif") as tw:
        for page in a:
            tw.write(page, metadata=None, contiguous=False)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("decoded"))
    monkeypatch.setattr(tifffile.TiffFrame, "asarray", lambda *a, **k: pytest.fail("decoded"))
    src = one_source(tmp_path / "big.tif")
    assert src.n_slices == 1000
    monkeypatch.undo()
    assert imageio.read_slice(src, 999)[0, 0] == 999 % 256


def test_stardist_fixture_16bit(fixtures_dir):
    p = fixtures_dir / "stardist_dsb2018" / "img2d.tif"
    if not p.exists():
        pytest.skip("img2d.tif fixture absent")
    src = one_source(p)
    assert (src.kind, src.height, src.width, src.dtype, src.channels) == ("image", 512, 512, "uint16", 1)
    arr = imageio.read_slice(src, 0)
    assert np.array_equal(arr, tifffile.imread(p))
    disp = imageio.to_uint8(arr)
    assert disp.dtype == np.uint8 and disp.shape == (512, 512)
    assert disp.min() == 0 and disp.max() == 255  # percentiles stretch the nuclei to full range


def test_large_16bit_image_opens_without_extra_copies(tmp_path):
    h = w = 8192
    a = np.empty((h, w), np.uint16)
    a[:] = np.arange(w, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", a)
    src = one_source(tmp_path / "big.tif")
    tracemalloc.start()
    try:
        arr = imageio.read_slice(src, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(arr[::1000], a[::1000])
    assert peak < 1.2 * a.nbytes  # the result itself, no second full-size buffer
    del a, arr
    # PNG keeps 16 bit through cv2 (IMREAD_ANYDEPTH)
    b = np.zeros((h, w), np.uint16)
    b[::64] = 65535
    imageio.write_png(tmp_path / "big.png", b)
    src = one_source(tmp_path / "big.png")
    assert (src.height, src.width, src.dtype) == (h, w, "uint16")
    arr = imageio.read_slice(src, 0)
    assert arr.dtype == np.uint16 and arr[64, 5] == 65535 and arr.flags.c_contiguous


# --- bad input ---------------------------------------------------------------------------

def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(ImageReadError, match="not found") as e:
        imageio.probe(tmp_path / "nope.png")
    assert "nope.png" in str(e.value)
    (tmp_path / "x.gif").write_bytes(b"GIF89a....")
    with pytest.raises(ImageReadError, match="unsupported"):
        imageio.probe(tmp_path / "x.gif")
    (tmp_path / "fake.tif").write_bytes(os.urandom(300))
    with pytest.raises(ImageReadError, match="fake.tif"):
        imageio.probe(tmp_path / "fake.tif")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="broken.png"):
        imageio.probe(folder)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_truncated_files_are_errors_naming_the_file(tmp_path, ext):
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    p = tmp_path / f"cut{ext}"
    if ext == ".tif":
        tifffile.imwrite(p, a, photometric="rgb")
    else:
        cv2.imwrite(str(p), a)
    truncate(p, 0.5)
    with pytest.raises(ImageReadError) as e:
        imageio.probe(p)
    assert p.name in str(e.value)
    with pytest.raises(ImageReadError) as e:
        imageio.read_image(p)
    assert p.name in str(e.value)


def test_stack_truncated_after_probe(tmp_path):
    a = _stack(n=6, h=64, w=64)
    p = tmp_path / "s.tif"
    with tifffile.TiffWriter(p) as tw:
        for page in a:
            tw.write(page, metadata=None, contiguous=False)
    src = one_source(p)
    truncate(p, 0.75)
    for k in (5, 0):  # the file no longer holds what was added: no silent partial data
        with pytest.raises(ImageReadError, match="truncated") as e:
            imageio.read_slice(src, k)
        assert "s.tif" in str(e.value) and f"slice {k}" in str(e.value)
    with pytest.raises(ImageReadError, match="truncated"):
        imageio.probe(p)


def test_stack_cut_inside_ifd_chain_is_an_error_not_fewer_pages(tmp_path):
    a = _stack(n=6, h=16, w=16)
    p = tmp_path / "s.tif"
    with tifffile.TiffWriter(p) as tw:
        for page in a:
            tw.write(page, metadata=None, contiguous=False)
    with tifffile.TiffFile(p) as tif:
        cut = tif.pages[3].offset + 4  # inside page 3's IFD
    p.write_bytes(p.read_bytes()[:cut])
    with pytest.raises(ImageReadError, match="s.tif"):
        imageio.probe(p)


def test_slice_index_out_of_range(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", _stack(n=3), photometric="minisblack")
    src = one_source(tmp_path / "s.tif")
    assert src.n_slices == 3
    for bad in (3, -1):
        with pytest.raises(ImageReadError) as e:
            imageio.read_slice(src, bad)
        assert "s.tif" in str(e.value) and f"slice {bad}" in str(e.value)


def test_file_changed_since_probe(tmp_path):
    p = tmp_path / "c.png"
    imageio.write_png(p, np.zeros((10, 10), np.uint8))
    src = one_source(p)
    imageio.write_png(p, np.zeros((12, 10), np.uint8))
    with pytest.raises(ImageReadError, match="changed"):
        imageio.read_slice(src, 0)


# --- display -----------------------------------------------------------------------------

def _reference(a, lo, hi):
    y = (a.astype(np.float64) - lo) * 255.0 / (hi - lo)
    return np.floor(np.clip(y, 0, 255) + 0.5).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32])
def test_to_uint8_matches_float_reference(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    rng = np.random.default_rng(11)
    if info is not None:
        a = rng.integers(max(info.min, -3000), min(info.max, 5000), (64, 80), endpoint=True).astype(dtype)
    else:
        a = (rng.standard_normal((64, 80)) * 300).astype(dtype)
    before = a.copy()
    for window in ((40, 400), (float(a.mean()), 37.5), (-600, 1500)):
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
        out = imageio.to_uint8(a, window=window)
        assert out.dtype == np.uint8 and out.shape == a.shape
        diff = np.abs(out.astype(int) - _reference(a, lo, hi))
        lut = np.dtype(dtype).itemsize <= 2 and info is not None  # exact; float maths may round
        assert diff.max() <= (0 if lut else 1)
    assert np.array_equal(a, before)  # never modifies the data


def test_to_uint8_percentiles_rgb_presets_and_edge_cases():
    a = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    out = imageio.to_uint8(a)
    c, w = imageio.auto_window(a)
    assert c == pytest.approx(np.percentile(a, [0.5, 99.5]).mean())
    assert out[0, 0] == 0 and out[-1, -1] == 255
    rgb = np.dstack([a, a // 2, a // 4]).astype(np.uint16)
    out = imageio.to_uint8(rgb, window=(5000, 10000))
    assert out.shape == rgb.shape and np.array_equal(out[..., 0], imageio.to_uint8(a, window=(5000, 10000)))
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(imageio.to_uint8(u8, percentiles=None), u8)  # full range: identity
    f = np.array([[0.0, np.nan], [1.0, np.inf], [-np.inf, 0.5]], np.float32)
    assert imageio.to_uint8(f, window=(0.5, 1.0)).tolist() == [[0, 0], [255, 255], [0, 128]]
    assert imageio.to_uint8(np.zeros((3, 3), np.uint16)).tolist() == [[0] * 3] * 3  # flat image
    assert imageio.to_uint8(np.array([[True, False]])).tolist() == [[255, 0]]
    hu = np.array([[-1000, 40, 3000]], np.int16)
    assert imageio.to_uint8(hu, window=imageio.WINDOW_PRESETS["soft tissue"]).tolist() == [[0, 128, 255]]
    for name in ("soft tissue", "bone", "lung", "brain"):
        c, w = imageio.WINDOW_PRESETS[name]
        assert w > 0


def test_auto_window_subsamples_big_images_but_stays_close():
    rng = np.random.default_rng(2)
    a = rng.gamma(2.0, 500.0, (3000, 3000)).astype(np.uint16)
    c, w = imageio.auto_window(a)
    lo, hi = np.percentile(a, [0.5, 99.5])
    assert abs((c - w / 2) - lo) < 0.02 * (hi - lo) and abs((c + w / 2) - hi) < 0.02 * (hi - lo)
    sparse = np.zeros((200, 200), np.uint16)
    sparse[10:12, 10:12] = 900  # a few bright nuclei: percentiles are both 0
    c, w = imageio.auto_window(sparse)
    assert w > 0 and imageio.to_uint8(sparse)[10, 10] == 255


# --- writing -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_png_round_trip_grey_and_rgb(tmp_path, dtype):
    top = np.iinfo(dtype).max
    grey = (np.arange(30 * 40) % (int(top) + 1)).astype(dtype).reshape(30, 40)
    rgb = np.zeros((30, 40, 3), dtype)
    rgb[..., 0] = top  # pure red
    imageio.write_png(tmp_path / "g.png", grey)
    imageio.write_png(tmp_path / "c.png", rgb)
    assert np.array_equal(imageio.read_image(tmp_path / "g.png"), grey)
    assert np.array_equal(imageio.read_image(tmp_path / "c.png"), rgb)
    bgr = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)
    assert tuple(bgr[0, 0]) == (0, 0, top)  # stored as a real red PNG
    from PIL import Image
    with Image.open(tmp_path / "c.png") as im:  # what other tools (labelme) see
        if dtype == np.uint8:
            assert im.getpixel((0, 0)) == (255, 0, 0)
    assert sorted(os.listdir(tmp_path)) == ["c.png", "g.png"]  # no temporary files left


def test_write_png_rejects_other_types(tmp_path):
    with pytest.raises(MaskLoopError, match="uint8 or uint16"):
        imageio.write_png(tmp_path / "f.png", np.zeros((3, 3), np.float32))
    with pytest.raises(MaskLoopError):
        imageio.write_png(tmp_path / "f.png", np.zeros((3, 3, 5), np.uint8))
    assert not (tmp_path / "f.png").exists()


def test_imageio_loads_no_qt_or_torch():
    import subprocess
    code = ("import sys, engine.imageio as m, numpy as np, tempfile, os;"
            "d=tempfile.mkdtemp(); p=os.path.join(d,'a.png'); m.write_png(p, np.zeros((2,2),np.uint8));"
            "m.probe(p); m.read_image(p);"
            "bad=[k for k in sys.modules if k.split('.')[0] in ('torch','PyQt5','PySide2','PySide6')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("shape", [(700, 300), (90, 1500, 3), (1, 5), (3, 70000)])
def test_to_uint8_lut_in_bands_matches_whole_image_lookup(shape):
    # the LUT is applied in row bands for speed; every band size must give lut[a] exactly
    a = np.random.default_rng(3).integers(0, 65535, shape, dtype=np.uint16)
    got = imageio.to_uint8(a, window=(30000.0, 20000.0))
    lo, hi = 20000.0, 40000.0
    ref = np.floor(np.clip((a.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255) + 0.5).astype(np.uint8)
    assert got.shape == a.shape and np.array_equal(got, ref)
