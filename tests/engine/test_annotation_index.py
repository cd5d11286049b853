"""The annotation index (engine/annotation_index.py): `info` and statuses() from one listing
of annotations/, with counts kept as files are saved (issue 15, 100,000 items).

Each test compares with a full recount that reads every file (what `info` did before) and
counts the files decoded, so a missing index (every file decoded each time) or a stale entry
believed (wrong counts) both fail."""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import tifffile

import engine.formats.labelme as labelme
from engine.annotation_index import INDEX_NAME
from engine.annotations import Instance, ItemAnnotation
from engine.cli import run
from engine.cli.data_cmds import project_info
from engine.errors import FormatError
from engine.project import Project


@pytest.fixture
def decoded(monkeypatch):
    """Counts the annotation files decoded (labelme_to_annotation calls) from now on."""
    calls = Counter()
    original = labelme.labelme_to_annotation

    def counting(data, path=None, **kw):
        calls[str(path)] += 1
        return original(data, path, **kw)
    monkeypatch.setattr(labelme, "labelme_to_annotation", counting)
    return calls


def _project(tmp_path, n_slices=6) -> Project:
    tifffile.imwrite(tmp_path / "core.tif", np.zeros((n_slices, 16, 16), np.uint16), photometric="minisblack")
    proj = Project.create(tmp_path / "proj", ["grain", "pore"])
    proj.add(tmp_path / "core.tif")
    return proj


def _ann(it, labels, status="reviewed") -> ItemAnnotation:
    m = np.ones((3, 3), bool)
    return ItemAnnotation(it.id, it.height, it.width,
                          [Instance(m, x0=3 * j, y0=2, label=name) for j, name in enumerate(labels)], status)


def _recount(root) -> dict:
    """info's counts from a full read of every file, ignoring any index."""
    proj = Project.open(root)
    per_status, per_label = Counter(), Counter()
    for it in proj.items:
        path = proj.annotation_path(it.id)
        if not path.exists():
            per_status["new"] += 1
            continue
        ml = json.loads(path.read_bytes()).get("maskloop") or {}
        per_status[ml.get("status") if ml.get("status") in ("new", "predicted", "reviewed") else "new"] += 1
        per_label.update(inst.label for inst in proj.load_annotation(it.id).instances)
    return {"status": {s: per_status[s] for s in ("new", "predicted", "reviewed")},
            "labels": {n: per_label[n] for n in proj.labels.names()}, "instances": sum(per_label.values())}


def _info(root) -> dict:
    info = project_info(Project.open(root))
    return {k: info[k] for k in ("status", "labels", "instances")}


def test_info_equals_a_full_recount_after_saves_edits_renames_deletes_and_imports(tmp_path, decoded):
    proj = _project(tmp_path)
    items = proj.items
    proj.save_annotation(_ann(items[0], ["grain", "grain", "pore"]))
    proj.save_annotation(_ann(items[1], ["pore"], "predicted"))
    proj.save_annotation(_ann(items[2], []))
    assert _info(proj.root) == _recount(proj.root)

    def edit(ann):  # drop one instance, mark reviewed
        ann.instances.pop()
        ann.status = "reviewed"
        return ann
    proj.edit_annotation(items[1].id, edit)
    proj.load_annotation(items[0].id)
    proj.save_annotation(_ann(items[0], ["pore"], "predicted"))  # a second version of one file
    assert _info(proj.root) == _recount(proj.root)

    proj.labels.add("crack")
    proj.save()
    assert proj.rename_label("pore", "void") == []
    assert _info(proj.root) == _recount(proj.root)
    assert _info(proj.root)["labels"] == {"grain": 0, "void": 1, "crack": 0}

    proj.annotation_path(items[2].id).unlink()  # a deleted annotation
    assert _info(proj.root) == _recount(proj.root)

    src = tmp_path / "labelme"   # an import through the CLI (edit_annotation per item)
    src.mkdir()
    shape = {"label": "grain", "points": [[1, 1], [6, 1], [6, 6], [1, 6]], "shape_type": "polygon"}
    (src / "core_z0004.json").write_text(json.dumps({"shapes": [shape, dict(shape, label="crack", points=[[8, 8], [13, 8], [13, 13], [8, 13]])],
                                                     "imagePath": "core_z0004.png", "imageHeight": 16, "imageWidth": 16,
                                                     "maskloop": {"item": "core_z0004"}}))
    assert run(["import", str(proj.root), str(src), "--format", "labelme"]) == 0
    expected = _recount(proj.root)
    assert _info(proj.root) == expected and expected["instances"] == 3 and expected["labels"]["crack"] == 1

    decoded.clear()
    assert _info(proj.root) == expected
    assert sum(decoded.values()) == 0, "info re-read files the index knew as they are"


