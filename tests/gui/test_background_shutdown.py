"""gui.background.Background at the end of the app's life: a job submitted after shutdown, or
while Python is exiting (its executor then refuses new work), comes back cancelled instead of
raising into a Qt slot (a window's `destroyed` handler raised at exit before)."""
import pytest

from gui.background import Background

pytestmark = pytest.mark.gui


def test_submit_after_shutdown_is_cancelled(qapp):
    bg = Background("test-closed")
    bg.shutdown()
    fut = bg.submit(lambda: 1)
    assert fut.cancelled()


def test_submit_while_the_executor_refuses_is_cancelled(qapp, monkeypatch):
    bg = Background("test-exit")

    def refuse(*a, **k):
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")
    monkeypatch.setattr(bg._executor, "submit", refuse)
    fut = bg.submit(lambda: 1)
    assert fut.cancelled()
    bg.shutdown()
