"""DICOM read as a radiologist's tools read it, on real third-party files (pydicom's and
pydicom-data's test files) and series written from them with pydicom: sniffing, enhanced
rescale, HU only when HU, DICOM-SEG refused, series from selected files, default window,
hostile frame counts, pipes and odd folder names."""
from __future__ import annotations

import os
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import imageio
from engine.cli import run
from engine.errors import ImageReadError
from engine.imageio import Source
from engine.project import Project

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_rescale  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402


def _data(name: str) -> Path:
    p = get_testdata_file(name, download=False)
    if p is None:
        pytest.skip(f"{name} not installed (pydicom-data)")
    return Path(p)


CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def _one(path) -> Source:
    srcs = imageio.probe(path)
    assert len(srcs) == 1, srcs
    return srcs[0]


def _ct_series(folder: Path, zs, *, uid=None, window=None, names=None, ipp=True) -> list[Path]:
    """Copies of CT_small.dcm made into one series: new UIDs, positions along z."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    paths = []
    for k, z in enumerate(zs):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        if ipp:
            ds.ImagePositionPatient = [-158.135803, -179.035797, float(z)]
        else:
            del ds.ImagePositionPatient
        arr = ds.pixel_array.copy()
        arr[0, 0] = 100 * k  # a marker telling the slices apart
        ds.PixelData = arr.tobytes()
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        p = folder / (names[k] if names else f"slice{k}.dcm")
        ds.save_as(p)
        paths.append(p)
    return paths


# --- sniffing ---------------------------------------------------------------------------

def test_ct_small_with_tiff_like_preamble_is_dicom(tmp_path):
    assert CT_SMALL.read_bytes()[:4] == b"II*\x00"  # the trap: its preamble looks like a TIFF
    src = _one(CT_SMALL)
    assert (src.kind, src.modality, src.unit, src.height, src.width) == ("image", "CT", "HU", 128, 128)
    ds = pydicom.dcmread(CT_SMALL)
    ref = apply_modality_lut(ds.pixel_array, ds)
    arr = imageio.read_slice(src, 0)
    for y, x in [(0, 0), (64, 64), (100, 37), (127, 127)]:
        assert arr[y, x] == ref[y, x]
    proj = Project.create(tmp_path / "p")
    assert len(proj.add([CT_SMALL])) == 1
    assert proj.sources[0].modality == "CT"


def test_preamble_less_dataset_without_dicom_suffix(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    p = tmp_path / "IM0001"  # PACS exports often have no suffix and older ones no preamble
    ds.save_as(p, enforce_file_format=False)
    raw = p.read_bytes()
    ds.preamble = None
    p.write_bytes(raw[132:] if raw[128:132] == b"DICM" else raw)
    assert p.read_bytes()[128:132] != b"DICM"
    assert _one(p).modality == "CT"
    # a file whose first bytes merely look like a dataset is skipped in a folder scan
    (tmp_path / "blob.bin").write_bytes(b"\x08\x00\x05\x00CS\x0a\x00" + bytes(range(256)) * 2)
    assert [s.name for s in imageio.probe(tmp_path)] == ["IM0001"]  # found in a folder scan too


# --- enhanced multi-frame: rescale per frame and from the shared groups ------------------

def _frame_ref(ds, k: int) -> np.ndarray:
    """pydicom's own rescale of frame k with that frame's Pixel Value Transformation."""
    item = None
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and "PixelValueTransformationSequence" in per[k]:
        item = per[k].PixelValueTransformationSequence[0]
    else:
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    return apply_rescale(ds.pixel_array[k], item)


def test_enhanced_ct_rescale_from_shared_groups():
    path = _data("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    src = _one(path)
    assert (src.kind, src.n_slices, src.modality) == ("dicom_multiframe", 2, "CT")
    assert src.unit == ""  # RescaleType 'US' (unspecified): not claimed as HU
    for k in range(2):
        arr = imageio.read_slice(src, k)
        ref = _frame_ref(ds, k)
        assert float(np.abs(ref - ds.pixel_array[k]).max()) == 1024  # the rescale matters
        for y, x in [(0, 0), (200, 200), (256, 300), (511, 511)]:
            assert float(arr[y, x]) == float(ref[y, x])


def test_enhanced_rescale_per_frame_and_hu_when_rescale_type_says_so(tmp_path):
    ds = pydicom.dcmread(_data("eCT_Supplemental.dcm"))
    shared = ds.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence[0]
    pvt.RescaleType = "HU"
    for k, (slope, inter) in enumerate([(1.0, -1024.0), (2.0, -1000.0)]):
        item = pydicom.Dataset()
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, inter, "HU"
        ds.PerFrameFunctionalGroupsSequence[k].PixelValueTransformationSequence = \
            pydicom.Sequence([item])
    p = tmp_path / "ect_perframe.dcm"
    ds.save_as(p)
    ds = pydicom.dcmread(p)
    src = _one(p)
    assert src.unit == "HU"
    for k in range(2):
        arr = imageio.read_slice(src, k)
        ref = _frame_ref(ds, k)
        for y, x in [(0, 0), (200, 200), (300, 256)]:
            assert float(arr[y, x]) == float(ref[y, x])
    assert float(imageio.read_slice(src, 1)[200, 200]) == 2 * float(ds.pixel_array[1][200, 200]) - 1000


def test_classic_series_rescale_per_file(tmp_path):
    paths = _ct_series(tmp_path / "s", [0.0, 5.0])
    ds = pydicom.dcmread(paths[1])
    ds.RescaleIntercept = -1000  # one file of the series rescaled differently
    ds.save_as(paths[1])
    src = _one(tmp_path / "s")
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ref = apply_modality_lut(ds.pixel_array, ds)
        arr = imageio.read_slice(src, k)
        assert arr[64, 64] == ref[64, 64] and arr[0, 0] == ref[0, 0]


def test_hu_only_when_the_file_says_hu(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.Modality = "MR"
    ds.save_as(tmp_path / "mr.dcm")
    assert _one(tmp_path / "mr.dcm").unit == ""
    ds = pydicom.dcmread(CT_SMALL)
    ds.RescaleType = "US"
    ds.save_as(tmp_path / "us.dcm")
    assert _one(tmp_path / "us.dcm").unit == ""
    assert _one(CT_SMALL).unit == "HU"  # CT without RescaleType: the CT IOD rescales to HU


# --- DICOM-SEG is annotations, never an image --------------------------------------------

def test_dicom_seg_is_refused_with_import_hint(tmp_path):
    seg = _data("liver.dcm")
    assert pydicom.dcmread(seg, stop_before_pixels=True).Modality == "SEG"
    with pytest.raises(ImageReadError, match="--format volume") as e:
        imageio.probe(seg)
    assert "liver.dcm" in str(e.value) and "DICOM-SEG" in str(e.value)
    proj = Project.create(tmp_path / "p")
    before = (tmp_path / "p" / "maskloop.json").read_bytes()
    with pytest.raises(ImageReadError, match="import"):
        proj.add([CT_SMALL, seg])
    assert (tmp_path / "p" / "maskloop.json").read_bytes() == before
    assert Project.open(tmp_path / "p").items == []


def test_dicom_seg_written_with_highdicom_is_refused(tmp_path):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes
    ct = pydicom.dcmread(CT_SMALL)
    mask = np.zeros((1, 128, 128), bool)
    mask[0, 40:80, 40:80] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="rock", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=[ct], pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(CT_SMALL, folder / "ct.dcm")
    seg.save_as(folder / "seg.dcm")
    with pytest.raises(ImageReadError, match="--format volume"):
        imageio.probe(folder / "seg.dcm")
    with pytest.raises(ImageReadError, match="seg.dcm"):
        imageio.probe(folder)  # never added as a black image beside the scan


# --- series from a selection of files ----------------------------------------------------

def test_selected_files_of_a_series_make_one_series(tmp_path):
    names = ["c.dcm", "a.dcm", "b.dcm"]  # name order is not slice order
    paths = _ct_series(tmp_path / "sel", [10.0, -5.0, 2.5], names=names)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    proj = Project.create(tmp_path / "p")
    items = proj.add(shuffled)
    assert len(proj.sources) == 1 and len(items) == 3
    src = proj.sources[0]
    assert src.kind == "dicom_series"
    assert src.files == ("a.dcm", "b.dcm", "c.dcm")  # z = -5, 2.5, 10
    # slice k is the file at the k-th position (the marker pixel tells)
    assert [int(proj.load_image(it.id)[0, 0]) for it in items] == [100 - 1024, 200 - 1024, 0 - 1024]


def test_cli_new_with_images_of_one_series(tmp_path, capsys):
    paths = _ct_series(tmp_path / "sel", [0.0, 5.0, 10.0])
    assert run(["new", str(tmp_path / "P"), "--images", *map(str, paths)]) == 0
    proj = Project.open(tmp_path / "P")
    assert [s.kind for s in proj.sources] == ["dicom_series"] and len(proj.items) == 3


def test_instance_number_orders_when_positions_are_missing(tmp_path):
    paths = _ct_series(tmp_path / "noipp", [0, 0, 0], ipp=False, names=["z.dcm", "x.dcm", "y.dcm"])
    src = imageio.probe_paths(list(reversed(paths)))
    assert len(src) == 1 and src[0].files == ("z.dcm", "x.dcm", "y.dcm")  # instance 1, 2, 3


def test_folder_with_two_series_gives_two(tmp_path):
    folder = tmp_path / "two"
    _ct_series(folder, [0.0, 5.0], names=["a1.dcm", "a2.dcm"])
    _ct_series(folder, [0.0, 2.0, 4.0], names=["b1.dcm", "b2.dcm", "b3.dcm"])
    srcs = imageio.probe(folder)
    assert sorted(s.n_slices for s in srcs) == [2, 3]
    proj = Project.create(tmp_path / "p")
    assert len(proj.add([folder])) == 5
    assert len(proj.sources) == 2
    assert proj.add([folder]) == []  # already there: nothing twice


# --- default window ------------------------------------------------------------------------

def test_window_center_width_from_the_file(tmp_path):
    _ct_series(tmp_path / "w", [0.0, 5.0], window=(40, 400))
    src = _one(tmp_path / "w")
    assert src.window == (40.0, 400.0)
    again = Source.from_json(src.to_json())
    assert (again.window, again.unit) == ((40.0, 400.0), "HU")
    assert _one(CT_SMALL).window is None  # none in the file: none invented
    # enhanced: FrameVOILUTSequence in the shared functional groups
    assert _one(_data("eCT_Supplemental.dcm")).window == (49.0, 102.0)
    # several windows listed: the first is the recommended one
    ds = pydicom.dcmread(CT_SMALL)
    ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 1800]
    ds.save_as(tmp_path / "multi.dcm")
    assert _one(tmp_path / "multi.dcm").window == (40.0, 400.0)


# --- hostile files -------------------------------------------------------------------------

def _claiming_frames(path: Path, layout: str) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless
    compressed = layout == "rle"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = {"native": ExplicitVRLittleEndian, "rle": RLELossless,
                              "deflated": DeflatedExplicitVRLittleEndian}[layout]
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "OT", 8, 8, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.NumberOfFrames = 2_000_000_000
    if compressed:
        ds.PixelData = encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.zeros((8, 8), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 1000
    return path


@pytest.mark.parametrize("layout", ["native", "rle", "deflated"])
def test_two_billion_frames_refused_from_the_header(tmp_path, layout):
    p = _claiming_frames(tmp_path / "bomb.dcm", layout)
    with pytest.raises(ImageReadError, match="2000000000 frames") as e:
        imageio.probe(p)
    assert "bomb.dcm" in str(e.value)
    proj = Project.create(tmp_path / "p")
    with pytest.raises(ImageReadError, match="frames"):
        proj.add([tmp_path])
    assert Project.open(tmp_path / "p").items == []


def _finishes(fn):
    """Run fn in a thread; a deadlock guard (a blocked open never returns), not a speed check."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(300)
    assert not t.is_alive(), "blocked"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipe_in_a_folder_is_skipped_and_refused_by_name(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(CT_SMALL, folder / "ct.dcm")
    os.mkfifo(folder / "pipe.dcm")
    srcs = _finishes(lambda: imageio.probe(folder))
    assert [Path(s.path).name for s in srcs] == ["ct.dcm"]
    with pytest.raises(ImageReadError, match="not a regular file"):
        _finishes(lambda: imageio.probe(folder / "pipe.dcm"))


def test_folder_named_like_a_tiff(tmp_path):
    empty = tmp_path / "x.tif"
    empty.mkdir()
    proj = Project.create(tmp_path / "p")
    with pytest.raises(ImageReadError, match="no images in this folder") as e:
        proj.add([empty])
    assert "x.tif" in str(e.value)
    shutil.copy(CT_SMALL, empty / "ct.dcm")  # with an image inside it is just a folder
    assert len(proj.add([empty])) == 1
