"""Voxel geometry read from files onto Source.geometry (spacing (dz, dy, dx) mm, origin LPS,
direction columns): DICOM series and enhanced files, TIFF ImageJ/resolution tags, plain
images without a scale; kept through the project manifest and shown by `info`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from engine import imageio
from engine.cli import run
from engine.imageio import Source, format_length
from engine.project import Project

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def _one(path) -> Source:
    srcs = imageio.probe(path)
    assert len(srcs) == 1, srcs
    return srcs[0]


def _series(folder: Path, positions, orientation=(1, 0, 0, 0, 1, 0), spacing=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    out = []
    for k, pos in enumerate(positions):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        if spacing is not None:
            ds.PixelSpacing = list(spacing)
        p = folder / f"s{k:02d}.dcm"
        ds.save_as(p)
        out.append(p)
    return out


def _ipp(path) -> np.ndarray:
    return np.asarray(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient, float)


def test_ct_series_geometry_maps_voxels_to_each_slice_position(tmp_path):
    # written out of order: the geometry follows the slice order, not the file order
    zs = [10.0, 0.0, 5.0, 15.0]
    _series(tmp_path / "ct", [(-158.1, -179.0, z) for z in zs])
    src = _one(tmp_path / "ct")
    g = src.geometry
    assert g is not None and set(g.known) >= {"spacing", "origin", "direction"}
    assert g.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert g.origin == pytest.approx((-158.1, -179.0, 0.0))
    aff = g.affine_lps()
    for k, name in enumerate(src.files):
        assert aff @ [0, 0, k, 1] == pytest.approx([*_ipp(tmp_path / "ct" / name), 1])
    # column j, row i of slice 0: IPP + j * dx * row direction + i * dy * column direction
    assert aff @ [10, 20, 0, 1] == pytest.approx([-158.1 + 10 * 0.661468, -179.0 + 20 * 0.661468, 0, 1])


def test_oblique_tilted_series_direction_from_orientation_and_step(tmp_path):
    # sagittal rows (+y), columns (-z); slices step along x with a gantry-like tilt in z
    ori = (0, 1, 0, 0, 0, -1)
    positions = [(2.0 * k, 0.0, 0.5 * k) for k in range(4)]
    _series(tmp_path / "sag", positions, orientation=ori, spacing=(0.8, 0.4))
    src = _one(tmp_path / "sag")
    g = src.geometry
    d = np.asarray(g.direction)
    assert d[:, 0] == pytest.approx([0, 1, 0]) and d[:, 1] == pytest.approx([0, 0, -1])
    # slices run along the normal (-x here), so the step is read in that order
    step = _ipp(tmp_path / "sag" / src.files[1]) - _ipp(tmp_path / "sag" / src.files[0])
    assert step == pytest.approx([-2.0, 0.0, -0.5])
    assert g.spacing == pytest.approx((float(np.linalg.norm(step)), 0.8, 0.4))  # (dz, dy, dx)
    assert d[:, 2] == pytest.approx(step / np.linalg.norm(step))
    aff = g.affine_lps()
    for k, name in enumerate(src.files):
        assert aff @ [0, 0, k, 1] == pytest.approx([*_ipp(tmp_path / "sag" / name), 1])


def test_unequal_slice_gaps_leave_slice_spacing_unknown(tmp_path):
    _series(tmp_path / "gap", [(0, 0, z) for z in (0.0, 1.0, 5.0)])
    g = _one(tmp_path / "gap").geometry
    assert "pixel_spacing" in g.known and "origin" in g.known
    assert "slice_spacing" not in g.known and "spacing" not in g.known


def test_enhanced_geometry_from_functional_groups(tmp_path):
    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data not installed")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    src = _one(path)
    g = src.geometry
    shared = ds.SharedFunctionalGroupsSequence[0]
    ps = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    pos = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
           for f in ds.PerFrameFunctionalGroupsSequence]
    assert g.spacing == pytest.approx((float(np.linalg.norm(pos[1] - pos[0])), ps[0], ps[1]))
    assert g.origin == pytest.approx(tuple(pos[0]))
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    d = np.asarray(g.direction)
    assert d[:, 0] == pytest.approx(iop[:3]) and d[:, 1] == pytest.approx(iop[3:])
    for k in range(2):
        assert g.affine_lps() @ [0, 0, k, 1] == pytest.approx([*pos[k], 1])
    # per-frame Pixel Measures win over the shared ones
    full = pydicom.dcmread(path)
    for f in full.PerFrameFunctionalGroupsSequence:
        item = pydicom.Dataset()
        item.PixelSpacing = [0.5, 0.25]
        f.PixelMeasuresSequence = pydicom.Sequence([item])
    full.save_as(tmp_path / "pm.dcm")
    assert _one(tmp_path / "pm.dcm").geometry.pixel_size == pytest.approx((0.5, 0.25))


def test_tiff_imagej_spacing_and_resolution_in_micrometres(tmp_path):
    data = np.zeros((3, 10, 12), np.uint16)
    # ImageJ: resolution in pixels per unit (4 px/µm along x, 2 px/µm along y), z step 2 µm
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(4.0, 2.0),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    g = _one(tmp_path / "ij.tif").geometry
    assert g.spacing == pytest.approx((0.002, 0.0005, 0.00025))
    assert "spacing" in g.known and "origin" not in g.known
    # a plain TIFF with resolution tags in centimetres
    tifffile.imwrite(tmp_path / "cm.tif", data[0], resolution=(100.0, 50.0), resolutionunit="CENTIMETER")
    g = _one(tmp_path / "cm.tif").geometry
    assert g.pixel_size == pytest.approx((0.2, 0.1)) and g.known == ("pixel_spacing",)


def test_no_scale_means_no_geometry(tmp_path):
    data = np.zeros((10, 12), np.uint8)
    imageio.write_png(tmp_path / "a.png", data)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    # 72 dpi is what writers stamp on any picture: not a physical pixel size
    tifffile.imwrite(tmp_path / "dpi.tif", data, resolution=(72.0, 72.0), resolutionunit="INCH")
    for name in ("a.png", "plain.tif", "dpi.tif"):
        assert _one(tmp_path / name).geometry is None, name


def test_geometry_and_window_survive_the_manifest_and_show_in_info(tmp_path, capsys):
    _series(tmp_path / "ct", [(0, 0, z) for z in (0.0, 2.5, 5.0)])
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((2, 8, 8), np.uint16), imagej=True,
                     resolution=(4.0, 4.0), metadata={"spacing": 0.5, "unit": "micron", "axes": "ZYX"})
    proj = Project.create(tmp_path / "p")
    proj.add([tmp_path / "ct", tmp_path / "ij.tif"])
    before = [s.geometry for s in proj.sources]
    again = Project.open(tmp_path / "p")
    assert [s.geometry for s in again.sources] == before
    assert run(["info", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "pixel 0.661 mm, slices 2.5 mm apart" in out
    assert "pixel 0.25 µm, slices 0.5 µm apart" in out


@pytest.mark.parametrize("mm,text", [(0.661468, "0.661 mm"), (5.0, "5 mm"), (0.1, "0.1 mm"),
                                     (0.0999, "99.9 µm"), (0.00025, "0.25 µm"), (2.5, "2.5 mm")])
def test_format_length(mm, text):
    assert format_length(mm) == text
