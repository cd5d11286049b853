"""Label maps: each value > 0 one instance, matched by file stem; bad input changes nothing."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from engine.errors import FormatError, ImageReadError, LabelError
from engine.formats import labelmap
from engine.project import Project


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _project(tmp_path, images: dict, labels=()) -> Project:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, arr in images.items():
        p = data / name
        if p.suffix in (".tif", ".tiff"):
            tifffile.imwrite(p, arr, photometric="minisblack")
        else:
            cv2.imwrite(str(p), arr)
    proj = Project.create(tmp_path / "proj", list(labels))
    proj.add([data / n for n in images])
    return proj


def test_labelmap_to_instances_one_per_value():
    lab = np.zeros((10, 12), np.uint16)
    lab[1:3, 1:4] = 7
    lab[5:9, 8:11] = 2
    lab[9, 0] = 7            # not connected: still instance 7
    insts = labelmap.labelmap_to_instances(lab, "cell")
    assert [i.label for i in insts] == ["cell", "cell"]
    assert np.array_equal(insts[0].full_mask(lab.shape), lab == 2)
    assert np.array_equal(insts[1].full_mask(lab.shape), lab == 7)
    assert labelmap.labelmap_to_instances(np.zeros((4, 4), np.uint8), "x") == []


def test_nuclei_fixture(fixtures_dir, tmp_path):
    img = tifffile.imread(fixtures_dir / "stardist_dsb2018/img2d.tif")
    lab = tifffile.imread(fixtures_dir / "stardist_dsb2018/mask2d.tif")
    proj = Project.create(tmp_path / "proj", ["nucleus"])
    proj.add([fixtures_dir / "stardist_dsb2018/img2d.tif"])
    d = tmp_path / "maps"
    d.mkdir()
    (d / "img2d_masks.tif").write_bytes((fixtures_dir / "stardist_dsb2018/mask2d.tif").read_bytes())
    rep = labelmap.import_labelmap(proj, d)
    assert rep.instances == 125 == len(np.unique(lab)) - 1
    (it,) = proj.items
    ann = proj.load_annotation(it.id)
    assert ann.status == "reviewed" and ann.shape == img.shape
    values = sorted(v for v in np.unique(lab) if v)
    for v, inst in zip(values, ann.instances):
        assert inst.label == "nucleus" and inst.source == "imported"
        assert np.array_equal(inst.full_mask(lab.shape), lab == v)
    # a second import of the same map adds nothing
    assert labelmap.import_labelmap(proj, d).instances == 0
    assert len(proj.load_annotation(it.id).instances) == 125


def test_matching_png_16bit_stack_and_label_choice(tmp_path):
    rng = np.random.default_rng(0)
    proj = _project(tmp_path, {"a.png": np.zeros((20, 30), np.uint8),
                               "s.tif": rng.integers(0, 999, (3, 16, 18), dtype=np.uint16)},
                    labels=("cell", "debris"))
    maps = tmp_path / "maps"
    maps.mkdir()
    a = np.zeros((20, 30), np.uint16)
    a[2:5, 3:9] = 300
    a[10:15, 10:12] = 1
    cv2.imwrite(str(maps / "a_cp_masks.png"), a)
    s = np.zeros((3, 16, 18), np.uint16)
    s[0, 1:4, 1:4] = 5
    s[2, 8:12, 2:9] = 9
    s[2, 0:2, 0:2] = 4
    tifffile.imwrite(maps / "s_masks.tif", s, photometric="minisblack")
    (maps / "unrelated.tif").write_bytes(b"not an image at all")  # matches no item: never read
    with pytest.raises(LabelError, match="--label"):
        labelmap.import_labelmap(proj, maps)
    rep = labelmap.import_labelmap(proj, maps, label="debris", as_predictions=True)
    assert rep.instances == 5 and rep.skipped["files matching no item"] == 1
    ann = proj.load_annotation("a")
    assert ann.status == "predicted" and {i.source for i in ann.instances} == {"model"}
    assert [np.array_equal(i.full_mask(a.shape), a == v) for i, v in zip(ann.instances, (1, 300))] == [True, True]
    for z, want in enumerate((1, 0, 2)):
        it = next(i for i in proj.items if proj.sources[i.source].n_slices == 3 and i.slice == z)
        got = proj.load_annotation(it.id)
        assert len(got.instances) == want
        if want:
            assert all(i.label == "debris" for i in got.instances)
    # a label not yet in the project is added
    proj2 = _project(tmp_path / "x", {"a.png": np.zeros((20, 30), np.uint8)})
    rep = labelmap.import_labelmap(proj2, maps / "a_cp_masks.png", label="nucleus")
    assert rep.labels_added == ["nucleus"] and Project.open(proj2.root).labels.names() == ["nucleus"]


def test_project_images_in_the_folder_are_not_label_maps(tmp_path):
    # Cellpose style: img.png and img_cp_masks.png side by side, the image in the project
    d = tmp_path / "data"
    d.mkdir()
    cv2.imwrite(str(d / "img.png"), np.full((10, 10), 200, np.uint8))
    m = np.zeros((10, 10), np.uint8)
    m[2:4, 2:4] = 1
    cv2.imwrite(str(d / "img_cp_masks.png"), m)
    proj = Project.create(tmp_path / "proj", ["cell"])
    proj.add([d / "img.png"])
    rep = labelmap.import_labelmap(proj, d)
    assert rep.instances == 1 and rep.files == 1


def test_size_mismatch_names_both_files_and_changes_nothing(tmp_path):
    proj = _project(tmp_path, {"a.png": np.zeros((20, 30), np.uint8), "b.png": np.zeros((20, 30), np.uint8)},
                    labels=("cell",))
    maps = tmp_path / "maps"
    maps.mkdir()
    ok = np.zeros((20, 30), np.uint8)
    ok[1:4, 1:4] = 1
    cv2.imwrite(str(maps / "a.png"), ok)
    tifffile.imwrite(maps / "b.tif", np.ones((21, 30), np.uint16))
    before = _snapshot(proj.root)
    with pytest.raises(FormatError) as e:
        labelmap.import_labelmap(proj, maps)
    msg = str(e.value)
    assert str(maps / "b.tif") in msg and "b.png" in msg and "30x21" in msg
    assert _snapshot(proj.root) == before


@pytest.mark.parametrize("arr, match", [
    (np.full((20, 30), -1, np.int16), "negative"),
    (np.full((20, 30), 1.5, np.float32), "non-integer"),
    (np.zeros((2, 20, 30), np.uint8), "pages"),
])
def test_bad_values(tmp_path, arr, match):
    proj = _project(tmp_path, {"a.png": np.zeros((20, 30), np.uint8)}, labels=("cell",))
    f = tmp_path / "a.tif"
    tifffile.imwrite(f, arr, photometric="minisblack")
    before = _snapshot(proj.root)
    with pytest.raises(FormatError, match=match):
        labelmap.import_labelmap(proj, f)
    assert _snapshot(proj.root) == before


def test_float_integral_values_accepted(tmp_path):
    proj = _project(tmp_path, {"a.png": np.zeros((20, 30), np.uint8)}, labels=("cell",))
    arr = np.zeros((20, 30), np.float32)
    arr[3:6, 3:6] = 4.0
    tifffile.imwrite(tmp_path / "a.tif", arr)
    assert labelmap.import_labelmap(proj, tmp_path / "a.tif").instances == 1


def test_corrupt_and_unmatched_files(tmp_path):
    proj = _project(tmp_path, {"a.png": np.zeros((20, 30), np.uint8)}, labels=("cell",))
    bad = tmp_path / "a_masks.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="a_masks.tif"):
        labelmap.import_labelmap(proj, bad)
    other = tmp_path / "zzz.png"
    cv2.imwrite(str(other), np.zeros((20, 30), np.uint8))
    with pytest.raises(FormatError, match="no project item matches"):
        labelmap.import_labelmap(proj, other)
