"""The model subcommands: demo, train, segment, evaluate (DESIGN.md section 6)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import run as cli_run
from engine.demo import synthetic_project
from engine.model import progress as P
from engine.project import Project

REPO = Path(__file__).resolve().parents[2]
# r18fpn_lite, the CPU default: ~3x cheaper per step than r18fpn (which the DDP,
# budget and e2e tests train); what is checked here is the command, not the architecture
TINY = ["--device", "cpu", "--arch", "r18fpn_lite", "--base", "scratch", "--batch-size", "2", "--val-fraction", "0.25"]


# no wall-clock limit of its own: pytest's per-test timeout (pyproject) is the hang guard; a
# limit sized on an idle machine failed the run on a busy one (issue 14)
def maskloop(*args, timeout=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny project trained once through the CLI (1 epoch), with --progress jsonl."""
    root = tmp_path_factory.mktemp("cli") / "p"
    synthetic_project(root, "nuclei", 4, 64)
    r = maskloop("train", root, "--epochs", "1", "--progress", "jsonl", *TINY)
    return root, r


@pytest.fixture
def project(trained, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(trained[0], root)
    return root


def test_model_commands_do_not_load_torch_until_used():
    code = ("import sys, engine.cli, engine.cli.model_cmds, engine.demo; engine.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'PyQt5')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_train_prints_json_lines_and_activates(trained):
    root, r = trained
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # stdout is pure JSON lines
    for ev in events:
        P.validate_event(ev)
    assert events[0]["event"] == "start" and events[-2]["event"] == "done"
    assert events[0]["weights"] == "scratch"
    run = events[-2]["run"]
    # the activation verdict is an event, not only a sentence on stderr
    assert events[-1] == {"event": "activated", "run": run, "active": True,
                          "reason": f"made {run} the active model (there was none)"}
    assert "made " + run + " the active model" in r.stderr
    proj = Project.open(root)
    assert proj.active_model == run
    assert (root / events[-2]["model"]).is_file()


def test_trained_run_reads_through_the_run_schema(trained):
    from engine.runs import list_runs
    root, r = trained
    assert r.returncode == 0, r.stderr
    (info,) = list_runs(Project.open(root))
    cfg = json.loads((info.folder / "config.json").read_text())
    assert cfg["schema"] == 1 and cfg["weights"] == "scratch" and cfg["created"]
    assert (info.arch, info.weights, info.labels, info.status) == ("r18fpn_lite", "scratch", ["nucleus"], "done")
    assert info.train_items == 3 and info.val_items == 1 and len(info.val_keys) == 1
    assert info.epochs == 1 and info.epochs_run == 1 and info.created is not None
    assert info.score() is not None and info.problem is None


def test_segment_and_evaluate(project, capsys):
    proj = Project.open(project)
    first = proj.items[0].id
    ann = proj.load_annotation(first)
    ann.status, ann.instances = "new", []
    proj.save_annotation(ann)  # one item not annotated: it gets segmented
    r = maskloop("segment", project, "--score", "0.3", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("segmented 1 item(s)") and "skipped 3 reviewed" in r.stdout
    after = Project.open(project).load_annotation(first)
    assert after.status == "predicted"
    assert all(i.source == "model" and i.score >= 0.3 for i in after.instances)

    # evaluate in this process (the command's code is the same; one torch start-up less)
    capsys.readouterr()
    assert cli_run(["evaluate", str(project), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "on 3 reviewed item(s)" in out and "mask_AP50" in out and "acc50" in out
    assert cli_run(["evaluate", str(project), "--items", "val", "--json", "--device", "cpu"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert len(m["items"]) == 1 and 0.0 <= m["mask_AP50"] <= 1.0 and "acc50" in m


def test_usage_and_failure_exits(tmp_path, capsys, add_tiny_model):
    root = tmp_path / "p"
    synthetic_project(root, "nuclei", 2, 64)
    with pytest.raises(SystemExit) as e:
        cli_run(["train", str(root), "--epochs", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli_run(["segment", str(root), "--score", "2"])
    assert e.value.code == 2
    capsys.readouterr()
    assert cli_run(["segment", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no active model" in err
    assert cli_run(["train", str(root), "--base", "no-such-run"]) == 1
    assert "no-such-run" in capsys.readouterr().err
    assert cli_run(["segment", str(root), "--model", "x", "--items", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
    # a model to tile with (the session's tiny run), then an overlap that does not fit the tile
    run = add_tiny_model(Project.open(root), active=False)
    capsys.readouterr()
    assert cli_run(["segment", str(root), "--model", run, "--tile", "256", "--overlap", "256"]) == 2
    assert "--overlap 256 must be at most half the tile (256 px)" in capsys.readouterr().err
    assert cli_run(["evaluate", str(root), "--model", run, "--tile", "48", "--overlap", "16",
                    "--device", "cpu", "--json"]) == 0  # the 64 px items in 4 tiles each
    assert "mask_AP" in json.loads(capsys.readouterr().out)


def test_demo_builds_a_sample_project(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_run(["demo", str(out), "--size", "96"]) == 0
    assert "created demo project" in capsys.readouterr().out
    proj = Project.open(out)
    assert proj.labels.names() == ["rock", "pore", "nucleus"]
    st = proj.statuses()
    # a 16-slice CT volume (half reviewed, rocks linked as 3-D objects) and 8 nuclei images (4 reviewed)
    assert sum(s == "reviewed" for s in st.values()) == 12 and sum(s == "new" for s in st.values()) == 12
    kinds = {s.kind for s in proj.sources}
    assert kinds == {"stack", "image"}
    reviewed = [i for i, s in st.items() if s == "reviewed"]
    labels = {inst.label for i in reviewed for inst in proj.load_annotation(i).instances}
    assert labels == {"rock", "pore", "nucleus"}
    img = proj.load_image(proj.items[0].id)
    assert img.dtype.name == "uint16" and img.shape == (96, 96)
    # not over an existing folder with files
    assert cli_run(["demo", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    root = tmp_path / "p"
    synthetic_project(root, "nuclei", 4, 64)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "train", str(root), "--epochs", "1",
                             "--progress", "jsonl", *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)
    try:
        seen = []
        for line in proc.stdout:
            ev = P.parse_line(line)
            if ev is not None:
                seen.append(ev)
                if ev["event"] == "iter":
                    proc.send_signal(signal.SIGINT)
                    break
        out, err = proc.communicate()  # the hang guard: pytest's per-test timeout
    finally:
        if proc.poll() is None:
            proc.kill()
    events = seen + [e for e in map(P.parse_line, out.splitlines()) if e is not None]
    assert proc.returncode == 1, err
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled"
    assert "cancelled" in err and "--resume" in err
    run = events[0]["run"]
    assert (root / "models" / run / "last.pt").is_file()
    assert Project.open(root).active_model is None
    r = maskloop("train", root, "--resume", run, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (root / "models" / run / "model.pt").is_file()
    assert Project.open(root).active_model == run


def test_train_from_a_coco_file(tmp_path, capsys):
    """`train --coco`: a COCO dataset (here exported from another project) trains a run of
    a project without labels; its categories become the project's labels, so the run
    segments that project."""
    src = tmp_path / "src"
    synthetic_project(src, "nuclei", 4, 64)
    assert cli_run(["export", str(src), str(tmp_path / "coco"), "--format", "coco", "--copy-images"]) == 0
    (ann,) = (tmp_path / "coco").glob("*.json")
    dest = tmp_path / "dest"
    assert cli_run(["new", str(dest)]) == 0
    capsys.readouterr()
    assert cli_run(["train", str(dest), "--coco", str(ann), "--epochs", "1", "--no-activate", *TINY]) == 0
    out, err = capsys.readouterr()
    assert "4 train" not in out and "3 train / 1 val items" in out
    assert "left the active model as it is (--no-activate): none" in out + err
    proj = Project.open(dest)
    assert proj.labels.names() == ["nucleus"] and proj.items == []
    assert proj.active_model is None
    (run,) = proj.models_dir.iterdir()
    assert (run / "model.pt").is_file()
    snap = json.loads((run / "snapshot.json").read_text())
    assert snap["label_names"] == ["nucleus"] and len(snap["items"]) == 4
    # usage and data errors
    assert cli_run(["train", str(dest), "--coco-images", str(tmp_path)]) == 2
    assert "--coco-images needs --coco" in capsys.readouterr().err
    assert cli_run(["train", str(dest), "--coco", str(ann), "--resume", "run-1"]) == 2
    capsys.readouterr()
    assert cli_run(["train", str(dest), "--coco", str(tmp_path / "missing.json"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.json" in err
    assert len(list(proj.models_dir.iterdir())) == 1  # the failed runs left no folders
