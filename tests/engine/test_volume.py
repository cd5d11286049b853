"""Label volumes: files written by pynrrd, nibabel, tifffile and highdicom import into a
stack as linked objects and export back with identical voxels and geometry, read back
with those same libraries (not with MaskLoop's readers)."""
from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine.cli import run
from engine.errors import FormatError
from engine.formats import labelmap
from engine.formats.volume_project import export_volumes, import_volume
from engine.project import Project

SHAPE = (6, 24, 20)                      # z, y, x
SPACING = (2.5, 0.8, 0.6)                # dz, dy, dx mm (anisotropic)
ORIGIN = (-10.0, -20.0, 30.0)            # LPS
DIRECTION = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])   # columns x, y, z; y flipped


def _instance_volume() -> np.ndarray:
    v = np.zeros(SHAPE, np.uint16)
    v[1:4, 2:8, 3:9] = 1
    v[0:6, 12:20, 2:6] = 2
    v[2:5, 14:22, 10:18] = 3
    v[5, 1:3, 15:19] = 4                 # a one-slice object
    v[3, 10, 10] = 5                     # a one-voxel object
    return v


def _class_volume() -> np.ndarray:
    v = np.zeros(SHAPE, np.uint8)
    v[1:4, 2:8, 3:9] = 1                 # class 1, part one
    v[0:2, 15:22, 12:18] = 1             # class 1, part two (not touching)
    v[2:6, 12:20, 2:6] = 3               # class 3 (no class 2: values keep their gaps)
    return v


def _tiff_project(tmp_path, labels=()) -> Project:
    img = (np.arange(np.prod(SHAPE)) % 1000).astype(np.uint16).reshape(SHAPE)
    p = tmp_path / "data" / "scan.tif"
    p.parent.mkdir(parents=True, exist_ok=True)
    # an ImageJ stack with the voxel size the test volumes carry (and no origin/direction)
    tifffile.imwrite(p, img, imagej=True, resolution=(1 / SPACING[2], 1 / SPACING[1]),
                     metadata={"spacing": SPACING[0], "unit": "mm", "axes": "ZYX"})
    proj = Project.create(tmp_path / "proj", list(labels))
    proj.add([p])
    return proj


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lps_affine() -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = DIRECTION * np.array(SPACING[::-1])[None, :]
    a[:3, 3] = ORIGIN
    return a


# --- NRRD ----------------------------------------------------------------------------------

def _write_nrrd(path, vol, names=None):
    a = _lps_affine()
    header = {"space": "left-posterior-superior", "space directions": a[:3, :3].T,
              "space origin": a[:3, 3], "kinds": ["domain"] * 3}
    for k, (value, name) in enumerate(sorted((names or {}).items())):
        header[f"Segment{k}_Name"] = name
        header[f"Segment{k}_LabelValue"] = str(value)
        header[f"Segment{k}_Layer"] = "0"
    nrrd.write(str(path), vol, header, index_order="C")


@pytest.mark.parametrize("kind", ["instance", "class"])
def test_nrrd_round_trip(tmp_path, kind):
    proj = _tiff_project(tmp_path)
    vol = _instance_volume() if kind == "instance" else _class_volume()
    names = {1: "liver", 3: "spine"} if kind == "class" else None
    src = tmp_path / "in.nrrd"
    _write_nrrd(src, vol, names)
    rep = import_volume(proj, src, kind=kind)
    assert rep.objects == (5 if kind == "instance" else 3)
    out = tmp_path / "out.nrrd"
    export_volumes(Project.open(proj.root), out, volume_format="nrrd", kind=kind)
    data, h = nrrd.read(str(out), index_order="C")
    _, h0 = nrrd.read(str(src), index_order="C")
    assert np.array_equal(data, vol)
    assert np.allclose(h["space directions"], h0["space directions"])
    assert np.allclose(h["space origin"], h0["space origin"])
    assert h["space"] == "left-posterior-superior"
    if kind == "class":
        got = {int(h[f"Segment{k}_LabelValue"]): h[f"Segment{k}_Name"] for k in range(2)}
        assert got == names


