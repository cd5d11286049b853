"""A stack's slices stored as runs in maskloop.json (engine/manifest_ranges.py; issue 15:
"the manifest stays small: stacks are ranges, not one entry a slice"), the old form still
read, and `info` importing only what it needs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import build_parser, run
from engine.errors import MaskLoopError, ProjectError
from engine.manifest_ranges import ITEM_KEYS, is_run, iter_items, pack
from engine.project import Project

REPO = Path(__file__).resolve().parents[2]


def _images(folder: Path) -> Path:
    import cv2
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "core.tif", np.zeros((12, 16, 20), np.uint16), photometric="minisblack")
    tifffile.imwrite(folder / "tiny.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    assert cv2.imwrite(str(folder / "a.png"), np.full((10, 12), 7, np.uint8))
    return folder


def _project(tmp_path) -> Project:
    proj = Project.create(tmp_path / "p", ["grain"])
    proj.add(sorted(_images(tmp_path / "p" / "images").iterdir()))
    return proj


def _manifest(proj) -> dict:
    return json.loads(proj.manifest_path.read_text())


def _as_tuples(items) -> list:
    return [tuple(getattr(it, k) for k in ITEM_KEYS) for it in items]


def test_a_stack_is_one_entry_and_reopens_item_for_item(tmp_path):
    proj = _project(tmp_path)
    data = _manifest(proj)
    runs = [e for e in data["items"] if is_run(e)]
    assert data["version"] == 2 and len(data["items"]) == 3  # a.png, core (12 slices), tiny (3)
    assert sorted(r["count"] for r in runs) == [3, 12]
    core = next(r for r in runs if r["count"] == 12)
    assert core["id"] == "core_z{slice:04d}" and core["name"] == "core [{slice}]"
    again = Project.open(proj.root)
    assert _as_tuples(again.items) == _as_tuples(proj.items)
    assert [it.id for it in again.items if it.source == core["source"]] == [f"core_z{z:04d}" for z in range(12)]
    assert again.to_json() == proj.to_json()


def test_plain_images_keep_the_format_older_versions_read(tmp_path):
    import cv2
    (tmp_path / "imgs").mkdir()
    for k in range(3):
        assert cv2.imwrite(str(tmp_path / "imgs" / f"im{k}.png"), np.zeros((8, 8), np.uint8))
    proj = Project.create(tmp_path / "p", ["a"])
    proj.add(tmp_path / "imgs")
    data = _manifest(proj)
    assert data["version"] == 1 and not any(is_run(e) for e in data["items"])
    assert [e["id"] for e in data["items"]] == ["im0", "im1", "im2"]


def test_the_old_form_one_entry_a_slice_is_still_read_and_left_as_it_is(tmp_path):
    proj = _project(tmp_path)
    old = dict(proj.to_json(), version=1)  # what MaskLoop wrote before runs
    proj.manifest_path.write_text(json.dumps(old))
    before = proj.manifest_path.read_bytes()
    again = Project.open(proj.root)
    assert _as_tuples(again.items) == _as_tuples(proj.items)
    assert run(["info", str(proj.root)]) == 0
    assert proj.manifest_path.read_bytes() == before  # opening and info rewrite nothing
    again.settings["x"] = 1
    again.save()  # the next write uses runs
    assert len(_manifest(again)["items"]) == 3


def test_items_that_do_not_follow_a_run_stay_single_entries(tmp_path):
    """A slice id made unique with a hash, a gap, and a brace in a name stay one entry each."""
    items = [dict(id=f"c_z{z:04d}", source=0, slice=z, name=f"c [{z}]", height=4, width=4) for z in range(5)]
    items[2]["id"] = "c_z0002_1a2b3c4d"  # _make_id's disambiguated form
    items.append(dict(id="d_z0000", source=1, slice=0, name="{x} [0]", height=4, width=4))
    items.append(dict(id="d_z0001", source=1, slice=1, name="{x} [1]", height=4, width=4))
    packed, has_run = pack(items)
    assert has_run and [e.get("count") for e in packed] == [2, None, 2, None, None]
    assert [dict(zip(ITEM_KEYS, t)) for t in iter_items(packed)] == items


_piece = st.text(st.sampled_from("ab_-.z0179"), max_size=4)


@st.composite
def _item_lists(draw):
    items, n_sources = [], draw(st.integers(1, 4))
    for _ in range(draw(st.integers(0, 6))):
        s = draw(st.integers(0, n_sources - 1))
        z0, n = draw(st.integers(0, 12000)), draw(st.integers(1, 6))
        head, tail, name = draw(_piece), draw(_piece), draw(_piece)
        h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        for z in range(z0, z0 + n):
            it = dict(id=f"{head}{z:04d}{tail}", source=s, slice=z, name=f"{name}{z}]", height=h, width=w)
            if draw(st.integers(0, 9)) == 0:  # now and then one that breaks the pattern
                it[draw(st.sampled_from(["id", "name", "height", "slice"]))] = draw(
                    st.sampled_from(["x", "0", "{slice}", 5, 0]))
            items.append(it)
    return items


@given(_item_lists())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pack_gives_back_every_item_exactly(items):
    packed, has_run = pack(items)
    assert [dict(zip(ITEM_KEYS, t)) for t in iter_items(packed)] == items
    assert has_run == any(is_run(e) for e in packed)
    assert all(e["count"] >= 2 for e in packed if is_run(e))


@pytest.mark.parametrize("change,field", [
    (lambda r, d: r.update(count=13), "count"),
    (lambda r, d: r.update(count=0), "count"),
    (lambda r, d: r.update(first=-1), "first"),
    (lambda r, d: r.update(first=11), "count"),
    (lambda r, d: r.update(source=9), "source"),
    (lambda r, d: r.update(id="core_z"), "id"),
    (lambda r, d: r.update(id="c{slice:04d}_{slice:04d}"), "id"),
    (lambda r, d: r.update(id="../x{slice:04d}"), "id"),
    (lambda r, d: r.update(id="a{slice:04d}" + "b" * 200), "id"),
    (lambda r, d: r.update(name=7), "name"),
    (lambda r, d: r.update(name="no slot"), "name"),
    (lambda r, d: r.update(height=0), "height"),
    (lambda r, d: r.update(width="16"), "width"),
    (lambda r, d: r.update(step=2), "step"),
    (lambda r, d: r.update(id="tiny_z{slice:04d}"), "id"),   # the other run's ids: duplicates
    (lambda r, d: d["items"].append(dict(r)), "id"),           # the same run twice
])
def test_a_bad_run_names_the_file_and_the_field(tmp_path, capsys, change, field):
    proj = _project(tmp_path)
    data = _manifest(proj)
    k = next(k for k, e in enumerate(data["items"]) if is_run(e) and e["count"] == 12)
    change(data["items"][k], data)
    proj.manifest_path.write_text(json.dumps(data))
    with pytest.raises(ProjectError) as e:
        Project.open(proj.root)
    assert e.value.path == str(proj.manifest_path)
    assert e.value.field.startswith("items[") and e.value.field.endswith("." + field)
    assert run(["info", str(proj.root)]) == 1
    assert "maskloop.json: items[" in capsys.readouterr().err


@given(st.sampled_from(["source", "first", "count", "id", "name", "height", "width"]),
       st.one_of(st.none(), st.booleans(), st.integers(-3, 20000), st.text(max_size=12),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_run_field_value_opens_or_is_a_project_error(tmp_path_factory, key, value):
    root = tmp_path_factory.mktemp("fuzz")
    proj = _FUZZ.get("proj")
    if proj is None:
        proj = _FUZZ["proj"] = _project(root)
        _FUZZ["data"] = _manifest(proj)
    data = json.loads(json.dumps(_FUZZ["data"]))
    next(e for e in data["items"] if is_run(e))[key] = value
    proj.manifest_path.write_text(json.dumps(data))
    try:
        opened = Project.open(proj.root)
    except MaskLoopError:
        return
    for it in opened.items:
        opened.annotation_path(it.id)  # every id it gives is a safe file name
    assert len({it.id for it in opened.items}) == len(opened.items)


_FUZZ: dict = {}


def test_two_writers_adding_stacks_keep_both(tmp_path):
    proj = _project(tmp_path)
    other = Project.open(proj.root)
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((4, 16, 20), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((5, 16, 20), np.uint16), photometric="minisblack")
    proj.add(tmp_path / "b.tif")
    other.add(tmp_path / "c.tif")
    final = Project.open(proj.root)
    ids = [it.id for it in final.items]
    assert [i for i in ids if i.startswith(("b_", "c_"))] == [f"b_z{z:04d}" for z in range(4)] + \
        [f"c_z{z:04d}" for z in range(5)]
    assert len(_manifest(final)["items"]) == 5


def test_info_imports_only_what_it_needs(tmp_path):
    """`maskloop info` does not load the measure commands' scipy/skimage nor the format
    registry (they cost more CPU than opening 100,000 items)."""
    proj = _project(tmp_path)
    code = ("import sys; from engine.cli import run; assert run(['info', sys.argv[1]]) == 0; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'skimage', 'torch', 'PyQt5'}), "
            "'engine.formats.registry' in sys.modules, 'engine.formats.volume' in sys.modules, "
            "'engine.measure' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(proj.root)], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[] False False False"


def test_the_whole_command_line_is_still_there():
    full = build_parser().format_help()
    for name in ("new", "add", "import", "export", "info", "link", "segment", "train", "evaluate", "demo",
                 "measure", "scale", "rank"):
        assert name in full
    args = build_parser("info").parse_args(["info", "P"])
    assert args.func.__name__ == "cmd_info"
    with pytest.raises(SystemExit) as e:
        run(["bogus"])
    assert e.value.code == 2


def test_open_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    import gc
    proj = _project(tmp_path)
    assert gc.isenabled()
    Project.open(proj.root)
    proj.settings["x"] = 1
    proj.save()
    assert gc.isenabled()
    gc.disable()
    try:
        Project.open(proj.root)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_dropping_part_of_a_stack_keeps_the_rest_exact(tmp_path):
    """An undo of an add (drop_items) leaves a stack with a gap: two runs around it."""
    proj = _project(tmp_path)
    gone = {"core_z0004", "core_z0005"}
    proj.update(lambda p: p.drop_items(gone))
    again = Project.open(proj.root)
    assert _as_tuples(again.items) == _as_tuples(proj.items)
    assert not gone & {it.id for it in again.items} and len(again.items) == 1 + 10 + 3
    assert sorted(e["count"] for e in _manifest(again)["items"] if is_run(e)) == [3, 4, 6]
