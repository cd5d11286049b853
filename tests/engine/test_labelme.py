"""labelme JSON: rasterisation as labelme's own shape_to_mask, shapes <-> instances,
import of labelme's example files, export read back by labelme's own LabelFile."""
from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from engine.annotations import Instance, ItemAnnotation
from engine.errors import FormatError, ImageReadError
from engine.formats import labelme as lm
from engine.project import Project

labelme = pytest.importorskip("labelme")
from labelme.utils import shape_to_mask as labelme_shape_to_mask  # noqa: E402
from labelme.utils import shapes_to_label  # noqa: E402


def _snapshot(root: Path) -> dict:
    """Every file under root with its bytes: 'the project is unchanged' means equal snapshots."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _project(tmp_path, images: dict, labels=("cell",)) -> Project:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name, arr in images.items():
        p = data / name
        if p.suffix in (".tif", ".tiff"):
            tifffile.imwrite(p, arr, photometric="minisblack")
        else:
            cv2.imwrite(str(p), arr)
    proj = Project.create(tmp_path / "proj", list(labels))
    proj.add([data / n for n in images])
    return proj


# --- rasterisation -----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_shape_to_mask_matches_labelme(seed):
    rng = np.random.default_rng(seed)
    H, W = 97, 131
    for _ in range(15):
        n = int(rng.integers(3, 9))
        pts = (rng.uniform(-10, [W + 10, H + 10], size=(n, 2))).tolist()
        if seed % 2:
            pts = np.round(pts).tolist()
        ours = lm.shape_to_mask(H, W, pts, "polygon")
        assert np.array_equal(ours, labelme_shape_to_mask((H, W), pts, "polygon"))
        rect = pts[:2]
        assert np.array_equal(lm.shape_to_mask(H, W, rect, "rectangle"),
                              labelme_shape_to_mask((H, W), rect, "rectangle"))
        circ = [pts[0], [pts[0][0] + rng.uniform(0, 30), pts[0][1] + rng.uniform(-20, 20)]]
        assert np.array_equal(lm.shape_to_mask(H, W, circ, "circle"),
                              labelme_shape_to_mask((H, W), circ, "circle"))


def test_instance_shape_round_trip_keeps_fields():
    m = np.zeros((7, 9), bool)
    m[1:6, 2:8] = True
    m[3, 4] = False
    inst = Instance(mask=m, x0=20, y0=30, label="cell", score=0.75, source="model", model="run-1")
    shape = lm.instance_to_shape(inst)
    assert shape["shape_type"] == "mask"
    # tightened crop: points are the inclusive corners of the set pixels
    assert shape["points"] == [[22, 31], [27, 35]]
    assert shape["maskloop"] == {"id": inst.id, "score": 0.75, "source": "model", "model": "run-1"}
    back = lm.shape_to_instance(json.loads(json.dumps(shape)), 100, 100)
    assert back.same_pixels(inst)
    assert (back.id, back.score, back.source, back.model, back.label) == (inst.id, 0.75, "model", "run-1", "cell")
    # an empty instance gives no shape
    assert lm.instance_to_shape(Instance(mask=np.zeros((3, 3), bool), label="cell")) is None


def test_mask_shape_errors_name_file_and_field():
    inst = Instance(mask=np.ones((4, 4), bool), x0=8, y0=8, label="a")
    shape = lm.instance_to_shape(inst)
    with pytest.raises(FormatError) as e:
        lm.shape_to_instance(shape, 10, 10, path="f.json", field="shapes[3]")  # 8+4 > 10
    assert "f.json" in str(e.value) and "shapes[3].points" in str(e.value)
    bad = dict(shape, points=[[0, 0], [5, 5]])  # PNG is 4x4, points span 6x6
    with pytest.raises(FormatError, match=r"shapes\[0\]\.mask"):
        lm.shape_to_instance(bad, 100, 100, path="f.json", field="shapes[0]")
    with pytest.raises(FormatError, match="base64"):
        lm.shape_to_instance(dict(shape, mask="***"), 100, 100, path="f.json")
    with pytest.raises(FormatError, match="points"):
        lm.shape_to_instance({"label": "a", "points": [[1, "x"]], "shape_type": "polygon"}, 10, 10)


def test_annotation_to_labelme_and_back():
    a = Instance(mask=np.ones((3, 5), bool), x0=1, y0=2, label="a")
    b = Instance(mask=np.eye(6, dtype=bool), x0=10, y0=0, label="b", source="model", score=0.5)
    ann = ItemAnnotation("it1", 20, 30, [a, b], "predicted")
    data = lm.annotation_to_labelme(ann, "../img.png", extra={"slice": 3})
    assert data["imagePath"] == "../img.png" and data["imageData"] is None
    assert (data["imageHeight"], data["imageWidth"]) == (20, 30)
    assert data["maskloop"]["status"] == "predicted" and data["maskloop"]["slice"] == 3
    back = lm.labelme_to_annotation(json.loads(json.dumps(data)), "x.json", height=20, width=30)
    assert back.item_id == "it1" and back.status == "predicted"
    assert [i.id for i in back.instances] == [a.id, b.id]
    assert all(x.same_pixels(y) for x, y in zip(back.instances, ann.instances))
    with pytest.raises(FormatError, match="imageHeight"):
        lm.labelme_to_annotation(data, "x.json", height=21, width=30)


# --- labelme's own example files ------------------------------------------------------------

def test_primitives_fixture_matches_labelme(fixtures_dir):
    p = fixtures_dir / "labelme_examples/examples/primitives/primitives.json"
    data = json.loads(p.read_text())
    stats = Counter()
    ann = lm.labelme_to_annotation(data, p, stats=stats)
    assert ann.status == "reviewed"
    assert stats == Counter({"ignored line": 1, "ignored point": 1, "ignored linestrip": 1})
    assert [i.label for i in ann.instances] == ["rectangle", "circle", "rectangle", "polygon", "octagon"]
    lf = labelme.LabelFile(str(p))
    area = [s for s in lf.shapes if s["shape_type"] not in ("line", "point", "linestrip")]
    H, W = ann.shape
    for s, inst in zip(area, ann.instances):
        if s["shape_type"] == "mask":
            want = np.zeros((H, W), bool)
            (x1, y1), (x2, y2) = np.asarray(s["points"]).astype(int)
            want[y1:y2 + 1, x1:x2 + 1] = s["mask"]
        else:
            want = labelme_shape_to_mask((H, W), s["points"], s["shape_type"])
        assert np.array_equal(inst.full_mask((H, W)), want), s["shape_type"]


def test_instance_segmentation_fixture_group_id_and_ignore(fixtures_dir):
    p = fixtures_dir / "labelme_examples/examples/instance_segmentation/data_annotated/2011_000003.json"
    data = json.loads(p.read_text())
    stats = Counter()
    ann = lm.labelme_to_annotation(data, p, stats=stats)
    assert stats["ignored __ignore__"] == 1
    assert stats["joined by group_id"] == 1
    assert [i.label for i in ann.instances] == ["person", "person", "bottle"]
    # each instance is the union of labelme's own rasterisation of its shapes ...
    shapes = [s for s in labelme.LabelFile(str(p)).shapes if s["label"] != "__ignore__"]
    H, W = ann.shape
    groups: dict = {}
    for k, s in enumerate(shapes):
        key = (s["label"], s["group_id"]) if s["group_id"] is not None else k
        groups.setdefault(key, np.zeros((H, W), bool))
        groups[key] |= labelme_shape_to_mask((H, W), s["points"], s["shape_type"])
    assert len(groups) == len(ann.instances)
    for inst, want in zip(ann.instances, groups.values()):
        assert np.array_equal(inst.full_mask((H, W)), want)
    # ... and covers its instance in labelme's own instance map (which paints later shapes on top)
    _, ins = shapes_to_label((H, W), shapes, {"person": 1, "bottle": 2})
    assert ins.max() == len(ann.instances)
    for k, inst in enumerate(ann.instances, start=1):
        assert not ((ins == k) & ~inst.full_mask((H, W))).any()


def test_import_labelme_folder_fixture(fixtures_dir, tmp_path):
    folder = fixtures_dir / "labelme_examples/examples/instance_segmentation/data_annotated"
    proj = Project.create(tmp_path / "proj")
    rep = lm.import_labelme(proj, folder)
    assert rep.files == 3 and rep.items_added == 3 and rep.items_updated == 3
    assert rep.skipped["ignored __ignore__"] >= 1
    proj = Project.open(tmp_path / "proj")
    assert len(proj.items) == 3
    assert set(rep.labels_added) <= set(proj.labels.names())
    for it in proj.items:
        ann = proj.load_annotation(it.id)
        assert ann.status == "reviewed" and ann.instances
        assert all(i.source == "imported" for i in ann.instances)
    # importing the same files again changes no instance
    before = {it.id: len(proj.load_annotation(it.id).instances) for it in proj.items}
    rep2 = lm.import_labelme(proj, folder)
    assert rep2.instances == 0 and rep2.items_added == 0
    assert {it.id: len(proj.load_annotation(it.id).instances) for it in proj.items} == before


# --- export read back by labelme ----------------------------------------------------------------

def _filled_project(tmp_path):
    rng = np.random.default_rng(3)
    img8 = rng.integers(0, 255, (60, 80), dtype=np.uint8)
    img16 = rng.integers(0, 60000, (50, 70), dtype=np.uint16)
    stack = rng.integers(0, 4000, (3, 40, 45), dtype=np.uint16)
    proj = _project(tmp_path, {"a.png": img8, "b.tif": img16, "s.tif": stack, "c16.png": img16[:30]},
                    labels=("cell", "debris"))
    for k, it in enumerate(proj.items):
        insts = []
        for j in range(4):
            m = rng.random((9, 11)) > 0.4
            insts.append(Instance(mask=m, x0=3 + 7 * j, y0=2 + 5 * j, label=("cell", "debris")[j % 2],
                                  score=0.9 if j == 3 else None, source="model" if j == 3 else "manual"))
        proj.save_annotation(ItemAnnotation(it.id, it.height, it.width, insts,
                                            "reviewed" if k % 2 == 0 else "predicted"))
    return proj


def _labelme_masks(json_path: Path) -> tuple[list, tuple]:
    lf = labelme.LabelFile(str(json_path))
    img = labelme.utils.img_data_to_arr(lf.image_data)
    H, W = img.shape[:2]
    out = []
    for s in lf.shapes:
        m = np.zeros((H, W), bool)
        (x1, y1), (x2, y2) = np.asarray(s["points"]).astype(int)
        m[y1:y2 + 1, x1:x2 + 1] = s["mask"]
        out.append((s["label"], m))
    return out, (H, W)


def test_export_opens_in_labelme_with_same_masks(tmp_path):
    proj = _filled_project(tmp_path)
    out = tmp_path / "out"
    rep = lm.export_labelme(proj, out)
    assert rep.images == len(proj.items) == 6
    # slices of the stack and the 16-bit PNG (labelme cannot open those) were written as
    # TIFFs labelme opens; the files labelme reads as they are were not copied
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{it.id}.tif" for it in proj.items if proj.sources[it.source].n_slices > 1 or it.id == "c16")
    for it in proj.items:
        f = out / f"{it.id}.json"
        shapes, hw = _labelme_masks(f)
        assert hw == (it.height, it.width)
        ann = proj.load_annotation(it.id)
        assert [(lab, np.flatnonzero(m).tolist()) for lab, m in shapes] == \
            [(i.label, np.flatnonzero(i.full_mask(ann.shape)).tolist()) for i in ann.instances]
        data = json.loads(f.read_text())
        assert (f.parent / data["imagePath"]).exists()
    # the exported slice keeps its raw 16-bit values
    s_item = next(it for it in proj.items if proj.sources[it.source].n_slices > 1 and it.slice == 2)
    assert np.array_equal(tifffile.imread(out / "images" / f"{s_item.id}.tif"), proj.load_image(s_item.id))


def test_export_copy_images_split_only_reviewed(tmp_path):
    proj = _filled_project(tmp_path)
    reviewed = [it.id for it in proj.items if proj.status(it.id) == "reviewed"]
    out = tmp_path / "out"
    lm.export_labelme(proj, out, only_reviewed=True, copy_images=True, split=0.5)
    written = sorted(p.stem for p in out.glob("*/*.json"))
    assert written == sorted(reviewed)
    for f in out.glob("*/*.json"):
        data = json.loads(f.read_text())
        assert not data["imagePath"].startswith("..")  # stands alone
        _labelme_masks(f)


def test_export_then_import_into_fresh_project(tmp_path):
    proj = _filled_project(tmp_path)
    out = tmp_path / "out"
    lm.export_labelme(proj, out, copy_images=True)
    p2 = Project.create(tmp_path / "p2")
    rep = lm.import_labelme(p2, out)
    assert rep.items_added == len(proj.items)
    by_name = {it.id: it for it in p2.items}
    for it in proj.items:
        a1 = proj.load_annotation(it.id)
        a2 = p2.load_annotation(by_name[it.id].id)  # copied images are named after the item id
        assert len(a1.instances) == len(a2.instances)
        for x, y in zip(a1.instances, a2.instances):
            assert x.same_pixels(y) and x.label == y.label and x.id == y.id
        assert np.array_equal(p2.load_image(by_name[it.id].id), proj.load_image(it.id))


# --- bad input --------------------------------------------------------------------------------

def _one_file_dataset(tmp_path, data: dict, name="x.json") -> Path:
    d = tmp_path / "ds"
    d.mkdir(exist_ok=True)
    cv2.imwrite(str(d / "img.png"), np.zeros((20, 30), np.uint8))
    f = d / name
    f.write_text(json.dumps(data) if isinstance(data, dict) else data)
    return f


def _lm(shapes, image_path="img.png", **kw):
    return dict({"version": "5.0.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
                 "imageData": None, "imageHeight": 20, "imageWidth": 30}, **kw)


POLY = {"label": "a", "points": [[1, 1], [10, 1], [10, 10]], "shape_type": "polygon", "group_id": None, "flags": {}}


@pytest.mark.parametrize("data, match", [
    ('{"shapes": [\n  {"label": "a",,}\n]}', r"line 2"),
    (_lm([POLY], image_path="../img.png"), r"imagePath.*outside"),
    (_lm([POLY], image_path="/etc/passwd"), r"imagePath.*absolute"),
    (_lm([POLY], image_path="missing.png"), r"imagePath.*not found"),
    (_lm([dict(POLY, shape_type="cuboid")]), r"shapes\[0\]\.shape_type"),
    (_lm([POLY], imageHeight=21), r"imageHeight"),
])
def test_bad_labelme_input_changes_nothing(tmp_path, data, match):
    proj = _project(tmp_path, {"other.png": np.zeros((5, 5), np.uint8)})
    f = _one_file_dataset(tmp_path, data)
    before = _snapshot(proj.root)
    with pytest.raises((FormatError, ImageReadError), match=match) as e:
        lm.import_labelme(proj, f.parent)
    assert str(f) in str(e.value)
    assert _snapshot(proj.root) == before
    assert len(Project.open(proj.root).items) == 1


def test_bad_file_among_good_ones_changes_nothing(tmp_path):
    proj = _project(tmp_path, {"other.png": np.zeros((5, 5), np.uint8)})
    f = _one_file_dataset(tmp_path, _lm([POLY]), "a_good.json")
    big = Instance(mask=np.ones((25, 5), bool), x0=0, y0=0, label="a")
    _one_file_dataset(tmp_path, _lm([lm.instance_to_shape(big)]), "b_bad.json")
    before = _snapshot(proj.root)
    with pytest.raises(FormatError, match=r"b_bad\.json.*shapes\[0\]"):
        lm.import_labelme(proj, f.parent)
    assert _snapshot(proj.root) == before


def test_embedded_image_data_is_written_out(tmp_path):
    img = (np.arange(20 * 30) % 251).astype(np.uint8).reshape(20, 30)
    ok, buf = cv2.imencode(".png", img)
    data = _lm([POLY], image_path="gone.png", imageData=base64.b64encode(buf.tobytes()).decode())
    f = _one_file_dataset(tmp_path, data)
    proj = Project.create(tmp_path / "proj")
    rep = lm.import_labelme(proj, f)
    assert rep.items_added == 1
    (it,) = proj.items
    assert proj.source_path(proj.sources[it.source]) == proj.root / "images" / "gone.png"
    assert np.array_equal(proj.load_image(it.id), img)
    assert len(proj.load_annotation(it.id).instances) == 1


def test_as_predictions(tmp_path):
    f = _one_file_dataset(tmp_path, _lm([POLY]))
    proj = Project.create(tmp_path / "proj")
    lm.import_labelme(proj, f, as_predictions=True)
    (it,) = proj.items
    ann = proj.load_annotation(it.id)
    assert ann.status == "predicted" and [i.source for i in ann.instances] == ["model"]


def test_other_json_in_the_folder_is_skipped(tmp_path):
    f = _one_file_dataset(tmp_path, _lm([POLY]))
    (f.parent / "coco.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    proj = Project.create(tmp_path / "proj")
    rep = lm.import_labelme(proj, f.parent)
    assert rep.files == 1 and rep.skipped["JSON files that are not labelme files"] == 1
    with pytest.raises(FormatError, match="not a labelme file"):
        lm.import_labelme(proj, f.parent / "coco.json")
