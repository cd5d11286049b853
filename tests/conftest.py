"""Shared test set-up: offscreen Qt, the third-party fixtures folder, markers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MASKLOOP_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures_dir() -> Path:
    """../shared/fixtures (real third-party files); tests using it skip when absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"third-party fixtures not found at {FIXTURES}")
    return FIXTURES


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _keep_qt_sigchld_handler(monkeypatch):
    """A DataLoader with worker processes replaces the process's SIGCHLD handler with
    torch's, which drops Qt's: every QProcess in later GUI tests of this pytest process
    would then never report its end. The app never runs a DataLoader in the GUI process
    (training is a child process); no test may change the handler either."""
    try:
        from torch.utils.data._utils import signal_handling
    except ImportError:  # torch is not imported by every test session
        return
    monkeypatch.setattr(signal_handling, "_SIGCHLD_handler_set", True)
