"""engine.imageio on DICOM: series order (slice normal, instance number), HU rescale,
multi-frame, headers-only probe, folders that mix series and images, damaged files."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from engine import imageio
from engine.errors import ImageReadError
from engine.imageio import Source

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from imageio_cases import consistent, one_source, truncate, write_dicom  # noqa: E402


# --- DICOM -------------------------------------------------------------------------------

def _ct_series(folder: Path, n=5, *, shuffle=True, suffixless=True, **kw):
    """n slices along z (instance numbers reversed), written under shuffled names."""
    folder.mkdir(parents=True, exist_ok=True)
    raws = [np.full((6, 8), 100 * (k + 1), np.uint16) + np.arange(8, dtype=np.uint16) for k in range(n)]
    names = [f"IM{k:03d}" for k in range(n)]
    if shuffle:
        random.Random(5).shuffle(names)
    paths = []
    for k in range(n):
        name = names[k] if (suffixless and k % 2) else names[k] + ".dcm"
        p = write_dicom(folder / name, raws[k], position=(0.0, 0.0, -50.0 + 2.5 * k),
                        instance=n - k, **kw)
        paths.append(p)
    return raws, paths


def test_dicom_series_ordered_by_position_with_hu(tmp_path):
    raws, paths = _ct_series(tmp_path / "ct", slope=1.0, intercept=-1024.0)
    src = one_source(tmp_path / "ct")
    assert src.kind == "dicom_series" and src.n_slices == 5
    assert (src.height, src.width, src.channels, src.modality) == (6, 8, 1, "CT")
    assert src.name == "CT AX"
    assert src.files == tuple(p.name for p in paths)  # z order, not name or instance order
    assert src.dtype == "int16"
    for k in range(5):
        arr = imageio.read_slice(src, k)
        consistent(src, arr)
        assert np.array_equal(arr, raws[k].astype(np.int32) - 1024)
    # stored relative: resolves from base
    rel = Source.from_json({**src.to_json(), "path": "ct"})
    assert np.array_equal(imageio.read_slice(rel, 2, base=tmp_path), raws[2].astype(np.int32) - 1024)


def test_dicom_order_uses_slice_normal_not_z(tmp_path):
    # sagittal: rows along y, columns along -z; normal is -x. z is equal for all slices.
    folder = tmp_path / "sag"
    folder.mkdir()
    xs = [10.0, -5.0, 30.0, 0.0]
    for k, x in enumerate(xs):
        write_dicom(folder / f"s{k}.dcm", np.full((4, 4), k, np.uint16), position=(x, 0.0, 0.0),
                    orientation=(0, 1, 0, 0, 0, -1), instance=1 + k)
    src = one_source(folder)
    normal = np.cross([0, 1, 0], [0, 0, -1])
    expect = sorted(range(4), key=lambda k: float(np.dot(normal, [xs[k], 0, 0])))
    assert src.files == tuple(f"s{k}.dcm" for k in expect)
    assert [int(imageio.read_slice(src, i)[0, 0]) + 1024 for i in range(4)] == expect


def test_dicom_order_falls_back_to_instance_number(tmp_path):
    folder = tmp_path / "noipp"
    folder.mkdir()
    for k, inst in enumerate([3, 1, 2]):
        write_dicom(folder / f"f{k}.dcm", np.full((4, 4), inst, np.uint16), position=None,
                    orientation=None, instance=inst)
    src = one_source(folder)
    assert src.files == ("f1.dcm", "f2.dcm", "f0.dcm")


def test_dicom_float_rescale_and_signed_ct(tmp_path):
    _ct_series(tmp_path / "pet", n=3, slope=0.5, intercept=0.25, modality="PT")
    src = one_source(tmp_path / "pet")
    assert src.dtype == "float32"
    arr = imageio.read_slice(src, 0)
    consistent(src, arr)
    assert arr[0, 1] == pytest.approx((100 + 1) * 0.5 + 0.25)
    # signed 16-bit storage with intercept -1024 (common): int16 HU, padding saturates
    folder = tmp_path / "signed"
    folder.mkdir()
    for k in range(2):
        px = np.full((4, 4), 40, np.int16)
        px[0, 0] = -32768  # padding outside the scan field
        write_dicom(folder / f"{k}.dcm", px, position=(0, 0, k), signed=True, bits_stored=16)
    src = one_source(folder)
    arr = imageio.read_slice(src, 1)
    assert src.dtype == "int16" and arr.dtype == np.int16
    assert arr[1, 1] == 40 - 1024 and arr[0, 0] == -32768


def test_dicom_without_rescale_keeps_raw(tmp_path):
    p = write_dicom(tmp_path / "mr.dcm", np.full((5, 5), 4000, np.uint16), slope=None, modality="MR")
    src = one_source(p)
    assert (src.kind, src.dtype, src.modality, src.name) == ("image", "uint16", "MR", "mr")
    assert imageio.read_image(p)[2, 2] == 4000


def test_dicom_multiframe_reads_one_frame(tmp_path, monkeypatch):
    frames = np.stack([np.full((6, 7), 1000 + k, np.uint16) for k in range(4)])
    p = write_dicom(tmp_path / "multi.dcm", frames, frames=4, intercept=-1000.0)
    calls = []
    orig = pydicom.pixels.pixel_array

    def spy(src, **kw):
        calls.append(kw.get("index"))
        return orig(src, **kw)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    src = one_source(p)
    assert (src.kind, src.n_slices, src.height, src.width, src.dtype) == \
        ("dicom_multiframe", 4, 6, 7, "int16")
    assert calls == []  # probe: headers only
    arr = imageio.read_slice(src, 2)
    assert calls == [2]
    consistent(src, arr)
    assert np.all(arr == 2)
    assert imageio.read_image(p)[0, 0] == 0  # first frame


def test_dicom_series_probe_reads_headers_and_slice_reads_one_file(tmp_path, monkeypatch):
    raws, paths = _ct_series(tmp_path / "ct", n=4)
    read = []
    orig = pydicom.pixels.pixel_array

    def spy(src, **kw):
        read.append(Path(src).name)
        return orig(src, **kw)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    orig_dcmread = pydicom.dcmread

    def dcmread(fp, *a, **kw):
        assert kw.get("stop_before_pixels"), "probe must not load pixel data"
        return orig_dcmread(fp, *a, **kw)
    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    src = one_source(tmp_path / "ct")
    assert read == []
    imageio.read_slice(src, 3)
    assert read == [paths[3].name]


def test_folder_mixes_series_images_and_skips_other_files(tmp_path):
    _ct_series(tmp_path / "a" / "s1", n=3, series_uid="1.2.3.1")
    folder2 = tmp_path / "a" / "mixed"
    folder2.mkdir()
    for k in range(2):
        write_dicom(folder2 / f"one_{k}.dcm", np.zeros((4, 4), np.uint16), series_uid="9.1",
                    position=(0, 0, k), description="AX")
        write_dicom(folder2 / f"two_{k}.dcm", np.zeros((5, 5), np.uint16), series_uid="9.2",
                    position=(0, 0, k), description="COR")
    # a DICOM file without an image (like DICOMDIR) is not an error in a folder scan
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dd = FileDataset(str(folder2 / "DICOMDIR"), {}, file_meta=meta, preamble=b"\0" * 128)
    dd.SOPClassUID = meta.MediaStorageSOPClassUID
    dd.save_as(str(folder2 / "DICOMDIR"), enforce_file_format=True)
    imageio.write_png(tmp_path / "a" / "photo_10.png", np.zeros((3, 4), np.uint8))
    imageio.write_png(tmp_path / "a" / "photo_9.png", np.zeros((3, 4), np.uint8))
    (tmp_path / "a" / "notes.txt").write_text("hello")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"junk")
    srcs = imageio.probe(tmp_path / "a")
    kinds = [(s.kind, Path(s.path).name, s.n_slices) for s in srcs]
    assert ("dicom_series", "s1", 3) in kinds
    assert ("dicom_series", "mixed", 2) in kinds and sum(k[1] == "mixed" for k in kinds) == 2
    names = [k[1] for k in kinds if k[0] == "image"]
    assert names == ["photo_9.png", "photo_10.png"]  # natural order
    by_name = {s.name: s for s in srcs}
    assert {"AX", "COR"} <= set(by_name)
    assert by_name["COR"].height == 5


def test_dicom_without_pixel_data_and_truncated(tmp_path):
    p = write_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4), np.uint16), pixel_data=False)
    with pytest.raises(ImageReadError, match="no pixel data") as e:
        imageio.probe(p)
    assert "nopix.dcm" in str(e.value)
    with pytest.raises(ImageReadError, match="nopix.dcm"):
        imageio.read_image(p)
    q = write_dicom(tmp_path / "cut.dcm", np.zeros((64, 64), np.uint16))
    truncate(q, 0.6)
    with pytest.raises(ImageReadError, match="truncated") as e:
        imageio.probe(q)
    assert "cut.dcm" in str(e.value)
    with pytest.raises(ImageReadError, match="cut.dcm"):
        imageio.read_image(q)


def test_compressed_dicom_reads_and_cut_off_is_caught_at_probe(tmp_path):
    from pydicom.uid import RLELossless
    raw = (np.arange(48 * 40).reshape(48, 40) % 3000).astype(np.uint16)
    p = write_dicom(tmp_path / "rle.dcm", raw)
    ds = pydicom.dcmread(p)
    ds.compress(RLELossless)  # encapsulated pixel data, as PACS exports often are
    ds.save_as(p)
    src = one_source(p)
    assert np.array_equal(imageio.read_slice(src, 0), raw.astype(np.int32) - 1024)
    truncate(p, 0.7)
    with pytest.raises(ImageReadError, match="truncated") as e:
        imageio.probe(p)
    assert "rle.dcm" in str(e.value)


def test_dicom_without_preamble_with_suffix(tmp_path):
    p = write_dicom(tmp_path / "raw.dcm", np.full((4, 4), 1100, np.uint16), preamble=False)
    src = one_source(p)
    assert src.modality == "CT"
    assert imageio.read_slice(src, 0)[0, 0] == 1100 - 1024


def test_series_slice_deleted_after_probe_names_file_and_slice(tmp_path):
    _, paths = _ct_series(tmp_path / "ct", n=3)
    src = one_source(tmp_path / "ct")
    os.remove(tmp_path / "ct" / src.files[1])
    with pytest.raises(ImageReadError) as e:
        imageio.read_slice(src, 1)
    assert src.files[1] in str(e.value) and "slice 1" in str(e.value)


