import json
import os
import shutil

import numpy as np
import pytest
import tifffile

from engine.annotations import Instance, ItemAnnotation
from engine.errors import ImageReadError, LabelError, ProjectError
from engine.project import Project


def _png(path, h=32, w=48, value=100, dtype=np.uint16):
    import cv2
    img = np.full((h, w), value, dtype)
    assert cv2.imwrite(str(path), img)
    return path


def _stack(path, n=5, h=16, w=20):
    data = np.arange(n * h * w, dtype=np.uint16).reshape(n, h, w)
    tifffile.imwrite(path, data)
    return data


def test_create_add_and_reopen(tmp_path):
    imgs = tmp_path / "proj" / "images"
    imgs.mkdir(parents=True)
    _png(imgs / "a.png")
    stack = _stack(imgs / "core.tif")
    proj = Project.create(tmp_path / "proj", labels=["rock"])
    items = proj.add([imgs])
    assert [it.id for it in items] == ["a", "core_z0000", "core_z0001", "core_z0002", "core_z0003", "core_z0004"]
    again = Project.open(tmp_path / "proj")
    assert [it.id for it in again.items] == [it.id for it in items]
    assert np.array_equal(again.load_image("core_z0003"), stack[3])
    # paths inside the project are stored relative
    manifest = json.loads((tmp_path / "proj" / "maskloop.json").read_text())
    assert all(not os.path.isabs(s["path"]) for s in manifest["sources"])


def test_moved_project_keeps_working(tmp_path):
    root = tmp_path / "p"
    (root / "img").mkdir(parents=True)
    _png(root / "img" / "x.png", value=7)
    Project.create(root, ["a"]).add([root / "img" / "x.png"])
    shutil.move(str(root), str(tmp_path / "moved"))
    proj = Project.open(tmp_path / "moved")
    assert proj.load_image("x")[0, 0] == 7