# --- NIfTI ---------------------------------------------------------------------------------

def _ras_affine() -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ _lps_affine()


@pytest.mark.parametrize("kind", ["instance", "class"])
def test_nifti_round_trip(tmp_path, kind):
    proj = _tiff_project(tmp_path)
    vol = _instance_volume() if kind == "instance" else _class_volume()
    src = tmp_path / "in.nii.gz"
    img = nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), _ras_affine())
    img.set_qform(_ras_affine(), code=1)
    nib.save(img, str(src))
    import_volume(proj, src, kind=kind, labels={1: "liver", 3: "spine"} if kind == "class" else None)
    out = tmp_path / "out.nii.gz"
    export_volumes(Project.open(proj.root), out, volume_format="nifti", kind=kind)
    back = nib.load(str(out))
    assert np.array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), vol)
    assert np.allclose(back.affine, _ras_affine(), atol=1e-5)
    assert back.header.get_zooms()[:3] == pytest.approx(SPACING[::-1], rel=1e-6)


def test_nifti_stored_in_other_orientation_is_flipped_onto_the_stack(tmp_path):
    """The stack has LPS geometry (from an NRRD); the same labels stored RAS-first with
    the x and z axes reversed (another tool's layout) land on the same voxels."""
    proj = _tiff_project(tmp_path)
    vol = _instance_volume()
    _write_nrrd(tmp_path / "a.nrrd", vol)
    import_volume(proj, tmp_path / "a.nrrd")
    # flip x and z of the array and move the affine's origin to the opposite corner
    flipped = vol[::-1, :, ::-1]
    a = _lps_affine().copy()
    nz, nx = SHAPE[0], SHAPE[2]
    a[:3, 3] = (_lps_affine() @ np.array([nx - 1, 0, nz - 1, 1.0]))[:3]
    a[:3, 0] *= -1
    a[:3, 2] *= -1
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ a
    nib.save(nib.Nifti1Image(np.ascontiguousarray(flipped.transpose(2, 1, 0)), ras), str(tmp_path / "b.nii"))
    rep = import_volume(Project.open(proj.root), tmp_path / "b.nii")
    assert rep.instances == 0 and rep.skipped["duplicate (already in the project)"] > 0  # the very same pixels


def test_mismatched_volume_is_refused_and_changes_nothing(tmp_path):
    proj = _tiff_project(tmp_path)
    _write_nrrd(tmp_path / "a.nrrd", _instance_volume())
    import_volume(proj, tmp_path / "a.nrrd")            # the stack now has the NRRD's geometry
    before = _snapshot(proj.root)
    wrong = np.eye(4)
    wrong[:3, :3] = np.diag([-0.6, -0.8, 3.0])         # slice spacing 3.0, not 2.5
    nib.save(nib.Nifti1Image(_instance_volume().transpose(2, 1, 0).copy(), wrong), str(tmp_path / "w.nii"))
    both = r"3 x 0\.8 x 0\.6.*2\.5 x 0\.8 x 0\.6"       # the volume's spacing, then the stack's
    with pytest.raises(FormatError, match="spacings differ.*" + both):
        import_volume(Project.open(proj.root), tmp_path / "w.nii")
    small = np.zeros((5, 24, 20), np.uint8)
    small[1, 1, 1] = 1
    tifffile.imwrite(tmp_path / "s.tif", small, photometric="minisblack")
    with pytest.raises(FormatError, match=r"5x24x20.*6x24x20"):
        import_volume(Project.open(proj.root), tmp_path / "s.tif")
    assert _snapshot(proj.root) == before


# --- TIFF ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["instance", "class"])
def test_tiff_round_trip(tmp_path, kind):
    proj = _tiff_project(tmp_path)
    vol = _instance_volume() if kind == "instance" else _class_volume()
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, vol, imagej=True, resolution=(1 / SPACING[2], 1 / SPACING[1]),
                     metadata={"spacing": SPACING[0], "unit": "mm", "axes": "ZYX"})
    import_volume(proj, src, kind=kind)
    out = tmp_path / "out.tif"
    export_volumes(Project.open(proj.root), out, volume_format="tiff", kind=kind)
    with tifffile.TiffFile(out) as tif:
        data = tif.asarray()
        ij = tif.imagej_metadata
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
    assert np.array_equal(data, vol)
    assert ij["spacing"] == pytest.approx(SPACING[0]) and ij["unit"] == "mm"
    assert xres[1] / xres[0] == pytest.approx(SPACING[2], rel=1e-6)
    assert yres[1] / yres[0] == pytest.approx(SPACING[1], rel=1e-6)


def test_tiff_export_keeps_full_geometry_in_imagej_properties(tmp_path):
    import json
    proj = _tiff_project(tmp_path)
    _write_nrrd(tmp_path / "a.nrrd", _instance_volume())
    import_volume(proj, tmp_path / "a.nrrd")
    export_volumes(Project.open(proj.root), tmp_path / "o.tif", volume_format="tiff")
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        props = tif.imagej_metadata["Properties"]
        assert np.array_equal(tif.asarray(), _instance_volume())
    assert json.loads(props["maskloop_spacing"]) == list(SPACING)
    assert json.loads(props["maskloop_origin"]) == list(ORIGIN)
    assert np.array_equal(json.loads(props["maskloop_direction"]), DIRECTION)


def test_multipage_label_tiff_for_a_stack_imports(tmp_path):
    """tifffile writes a (3, H, W) array as one page of three planar samples by default;
    that used to be refused as '3 channels'."""
    img = np.zeros((3, 16, 16), np.uint16)
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "cells.tif", img, photometric="minisblack")
    proj = Project.create(tmp_path / "proj", ["cell"])
    proj.add([data / "cells.tif"])
    lab = np.zeros((3, 16, 16), np.uint16)
    lab[0, 2:5, 2:5] = 1
    lab[2, 8:12, 8:12] = 2
    # tifffile's default layout for this shape, spelled out (it warns that the default will change)
    tifffile.imwrite(tmp_path / "cells_masks.tif", lab, photometric="rgb", planarconfig="separate")
    labelmap.import_labelmap(proj, tmp_path / "cells_masks.tif")
    anns = [proj.load_annotation(it.id) for it in proj.items]
    assert [len(a.instances) for a in anns] == [1, 0, 1]
    assert anns[2].instances[0].bbox == (8, 8, 4, 4)


# --- DICOM-SEG -----------------------------------------------------------------------------

def _dicom_series(folder: Path, shape=SHAPE, spacing=SPACING, origin=ORIGIN) -> list:
    """A CT series written with pydicom (template: pydicom's CT_small.dcm); slice z lies at
    origin + z * dz along the -z axis (a reversed slice direction)."""
    folder.mkdir(parents=True)
    tpl = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    nz, ny, nx = shape
    for z in range(nz):
        ds = copy.deepcopy(tpl)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = ds.SpacingBetweenSlices = spacing[0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] - z * spacing[0]]
        ds.InstanceNumber = z + 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = (np.arange(ny * nx, dtype=np.int16).reshape(ny, nx) + z).tobytes()
        ds.preamble = b"\0" * 128   # CT_small's preamble looks like a TIFF (the dicom work sniffs DICM first)
        ds.save_as(folder / f"ct{z:03d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def _seg(series, vol, names):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    descs = [hd.seg.SegmentDescription(segment_number=v, segment_label=names[v],
                                       segmented_property_category=codes.SCT.Tissue,
                                       segmented_property_type=codes.SCT.Tissue,
                                       algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
             for v in sorted(names)]
    return hd.seg.Segmentation(source_images=series, pixel_array=vol.astype(np.uint8), segmentation_type="BINARY",
                               segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=5,
                               sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
                               manufacturer_model_name="test", software_versions="1", device_serial_number="1")


@pytest.mark.parametrize("kind", ["instance", "class"])
def test_dicom_seg_round_trip(tmp_path, kind):
    import highdicom as hd
    series = _dicom_series(tmp_path / "ct")
    proj = Project.create(tmp_path / "proj")
    proj.add([tmp_path / "ct"])
    assert proj.sources[0].kind == "dicom_series"
    if kind == "instance":
        vol, names = _instance_volume(), {v: "rock" for v in range(1, 6)}
    else:
        vol = _class_volume()
        vol[vol == 3] = 2                       # DICOM numbers segments 1..N
        names = {1: "liver", 2: "spine"}
    _seg(series, vol, names).save_as(tmp_path / "in.dcm")
    rep = import_volume(proj, tmp_path / "in.dcm", kind=kind)
    assert set(Project.open(proj.root).labels.names()) == set(names.values())
    assert rep.objects == (5 if kind == "instance" else 3)
    export_volumes(Project.open(proj.root), tmp_path / "out.dcm", volume_format="dicom-seg", kind=kind)
    back = hd.seg.segread(tmp_path / "out.dcm")
    uids = [s.SOPInstanceUID for s in series]
    got = back.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    assert np.array_equal(got, vol)
    assert {k: back.get_segment_description(k).segment_label for k in back.segment_numbers} == names
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == series[0].SeriesInstanceUID
    assert back.StudyInstanceUID == series[0].StudyInstanceUID
    pm = back.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in pm.PixelSpacing] == [SPACING[1], SPACING[2]]
    pos = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
           for f in back.PerFrameFunctionalGroupsSequence]
    assert all(p in [[float(v) for v in s.ImagePositionPatient] for s in series] for p in pos)


def test_dicom_seg_export_of_a_tiff_stack_says_why_not(tmp_path):
    proj = _tiff_project(tmp_path)
    _write_nrrd(tmp_path / "a.nrrd", _instance_volume())
    import_volume(proj, tmp_path / "a.nrrd")
    with pytest.raises(FormatError, match="needs a DICOM series.*nrrd, nifti or tiff"):
        export_volumes(proj, tmp_path / "o", volume_format="dicom-seg")
    assert not (tmp_path / "o").exists()


def test_nrrd_in_ras_space_and_bad_volumes(tmp_path):
    """Slicer may write RAS; the geometry converts to LPS. Bad files: clear errors, no change."""
    proj = _tiff_project(tmp_path)
    vol = _instance_volume()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ _lps_affine()
    nrrd.write(str(tmp_path / "r.nrrd"), vol, {"space": "right-anterior-superior",
                                               "space directions": ras[:3, :3].T, "space origin": ras[:3, 3]},
               index_order="C")
    import_volume(proj, tmp_path / "r.nrrd")
    export_volumes(Project.open(proj.root), tmp_path / "o.nrrd")
    _, h = nrrd.read(str(tmp_path / "o.nrrd"))
    assert np.allclose(h["space directions"], _lps_affine()[:3, :3].T) and np.allclose(h["space origin"], ORIGIN)
    before = _snapshot(proj.root)
    frac = vol.astype(np.float32) + 0.5
    nib.save(nib.Nifti1Image(frac.transpose(2, 1, 0).copy(), ras), str(tmp_path / "f.nii"))
    with pytest.raises(FormatError, match="f.nii.*non-integer"):
        import_volume(Project.open(proj.root), tmp_path / "f.nii")
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntype: nonsense\n\n")
    with pytest.raises(FormatError, match="bad.nrrd"):
        import_volume(Project.open(proj.root), tmp_path / "bad.nrrd")
    with pytest.raises(FormatError, match="not a DICOM Segmentation"):
        import_volume(Project.open(proj.root), get_testdata_file("CT_small.dcm"))
    assert _snapshot(proj.root) == before


# --- objects and the command line ---------------------------------------------------------------

