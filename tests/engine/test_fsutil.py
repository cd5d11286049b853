import os
import stat

import pytest

from engine import fsutil


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path):
    target = tmp_path / "a.json"
    fsutil.atomic_write_json(target, {"x": 1})
    fsutil.atomic_write_json(target, {"x": 2})
    assert target.read_text().strip() == '{\n "x": 2\n}'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    fsutil.atomic_write_text(target, "old")

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(fsutil.os, "replace", boom)
    with pytest.raises(OSError):
        fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