def test_adding_same_source_twice_is_a_no_op_and_stems_collide_safely(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    _png(tmp_path / "d1" / "img.png")
    _png(tmp_path / "d2" / "img.png")
    proj = Project.create(tmp_path / "p")
    proj.add([tmp_path / "d1" / "img.png"])
    assert proj.add([tmp_path / "d1" / "img.png"]) == []
    new = proj.add([tmp_path / "d2" / "img.png"])
    assert len(new) == 1 and new[0].id != "img" and new[0].id.startswith("img_")


def test_bad_file_adds_nothing(tmp_path):
    (tmp_path / "good.png").write_bytes(b"")
    _png(tmp_path / "ok.png")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    proj = Project.create(tmp_path / "p")
    before = (tmp_path / "p" / "maskloop.json").read_bytes()
    with pytest.raises(ImageReadError, match="bad.tif"):
        proj.add([tmp_path / "ok.png", tmp_path / "bad.tif"])
    assert (tmp_path / "p" / "maskloop.json").read_bytes() == before
    with pytest.raises(ImageReadError, match="missing.png"):
        proj.add([tmp_path / "missing.png"])


def test_annotation_save_load_one_file_per_item(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    proj = Project.create(tmp_path / "p", ["rock", "pore"])
    proj.add([tmp_path / "a.png", tmp_path / "b.png"])
    m = np.zeros((5, 6), bool)
    m[1:4, 2:5] = True
    inst = Instance(m, x0=10, y0=3, label="rock", score=0.75, source="model", model="run-1")
    ann = ItemAnnotation("a", 32, 48, [inst], "predicted")
    proj.save_annotation(ann)
    # one file per item, beside the annotation index (a cache of statuses and counts)
    assert sorted(p.name for p in proj.annotations_dir.iterdir()) == [".index.jsonl", "a.json"]
    back = Project.open(tmp_path / "p").load_annotation("a")
    assert back.status == "predicted"
    (b_inst,) = back.instances
    assert b_inst.id == inst.id and b_inst.score == 0.75 and b_inst.source == "model" and b_inst.model == "run-1"
    assert b_inst.same_pixels(inst)
    assert proj.statuses() == {"a": "predicted", "b": "new"}
    assert proj.load_annotation("b").instances == []


def test_save_annotation_rejects_unknown_label_and_out_of_bounds(tmp_path):
    _png(tmp_path / "a.png")
    proj = Project.create(tmp_path / "p", ["rock"])
    proj.add([tmp_path / "a.png"])
    bad_label = ItemAnnotation("a", 32, 48, [Instance(np.ones((2, 2), bool), 0, 0, "cat")])
    with pytest.raises(LabelError, match="a.json"):
        proj.save_annotation(bad_label)
    outside = ItemAnnotation("a", 32, 48, [Instance(np.ones((4, 4), bool), 46, 0, "rock")])
    with pytest.raises(ProjectError, match="outside the image"):
        proj.save_annotation(outside)
    assert not proj.annotation_path("a").exists()


def test_labelme_reads_project_annotation_files(tmp_path):
    from labelme import LabelFile
    _png(tmp_path / "a.png", dtype=np.uint8)  # labelme 6 cannot decode 16-bit PNGs
    proj = Project.create(tmp_path / "p", ["rock"])
    proj.add([tmp_path / "a.png"])
    full = np.zeros((32, 48), bool)
    full[4:20, 6:30] = True
    proj.save_annotation(ItemAnnotation("a", 32, 48, [Instance.from_full_mask(full, "rock")], "reviewed"))
    lf = LabelFile(str(proj.annotation_path("a")))
    (shape,) = lf.shapes
    assert shape["shape_type"] == "mask" and shape["label"] == "rock"
    (x1, y1), (x2, y2) = np.asarray(shape["points"]).astype(int)
    pasted = np.zeros((32, 48), bool)
    pasted[y1:y2 + 1, x1:x2 + 1] = shape["mask"]
    assert np.array_equal(pasted, full)
    # imagePath resolves from the annotation file
    assert (proj.annotation_path("a").parent / lf.image_path).resolve() == (tmp_path / "a.png").resolve()


def test_open_errors_name_the_file(tmp_path):
    with pytest.raises(ProjectError, match="maskloop.json missing"):
        Project.open(tmp_path)
    (tmp_path / "maskloop.json").write_text('{"format": "maskloop-project",\n "labels": [}')
    from engine.errors import FormatError
    with pytest.raises(FormatError, match=r"maskloop.json: line 2"):
        Project.open(tmp_path)
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(tmp_path)


def test_lazy_stack_probe_reads_no_pixels(tmp_path, monkeypatch):
    _stack(tmp_path / "big.tif", n=200, h=64, w=64)
    import tifffile as tf
    calls = []
    real = tf.TiffPage.asarray
    monkeypatch.setattr(tf.TiffPage, "asarray", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    proj = Project.create(tmp_path / "p")
    items = proj.add([tmp_path / "big.tif"])
    assert len(items) == 200
    assert len(calls) == 0
    proj.load_image(items[150].id)
    assert len(calls) <= 1


def test_models_registry(tmp_path):
    proj = Project.create(tmp_path / "p")
    run_id, folder = proj.new_run()
    assert folder.is_dir() and proj.list_models() == []  # unfinished run is not listed
    (folder / "model.pt").write_bytes(b"x")
    (folder / "metrics.json").write_text('{"mask_AP": 0.5}')
    assert proj.list_models()[0]["metrics"] == {"mask_AP": 0.5}
    proj.set_active_model(run_id)
    assert Project.open(tmp_path / "p").active_model == run_id
    assert proj.resolve_model() == folder / "model.pt"
    with pytest.raises(ProjectError):
        proj.set_active_model("nope")


def test_a_setting_changed_in_place_after_a_save_is_saved(tmp_path):
    # the manifest merge compares with the last written state: that state must not be the
    # live settings dict, or an in-place change looks like no change and is dropped
    p = Project.create(tmp_path / "p", ["a"])
    p.settings["pixel_size"] = {"value": 0.65, "unit": "um"}
    p.save()
    p.settings["pixel_size"]["value"] = 0.5
    p.settings["other"] = 1
    p.save()
    assert Project.open(p.root).settings == {"pixel_size": {"value": 0.5, "unit": "um"}, "other": 1}
