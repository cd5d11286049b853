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
