"""CLI data commands: new, add, import, export, info. Exit 0 / 2 usage / 1 failure with one
line on stderr naming the file or field; bad input leaves the project unchanged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from engine.cli import run
from engine.project import Project

REPO = Path(__file__).resolve().parents[2]


def _main(*args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(tmp_path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(d / "a.png"), rng.integers(0, 255, (24, 32), dtype=np.uint8))
    tifffile.imwrite(d / "s.tif", rng.integers(0, 4000, (2, 20, 22), dtype=np.uint16), photometric="minisblack")
    return d


def _labelmaps(tmp_path) -> Path:
    d = tmp_path / "maps"
    d.mkdir()
    lab = np.zeros((24, 32), np.uint16)
    lab[2:6, 2:9] = 1
    lab[10:20, 12:30] = 2
    tifffile.imwrite(d / "a_masks.tif", lab)
    return d


def test_full_flow_through_main_py(tmp_path):
    imgs = _images(tmp_path)
    proj = tmp_path / "proj"
    r = _main("new", proj, "--labels", "cell,debris", "--images", imgs / "a.png")
    assert r.returncode == 0, r.stderr
    assert Project.open(proj).labels.names() == ["cell", "debris"] and len(Project.open(proj).items) == 1
    r = _main("add", proj, imgs / "s.tif")
    assert r.returncode == 0, r.stderr
    assert len(Project.open(proj).items) == 3
    r = _main("import", proj, _labelmaps(tmp_path), "--format", "labelmap", "--label", "cell")
    assert r.returncode == 0, r.stderr
    assert "2 instance" in r.stdout
    r = _main("info", proj)
    assert r.returncode == 0, r.stderr
    assert "reviewed 1" in r.stdout and "new 2" in r.stdout and "cell: 2" in r.stdout
    assert "active model: none" in r.stdout
    r = _main("export", proj, tmp_path / "out" / "c.json", "--format", "coco", "--copy-images")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "out" / "c.json").read_text())
    assert len(data["images"]) == 3 and len(data["annotations"]) == 2


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(["export", str(tmp_path), str(tmp_path / "o"), "--format", "voc"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        run(["export", str(tmp_path), str(tmp_path / "o"), "--format", "coco", "--split", "1.5"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        run(["import", str(tmp_path), str(tmp_path)])  # --format is required
    assert e.value.code == 2
    Project.create(tmp_path / "p")
    assert run(["import", str(tmp_path / "p"), str(tmp_path), "--format", "coco", "--label", "x"]) == 2
    assert run(["export", str(tmp_path / "p"), str(tmp_path / "o"), "--format", "labelme", "--polygons"]) == 2
    r = _main("new")
    assert r.returncode == 2 and "PROJECT" in r.stderr


def _one_line_error(capsys, *must) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for m in must:
        assert m in err, err
    return err


def test_failures_exit_1_with_one_line_and_change_nothing(tmp_path, capsys):
    imgs = _images(tmp_path)
    proj = tmp_path / "proj"
    assert run(["new", str(proj), "--labels", "cell", "--images", str(imgs / "a.png")]) == 0
    capsys.readouterr()
    before = _snapshot(proj)

    # COCO with an unknown category id
    bad = tmp_path / "bad.json"
    m = {"size": [24, 32], "counts": [24 * 32]}
    bad.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "imgs/a.png", "height": 24, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": m, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cell"}]}))
    assert run(["import", str(proj), str(bad), "--format", "coco"]) == 1
    _one_line_error(capsys, str(bad), "annotations[0].category_id")

    # malformed JSON: the line is named
    bad.write_text('{"images": [\n\n oops]}')
    assert run(["import", str(proj), str(bad), "--format", "coco"]) == 1
    _one_line_error(capsys, str(bad), "line 3")

    # label map of the wrong size: both files named
    maps = tmp_path / "maps"
    maps.mkdir()
    tifffile.imwrite(maps / "a.tif", np.ones((10, 10), np.uint16))
    assert run(["import", str(proj), str(maps), "--format", "labelmap"]) == 1
    _one_line_error(capsys, str(maps / "a.tif"), str(imgs / "a.png"))

    # labelme file whose image path escapes the folder
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "x.json").write_text(json.dumps({"shapes": [], "imagePath": "../imgs/a.png", "imageHeight": 24,
                                           "imageWidth": 32, "imageData": None}))
    assert run(["import", str(proj), str(lm), "--format", "labelme"]) == 1
    _one_line_error(capsys, str(lm / "x.json"), "imagePath")

    # a corrupt image in add
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert run(["add", str(proj), str(tmp_path / "broken.png")]) == 1
    _one_line_error(capsys, "broken.png")

    # not a project
    assert run(["info", str(tmp_path / "nowhere")]) == 1
    _one_line_error(capsys, "nowhere")

    assert _snapshot(proj) == before

    # new on an existing project fails and leaves it alone
    assert run(["new", str(proj)]) == 1
    _one_line_error(capsys, "maskloop.json")
    assert _snapshot(proj) == before


def test_new_with_bad_image_leaves_no_project(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert run(["new", str(tmp_path / "p"), "--images", str(tmp_path / "broken.png")]) == 1
    _one_line_error(capsys, "broken.png")
    assert not (tmp_path / "p").exists()


def test_import_as_predictions_and_export_options(tmp_path, capsys):
    imgs = _images(tmp_path)
    proj = tmp_path / "proj"
    assert run(["new", str(proj), "--images", str(imgs)]) == 0
    assert run(["import", str(proj), str(_labelmaps(tmp_path)), "--format", "labelmap", "--as-predictions"]) == 0
    p = Project.open(proj)
    assert p.labels.names() == ["object"]
    assert sorted(p.statuses().values()) == ["new", "new", "predicted"]
    # only reviewed: nothing reviewed yet -> empty but valid files
    assert run(["export", str(proj), str(tmp_path / "o1"), "--format", "coco", "--only-reviewed"]) == 0
    assert json.loads((tmp_path / "o1" / "annotations.json").read_text())["images"] == []
    assert run(["export", str(proj), str(tmp_path / "o2"), "--format", "coco", "--split", "0.5",
                "--polygons"]) == 0
    tr = json.loads((tmp_path / "o2" / "train.json").read_text())
    va = json.loads((tmp_path / "o2" / "val.json").read_text())
    assert len(tr["images"]) + len(va["images"]) == 3
    assert all(isinstance(a["segmentation"], list) for a in tr["annotations"] + va["annotations"])
    assert run(["export", str(proj), str(tmp_path / "o3"), "--format", "labelme"]) == 0
    assert len(list((tmp_path / "o3").glob("*.json"))) == 3
    out = capsys.readouterr()
    assert "exported" in out.out
