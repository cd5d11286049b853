"""Project integrity, writers (issue 14 defect 2, issue 13's one-writer rule): the manifest
lock and merge, lost-update detection on annotation files, a CLI command beside the GUI's
Project, rename_label, orphan run folders."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import project as project_mod
from engine.annotations import Instance, ItemAnnotation
from engine.cli import run
from engine.errors import ConflictError, ProjectError
from engine.project import Project


def _img(path: Path, value=0, shape=(20, 30)) -> Path:
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def _project(tmp_path, n=2, labels=("cell",)) -> Project:
    imgs = tmp_path / "imgs"
    imgs.mkdir(exist_ok=True)
    for k in range(n):
        _img(imgs / f"im{k}.png", 10 * k)
    proj = Project.create(tmp_path / "proj", list(labels))
    proj.add(sorted(imgs.iterdir()))
    return proj


def _inst(label="cell", x=2, y=3):
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    return Instance(m, x, y, label)


# --- the manifest: one writer, nothing lost ----------------------------------------------------

def test_two_project_objects_adding_lose_nothing(tmp_path):
    """The lost update of issue 14: B adds, then A (opened before) saves its own change."""
    proj = _project(tmp_path)
    a = Project.open(proj.root)
    b = Project.open(proj.root)
    b.add([_img(tmp_path / "b.png")])
    a.add([_img(tmp_path / "a.png")])
    b.labels.add("debris")
    b.save()
    a.set_active_model(None)
    a.settings["tile"] = 512
    a.save()
    final = Project.open(proj.root)
    assert {it.id for it in final.items} == {"im0", "im1", "a", "b"}
    assert final.labels.names() == ["cell", "debris"]
    assert final.settings == {"tile": 512}
    assert {it.id for it in a.items} == {it.id for it in final.items}  # A sees B's work now


def test_both_sides_adding_a_label_keep_distinct_ids(tmp_path):
    proj = _project(tmp_path)
    a, b = Project.open(proj.root), Project.open(proj.root)
    b.labels.add("debris")
    b.save()
    a.labels.add("nucleus")
    a.labels.rename("cell", "cyto")
    a.save()
    labels = Project.open(proj.root).labels
    assert labels.names() == ["cyto", "debris", "nucleus"]
    assert len({l.id for l in labels}) == 3


def _adder(root, folder, barrier, n):
    barrier.wait()  # both processes start together; the order after that is the OS's
    proj = Project.open(root)
    for k in range(n):
        proj.add([Path(folder) / f"{k}.png"])


def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    proj = _project(tmp_path, n=1)
    n = 12
    folders = []
    for name in ("p", "q"):
        d = tmp_path / name
        d.mkdir()
        for k in range(n):
            _img(d / f"{k}.png", k)
        folders.append(d)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_adder, args=(str(proj.root), str(d), barrier, n)) for d in folders]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    final = Project.open(proj.root)
    assert len(final.items) == 1 + 2 * n
    assert len({it.id for it in final.items}) == len(final.items)
    sources = {str(final.source_path(s).resolve()) for s in final.sources}
    assert all(str((d / f"{k}.png").resolve()) in sources for d in folders for k in range(n))


def _hold_lock(root, held, release):
    proj = Project.open(root)
    with proj.locked():
        held.set()
        release.wait(120)


def test_a_writer_that_cannot_get_the_lock_says_so(tmp_path, monkeypatch):
    proj = _project(tmp_path)
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(proj.root), held, release))
    p.start()
    try:
        assert held.wait(120)
        monkeypatch.setattr(project_mod, "LOCK_TIMEOUT_S", 0.2)
        before = proj.manifest_path.read_bytes()
        with pytest.raises(ProjectError, match="another MaskLoop program has held the project's lock"):
            Project.open(proj.root).add([_img(tmp_path / "late.png")])
        assert proj.manifest_path.read_bytes() == before
    finally:
        release.set()
        p.join(60)


def test_threads_sharing_one_project_lose_nothing(tmp_path):
    proj = _project(tmp_path, n=1)
    names = [f"label{k}" for k in range(40)]

    def work(part):
        for name in part:
            proj.update(lambda p, name=name: p.labels.add(name))
    threads = [threading.Thread(target=work, args=(names[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(Project.open(proj.root).labels.names()) == {"cell", *names}


# --- annotation files: lost updates noticed ---------------------------------------------------------

def test_saving_over_a_file_changed_since_it_was_read_is_refused(tmp_path):
    proj = _project(tmp_path)
    other = Project.open(proj.root)
    ann = proj.load_annotation("im0")          # e.g. `segment` read it, then runs the model
    imported = other.load_annotation("im0")    # meanwhile an import reviews the item
    imported.instances.append(_inst())
    imported.status = "reviewed"
    other.save_annotation(imported)
    ann.status = "predicted"
    with pytest.raises(ConflictError, match="changed on disk by another program"):
        proj.save_annotation(ann)
    assert Project.open(proj.root).load_annotation("im0").status == "reviewed"
    # the merge-safe way: change the current file under the lock
    proj.edit_annotation("im0", lambda a: (a.instances.append(_inst(x=10)), a)[1])
    final = Project.open(proj.root).load_annotation("im0")
    assert final.status == "reviewed" and len(final.instances) == 2
    # the user chose to overwrite
    proj.save_annotation(ItemAnnotation("im0", 20, 30, [], "new"), overwrite=True)
    assert Project.open(proj.root).load_annotation("im0").instances == []


def test_segment_does_not_overwrite_an_item_an_import_reviewed_meanwhile(tmp_path):
    """`maskloop segment`'s loop (Predictor.predict_items) with an import landing while
    the model runs on the item."""
    predict_mod = pytest.importorskip("engine.model.predict")
    proj = _project(tmp_path, n=1)
    maps = tmp_path / "maps"
    maps.mkdir()
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 2:9] = 1
    cv2.imwrite(str(maps / "im0.png"), lab)

    class FakePredictor:
        label_names = ["cell"]
        path = tmp_path / "model.pt"

        def predict(self, image, **kw):
            # another program imports reviewed annotations while the model runs
            assert run(["import", str(proj.root), str(maps), "--format", "labelmap", "--label", "cell"]) == 0
            return [_inst()]
    with pytest.raises(ConflictError, match="im0"):
        predict_mod.Predictor.predict_items(FakePredictor(), proj, ["im0"])
    ann = Project.open(proj.root).load_annotation("im0")
    assert ann.status == "reviewed" and [i.source for i in ann.instances] == ["imported"]


def test_cli_beside_the_gui_project_loses_nothing(tmp_path, capsys):
    """The GUI holds a Project open and saves after CLI commands changed the project."""
    proj = _project(tmp_path)
    gui = Project.open(proj.root)
    gui_ann = gui.load_annotation("im0")
    assert run(["add", str(proj.root), str(_img(tmp_path / "cli.png"))]) == 0
    maps = tmp_path / "maps"
    maps.mkdir()
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 2:9] = 1
    cv2.imwrite(str(maps / "im1.png"), lab)
    assert run(["import", str(proj.root), str(maps), "--format", "labelmap", "--label", "nucleus"]) == 0
    # the GUI's own edits afterwards: a label, a colour, an annotation of another item
    gui.labels.add("debris")
    gui.labels.get("cell").color = (1, 2, 3)
    gui.save()
    gui_ann.instances.append(_inst())
    gui.save_annotation(gui_ann)
    final = Project.open(proj.root)
    assert {it.id for it in final.items} == {"im0", "im1", "cli"}
    assert final.labels.names() == ["cell", "nucleus", "debris"]
    assert final.labels.get("cell").color == (1, 2, 3)
    assert final.load_annotation("im1").status == "reviewed"
    assert len(final.load_annotation("im0").instances) == 1
    # the GUI's item list catches up on reload (and save) without losing its unsaved work
    assert {it.id for it in gui.items} == {"im0", "im1", "cli"}


def test_an_activation_by_the_training_process_survives_a_gui_save(tmp_path):
    """design-notes' known race: a GUI manifest save after the child activated a run."""
    proj = _project(tmp_path)
    gui = Project.open(proj.root)
    child = Project.open(proj.root)
    run_id, folder = child.new_run()
    (folder / "model.pt").write_bytes(b"x")
    child.set_active_model(run_id)
    gui.labels.add("debris")
    gui.save()
    assert Project.open(proj.root).active_model == run_id == gui.active_model