def test_an_external_edit_is_noticed_and_only_that_file_is_read_again(tmp_path, decoded):
    proj = _project(tmp_path)
    for it in proj.items[:4]:
        proj.save_annotation(_ann(it, ["grain", "pore"], "predicted"))
    assert _info(proj.root) == _recount(proj.root)
    path = proj.annotation_path(proj.items[1].id)
    data = json.loads(path.read_text())
    data["shapes"] = data["shapes"][:1]            # another program drops a shape, in place
    data["maskloop"]["status"] = "reviewed"
    with open(path, "w") as f:
        json.dump(data, f)
    # same size, in place (same inode), only the label changes: a later mtime tells
    path3 = proj.annotation_path(proj.items[3].id)
    text = path3.read_text()
    st = os.stat(path3)
    with open(path3, "r+") as f:
        f.write(text.replace('"label": "pore"', '"label": "xxxx"').replace('"label":"pore"', '"label":"xxxx"'))
    os.utime(path3, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert os.stat(path3).st_size == st.st_size and os.stat(path3).st_ino == st.st_ino

    before = {f.name: f.read_bytes() for f in proj.annotations_dir.iterdir()}
    decoded.clear()
    info = _info(proj.root)
    assert sorted(os.path.basename(p) for p in decoded) == sorted([path.name, path3.name])
    # a few files edited elsewhere are re-read, not written back: info leaves the project as it was
    assert {f.name: f.read_bytes() for f in proj.annotations_dir.iterdir()} == before
    assert info == _recount(proj.root)
    assert info["status"] == {"new": 2, "predicted": 3, "reviewed": 1}
    assert info["labels"] == {"grain": 4, "pore": 2} and info["instances"] == 7  # "xxxx" counts too
    assert Project.open(proj.root).statuses()[proj.items[1].id] == "reviewed"


def test_a_project_written_without_the_index_or_with_a_damaged_one_gives_the_right_info(tmp_path, decoded):
    proj = _project(tmp_path)
    for k, it in enumerate(proj.items[:5]):
        proj.save_annotation(_ann(it, ["grain"] * k + ["pore"], ("reviewed", "predicted")[k % 2]))
    index = proj.annotations_dir / INDEX_NAME
    expected = _recount(proj.root)
    # an older MaskLoop: annotation files, no index, and a manifest without any new field
    index.unlink()
    manifest = json.loads((proj.root / "maskloop.json").read_text())
    assert set(manifest) == {"format", "version", "labels", "sources", "items", "active_model", "settings"}
    decoded.clear()
    assert _info(proj.root) == expected
    assert len(decoded) == 5 and index.exists()       # rebuilt by that first info ...
    decoded.clear()
    assert _info(proj.root) == expected
    assert not decoded                                # ... and used by the next
    # a torn last line, a line of another shape and an entry with a wrong stamp
    good = index.read_bytes()
    st = os.stat(proj.annotation_path("core_z0002"))
    bogus = json.dumps({"id": "core_z0002", "stamp": [st.st_mtime_ns, st.st_size, st.st_ino], "status": "done",
                        "labels": {"grain": 7}}).encode()  # the right stamp, but not a line MaskLoop writes
    index.write_bytes(b'{"id": 3}\n' + good + b'{"id":"core_z0000","stamp":[1,2,3],"status":"new","labels":{"grain":9}}\n'
                      + bogus + b'\n{"id":"core_z0001","sta')
    assert _info(proj.root) == expected
    assert Project.open(proj.root).statuses() == {it.id: s for it, s in zip(
        proj.items, ["reviewed", "predicted", "reviewed", "predicted", "reviewed", "new"])}


def test_statuses_come_from_one_listing_and_files_of_dropped_items_do_not_count(tmp_path, decoded, monkeypatch):
    proj = _project(tmp_path)
    for it in proj.items[:3]:
        proj.save_annotation(_ann(it, ["grain"], "predicted"))
    again = Project.open(proj.root)
    stats, real_stat = [], os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **kw: stats.append(str(p)) or real_stat(p, *a, **kw))
    decoded.clear()
    assert list(again.statuses().values()) == ["predicted"] * 3 + ["new"] * 3
    monkeypatch.setattr(os, "stat", real_stat)
    assert not decoded
    assert not [p for p in stats if p.endswith(".json")], "a stat per item instead of one listing"
    gone = proj.items[0].id
    proj.update(lambda p: p.drop_items([gone]))      # its file stays on disk
    info = _info(proj.root)
    assert info == _recount(proj.root) and info["instances"] == 2 and info["status"]["predicted"] == 2


def test_a_malformed_file_fails_info_naming_it_and_reads_as_new_in_statuses(tmp_path):
    proj = _project(tmp_path)
    proj.save_annotation(_ann(proj.items[0], ["grain"]))
    path = proj.annotation_path(proj.items[0].id)
    path.write_text('{"shapes": [')
    assert Project.open(proj.root).statuses()[proj.items[0].id] == "new"
    with pytest.raises(FormatError) as e:
        project_info(Project.open(proj.root))
    assert path.name in str(e.value)


def test_the_index_is_compacted_when_it_holds_mostly_old_versions(tmp_path):
    proj = _project(tmp_path, n_slices=2)
    it = proj.items[0]
    for k in range(300):
        proj.save_annotation(_ann(it, ["grain"] * (k % 3)))
    index = proj.annotations_dir / INDEX_NAME
    assert len(index.read_text().splitlines()) == 300
    assert _info(proj.root) == _recount(proj.root)
    assert len(index.read_text().splitlines()) == 1
