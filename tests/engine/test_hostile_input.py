"""Hostile files (issue 14, defects 4 and 9): sizes claimed by headers are checked before
anything is decoded or drawn (engine.limits), coordinates are bounded by the image, and
malformed values give a MaskLoop error naming the file and field -- never a traceback,
and the project is left as it was."""
from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import limits
from engine.cli import run
from engine.errors import FormatError, LabelError, MaskLoopError
from engine.formats import coco, labelmap, labelme as lm
from engine.masks import mask_to_b64
from engine.project import Project


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is one tiny zlib stream:
    what a PNG bomb (or a lying header) looks like to a reader."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (limits.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture
def proj(tmp_path) -> Project:
    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "a.png"), np.zeros((40, 50), np.uint8))
    p = Project.create(tmp_path / "proj", ["cell"])
    p.add([data / "a.png"])
    return p


def _coco(tmp_path, images, annotations=(), name="c.json") -> Path:
    path = tmp_path / "ds" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"images": list(images), "annotations": list(annotations),
                                "categories": [{"id": 1, "name": "cell"}]}))
    return path


def _refused(fn, proj, *must, kind=MaskLoopError):
    before = _snapshot(proj.root)
    with pytest.raises(kind) as ei:
        fn()
    for m in must:
        assert m in str(ei.value), str(ei.value)
    assert _snapshot(proj.root) == before
    return ei.value


# --- the limit itself ------------------------------------------------------------------------

def test_limit_default_and_environment(monkeypatch):
    monkeypatch.delenv(limits.ENV_MAX_PIXELS, raising=False)
    assert limits.max_pixels() == 2 ** 31
    limits.check_pixels(46000, 46000)
    with pytest.raises(FormatError, match="over the limit"):
        limits.check_pixels(100000, 100000, "x.json", "images[0].height")
    monkeypatch.setenv(limits.ENV_MAX_PIXELS, "100")
    limits.check_pixels(10, 10)
    with pytest.raises(FormatError, match="MASKLOOP_MAX_PIXELS"):
        limits.check_pixels(10, 11)
    monkeypatch.setenv(limits.ENV_MAX_PIXELS, "lots")
    with pytest.raises(MaskLoopError, match="MASKLOOP_MAX_PIXELS"):
        limits.max_pixels()


# --- image headers referenced from COCO and labelme ----------------------------------------------

def test_coco_image_header_claiming_100000_squared_is_refused_unread(tmp_path, proj):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "huge.png").write_bytes(_png_header_only(100000, 100000))
    path = _coco(tmp_path, [{"id": 1, "file_name": "huge.png", "height": 100000, "width": 100000}])
    err = _refused(lambda: coco.import_coco(proj, path), proj, "images[0].height", "over the limit")
    assert err.path == str(path)


def test_coco_limit_applies_before_rasterising(tmp_path, proj, monkeypatch):
    (tmp_path / "ds").mkdir()
    cv2.imwrite(str(tmp_path / "ds" / "b.png"), np.zeros((30, 30), np.uint8))
    path = _coco(tmp_path, [{"id": 1, "file_name": "b.png", "height": 30, "width": 30}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 9]]}])
    monkeypatch.setenv(limits.ENV_MAX_PIXELS, "899")
    _refused(lambda: coco.import_coco(proj, path), proj, "30x30 = 900 pixels")
    monkeypatch.setenv(limits.ENV_MAX_PIXELS, "900")
    assert coco.import_coco(proj, path).instances == 1


def test_labelme_image_header_claiming_100000_squared_is_refused(tmp_path, proj):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "huge.png").write_bytes(_png_header_only(100000, 100000))
    (ds / "huge.json").write_text(json.dumps({"shapes": [], "imagePath": "huge.png"}))
    _refused(lambda: lm.import_labelme(proj, ds / "huge.json"), proj, "over the limit")


def test_labelme_embedded_image_bomb_is_refused_unread(tmp_path, proj):
    ds = tmp_path / "ds"
    ds.mkdir()
    b64 = base64.b64encode(_png_header_only(100000, 100000)).decode()
    (ds / "e.json").write_text(json.dumps({"shapes": [], "imagePath": "missing.png", "imageData": b64}))
    _refused(lambda: lm.import_labelme(proj, ds / "e.json"), proj, "imageData")


