"""COCO export judged by pycocotools (COCO() loads it, COCOeval against itself gives AP 1),
COCO import of RLE (compressed / uncompressed), polygons and crowd regions, bad input."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from engine.annotations import Instance, ItemAnnotation
from engine.errors import FormatError, ImageReadError
from engine.formats import coco, split_ids
from engine.masks import rle_encode
from engine.project import Project


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _project(tmp_path, images: dict, labels=("cell", "debris"), name="proj") -> Project:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for fname, arr in images.items():
        p = data / fname
        if p.suffix in (".tif", ".tiff"):
            tifffile.imwrite(p, arr, photometric="minisblack")
        else:
            cv2.imwrite(str(p), arr)
    proj = Project.create(tmp_path / name, list(labels))
    proj.add([data / n for n in images])
    return proj


def _filled(tmp_path, n_inst=6) -> Project:
    rng = np.random.default_rng(7)
    proj = _project(tmp_path, {
        "a.png": rng.integers(0, 255, (64, 80), dtype=np.uint8),
        "b.tif": rng.integers(0, 65535, (50, 70), dtype=np.uint16),
        "ct.tif": rng.integers(-1000, 2000, (2, 40, 48), dtype=np.int16),
        "c.jpg": rng.integers(0, 255, (30, 30, 3), dtype=np.uint8),
    })
    for k, it in enumerate(proj.items):
        insts = []
        for j in range(n_inst):
            h, w = int(rng.integers(3, 12)), int(rng.integers(3, 12))
            m = rng.random((h, w)) > 0.3
            m[h // 2, :] = True  # keep it in one piece mostly; holes allowed
            x0 = int(rng.integers(0, it.width - w))
            y0 = int(rng.integers(0, it.height - h))
            insts.append(Instance(mask=m, x0=x0, y0=y0, label=("cell", "debris")[j % 2]).tight())
        proj.save_annotation(ItemAnnotation(it.id, it.height, it.width, insts,
                                            "reviewed" if k != 1 else "predicted"))
    return proj


def _quiet(fn, *a, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **kw)


def _self_ap(path: Path) -> float:
    gt = _quiet(COCO, str(path))
    dts = []
    for a in gt.dataset["annotations"]:
        seg = a["segmentation"]
        if isinstance(seg, list):  # polygons -> RLE as loadRes expects for segm results
            img = gt.imgs[a["image_id"]]
            seg = coco_mask.merge(coco_mask.frPyObjects(seg, img["height"], img["width"]))
            seg["counts"] = seg["counts"].decode()
        dts.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": seg, "score": 1.0})
    dt = _quiet(gt.loadRes, dts)
    ev = COCOeval(gt, dt, "segm")
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    return float(ev.stats[0])


# --- export ---------------------------------------------------------------------------------

def test_crop_rle_equals_pycocotools_encode():
    rng = np.random.default_rng(0)
    for H, W, big in ((37, 53, 20), (6, 9, 12)):  # small images: crops span whole columns
        for _ in range(300):
            h, w = int(rng.integers(1, big)), int(rng.integers(1, big))
            m = rng.random((h, w)) > rng.choice([0.1, 0.5, 0.9])
            x0, y0 = int(rng.integers(-5, W)), int(rng.integers(-5, H))
            inst = Instance(mask=m, x0=x0, y0=y0, label="a")
            assert coco.crop_rle(inst, H, W) == rle_encode(inst.full_mask((H, W)))
    # full image, first and last pixel set
    m = np.zeros((H, W), bool)
    m[0, 0] = m[-1, -1] = True
    assert coco.crop_rle(Instance(mask=m, label="a"), H, W) == rle_encode(m)
    assert coco.crop_rle(Instance(mask=np.ones((H, W), bool), label="a"), H, W) == rle_encode(np.ones((H, W), bool))


@pytest.mark.parametrize("polygons", [False, True])
def test_export_loads_in_pycocotools_and_self_ap_is_one(tmp_path, polygons):
    proj = _filled(tmp_path)
    out = tmp_path / "export" / "coco.json"
    rep = coco.export_coco(proj, out, polygons=polygons)
    assert rep.files == [out] and rep.images == len(proj.items) == 5
    gt = _quiet(COCO, str(out))
    assert len(gt.imgs) == 5
    assert {c["id"]: c["name"] for c in gt.dataset["categories"]} == {l.id: l.name for l in proj.labels}
    assert len(gt.anns) == 5 * 6
    if not polygons:
        # every RLE decodes to the instance's pixels, pixel for pixel
        for img in gt.dataset["images"]:
            ann = proj.load_annotation(img["maskloop_item"])
            got = [gt.annToMask(a).astype(bool) for a in gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]]))]
            want = [i.full_mask(ann.shape) for i in ann.instances]
            assert all(np.array_equal(g, w) for g, w in zip(got, want)) and len(got) == len(want)
    assert _self_ap(out) == pytest.approx(1.0)


def test_export_image_entries_and_file_names(tmp_path):
    proj = _filled(tmp_path)
    out = tmp_path / "export" / "coco.json"
    coco.export_coco(proj, out)
    data = json.loads(out.read_text())
    by_item = {im["maskloop_item"]: im for im in data["images"]}
    for it in proj.items:
        im = by_item[it.id]
        src = proj.sources[it.source]
        assert (out.parent / im["file_name"]).resolve() == proj.source_path(src).resolve()
        assert (im["height"], im["width"]) == (it.height, it.width)
        if src.n_slices > 1:
            assert im["slice"] == it.slice and "maskloop_source" in im
        else:
            assert "slice" not in im
    assert {im["maskloop_status"] for im in data["images"]} == {"reviewed", "predicted"}


def test_export_copy_images_stands_alone(tmp_path):
    proj = _filled(tmp_path)
    out = tmp_path / "export"
    rep = coco.export_coco(proj, out, copy_images=True)
    f = out / "annotations.json"
    assert rep.copied_images == 5
    data = json.loads(f.read_text())
    for im in data["images"]:
        p = out / im["file_name"]
        assert p.parent == out / "images"
        raw = proj.load_image(im["maskloop_item"])
        src = proj.sources[proj.item(im["maskloop_item"]).source]
        if Path(src.path).suffix in (".png", ".jpg"):
            assert p.read_bytes() == proj.source_path(src).read_bytes()   # copied as is
        elif raw.dtype == np.uint16:
            assert p.suffix == ".png"
            back = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert back.dtype == np.uint16 and np.array_equal(back, raw)   # 16-bit kept
        else:  # int16 CT slices: PNG cannot hold them; TIFF with the raw values
            assert p.suffix == ".tif" and np.array_equal(tifffile.imread(p), raw)
    assert _self_ap(f) == pytest.approx(1.0)


def test_split_and_only_reviewed(tmp_path):
    proj = _filled(tmp_path)
    out = tmp_path / "export" / "ds.json"
    rep = coco.export_coco(proj, out, split=0.5, only_reviewed=True)
    train = json.loads((out.parent / "ds_train.json").read_text())
    val = json.loads((out.parent / "ds_val.json").read_text())
    assert rep.files == [out.parent / "ds_train.json", out.parent / "ds_val.json"]
    ti = {im["maskloop_item"] for im in train["images"]}
    vi = {im["maskloop_item"] for im in val["images"]}
    reviewed = {it.id for it in proj.items if proj.status(it.id) == "reviewed"}
    assert ti | vi == reviewed and not ti & vi and ti and vi
    stack = {i for i in reviewed if i.startswith("ct_z")}  # a stack's slices stay together
    assert len(stack) == 2 and (stack <= ti or stack <= vi)
    for part in (train, val):
        ids = {im["id"] for im in part["images"]}
        assert all(a["image_id"] in ids for a in part["annotations"])
    # reproducible
    coco.export_coco(proj, tmp_path / "again" / "ds.json", split=0.5, only_reviewed=True)
    again = json.loads((tmp_path / "again" / "ds_train.json").read_text())
    assert [im["maskloop_item"] for im in again["images"]] == [im["maskloop_item"] for im in train["images"]]


def test_split_ids_reproducible_and_order_independent():
    ids = [f"i{k:03d}" for k in range(100)]
    tr, va = split_ids(ids, 0.8, seed=1)
    assert len(tr) == 80 and len(va) == 20 and not set(tr) & set(va)
    tr2, va2 = split_ids(list(reversed(ids)), 0.8, seed=1)
    assert set(tr2) == set(tr)
    assert split_ids(["a", "b"], 0.99)[1] == ["a"] or len(split_ids(["a", "b"], 0.99)[1]) == 1


def test_export_cancel_writes_nothing(tmp_path):
    from engine.errors import CancelledError
    from engine.jobs import CancelToken
    proj = _filled(tmp_path)
    tok = CancelToken()
    calls = []

    def progress(done, total, msg):
        calls.append(done)
        if done == 2:
            tok.cancel()
    out = tmp_path / "export" / "c.json"
    with pytest.raises(CancelledError):
        coco.export_coco(proj, out, progress=progress, cancel=tok)
    assert not out.exists()


# --- import -----------------------------------------------------------------------------------

def test_import_panoptic_fixture_rle_and_crowd(fixtures_dir, tmp_path):
    d = fixtures_dir / "coco_panopticapi_sample/sample_data"
    f = d / "panoptic_coco_detection_format.json"
    proj = Project.create(tmp_path / "proj")
    rep = coco.import_coco(proj, f, images_dir=d / "input_images")
    src = json.loads(f.read_text())
    crowd = sum(a["iscrowd"] for a in src["annotations"])
    assert crowd == 3 and rep.skipped["crowd region (iscrowd=1)"] == 3
    assert rep.items_added == 2 and rep.instances == len(src["annotations"]) - crowd
    proj = Project.open(proj.root)
    gt = _quiet(COCO, str(f))
    cat_names = {c["id"]: c["name"] for c in src["categories"]}
    for img in src["images"]:
        (it,) = proj.find_items_by_stem(Path(img["file_name"]).stem)
        ann = proj.load_annotation(it.id)
        assert ann.status == "reviewed"
        want = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]])) if not a["iscrowd"]]
        assert len(ann.instances) == len(want)
        for inst, a in zip(ann.instances, want):
            assert inst.label == cat_names[a["category_id"]]
            assert np.array_equal(inst.full_mask(ann.shape), gt.annToMask(a).astype(bool))
    # only the categories in use became labels
    assert set(proj.labels.names()) == {cat_names[a["category_id"]] for a in src["annotations"] if not a["iscrowd"]}


def test_import_results_list_is_refused(fixtures_dir, tmp_path):
    f = fixtures_dir / "coco_cocoapi_results/results/instances_val2014_fakesegm100_results.json"
    proj = Project.create(tmp_path / "proj")
    with pytest.raises(FormatError, match="results list") as e:
        coco.import_coco(proj, f)
    assert str(f) in str(e.value)


def _dataset(tmp_path, anns, images=None, cats=None, name="ds.json") -> Path:
    d = tmp_path / "ds"
    d.mkdir(exist_ok=True)
    cv2.imwrite(str(d / "img.png"), np.zeros((20, 30), np.uint8))
    data = {"images": images if images is not None else [{"id": 1, "file_name": "img.png", "height": 20, "width": 30}],
            "annotations": anns,
            "categories": cats if cats is not None else [{"id": 5, "name": "cell"}, {"id": 9, "name": "blob"}]}
    f = d / name
    f.write_text(json.dumps(data) if not isinstance(anns, str) else anns)
    return f


def _uncompressed(mask: np.ndarray) -> dict:
    flat = mask.T.flatten()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"size": list(mask.shape), "counts": runs}


def test_import_rle_uncompressed_polygons(tmp_path):
    m1 = np.zeros((20, 30), bool)
    m1[2:8, 3:12] = True
    m2 = np.zeros((20, 30), bool)
    m2[10:18, 20:29] = True
    m2[12:14, 22:24] = False
    poly = [[1, 10, 8, 10, 8, 18, 1, 18]]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "segmentation": rle_encode(m1), "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "segmentation": _uncompressed(m2), "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 5, "segmentation": poly, "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 9, "segmentation": _uncompressed(m1), "iscrowd": 1},
    ]
    f = _dataset(tmp_path, anns)
    proj = Project.create(tmp_path / "proj", ["cell"])
    rep = coco.import_coco(proj, f)
    assert rep.instances == 3 and rep.skipped["crowd region (iscrowd=1)"] == 1 and rep.labels_added == ["blob"]
    (it,) = proj.items
    ann = proj.load_annotation(it.id)
    want_poly = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(poly, 20, 30))).astype(bool)
    for inst, want in zip(ann.instances, [m1, m2, want_poly]):
        assert np.array_equal(inst.full_mask((20, 30)), want)
    assert [i.label for i in ann.instances] == ["cell", "blob", "cell"]
    assert all(i.source == "imported" for i in ann.instances) and ann.status == "reviewed"
    assert [l.name for l in Project.open(proj.root).labels] == ["cell", "blob"]


def test_round_trip_into_same_and_fresh_project_keeps_ids(tmp_path):
    proj = _filled(tmp_path)
    out = tmp_path / "export" / "coco.json"
    coco.export_coco(proj, out)
    # into the same project (matched by maskloop_item): nothing changes
    before = {it.id: [i.id for i in proj.load_annotation(it.id).instances] for it in proj.items}
    rep = coco.import_coco(proj, out)
    assert rep.items_added == 0
    after = {it.id: [i.id for i in proj.load_annotation(it.id).instances] for it in proj.items}
    assert after == before
    # into a fresh project from a stand-alone copy
    coco.export_coco(proj, tmp_path / "alone", copy_images=True)
    p2 = Project.create(tmp_path / "p2")
    coco.import_coco(p2, tmp_path / "alone" / "annotations.json")
    assert len(p2.items) == len(proj.items)
    for it in proj.items:
        a1 = proj.load_annotation(it.id)
        (it2,) = p2.find_items_by_stem(it.id)
        a2 = p2.load_annotation(it2.id)
        assert [i.id for i in a1.instances] == [i.id for i in a2.instances]
        assert all(x.same_pixels(y) and x.label == y.label for x, y in zip(a1.instances, a2.instances))
        assert np.array_equal(p2.load_image(it2.id), proj.load_image(it.id))


def test_import_as_predictions(tmp_path):
    m = np.zeros((20, 30), bool)
    m[2:5, 2:5] = True
    f = _dataset(tmp_path, [{"id": 1, "image_id": 1, "category_id": 5, "segmentation": rle_encode(m),
                             "iscrowd": 0, "score": 0.42}])
    proj = Project.create(tmp_path / "proj")
    coco.import_coco(proj, f, as_predictions=True)
    ann = proj.load_annotation(proj.items[0].id)
    assert ann.status == "predicted"
    assert [(i.source, i.score) for i in ann.instances] == [("model", 0.42)]


def test_import_matches_existing_item_by_file_name(tmp_path):
    proj = _project(tmp_path, {"img.png": np.zeros((20, 30), np.uint8)})
    m = np.zeros((20, 30), bool)
    m[1:3, 1:3] = True
    f = _dataset(tmp_path, [{"id": 1, "image_id": 1, "category_id": 5, "segmentation": rle_encode(m), "iscrowd": 0}])
    rep = coco.import_coco(proj, f)  # ds/img.png exists too, but the project already has an img.png
    assert rep.items_added == 0 and len(proj.items) == 1


BAD = [
    ("malformed", '{"images": [],\n "annotations": [\n  {"id": 1,}\n]}', r"line 3"),
    ("category", [{"id": 1, "image_id": 1, "category_id": 77, "segmentation": [[1, 1, 5, 1, 5, 5]], "iscrowd": 0}],
     r"annotations\[0\]\.category_id.*unknown category id 77"),
    ("image id", [{"id": 1, "image_id": 3, "category_id": 5, "segmentation": [[1, 1, 5, 1, 5, 5]], "iscrowd": 0}],
     r"annotations\[0\]\.image_id"),
    ("rle larger", [{"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0,
                     "segmentation": rle_encode(np.ones((40, 30), bool))}],
     r"annotations\[0\]\.segmentation\.size.*larger than the image"),
    ("polygon outside", [{"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0,
                          "segmentation": [[1, 1, 50, 1, 50, 5]]}], r"annotations\[0\]\.segmentation\[0\].*outside"),
    ("bad counts", [{"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0,
                     "segmentation": {"size": [20, 30], "counts": [5, 7]}}], r"annotations\[0\]\.segmentation"),
]


@pytest.mark.parametrize("name, anns, match", BAD, ids=[b[0] for b in BAD])
def test_bad_coco_input_changes_nothing(tmp_path, name, anns, match):
    proj = _project(tmp_path, {"other.png": np.zeros((5, 5), np.uint8)})
    good = {"id": 9, "image_id": 1, "category_id": 5, "segmentation": [[1, 1, 5, 1, 5, 5]], "iscrowd": 0}
    f = _dataset(tmp_path, anns if isinstance(anns, str) else [good] + anns)
    if not isinstance(anns, str):  # the bad annotation is the second one
        match = match.replace(r"annotations\[0\]", r"annotations\[1\]")
    before = _snapshot(proj.root)
    with pytest.raises(FormatError, match=match) as e:
        coco.import_coco(proj, f)
    assert str(f) in str(e.value)
    assert _snapshot(proj.root) == before


@pytest.mark.parametrize("file_name, match, err", [
    ("../img.png", r"images\[1\]\.file_name.*outside", FormatError),
    ("/etc/hostname", r"images\[1\]\.file_name.*absolute", FormatError),
    ("sub/../../x.png", r"images\[1\]\.file_name.*outside", FormatError),
    ("missing.png", r"images\[1\]\.file_name.*not found", ImageReadError),
])
def test_bad_file_names_change_nothing(tmp_path, file_name, match, err):
    proj = _project(tmp_path, {"other.png": np.zeros((5, 5), np.uint8)})
    images = [{"id": 1, "file_name": "img.png", "height": 20, "width": 30},
              {"id": 2, "file_name": file_name, "height": 20, "width": 30}]
    f = _dataset(tmp_path, [], images=images)
    before = _snapshot(proj.root)
    with pytest.raises(err, match=match):
        coco.import_coco(proj, f)
    assert _snapshot(proj.root) == before


def test_image_size_mismatch_and_corrupt_image(tmp_path):
    proj = Project.create(tmp_path / "proj")
    f = _dataset(tmp_path, [], images=[{"id": 1, "file_name": "img.png", "height": 21, "width": 30}])
    with pytest.raises(FormatError, match=r"images\[0\]\.height.*30x21"):
        coco.import_coco(proj, f)
    (f.parent / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    f = _dataset(tmp_path, [], images=[{"id": 1, "file_name": "broken.png", "height": 20, "width": 30}])
    with pytest.raises(ImageReadError, match=r"images\[0\]\.file_name"):
        coco.import_coco(proj, f)
    assert Project.open(proj.root).items == []


def _dicom_series(folder: Path, n=3, h=16, w=20) -> np.ndarray:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    vols = rng.integers(0, 3000, (n, h, w), dtype=np.uint16)
    for z in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{z:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.4", "CT"
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.Rows, ds.Columns, ds.SamplesPerPixel = h, w, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelData = vols[z].tobytes()
        ds.save_as(str(folder / f"IM{z:04d}.dcm"), enforce_file_format=True)
    return vols


def test_dicom_series_slices(tmp_path):
    _dicom_series(tmp_path / "series")
    proj = Project.create(tmp_path / "proj", ["organ"])
    proj.add([tmp_path / "series"])
    assert len(proj.items) == 3
    for it in proj.items:
        proj.save_annotation(ItemAnnotation(it.id, it.height, it.width,
                                            [Instance(np.ones((3, 4), bool), it.slice, 2, "organ")], "reviewed"))
    out = tmp_path / "exp" / "c.json"
    coco.export_coco(proj, out)
    data = json.loads(out.read_text())
    for im in data["images"]:
        it = proj.item(im["maskloop_item"])
        # each slice names its own DICOM file, plus the series folder and its index
        assert (out.parent / im["file_name"]).resolve() == (tmp_path / "series" / f"IM{it.slice:04d}.dcm").resolve()
        assert im["slice"] == it.slice and (out.parent / im["maskloop_source"]).resolve() == (tmp_path / "series")
    # copies hold the HU values (not storable as PNG when negative: TIFF)
    coco.export_coco(proj, tmp_path / "alone", copy_images=True)
    data = json.loads((tmp_path / "alone" / "annotations.json").read_text())
    for im in data["images"]:
        p = tmp_path / "alone" / im["file_name"]
        raw = proj.load_image(im["maskloop_item"])
        back = tifffile.imread(p) if p.suffix == ".tif" else cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, raw)
    assert _self_ap(tmp_path / "alone" / "annotations.json") == pytest.approx(1.0)
    # a COCO file naming the slice files (no MaskLoop keys) matches the series' items
    for im in (d := json.loads(out.read_text()))["images"]:
        del im["maskloop_item"]
    d["annotations"] = []
    (tmp_path / "series" / "plain.json").write_text(json.dumps(
        dict(d, images=[dict(im, file_name=Path(im["file_name"]).name) for im in d["images"]])))
    rep = coco.import_coco(proj, tmp_path / "series" / "plain.json")
    assert rep.items_added == 0 and rep.items_updated == 3


def test_export_split_keeps_a_stack_on_one_side(tmp_path):
    # slices of one stack are near copies of each other: one in train and its neighbour in
    # val would make the validation score a memory test
    import tifffile
    from engine.annotations import Instance, ItemAnnotation
    from engine.project import Project
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 16, 16), np.uint8))
    for k in range(4):
        cv2.imwrite(str(tmp_path / f"plain{k}.png"), np.zeros((16, 16), np.uint8))
    proj = Project.create(tmp_path / "p", ["a"])
    proj.add([tmp_path / "stack.tif"] + [tmp_path / f"plain{k}.png" for k in range(4)])
    for it in proj.items:
        proj.save_annotation(ItemAnnotation(it.id, 16, 16, [Instance(np.ones((3, 3), bool), 2, 2, "a")], "reviewed"))
    stack_ids = {it.id for it in proj.items if it.source == 0}
    for seed in range(6):
        out = tmp_path / f"out{seed}"
        coco.export_coco(proj, out, split=0.5, seed=seed)
        sides = []
        for part in ("train", "val"):
            data = json.loads((out / f"{part}.json").read_text())
            sides.append({im["maskloop_item"] for im in data["images"]} & stack_ids)
        assert not (sides[0] and sides[1]), f"seed {seed}: stack split across train and val"
