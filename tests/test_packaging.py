"""The installed entry points and package layout a user and CI rely on."""
import subprocess
import sys
from pathlib import Path

import engine
import gui

REPO = Path(__file__).resolve().parents[1]


def test_packages_are_the_repository_ones_not_test_folders():
    # tests/engine/ has no __init__.py; without the repo root first on sys.path a plain
    # `pytest` imported it as a namespace package called "engine" (engine.__file__ None).
    assert engine.__file__ == str(REPO / "engine" / "__init__.py")
    assert gui.__file__ == str(REPO / "gui" / "__init__.py")


def test_cli_help_and_usage_errors():
    ok = subprocess.run([sys.executable, str(REPO / "main.py"), "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "segment" in ok.stdout and "train" in ok.stdout
    bad = subprocess.run([sys.executable, str(REPO / "main.py"), "export", "onlyone"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "required" in bad.stderr


def test_the_window_without_a_display_says_so_and_points_to_the_cli(tmp_path):
    """`maskloop PROJECT` on a machine without a display: a clear message and exit 1,
    not Qt's abort (exit 134)."""
    import os
    if not sys.platform.startswith("linux"):
        return
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run([sys.executable, str(REPO / "main.py"), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "no display" in r.stderr and f"maskloop info {tmp_path}" in r.stderr


def test_resources_are_package_data():
    """The icons, style, theme and keymap travel with the wheel (pyproject package data)."""
    import tomllib
    import resources
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "resources*" in cfg["tool"]["setuptools"]["packages"]["find"]["include"]
    patterns = cfg["tool"]["setuptools"]["package-data"]["resources"]
    from fnmatch import fnmatch
    files = [p.relative_to(resources.ROOT).as_posix() for p in resources.ROOT.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files and all(any(fnmatch(f, pat) for pat in patterns) for f in files), files


def test_demo_says_how_to_open_it(tmp_path, capsys):
    from main import main
    root = tmp_path / "demo"
    assert main(["demo", str(root), "--size", "64"]) == 0
    assert f"open it: maskloop {root}" in capsys.readouterr().out
