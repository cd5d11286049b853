"""Undo Project.create for a project that never got anything (a failed "Open images")."""
from __future__ import annotations

from pathlib import Path

from .project import LOCK_FILE, MANIFEST


def discard_new_project(root, remove_root: bool) -> None:
    """Remove the manifest, the lock file and the empty folders Project.create made; the
    root too when the caller made it. Never removes anyone's files: folders go only when empty."""
    root = Path(root)
    for name in (MANIFEST, LOCK_FILE):
        (root / name).unlink(missing_ok=True)
    folders = [root / "annotations", root / "models"] + ([root] if remove_root else [])
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass
