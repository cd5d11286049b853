"""Architecture boundaries (DESIGN.md section 1), each checked in a fresh interpreter:
`import engine` loads no Qt module; the data model, masks, project, image I/O, formats and
the data CLI load no torch (a user can export without the ML stack)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

QT_PREFIXES = ("PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "sip")
TORCH_PREFIXES = ("torch", "torchvision")


def _loaded_after(code: str) -> list[str]:
    prog = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _offending(mods: list[str], prefixes) -> list[str]:
    return [m for m in mods if m.split(".")[0] in prefixes]


def test_import_engine_loads_no_qt():
    mods = _loaded_after("import engine")
    assert not _offending(mods, QT_PREFIXES)


NO_TORCH = [
    "engine.annotations", "engine.masks", "engine.project", "engine.imageio",
    "engine.formats", "engine.formats.coco", "engine.formats.labelme", "engine.formats.labelmap",
    "engine.cli.data_cmds",
]


@pytest.mark.parametrize("module", NO_TORCH)
def test_non_model_modules_load_no_torch_and_no_qt(module):
    mods = _loaded_after(f"import {module}")
    assert module in mods
    assert not _offending(mods, TORCH_PREFIXES), module
    assert not _offending(mods, QT_PREFIXES), module


def test_export_and_import_run_without_torch_or_qt(tmp_path):
    """Doing the work (not just importing the modules) keeps torch and Qt out too."""
    code = f"""
import numpy as np, cv2
from pathlib import Path
from engine.project import Project
from engine.annotations import Instance, ItemAnnotation
from engine.formats.coco import export_coco, import_coco
from engine.formats.labelme import export_labelme, import_labelme
from engine.formats.labelmap import import_labelmap
tmp = Path({str(tmp_path)!r})
cv2.imwrite(str(tmp / "a.png"), np.zeros((10, 12), np.uint8))
p = Project.create(tmp / "p", ["cell"])
(it,) = p.add([tmp / "a.png"])
p.save_annotation(ItemAnnotation(it.id, 10, 12, [Instance(np.ones((3, 3), bool), 1, 1, "cell")], "reviewed"))
export_coco(p, tmp / "c", copy_images=True)
export_labelme(p, tmp / "l", copy_images=True)
import_coco(Project.create(tmp / "p2"), tmp / "c" / "annotations.json")
import_labelme(Project.create(tmp / "p3"), tmp / "l")
cv2.imwrite(str(tmp / "a_masks.png"), np.ones((10, 12), np.uint8))
import_labelmap(p, tmp / "a_masks.png")
"""
    mods = _loaded_after(code)
    assert not _offending(mods, TORCH_PREFIXES)
    assert not _offending(mods, QT_PREFIXES)