def test_labelmap_over_the_limit_is_refused(tmp_path, proj, monkeypatch):
    cv2.imwrite(str(tmp_path / "a_masks.png"), np.ones((40, 50), np.uint8))
    monkeypatch.setenv(limits.ENV_MAX_PIXELS, "1999")
    _refused(lambda: labelmap.import_labelmap(proj, tmp_path / "a_masks.png"), proj, "label map", "limit")
    monkeypatch.setenv(limits.ENV_MAX_PIXELS, "2000")
    assert labelmap.import_labelmap(proj, tmp_path / "a_masks.png").instances == 1


# --- labelme shapes --------------------------------------------------------------------------

def _labelme_file(tmp_path, shapes) -> Path:
    ds = tmp_path / "ds"
    ds.mkdir(exist_ok=True)
    path = ds / "a.json"
    path.write_text(json.dumps({"shapes": shapes, "imagePath": "../data/a.png",
                                "imageHeight": 40, "imageWidth": 50, "maskloop": {"item": "a"}}))
    return path


def _mask_shape(b64: str, p1=(2, 3), p2=(5, 7)) -> dict:
    return {"label": "cell", "points": [list(p1), list(p2)], "shape_type": "mask", "mask": b64}


@pytest.mark.parametrize("b64, why", [
    ("", "empty"),
    (base64.b64encode(b"GIF89a not a png").decode(), "not a PNG"),
    (base64.b64encode(_png_header_only(4, 5)[:-20] + b"\0" * 20).decode(), "mask"),
])
def test_bad_mask_png_gives_a_format_error(tmp_path, proj, b64, why):
    path = _labelme_file(tmp_path, [_mask_shape(b64)])
    _refused(lambda: lm.import_labelme(proj, path), proj, str(path), "shapes[0].mask", why, kind=FormatError)


def test_mask_png_bomb_is_refused_before_decoding(tmp_path, proj, monkeypatch):
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    bomb = base64.b64encode(_png_header_only(30000, 30000)).decode()
    path = _labelme_file(tmp_path, [_mask_shape(bomb)])
    _refused(lambda: lm.import_labelme(proj, path), proj, "shapes[0].mask", "30000x30000", kind=FormatError)
    assert decoded == []
    good = mask_to_b64(np.ones((5, 4), bool))
    path = _labelme_file(tmp_path, [_mask_shape(good)])
    assert lm.import_labelme(proj, path).instances == 1


@pytest.mark.parametrize("points, why", [
    ([[10, 10], [1e300, 10]], "far outside"),        # was OverflowError
    ([[10, 10], [10, 1e6]], "far outside"),          # was 50 s per circle
    ([[10, 10], [60, 60]], None),                    # rim outside the image: fine, clipped
])
def test_circle_coordinates_are_bounded_by_the_image(tmp_path, proj, points, why):
    path = _labelme_file(tmp_path, [{"label": "cell", "points": points, "shape_type": "circle"}])
    if why is None:
        rep = lm.import_labelme(proj, path)
        assert rep.instances == 1
        assert proj.load_annotation("a").instances[0].area == 40 * 50  # covers the whole image
        return
    _refused(lambda: lm.import_labelme(proj, path), proj, "shapes[0].points", why, kind=FormatError)


def test_circle_radius_bounded_even_with_centre_inside():
    with pytest.raises(FormatError, match="radius"):
        lm.shape_to_instance({"label": "c", "points": [[-20, -20], [40, 40]], "shape_type": "circle"},
                             20, 20, path="f.json", field="shapes[3]")


def test_polygon_far_outside_is_refused(tmp_path, proj):
    path = _labelme_file(tmp_path, [{"label": "cell", "points": [[0, 0], [5, 0], [1e300, -1e300]],
                                     "shape_type": "polygon"}])
    _refused(lambda: lm.import_labelme(proj, path), proj, "shapes[0].points", kind=FormatError)


