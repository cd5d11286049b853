"""Measurements: every 2-D column is what regionprops_table gives on the same label image,
known shapes give their analytic sizes at anisotropic spacing, units come from the data or
the user, and bad input writes nothing."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.measure import regionprops_table

from engine.annotations import Instance, ItemAnnotation
from engine.cli import run
from engine.errors import CancelledError, ImageReadError, MaskLoopError, ProjectError
from engine.geometry import VoxelGeometry
from engine.jobs import CancelToken
from engine.measure import Units, measure_instances, union_areas, write_csv
from engine.measure3d import Piece, measure_objects
from engine.measure_project import measure_project
from engine.project import Project
from engine.units import UnitError, auto_unit, parse_length, scale_of, set_scale


def _label_image(seed=0, shape=(90, 120)):
    """Random non-overlapping blobs (ellipses, with a hole and a concavity) as a label image."""
    from skimage.draw import disk, ellipse
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    k = 1
    for cy in range(12, shape[0] - 12, 30):
        for cx in range(12, shape[1] - 12, 30):
            rr, cc = ellipse(cy, cx, rng.integers(4, 12), rng.integers(3, 12), shape=shape,
                             rotation=rng.uniform(0, np.pi))
            lab[rr, cc] = k
            if k % 3 == 0:
                rr, cc = disk((cy, cx), 2, shape=shape)
                lab[rr, cc] = 0
            k += 1
    return lab


def _instances(lab):
    return [Instance.from_full_mask(lab == k, "rock") for k in range(1, lab.max() + 1) if (lab == k).any()]


PAIRS = [("area", "area", 2), ("perimeter", "perimeter_crofton", 1), ("equivalent_diameter", "equivalent_diameter_area", 1),
         ("major_axis_length", "axis_major_length", 1), ("minor_axis_length", "axis_minor_length", 1),
         ("feret_diameter_max", "feret_diameter_max", 1), ("eccentricity", "eccentricity", 0),
         ("solidity", "solidity", 0)]


@pytest.mark.parametrize("spacing,unit", [((1.0, 1.0), "px"), ((0.65, 0.65), "um"), ((0.5, 0.8), "mm")])
def test_2d_columns_equal_regionprops_table(spacing, unit):
    lab = _label_image()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 4000, lab.shape).astype(np.uint16)
    insts = _instances(lab)
    rows = measure_instances(insts, img, spacing, Units(unit, "raw"))
    props = [p for _n, p, _k in PAIRS] + ["label", "bbox", "centroid", "orientation", "intensity_mean",
                                          "intensity_std", "intensity_min", "intensity_max"]
    if spacing[0] != spacing[1]:
        props.remove("perimeter_crofton")  # skimage: isotropic pixels only
    ref = regionprops_table(lab, img, properties=props, spacing=spacing)
    assert len(rows) == len(ref["label"]) == lab.max()
    for j, row in enumerate(rows):
        for name, prop, power in PAIRS:
            col = name if power == 0 else f"{name}_{unit}" + ("" if power == 1 else str(power))
            if prop not in ref:
                assert math.isnan(row[col])
                continue
            assert row[col] == pytest.approx(ref[prop][j], rel=1e-9, abs=1e-9), col
        assert row["orientation_deg"] == pytest.approx(math.degrees(ref["orientation"][j]), abs=1e-9)
        assert (row["bbox_y0_px"], row["bbox_x0_px"]) == (ref["bbox-0"][j], ref["bbox-1"][j])
        assert row["bbox_height_px"] == ref["bbox-2"][j] - ref["bbox-0"][j]
        assert row["bbox_width_px"] == ref["bbox-3"][j] - ref["bbox-1"][j]
        assert row["centroid_y_px"] == pytest.approx(ref["centroid-0"][j] / spacing[0], abs=1e-9)
        assert row["centroid_x_px"] == pytest.approx(ref["centroid-1"][j] / spacing[1], abs=1e-9)
        for key in ("mean", "std", "min", "max"):
            assert row[f"intensity_{key}_raw"] == pytest.approx(ref[f"intensity_{key}"][j], rel=1e-9)
        n_px = int((lab == j + 1).sum())
        assert row["intensity_integrated_raw"] == pytest.approx(img[lab == j + 1].astype(float).sum(), rel=1e-9)
        if "perimeter_crofton" in ref:
            assert row["circularity"] == pytest.approx(4 * math.pi * ref["area"][j] / ref["perimeter_crofton"][j] ** 2)
        assert n_px * spacing[0] * spacing[1] == pytest.approx(row[f"area_{unit}2"])


def test_overlapping_instances_are_each_measured_whole():
    a = Instance(np.ones((10, 10), bool), 5, 5, "rock")
    b = Instance(np.ones((10, 10), bool), 10, 10, "rock")  # covers a quarter of a
    rows = measure_instances([a, b], np.zeros((30, 30), np.uint8))
    assert [r["area_px2"] for r in rows] == [100.0, 100.0]
    assert union_areas([a, b], (30, 30)) == {"rock": 175}


def test_digitised_disk_has_the_analytic_area_and_perimeter():
    r_um, px_um = 40.0, 0.65
    n = int(2 * r_um / px_um) + 6
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    mask = (yy - c) ** 2 + (xx - c) ** 2 <= (r_um / px_um) ** 2
    row = measure_instances([Instance.from_full_mask(mask, "grain")], mask.astype(np.uint8),
                            (px_um, px_um), Units("um"))[0]
    assert row["area_um2"] == pytest.approx(math.pi * r_um ** 2, rel=0.005)
    assert row["equivalent_diameter_um"] == pytest.approx(2 * r_um, rel=0.003)
    assert row["perimeter_um"] == pytest.approx(2 * math.pi * r_um, rel=0.01)
    assert row["feret_diameter_max_um"] == pytest.approx(2 * r_um, rel=0.02)
    assert row["circularity"] == pytest.approx(1.0, abs=0.02)
    assert row["eccentricity"] < 0.05


def _sphere_pieces(r, spacing, center=(0.0, 0.0, 0.0), object_id="ball", label="rock"):
    """A sphere of radius r (mm) voxelised at (dz, dy, dx): one instance per slice, one object id."""
    dz, dy, dx = spacing
    nz, ny, nx = (int(2 * r / s) + 4 for s in spacing)
    z = (np.arange(nz) - (nz - 1) / 2) * dz
    y = (np.arange(ny) - (ny - 1) / 2) * dy
    x = (np.arange(nx) - (nx - 1) / 2) * dx
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    vol = Z ** 2 + Y ** 2 + X ** 2 <= r ** 2
    pieces = []
    for k in range(nz):
        inst = Instance.from_full_mask(vol[k], label, object_id=object_id)
        if inst is not None:
            pieces.append(Piece(k, f"z{k}", inst, inst.mask, inst.x0, inst.y0,
                                np.full(inst.mask.shape, 100.0)))
    return pieces, vol


@pytest.mark.parametrize("spacing", [(0.4, 0.1, 0.12), (0.2, 0.2, 0.2)])  # mm; 4:1 slices, isotropic
def test_voxelised_sphere_with_anisotropic_spacing(spacing):
    r = 5.0
    pieces, vol = _sphere_pieces(r, spacing)
    rows = measure_objects(pieces, spacing, Units("mm"))
    assert len(rows) == 1
    row = rows[0]
    assert row["voxel_count"] == int(vol.sum())
    assert row["volume_mm3"] == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.01)
    assert row["surface_area_mm2"] == pytest.approx(4 * math.pi * r ** 2, rel=0.04)
    assert row["equivalent_sphere_diameter_mm"] == pytest.approx(2 * r, rel=0.005)
    assert row["sphericity"] == pytest.approx(1.0, abs=0.05)
    for ax in ("major", "middle", "minor"):
        assert row[f"axis_{ax}_length_mm"] == pytest.approx(2 * r, rel=0.03)
    assert row["n_slices"] == len(pieces) and row["intensity_mean_raw"] == 100.0
    # the same sphere measured as if slices were as thin as pixels would be 4x too small
    wrong = measure_objects(pieces, (spacing[1] / 4, spacing[1], spacing[2]), Units("mm"))[0]
    assert wrong["volume_mm3"] < 0.3 * row["volume_mm3"]


def test_3d_axes_and_volume_match_regionprops_on_the_volume():
    from skimage.measure import regionprops
    spacing = (2.0, 0.5, 0.5)
    pieces, vol = _sphere_pieces(6.0, spacing)
    # squash it into an ellipsoid by dropping alternate rows: a shape with three different axes
    row = measure_objects(pieces, spacing, Units("mm"))[0]
    rp = regionprops(vol.astype(np.uint8), spacing=spacing)[0]
    assert row["volume_mm3"] == pytest.approx(rp.area)
    assert row["axis_major_length_mm"] == pytest.approx(rp.axis_major_length)
    assert row["axis_minor_length_mm"] == pytest.approx(rp.axis_minor_length)


def test_instances_without_object_id_are_their_own_objects():
    a = Instance(np.ones((4, 4), bool), 0, 0, "rock")
    b = Instance(np.ones((4, 4), bool), 0, 0, "rock")
    pieces = [Piece(0, "z0", a, a.mask, 0, 0, np.zeros((4, 4))), Piece(1, "z1", b, b.mask, 0, 0, np.zeros((4, 4)))]
    assert len(measure_objects(pieces, (1, 1, 1), Units())) == 2
    a.object_id = b.object_id = "same"
    rows = measure_objects(pieces, (1, 1, 1), Units())
    assert len(rows) == 1 and rows[0]["voxel_count"] == 32 and rows[0]["n_slices"] == 2


# --- units -----------------------------------------------------------------------------

@pytest.mark.parametrize("text,mm,unit", [("0.65um", 0.00065, "um"), ("0.65 µm", 0.00065, "um"),
                                          ("0.65μm", 0.00065, "um"), ("500nm", 0.0005, "um" if False else "nm"),
                                          ("2mm", 2.0, "mm"), ("1.5cm", 15.0, "cm"), ("1e-3m", 1.0, "m")])
def test_parse_length(text, mm, unit):
    v, u = parse_length(text)
    assert v == pytest.approx(mm) and u == unit


@pytest.mark.parametrize("text", ["0.65", "0.65 inch", "0um", "-1um", "abc", "", "nan um", "1e999um"])
def test_parse_length_rejects(text):
    with pytest.raises(UnitError):
        parse_length(text)


def test_auto_unit():
    assert auto_unit([0.00065]) == "um" and auto_unit([0.5]) == "mm" and auto_unit([2e-7]) == "nm"


def _project(tmp_path, images, labels=("rock",)):
    p = Project.create(tmp_path / "proj", labels)
    p.add(images)
    return p


def _square(ann, x, y, s, label="rock", **kw):
    m = np.ones((s, s), bool)
    ann.instances.append(Instance(m, x, y, label, **kw))


def _with_geometry(project, index, spacing):
    src = project.sources[index]
    project.sources[index] = dataclasses.replace(src, geometry=VoxelGeometry(spacing=spacing, known=("spacing",)))
    project.save()


def test_units_from_a_dicom_pixel_spacing(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dy, dx = (float(v) for v in ds.PixelSpacing)
    p = _project(tmp_path, [Path(get_testdata_file("CT_small.dcm"))])
    assert p.sources[0].geometry is not None  # read from the file's PixelSpacing
    assert p.sources[0].geometry.pixel_size == pytest.approx((dy, dx))
    it = p.items[0]
    ann = ItemAnnotation(it.id, it.height, it.width, [], "reviewed")
    _square(ann, 10, 10, 8)
    p.save_annotation(ann)
    table = measure_project(Project.open(p.root))
    assert table.units.length == "mm" and table.units.intensity == "HU"
    row = table.rows[0]
    assert row["area_mm2"] == pytest.approx(64 * dy * dx)
    assert "intensity_mean_HU" in table.columns
    img = p.load_image(it.id)
    assert row["intensity_mean_HU"] == pytest.approx(img[10:18, 10:18].mean())


def test_units_from_an_imagej_tiff(tmp_path):
    px_um, z_um = 0.65, 2.0
    stack = np.zeros((3, 40, 50), np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, resolution=(1 / px_um, 1 / px_um),
                     metadata={"spacing": z_um, "unit": "um", "axes": "ZYX"})
    p = _project(tmp_path, [tmp_path / "s.tif"])
    assert p.sources[0].geometry is not None  # read from the ImageJ spacing and resolution tags
    assert p.sources[0].geometry.spacing == pytest.approx((z_um / 1000, px_um / 1000, px_um / 1000))
    for z, it in enumerate(p.items):
        ann = ItemAnnotation(it.id, it.height, it.width, [], "reviewed")
        _square(ann, 5, 5, 10, object_id="cube")
        p.save_annotation(ann)
    inst = measure_project(p)
    assert inst.units.length == "um"
    assert inst.rows[0]["area_um2"] == pytest.approx(100 * px_um ** 2)
    obj = measure_project(p, "object")
    assert len(obj.rows) == 1
    assert obj.rows[0]["volume_um3"] == pytest.approx(300 * px_um ** 2 * z_um)
    stack_rows = measure_project(p, "stack").rows
    assert stack_rows[0]["volume_fraction"] == pytest.approx(100 / (40 * 50))


def _two_image_project(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(2):
        tifffile.imwrite(imgs / f"im{k}.tif", np.full((30, 40), 10 * (k + 1), np.uint16))
    p = _project(tmp_path, [imgs / "im0.tif", imgs / "im1.tif"], labels=("rock", "pore"))
    for k, it in enumerate(p.items):
        ann = ItemAnnotation(it.id, it.height, it.width, [], "reviewed" if k == 0 else "new")
        _square(ann, 2, 2, 6)
        _square(ann, 4, 4, 6)  # overlaps the first
        _square(ann, 20, 10, 4, "pore")
        p.save_annotation(ann)
    return p


def test_scale_precedence_source_over_data_over_project(tmp_path):
    p = _two_image_project(tmp_path)
    assert not scale_of(p, 0).known
    set_scale(p, "2um")
    assert scale_of(p, 0).pixel_mm == pytest.approx((0.002, 0.002))
    _with_geometry(p, 1, (1.0, 0.0005, 0.0005))
    assert scale_of(p, 1).origin == "data" and scale_of(p, 1).pixel_mm == pytest.approx((0.0005, 0.0005))
    set_scale(p, "1um", source="im1")
    p2 = Project.open(p.root)  # stored in the manifest's settings
    assert scale_of(p2, 1).origin == "source setting" and scale_of(p2, 1).pixel_mm == pytest.approx((0.001,) * 2)
    assert scale_of(p2, 0).origin == "project setting"


def test_scale_from_partial_geometry(tmp_path):
    """imageio marks what a file really carried: pixel spacing only, or slice spacing only."""
    p = _two_image_project(tmp_path)
    src = p.sources[0]
    p.sources[0] = dataclasses.replace(src, geometry=VoxelGeometry((1.0, 0.2, 0.2), known=("pixel_spacing",)))
    s = scale_of(p, 0)
    assert s.pixel_mm == (0.2, 0.2) and s.slice_mm is None and s.origin == "data"
    p.sources[0] = dataclasses.replace(src, geometry=VoxelGeometry((0.7, 1.0, 1.0), known=("slice_spacing",)))
    assert not scale_of(p, 0).known  # a slice spacing alone gives no pixel size
    set_scale(p, "0.1mm")
    s = scale_of(p, 0)
    assert s.pixel_mm == (0.1, 0.1) and s.slice_mm == 0.7 and s.origin == "project setting"


def test_item_summary_counts_fractions_and_sizes(tmp_path):
    p = _two_image_project(tmp_path)
    set_scale(p, "0.5mm")
    t = measure_project(p, "item", items=[p.items[0].id])
    assert t.units.length == "mm"
    rows = {r["label"]: r for r in t.rows}
    assert rows["rock"]["count"] == 2
    assert rows["rock"]["area_fraction"] == pytest.approx((36 + 36 - 16) / 1200)  # overlap once
    assert rows["rock"]["label_area_mm2"] == pytest.approx(56 * 0.25)
    assert rows["pore"]["equivalent_diameter_median_mm"] == pytest.approx(math.sqrt(4 * 16 * 0.25 / math.pi))
    assert measure_project(p, "item", only_reviewed=True).rows == t.rows


def test_cli_measure_writes_csv_and_plots(tmp_path, capsys):
    p = _two_image_project(tmp_path)
    out, plots = tmp_path / "m.csv", tmp_path / "plots"
    assert run(["measure", str(p.root), str(out), "--plots", str(plots)]) == 0
    cap = capsys.readouterr()
    assert "pixels" in cap.err and "pixels" in cap.out  # said so
    header = out.read_text().splitlines()[0].split(",")
    assert "area_px2" in header and "equivalent_diameter_px" in header
    assert len(out.read_text().splitlines()) == 1 + 6
    assert sorted(f.name for f in plots.iterdir()) == ["fractions.png", "gradation.png", "size_distribution.png"]
    assert run(["scale", str(p.root), "--pixel-size", "0.65um", "--slice-spacing", "2um"]) == 0
    assert run(["measure", str(p.root), str(out), "--level", "object"]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert "volume_um3" in header and "surface_area_um2" in header and "sphericity" in header


@pytest.mark.parametrize("value", ["0.65 furlong", "0um", "-2um", "1.5"])
def test_cli_scale_rejects_bad_values_and_writes_nothing(tmp_path, capsys, value):
    p = _two_image_project(tmp_path)
    before = p.manifest_path.read_bytes()
    assert run(["scale", str(p.root), f"--pixel-size={value}"]) == 1
    err = capsys.readouterr().err
    assert "--pixel-size" in err
    assert p.manifest_path.read_bytes() == before


def test_cli_scale_unknown_source(tmp_path, capsys):
    p = _two_image_project(tmp_path)
    before = p.manifest_path.read_bytes()
    assert run(["scale", str(p.root), "--pixel-size", "1um", "--source", "nope"]) == 1
    assert "matches no source" in capsys.readouterr().err
    assert p.manifest_path.read_bytes() == before


def test_missing_image_names_the_item_and_writes_nothing(tmp_path, capsys):
    p = _two_image_project(tmp_path)
    (tmp_path / "imgs" / "im1.tif").unlink()
    out = tmp_path / "m.csv"
    with pytest.raises(ImageReadError, match=p.items[1].id):
        measure_project(p)
    assert run(["measure", str(p.root), str(out), "--plots", str(tmp_path / "pl")]) == 1
    assert p.items[1].id in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "pl").exists()


def test_mixed_scales_and_unknown_items_are_errors(tmp_path):
    p = _two_image_project(tmp_path)
    with pytest.raises(UnitError, match="no scale"):  # a unit without any scale is not silently px
        measure_project(p, unit="um")
    set_scale(p, "1um", source="im0")
    with pytest.raises(UnitError, match="im1"):
        measure_project(p)
    assert measure_project(p, unit="px").units.length == "px"
    with pytest.raises(ProjectError, match="nope"):
        measure_project(p, items=["nope"])
    with pytest.raises(MaskLoopError, match="level"):
        measure_project(p, "voxels")


def test_stack_without_slice_spacing_is_an_error_at_object_level(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 20, 20), np.uint16))
    p = _project(tmp_path, [tmp_path / "s.tif"])
    set_scale(p, "1um")
    measure_project(p)  # instance level needs no slice spacing
    with pytest.raises(UnitError, match="slice spacing"):
        measure_project(p, "object")


def test_cancel_stops_and_csv_write_is_atomic(tmp_path, monkeypatch):
    p = _two_image_project(tmp_path)
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(CancelledError):
        measure_project(p, cancel=tok)
    table = measure_project(p)
    out = tmp_path / "m.csv"
    out.write_text("old\n")
    import engine.measure as m

    def boom(*_a, **_k):
        raise OSError("disk full")
    monkeypatch.setattr(m, "_fmt", boom)
    with pytest.raises(OSError):
        write_csv(table, out)
    assert out.read_text() == "old\n"
