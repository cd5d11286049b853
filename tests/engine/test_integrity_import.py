"""Project integrity, imports (issue 14 defects 3 and 5): all or nothing, a kill leaves a
project that opens and exports and a re-run completes it, the merge is linear."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import project as project_mod
from engine.annotations import Instance, ItemAnnotation
from engine.cli import run
from engine.errors import CancelledError, WriteError
from engine.formats import merge_instances
from engine.jobs import CancelToken
from engine.project import Project

REPO = Path(__file__).resolve().parents[2]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (".maskloop.lock", ".index.jsonl")}  # lock; counts cache


def _setup(tmp_path, n=3, new_image=True):
    """A project of n images (one already annotated) and a labelme folder for all of them
    with a label the project does not have, plus (new_image) one image the project does not have."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(n + 1):
        cv2.imwrite(str(imgs / f"im{k}.png"), np.full((20, 30), 10 * k, np.uint8))
    proj = Project.create(tmp_path / "proj", ["cell"])
    proj.add([imgs / f"im{k}.png" for k in range(n)])
    m = np.ones((3, 3), bool)
    proj.save_annotation(ItemAnnotation("im0", 20, 30, [Instance(m, 1, 1, "cell")], "predicted"))
    data = tmp_path / "lm"
    data.mkdir()
    for k in range(n + int(new_image)):
        (data / f"im{k}.json").write_text(json.dumps({
            "shapes": [{"label": "nucleus", "points": [[2, 2], [8, 9]], "shape_type": "rectangle"},
                       {"label": "cell", "points": [[12, 3], [20, 15]], "shape_type": "rectangle"}],
            "imagePath": f"im{k}.png", "imageHeight": 20, "imageWidth": 30}))
        cv2.imwrite(str(data / f"im{k}.png"), np.full((20, 30), 10 * k, np.uint8))
    return proj, data


def _state(root: Path) -> dict:
    p = Project.open(root)
    return {"labels": p.labels.names(), "items": sorted(it.id for it in p.items),
            "anns": {it.id: (p.status(it.id), sorted((i.label, i.bbox) for i in p.load_annotation(it.id).instances))
                     for it in p.items}}


def test_a_write_failing_on_the_second_file_changes_nothing(tmp_path, monkeypatch):
    proj, data = _setup(tmp_path)
    before = _snapshot(proj.root)
    real = project_mod.atomic_write_json
    calls = Counter()

    def second_fails(path, obj, *a, **kw):
        if Path(path).parent == proj.annotations_dir:
            calls["ann"] += 1
            if calls["ann"] == 2:
                raise WriteError("cannot write the file: no space left on the disk", path, errno=errno.ENOSPC)
        return real(path, obj, *a, **kw)
    monkeypatch.setattr(project_mod, "atomic_write_json", second_fails)
    from engine.formats.labelme import import_labelme
    with pytest.raises(WriteError, match="no space left"):
        import_labelme(Project.open(proj.root), data)
    assert calls["ann"] == 2
    assert _snapshot(proj.root) == before


def test_a_cancel_while_writing_changes_nothing(tmp_path):
    proj, data = _setup(tmp_path)
    before = _snapshot(proj.root)
    token = CancelToken()

    def progress(done, total, text=""):
        if text == "saving annotations" and done == 2:
            token.cancel()
    from engine.formats.labelme import import_labelme
    with pytest.raises(CancelledError):
        import_labelme(Project.open(proj.root), data, progress=progress, cancel=token)
    assert _snapshot(proj.root) == before


def test_a_bad_second_input_file_changes_nothing(tmp_path, capsys):
    proj, data = _setup(tmp_path)
    (data / "im1.json").write_text(json.dumps({"shapes": [{"label": "cell", "points": [[1, 1], [3, "x"]],
                                                           "shape_type": "rectangle"}],
                                               "imagePath": "im1.png"}))
    before = _snapshot(proj.root)
    assert run(["import", str(proj.root), str(data), "--format", "labelme"]) == 1
    assert "im1.json" in capsys.readouterr().err
    assert _snapshot(proj.root) == before


_KILL = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from engine import project as pm
    from engine.cli import run
    real, n = pm.atomic_write_json, [0]
    def write(path, obj, *a, **kw):
        if Path(path).parent.name == "annotations":
            n[0] += 1
            if n[0] == 3:
                os._exit(9)   # killed in the middle of the annotation files
        return real(path, obj, *a, **kw)
    pm.atomic_write_json = write
    sys.exit(run(sys.argv[1:]))
""")


def test_a_kill_mid_import_leaves_a_project_that_opens_exports_and_a_rerun_completes(tmp_path):
    proj, data = _setup(tmp_path, new_image=False)  # (adding an image would save the labels anyway)
    clean = tmp_path / "clean"
    import shutil
    shutil.copytree(proj.root, clean)
    assert run(["import", str(clean), str(data), "--format", "labelme"]) == 0
    args = ["import", str(proj.root), str(data), "--format", "labelme"]
    r = subprocess.run([sys.executable, "-c", _KILL, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr
    half = Project.open(proj.root)
    assert "nucleus" in half.labels  # labels reach the manifest before any file uses them
    assert run(["export", str(proj.root), str(tmp_path / "out.json"), "--format", "coco"]) == 0
    assert run(["info", str(proj.root)]) == 0
    assert run(args) == 0  # the re-run completes it; nothing is doubled
    assert _state(proj.root) == _state(clean)


def test_import_merge_is_linear(monkeypatch):
    """merge_instances compares each new instance with an index, not with every existing one
    (a label map of 10,000 objects took minutes): count the pixel comparisons."""
    rng = np.random.default_rng(0)
    existing = [Instance(rng.random((6, 6)) > 0.5, int(x), 7, "cell") for x in range(0, 3000, 3)]
    ann = ItemAnnotation("a", 64, 4000, list(existing), "reviewed")
    new = [Instance(rng.random((6, 6)) > 0.5, int(x), 7, "cell") for x in range(1, 3000, 3)]
    dups = [Instance(o.mask.copy(), o.x0, o.y0, "cell") for o in existing[:50]]
    replaced = Instance(np.ones((2, 2), bool), 0, 0, "cell", id=existing[7].id)
    compares = Counter()
    real_equal = np.array_equal

    def counting(a, b, *args, **kw):
        compares["n"] += 1
        return real_equal(a, b, *args, **kw)
    monkeypatch.setattr(np, "array_equal", counting)
    bbox = Instance.bbox
    monkeypatch.setattr(Instance, "bbox", property(lambda self: (compares.update(["bbox"]), bbox.fget(self))[1]))
    skipped = Counter()
    added = merge_instances(ann, new + dups + [replaced], skipped)
    assert added == len(new) + 1 and skipped["duplicate (already in the project)"] == 50
    assert len(ann.instances) == len(existing) + len(new) and ann.instances[7] is replaced
    total = len(existing) + len(new) + len(dups) + 1
    assert compares["n"] <= len(dups) + 5 and compares["bbox"] <= 3 * total
