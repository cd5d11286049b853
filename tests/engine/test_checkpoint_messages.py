"""Checkpoint errors say what is wrong (issue 14, defect 9): random bytes or a damaged
archive are "unreadable", only a pickle that names Python code is "Python objects"."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from engine.errors import CheckpointError  # noqa: E402
from engine.model import build as B  # noqa: E402


class _Code:
    def __reduce__(self):
        return (Path.touch, ("/nonexistent/never-run",))


@pytest.mark.parametrize("case", ["random", "text", "truncated_zip"])
def test_unreadable_file_is_called_unreadable(tmp_path, case):
    path = tmp_path / "model.pt"
    if case == "random":
        path.write_bytes(os.urandom(4096))
    elif case == "text":
        path.write_text("hello, not a model\n")
    else:
        torch.save({"format": B.CHECKPOINT_FORMAT, "w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(CheckpointError) as ei:
        B.load_checkpoint(path)
    msg = str(ei.value)
    assert "not a MaskLoop checkpoint (unreadable file" in msg and str(path) in msg, msg
    assert "Python objects" not in msg


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickled_code_is_called_python_objects(tmp_path, writer):
    path = tmp_path / "model.pt"
    payload = {"format": B.CHECKPOINT_FORMAT, "x": _Code()}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="Python objects"):
        B.load_checkpoint(path)
