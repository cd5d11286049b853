"""The window open on a project while CLI commands change it (issue 14 defect 2, the
everyday case): nothing the CLI wrote is lost when the window saves afterwards."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from engine.project import Project
from guihelpers import square

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[2]


def _main(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_add_and_import_while_the_window_is_open_lose_nothing(window, qtbot, project, tmp_path):
    ctl = window.controller
    current = ctl.item_id
    extra = tmp_path / "extra.tif"
    tifffile.imwrite(extra, np.full((256, 256), 500, np.uint16))
    r = _main("add", project.root, extra)
    assert r.returncode == 0, r.stderr
    maps = tmp_path / "maps"
    maps.mkdir()
    lab = np.zeros((256, 256), np.uint16)
    lab[10:30, 10:30] = 1
    tifffile.imwrite(maps / "other.tif", lab)
    r = _main("import", project.root, maps, "--format", "labelmap", "--label", "nucleus")
    assert r.returncode == 0, r.stderr
    # the user keeps working in the window: a new label, an edit of the open item
    assert ctl.add_label("dust") == "dust"
    ctl.set_selection(["D"])
    ctl.delete_selected()
    assert ctl.save()
    final = Project.open(project.root)
    assert {it.id for it in final.items} == {"cells", "other", "extra"}
    assert final.labels.names() == ["cell", "debris", "nucleus", "dust"]
    assert final.load_annotation("other").status == "reviewed"
    assert [i.id for i in final.load_annotation(current).instances] == ["A", "B", "C"]


def test_an_import_into_the_open_item_is_not_overwritten_by_the_window(window, qtbot, project, tmp_path):
    ctl = window.controller
    asked = []
    ctl.conflict_resolver = lambda item_id: asked.append(item_id) or "later"
    ctl.set_selection(["D"])
    ctl.delete_selected()                     # unsaved edit in the window
    other = Project.open(project.root)        # e.g. `maskloop import` in a terminal
    other.edit_annotation(ctl.item_id, lambda a: (a.instances.append(square(5, 5, 15, 15, id="EXT")), a)[1])
    assert not ctl.save() and asked == [ctl.item_id]   # the window asks; nothing overwritten
    disk = Project.open(project.root).load_annotation(ctl.item_id)
    assert disk.find("EXT") is not None and disk.find("D") is not None
    assert ctl.resolve_conflict("reload")            # the user takes theirs
    assert ctl.annotation.find("EXT") is not None and not ctl.dirty