# --- rename_label ----------------------------------------------------------------------------------

def test_rename_label_updates_manifest_and_every_file(tmp_path):
    proj = _project(tmp_path, n=3, labels=("cell", "debris"))
    for k in range(3):
        proj.save_annotation(ItemAnnotation(f"im{k}", 20, 30, [_inst("cell"), _inst("debris", x=10)], "reviewed"))
    stamp = proj.annotation_path("im2").stat().st_mtime_ns
    assert proj.rename_label("cell", " nucleus ", skip_items=["im2"]) == []
    again = Project.open(proj.root)
    assert again.labels.names() == ["nucleus", "debris"]
    for k in range(2):
        assert sorted(i.label for i in again.load_annotation(f"im{k}").instances) == ["debris", "nucleus"]
    assert proj.annotation_path("im2").stat().st_mtime_ns == stamp  # skipped
    # an interrupted rename (the manifest done, im2 not) is finished by running it again
    assert again.rename_label("cell", "nucleus") == []
    assert sorted(i.label for i in Project.open(proj.root).load_annotation("im2").instances) == ["debris", "nucleus"]
    with pytest.raises(Exception, match="unknown label"):
        again.rename_label("nope", "x")


# --- orphan run folders ---------------------------------------------------------------------------

def _start_run_and_die(root):
    run_id, folder = Project.open(root).new_run()
    (folder / "config.json").write_text("{}")
    os._exit(9)  # killed in its first epoch: no model.pt, no last.pt