def test_imported_objects_are_linked_and_class_parts_are_objects(tmp_path):
    proj = _tiff_project(tmp_path)
    _write_nrrd(tmp_path / "c.nrrd", _class_volume(), {1: "liver", 3: "spine"})
    import_volume(proj, tmp_path / "c.nrrd", kind="class")
    anns = [proj.load_annotation(it.id) for it in proj.items]
    by_obj: dict = {}
    for z, a in enumerate(anns):
        for i in a.instances:
            by_obj.setdefault(i.object_id, []).append((z, i.label))
    assert sorted((min(z for z, _ in v), max(z for z, _ in v), v[0][1]) for v in by_obj.values()) == \
        [(0, 1, "liver"), (1, 3, "liver"), (2, 5, "spine")]
    assert all(a.status == "reviewed" for a in anns if a.instances)


def test_cli_import_export_link(tmp_path, capsys):
    proj = _tiff_project(tmp_path)
    _write_nrrd(tmp_path / "c.nrrd", _class_volume())
    assert run(["import", str(proj.root), str(tmp_path / "c.nrrd"), "--format", "volume", "--kind", "class",
                "--labels", "1=liver,3=spine"]) == 0
    assert "holds 3 3-D object(s)" in capsys.readouterr().out
    assert run(["link", str(proj.root), "--min-iou", "0.3"]) == 0
    assert "into 3 object(s)" in capsys.readouterr().out
    assert run(["export", str(proj.root), str(tmp_path / "vols"), "--format", "volume", "--kind", "class",
                "--volume-format", "nifti"]) == 0
    back = nib.load(str(tmp_path / "vols" / "scan.nii.gz"))
    assert np.array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), _class_volume())
    assert run(["export", str(proj.root), str(tmp_path / "one.tiff"), "--format", "volume",
                "--volume-format", "tiff"]) == 0
    assert tifffile.imread(tmp_path / "one.tiff").shape == SHAPE
    assert run(["export", str(proj.root), str(tmp_path / "maps"), "--format", "labelmap"]) == 0
    assert len(list((tmp_path / "maps").glob("*_masks.tif"))) == 6
    # usage errors: an option of another format
    assert run(["import", str(proj.root), str(tmp_path / "c.nrrd"), "--format", "coco", "--kind", "class"]) == 2
    assert run(["export", str(proj.root), str(tmp_path / "x"), "--format", "volume", "--polygons"]) == 2
    with pytest.raises(SystemExit):
        run(["import", str(proj.root), str(tmp_path / "c.nrrd"), "--format", "volume", "--labels", "1=a,x"])


def test_components_fall_back_to_32_bits_beyond_65535():
    from engine.formats.volume_project import _components
    m = np.zeros((3, 400, 400), bool)
    m[::2, ::2, ::2] = True                # 80,000 isolated voxels
    cc = _components(m)
    assert cc.max() == 80000 and cc.dtype.itemsize == 4
    few = _components(m[:, :20, :20])
    assert few.dtype == np.uint16 and few.max() == 200


def test_registry_is_the_one_table_of_formats(tmp_path):
    from engine.formats import registry
    assert set(registry.import_formats()) >= {"coco", "labelme", "labelmap", "volume"}
    assert set(registry.export_formats()) >= {"coco", "labelme", "labelmap", "volume"}
    assert registry.formats_with("kind", "import") == ("volume",)
    proj = _tiff_project(tmp_path)
    _write_nrrd(tmp_path / "a.nrrd", _instance_volume())
    with pytest.raises(FormatError, match="polygons applies to --format coco only"):
        registry.run_export("volume", proj, tmp_path / "o", polygons=True)
    rep = registry.run_import("volume", proj, tmp_path / "a.nrrd", kind="instance", label="rock", stack=None)
    assert rep.objects == 5 and Project.open(proj.root).labels.names() == ["rock"]
    rep = registry.run_export("volume", Project.open(proj.root), tmp_path / "o", volume_format="nifti")
    assert [p.name for p in rep.files] == ["scan.nii.gz"]
