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


# --- waits are for events; their timeouts only catch hangs ---------------------------------
#: A Qt test waits for a signal or a state (qtbot.waitSignal / waitUntil). The timeout
#: written at a call (2-30 s) was sized on an idle machine; on a busy CI machine a child
#: process or worker thread can take many times longer, and such a wait failed although
#: nothing was wrong (issue 14). Every wait's timeout is raised to at least this floor,
#: so a timeout means a hang, never "slow"; no test relies on a wait expiring.
WAIT_FLOOR_MS = int(os.environ.get("MASKLOOP_TEST_WAIT_FLOOR_MS", "120000"))


def _floor_qtbot_waits() -> None:
    try:
        from pytestqt.qtbot import QtBot
    except ImportError:  # no pytest-qt: no Qt tests
        return
    if getattr(QtBot, "_maskloop_wait_floor", False):
        return
    for name in ("waitSignal", "waitSignals", "waitUntil", "waitCallback"):
        original = getattr(QtBot, name, None)
        if original is None:
            continue

        def floored(self, *args, _original=original, **kw):
            t = kw.get("timeout", 5000)
            if t is not None and t < WAIT_FLOOR_MS:
                kw["timeout"] = WAIT_FLOOR_MS
            return _original(self, *args, **kw)
        floored.__name__ = name
        floored.__doc__ = original.__doc__
        setattr(QtBot, name, floored)
    QtBot._maskloop_wait_floor = True


_floor_qtbot_waits()