def test_a_run_killed_before_its_first_checkpoint_is_cleaned_when_listing(tmp_path):
    proj = _project(tmp_path, n=1)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_start_run_and_die, args=(str(proj.root),))
    p.start()
    p.join(120)
    assert p.exitcode == 9
    (dead,) = [f.name for f in proj.models_dir.iterdir()]
    live_id, live = Project.open(proj.root).new_run("live")   # a run still in its first epoch
    mine = proj.models_dir / "mine"                             # a folder MaskLoop did not make
    mine.mkdir()
    resumable = proj.models_dir / "cancelled"
    resumable.mkdir()
    (resumable / "last.pt").write_bytes(b"x")
    assert (proj.models_dir / dead).is_dir()
    assert proj.list_models() == [] and [r["run"] for r in proj.resumable_runs()] == ["cancelled"]
    assert not (proj.models_dir / dead).exists()
    assert live.is_dir() and mine.is_dir() and resumable.is_dir()


def test_manifest_merge_rules():
    from engine.manifest_merge import merge

    def m(labels=(), sources=(), items=(), active=None, settings=None):
        return {"format": "maskloop-project", "version": 1,
                "labels": [{"id": i, "name": n, "color": [1, 2, 3], "visible": True} for i, n in labels],
                "sources": [{"path": p} for p in sources],
                "items": [{"id": i, "source": s} for i, s in items], "active_model": active,
                "settings": settings or {}}
    base = m([(1, "cell")], ["a.png"], [("a", 0)], None, {"tile": 1, "score": 0.5})
    # another program: rolled an import back (b gone), set a model, changed a setting
    disk = m([(1, "cell")], ["a.png"], [("a", 0)], "run-1", {"tile": 2, "score": 0.5})
    # here: a label removed-and-added, an item on a new source, another setting
    ours = m([(2, "debris")], ["a.png", "c.png"], [("a", 0), ("c", 1)], None, {"tile": 1, "score": 0.7})
    out = merge(base, ours, disk)
    assert [l["name"] for l in out["labels"]] == ["debris"]
    assert out["sources"] == [{"path": "a.png"}, {"path": "c.png"}]
    assert out["items"] == [{"id": "a", "source": 0}, {"id": "c", "source": 1}]
    assert out["active_model"] == "run-1" and out["settings"] == {"tile": 2, "score": 0.7}
    # a stale object that still lists a source another program took out does not bring it back
    stale_base = m([], ["a.png", "b.png"], [("a", 0), ("b", 1)])
    now = m([], ["a.png"], [("a", 0)])
    out = merge(stale_base, m([(1, "x")], ["a.png", "b.png"], [("a", 0), ("b", 1)]), now)
    assert out["sources"] == [{"path": "a.png"}] and [i["id"] for i in out["items"]] == ["a"]