def test_empty_label_names_file_and_shape(tmp_path, proj):
    path = _labelme_file(tmp_path, [{"label": "  ", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}])
    _refused(lambda: lm.import_labelme(proj, path), proj, str(path), "shapes[0].label", "empty", kind=LabelError)


def test_padded_label_is_the_label_set_name_not_an_error_in_the_project_file(tmp_path, proj):
    path = _labelme_file(tmp_path, [{"label": " nucleus ", "points": [[1, 1], [9, 1], [9, 9]],
                                     "shape_type": "polygon"}])
    rep = lm.import_labelme(proj, path)
    assert rep.labels_added == ["nucleus"]
    assert [i.label for i in proj.load_annotation("a").instances] == ["nucleus"]


# --- COCO fields -----------------------------------------------------------------------------

@pytest.mark.parametrize("seg", [[[5]], [[1, 2, 3]], [[1, 2, 3, 4, 5, 6, 7]], [5]])
def test_short_coco_polygon_names_file_and_field(tmp_path, proj, seg):
    path = _coco(tmp_path, [{"id": 1, "file_name": "a.png", "height": 40, "width": 50, "maskloop_item": "a"}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg}])
    err = _refused(lambda: coco.import_coco(proj, path), proj, "annotations[0].segmentation", kind=FormatError)
    assert err.path == str(path)


def test_overlong_file_name_is_a_format_error(tmp_path, proj):
    path = _coco(tmp_path, [{"id": 1, "file_name": "x" * 300 + ".png", "height": 40, "width": 50}])
    _refused(lambda: coco.import_coco(proj, path), proj, "images[0].file_name", "255", kind=FormatError)
    ds = tmp_path / "ds"
    (ds / "long.json").write_text(json.dumps({"shapes": [], "imagePath": "sub/" + "y" * 256 + ".png"}))
    _refused(lambda: lm.import_labelme(proj, ds / "long.json"), proj, "imagePath", kind=FormatError)


def test_nul_in_file_names(tmp_path, proj):
    path = _coco(tmp_path, [{"id": 1, "file_name": "a\x00.png", "height": 40, "width": 50}])
    _refused(lambda: coco.import_coco(proj, path), proj, "images[0].file_name", kind=FormatError)
    ds = tmp_path / "ds"
    (ds / "n.json").write_text(json.dumps({"shapes": [], "imagePath": "a\x00.png"}))
    _refused(lambda: lm.import_labelme(proj, ds / "n.json"), proj, "imagePath", kind=FormatError)


# --- the project's own annotation files go through the same decoder ---------------------------

def test_one_bad_annotation_file_is_a_clean_error_for_info_and_export(tmp_path, proj, capsys):
    """Decision: `info` and `export` refuse the project with one line naming the file (a
    count or an export that silently leaves an item out would be wrong); the GUI shows the
    same error for that item and opens the others."""
    ann_path = proj.annotation_path("a")
    ann_path.parent.mkdir(exist_ok=True)
    ann_path.write_text(json.dumps({"shapes": [_mask_shape("")], "imageHeight": 40, "imageWidth": 50,
                                    "maskloop": {"item": "a", "status": "reviewed"}}))
    before = _snapshot(proj.root)
    for argv in (["info", str(proj.root)], ["export", str(proj.root), str(tmp_path / "out.json"), "--format", "coco"]):
        assert run(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(ann_path) in err and "shapes[0].mask" in err, err
    assert _snapshot(proj.root) == before
    assert not (tmp_path / "out.json").exists()


def test_add_refuses_an_image_whose_header_claims_too_many_pixels(tmp_path):
    # a 100000 x 100000 PNG header (a few bytes on disk) would be decoded at full size when
    # the item is opened or trained on: add refuses it from the header, and adds nothing
    import struct
    import zlib
    from engine.errors import MaskLoopError
    from engine.project import Project
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    proj = Project.create(tmp_path / "p", ["a"])
    before = proj.manifest_path.read_bytes()
    with pytest.raises(MaskLoopError, match="over the limit") as e:
        proj.add([bomb])
    assert "bomb.png" in str(e.value)
    assert proj.manifest_path.read_bytes() == before and not proj.items
