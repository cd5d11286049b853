"""Batch inference on torch.distributed: `torchrun --nproc_per_node 2 main.py segment` on CPU
(gloo) writes, item for item, what one process writes; --resume skips what a run wrote."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.demo import synthetic_project
from engine.model.batch_segment import JOURNAL_DIR, run_key, shard
from engine.project import Project

REPO = Path(__file__).resolve().parents[2]


def test_shard_keeps_a_stack_on_one_rank_and_balances():
    items = [SimpleNamespace(id=f"s{s}_{z}", source=s) for s, n in enumerate([5, 1, 1, 3, 1, 1]) for z in range(n)]
    plan = shard(items, 2)
    assert sorted(sum(plan, [])) == sorted(it.id for it in items)  # every item once
    for s in range(6):
        owners = {r for r, ids in enumerate(plan) if any(i.startswith(f"s{s}_") for i in ids)}
        assert len(owners) == 1  # a stack stays together
    assert sorted(len(p) for p in plan) == [6, 6]
    order = [it.id for it in items]
    assert all(p == sorted(p, key=order.index) for p in plan)  # project order within a rank
    assert shard(items, 1) == [order]
    assert shard(items, 20)[19] == []  # more ranks than stacks: some idle, none fails


@pytest.fixture(scope="module")
def segmented_src(tmp_path_factory, tiny_run):
    """4 nuclei images and a 5-slice stack, and a model trained on such images (the
    session's tiny run: tests/conftest.py)."""
    import tifffile
    root = tmp_path_factory.mktemp("bseg") / "p"
    proj = synthetic_project(root, "nuclei", 4, 96, seed=1, reviewed=2)
    stack = np.stack([proj.load_image(it.id) for it in proj.items] + [proj.load_image(proj.items[0].id)])
    tifffile.imwrite(root / "images" / "stack.tif", stack, photometric="minisblack")
    proj.add(root / "images" / "stack.tif")
    model = root.parent / "model.pt"
    shutil.copyfile(tiny_run[1].model_path, model)
    return root, model


def _copy(src: Path, dst: Path) -> Project:
    shutil.copytree(src, dst)
    return Project.open(dst)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _segment_torchrun(root: Path, model: Path, nproc: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [str(REPO / "main.py"), "segment", str(root), "--model", str(model), "--device", "cpu", "--score", "0.05"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), *args]
    # no wall-clock limit here: pytest's per-test timeout is the hang guard (a busy machine is slow)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _segment_here(capsys, root: Path, model: Path, *extra: str) -> SimpleNamespace:
    """`main.py segment` on one process, run in this process: the command's own code (the
    two-process run is the one that needs torchrun), one torch start-up less per call."""
    from engine.cli import run as cli_run
    capsys.readouterr()
    code = cli_run(["segment", str(root), "--model", str(model), "--device", "cpu", "--score", "0.05", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return SimpleNamespace(stdout=out, stderr=err)


def _results(proj: Project) -> dict:
    """Per item: status and the instances (label, source, place, mask, score, 3-D object),
    order-free. Object ids are random: each is named by its first appearance in item order."""
    out, names = {}, {}
    for it in proj.items:
        ann = proj.load_annotation(it.id)
        insts = sorted(ann.instances, key=lambda i: (i.y0, i.x0, i.mask.shape, i.mask.tobytes()))
        for i in insts:
            if i.object_id and i.object_id not in names:
                names[i.object_id] = f"object {len(names)}"
        out[it.id] = (ann.status, sorted((i.label, i.source, i.x0, i.y0, i.mask.shape, i.mask.tobytes(),
                                          None if i.score is None else round(i.score, 4),
                                          names.get(i.object_id, "")) for i in insts))
    return out


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_and_resume_skips(segmented_src, tmp_path, capsys):
    src, model = segmented_src
    one = _copy(src, tmp_path / "one")
    two = _copy(src, tmp_path / "two")
    r1 = _segment_here(capsys, one.root, model)
    r2 = _segment_torchrun(two.root, model, 2)
    assert "on 2 processes" in r2.stdout and r2.stdout.count("segmented ") == 1  # rank 0 alone prints
    a, b = _results(one), _results(two)
    assert a == b
    statuses = [st for st, _ in a.values()]
    assert statuses.count("reviewed") == 2 and statuses.count("predicted") == len(a) - 2
    assert sum(len(insts) for st, insts in a.values() if st == "predicted") > 0  # the model found things
    assert r1.stdout.split(":")[1] == r2.stdout.split(":")[1].replace(" on 2 processes", "")
    assert "linked them across slices into" in r2.stdout  # the stack's rank linked it
    assert any(i[7] for st, insts in b.values() for i in insts)  # 3-D object ids were given

    # each rank journaled its own share: the stack's 5 slices on one rank
    ids = [it.id for it in two.items]
    (journal,) = (two.root / JOURNAL_DIR).iterdir()
    assert journal.name == run_key(model, ids, 0.05, None, None)
    lists = {p.name: p.read_text().split() for p in journal.glob("rank-*.txt")}
    assert sorted(lists) == ["rank-0.txt", "rank-1.txt"]
    stack = [it.id for it in two.items if it.source == 4]
    assert len(stack) == 5 and any(set(stack) <= set(v) for v in lists.values())
    assert sorted(sum(lists.values(), [])) == sorted(ids)
    done = json.loads((journal / "done.json").read_text())
    assert done["world_size"] == 2 and done["predicted"] + done["skipped"] == len(ids)

    # interrupted: rank 1 died after its first item (its later files never written)
    first, *lost = lists["rank-1.txt"]
    (journal / "rank-1.txt").write_text(first + "\n")
    (journal / "done.json").unlink()
    for i in lost:
        if a[i][0] == "predicted":  # segment never writes a reviewed item's file
            two.annotation_path(i).unlink()
    # (a stack's slices may be rewritten when the stack is linked again: single images only)
    kept = {i: two.annotation_path(i).stat().st_mtime_ns for i in ids
            if two.annotation_path(i).exists() and i not in stack}
    r3 = _segment_here(capsys, two.root, model, "--resume")  # resumed on another world size
    assert f"{len(ids) - len(lost)} item(s) already done" in r3.stdout
    assert kept and len(kept) + len(stack) + len(lost) >= len(ids)
    assert {i: two.annotation_path(i).stat().st_mtime_ns for i in kept} == kept  # not rewritten
    assert _results(Project.open(two.root)) == a
    assert json.loads((journal / "done.json").read_text())["resumed"] == len(ids) - len(lost)


# --- an item changed by another program while the model runs on it ---------------------------

class _SquareModel:
    """A stand-in model (torchvision's output format): one detection, a 10x10 square at
    (40, 40). While it runs, `during(k)` -- "another program" -- gets the k-th call."""

    def __init__(self, during):
        self.during, self.calls = during, 0

    def __call__(self, images):
        import torch
        self.during(self.calls)
        self.calls += 1
        outs = []
        for im in images:
            masks = torch.zeros((1, 1) + tuple(im.shape[-2:]), dtype=torch.bool)
            masks[0, 0, 40:50, 40:50] = True
            outs.append({"boxes": torch.tensor([[40.0, 40.0, 50.0, 50.0]]), "scores": torch.tensor([0.9]),
                         "labels": torch.tensor([1]), "masks": masks})
        return outs

    # what Predictor's set-up asks of a module
    def eval(self):
        return self

    def to(self, *a, **k):
        return self

    def modules(self):
        return iter(())


def _square_predictor(during):
    from engine.model import normalize as N
    from engine.model.predictor import Predictor
    return Predictor.from_model(_SquareModel(during), ["nucleus"], N.percentile_policy(), "cpu",
                                run="run-square", copy_model=False)


def test_an_item_edited_while_the_model_runs_keeps_the_edit(tmp_path):
    """The user saves a manual instance (in the GUI, say) while `segment` runs the model on
    that very item: the model's result is merged into the item as saved, not into the copy
    read before the run -- no ConflictError, no lost edit."""
    from engine.annotations import Instance
    from engine.model.batch_segment import segment_distributed
    proj = synthetic_project(tmp_path / "p", "nuclei", 2, 96, reviewed=0)
    ids = [it.id for it in proj.items]
    manual = Instance(mask=np.ones((6, 6), bool), x0=5, y0=5, label="nucleus")
    # the same object the model will find, drawn by hand: the hand-drawn one stays, alone
    drawn = Instance(mask=np.ones((10, 10), bool), x0=40, y0=40, label="nucleus")

    def user_edits(k):
        other = Project.open(proj.root)  # another program
        ann = other.load_annotation(ids[k])
        ann.instances = [manual.copy(), drawn.copy()] if k == 0 else [manual.copy()]
        other.save_annotation(ann)

    res = segment_distributed(proj, _square_predictor(user_edits), ids, score_threshold=0.5, key="k")
    assert res["predicted"] == ids and res["skipped"] == [] and res["instances"] == 1
    first, second = (Project.open(proj.root).load_annotation(i) for i in ids)
    assert first.status == second.status == "predicted"
    assert [(i.source, i.x0, i.area) for i in first.instances] == [("manual", 5, 36), ("manual", 40, 100)]
    assert sorted((i.source, i.x0, i.area) for i in second.instances) == [("manual", 5, 36), ("model", 40, 100)]


def test_an_item_reviewed_while_the_model_runs_is_left_as_reviewed(tmp_path):
    from engine.model.batch_segment import segment_distributed
    proj = synthetic_project(tmp_path / "p", "nuclei", 2, 96, reviewed=0)
    ids = [it.id for it in proj.items]

    def user_accepts(k):
        if k == 1:
            other = Project.open(proj.root)
            ann = other.load_annotation(ids[1])
            ann.status = "reviewed"
            other.save_annotation(ann)

    res = segment_distributed(proj, _square_predictor(user_accepts), ids, score_threshold=0.5, key="k")
    assert res["predicted"] == [ids[0]] and res["skipped"] == [ids[1]]
    again = Project.open(proj.root)
    assert again.load_annotation(ids[0]).status == "predicted"
    kept = again.load_annotation(ids[1])
    assert kept.status == "reviewed" and kept.instances == []  # the user's verdict, untouched
