"""Project integrity, paths and files (issue 14, defects 1, 6, 7 and the messages of 9):
no write outside the project, exports never over the project's own files, the manifest
checked field by field, write errors that name the target file."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import fsutil
from engine.annotations import Instance, ItemAnnotation
from engine.cli import run
from engine.errors import FormatError, PathError, ProjectError, WriteError
from engine.project import Project


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".maskloop.lock"}


def _project(tmp_path, n=2, labels=("cell",)) -> Project:
    imgs = tmp_path / "imgs"
    imgs.mkdir(exist_ok=True)
    for k in range(n):
        cv2.imwrite(str(imgs / f"im{k}.png"), np.full((20, 30), 10 * k, np.uint8))
    proj = Project.create(tmp_path / "proj", list(labels))
    proj.add(sorted(imgs.iterdir()))
    return proj


def _annotate(proj, item_id, label="cell"):
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    proj.save_annotation(ItemAnnotation(item_id, 20, 30, [Instance(m, 2, 3, label)], "reviewed"))


def _edit_manifest(proj, fn):
    data = json.loads(proj.manifest_path.read_text())
    fn(data)
    proj.manifest_path.write_text(json.dumps(data))


# --- defect 1: item ids that lead out of the project ---------------------------------------

def test_item_id_leading_out_of_the_project_is_refused_where_it_is_read(tmp_path, capsys):
    proj = _project(tmp_path)
    _annotate(proj, "im0")
    victim = tmp_path / "x"

    def hostile(d):
        d["items"][0]["id"] = "../../x"
    _edit_manifest(proj, hostile)
    before = _snapshot(proj.root)
    with pytest.raises(ProjectError, match=r"items\[0\]\.id.*not a safe file name") as e:
        Project.open(proj.root)
    assert e.value.path == str(proj.manifest_path)
    labelme = tmp_path / "lm"
    labelme.mkdir()
    (labelme / "im0.json").write_text(json.dumps({"shapes": [], "imagePath": "../imgs/im0.png"}))
    for argv in (["import", proj.root, labelme, "--format", "labelme"],
                 ["export", proj.root, tmp_path / "out", "--format", "labelme"],
                 ["export", proj.root, tmp_path / "out.json", "--format", "coco", "--copy-images"],
                 ["info", proj.root]):
        assert run([str(a) for a in argv]) == 1
        err = capsys.readouterr().err
        assert "maskloop.json: items[0].id" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists() and not victim.with_suffix(".png").exists()
    assert _snapshot(proj.root) == before


def test_annotation_path_refuses_an_unsafe_id_from_any_caller(tmp_path):
    proj = _project(tmp_path)
    for bad in ("../evil", "a/b", "..", ".hidden", "", "a\x00b", "c:\\x"):
        with pytest.raises(ProjectError, match="not a safe file name"):
            proj.annotation_path(bad)


def test_a_symlinked_annotations_folder_cannot_send_writes_elsewhere(tmp_path):
    proj = _project(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.rmdir(proj.annotations_dir)
    os.symlink(outside, proj.annotations_dir)
    with pytest.raises(PathError, match="outside"):
        _annotate(proj, "im0")
    assert list(outside.iterdir()) == []


def test_atomic_writer_inside_resolves_symlinks(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PathError):
        fsutil.atomic_write_text(root / "link" / "x.txt", "no", inside=root)
    with pytest.raises(PathError):
        fsutil.atomic_write_text(root / ".." / "x.txt", "no", inside=root)
    assert not (tmp_path / "x.txt").exists()
    fsutil.atomic_write_text(root / "sub" / "ok.txt", "yes", inside=root)
    assert (root / "sub" / "ok.txt").read_text() == "yes"


def test_import_source_symlink_leading_out_of_the_dataset_is_refused(tmp_path):
    proj = _project(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "secret"
    secret.mkdir()
    cv2.imwrite(str(secret / "s.png"), np.zeros((20, 30), np.uint8))
    (data / "link").symlink_to(secret)
    (data / "a.json").write_text(json.dumps({
        "shapes": [{"label": "cell", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"}],
        "imagePath": "link/s.png", "imageHeight": 20, "imageWidth": 30}))
    before = _snapshot(proj.root)
    from engine.formats.labelme import import_labelme
    with pytest.raises(FormatError, match="leads outside the dataset folder"):
        import_labelme(proj, data)
    assert _snapshot(proj.root) == before


# --- defect 7: exports over the project's own files ------------------------------------------

@pytest.mark.parametrize("target,fmt", [
    ("maskloop.json", "coco"), (".", "labelme"), ("annotations", "labelme"),
    ("annotations/im0.json", "coco"), ("models", "coco"), ("models/x.json", "coco"),
    ("annotations", "coco"),
])
def test_export_never_writes_over_the_project(tmp_path, capsys, target, fmt):
    proj = _project(tmp_path)
    _annotate(proj, "im0")
    before = _snapshot(proj.root)
    assert run(["export", str(proj.root), str(proj.root / target), "--format", fmt]) == 1
    err = capsys.readouterr().err
    assert "export cannot be written" in err
    assert _snapshot(proj.root) == before
    Project.open(proj.root)
    # a subfolder of the project is a fine place for an export
    assert run(["export", str(proj.root), str(proj.root / "export" / "x.json"), "--format", "coco"]) == 0


# --- defect 6: the manifest checked field by field --------------------------------------------

@pytest.mark.parametrize("change,field", [
    (lambda d: d.update(version="abc"), "version"),
    (lambda d: d.update(version=True), "version"),
    (lambda d: d.update(items=5), "items"),
    (lambda d: d.update(labels={"a": 1}), "labels"),
    (lambda d: d["labels"][0].update(color=[1, 2]), "labels[0].color"),
    (lambda d: d["labels"][0].update(name=""), "labels[0].name"),
    (lambda d: d["labels"][0].update(id="1"), "labels[0].id"),
    (lambda d: d.update(sources="x"), "sources"),
    (lambda d: d["sources"][0].update(height="20"), "sources[0].height"),
    (lambda d: d["sources"][0].update(files=["../../etc/passwd"]), "sources[0].files[0]"),
    (lambda d: d["items"][1].update(height=None), "items[1].height"),
    (lambda d: d["items"][1].update(source=7), "items[1].source"),
    (lambda d: d["items"][1].update(slice=3), "items[1].slice"),
    (lambda d: d["items"][1].update(id="im0"), "items[1].id"),
    (lambda d: d["items"][0].pop("name"), "items[0].name"),
    (lambda d: d["items"].__setitem__(0, "im0"), "items[0]"),
    (lambda d: d.update(active_model="../../run"), "active_model"),
    (lambda d: d.update(active_model=3), "active_model"),
    (lambda d: d.update(settings=[1]), "settings"),
    (lambda d: d.update(format="other"), "format"),
])
def test_manifest_errors_name_the_file_and_the_field(tmp_path, capsys, change, field):
    proj = _project(tmp_path)
    _edit_manifest(proj, change)
    with pytest.raises(ProjectError) as e:
        Project.open(proj.root)
    assert e.value.path == str(proj.manifest_path) and e.value.field == field
    assert run(["info", str(proj.root)]) == 1
    err = capsys.readouterr().err
    assert f"maskloop.json: {field}: " in err and len(err.strip().splitlines()) == 1


def test_newer_manifest_version_is_named(tmp_path):
    proj = _project(tmp_path)
    _edit_manifest(proj, lambda d: d.update(version=99))
    with pytest.raises(ProjectError, match="newer MaskLoop"):
        Project.open(proj.root)


@pytest.mark.parametrize("content,field", [
    ([1, 2], None), ({"shapes": 5}, "shapes"), ({"shapes": [], "maskloop": 3}, "maskloop"),
    ({"shapes": [], "maskloop": {"status": "done"}}, "maskloop.status"),
    ({"shapes": [], "imageHeight": "20"}, "imageHeight"),
])
def test_annotation_file_top_level_errors_name_the_file(tmp_path, content, field):
    proj = _project(tmp_path)
    path = proj.annotation_path("im0")
    path.write_text(json.dumps(content))
    with pytest.raises(FormatError) as e:
        proj.load_annotation("im0")
    assert e.value.path == str(path) and e.value.field == field


# --- messages: a full disk, a read-only folder --------------------------------------------------

def test_a_full_disk_names_the_target_file_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    proj = _project(tmp_path)
    before = _snapshot(proj.root)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(fsutil.os, "fsync", full)
    assert run(["add", str(proj.root), str(tmp_path / "imgs")]) == 0  # nothing new: no write
    cv2.imwrite(str(tmp_path / "new.png"), np.zeros((5, 5), np.uint8))
    assert run(["add", str(proj.root), str(tmp_path / "new.png")]) == 1
    err = capsys.readouterr().err
    assert f"{proj.manifest_path}: cannot write the file: no space left on the disk" in err
    assert ".tmp" not in err
    with pytest.raises(WriteError) as e:
        _annotate(proj, "im0")
    assert e.value.path == str(proj.annotation_path("im0")) and e.value.errno == errno.ENOSPC
    assert isinstance(e.value, OSError)
    assert _snapshot(proj.root) == before  # no temporary left, nothing half-written


def test_a_read_only_folder_names_the_target_not_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "ro" / "a.json"
    target.parent.mkdir()
    real = fsutil.tempfile.mkstemp

    def denied(prefix="", suffix="", dir=None):
        # what the OS says for a folder without write permission: it names the temp file
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "abc" + suffix))
    monkeypatch.setattr(fsutil.tempfile, "mkstemp", denied)
    with pytest.raises(WriteError) as e:
        fsutil.atomic_write_json(target, {})
    assert e.value.path == str(target) and ".tmp" not in str(e.value)
    assert "no permission to write in" in str(e.value)
    monkeypatch.setattr(fsutil.tempfile, "mkstemp", real)
    if os.geteuid() != 0:  # a real read-only folder (root may write anyway)
        os.chmod(target.parent, 0o555)
        try:
            with pytest.raises(WriteError) as e:
                fsutil.atomic_write_json(target, {})
            assert e.value.path == str(target)
        finally:
            os.chmod(target.parent, 0o755)
