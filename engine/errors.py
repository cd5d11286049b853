"""MaskLoop's own error types.

Every error a user can cause names the file (and the field or line) at fault, so the
CLI can print it as one line and the GUI can show it in a message box.
"""
from __future__ import annotations

from pathlib import Path


class MaskLoopError(Exception):
    """Base of all errors MaskLoop raises on purpose.

    `path` is the file at fault (or None), `field` the key, line or shape inside it.
    str(error) is one line: "<path>: <field>: <message>".
    """

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.path, self.field) if p]
        parts.append(self.message)
        return ": ".join(parts).replace("\n", " ")


class ImageReadError(MaskLoopError):
    """An image, stack or DICOM file is missing, corrupt, truncated or unsupported."""


class FormatError(MaskLoopError):
    """An annotation or dataset file (JSON, COCO, labelme, label map) is malformed."""


class ProjectError(MaskLoopError):
    """The project folder or its manifest is missing, malformed or inconsistent."""


class LabelError(MaskLoopError):
    """An unknown label / category, or a label set that does not match."""


class CheckpointError(MaskLoopError):
    """A model file that is not a MaskLoop checkpoint or does not fit the project."""


class CancelledError(MaskLoopError):
    """Long work stopped because the user asked it to."""

    def __init__(self, message: str = "cancelled", path=None, field=None):
        super().__init__(message, path, field)


class PathError(MaskLoopError):
    """A path that would lead outside its folder or over a file it must not touch."""


class ConflictError(ProjectError):
    """A file changed on disk since it was read; saving would lose the other change."""


class WriteError(MaskLoopError, OSError):
    """A file could not be written (disk full, read-only folder, ...). It names the target
    file, never the temporary one. Also an OSError, so code that catches OSError around a
    write keeps working."""

    def __init__(self, message: str, path=None, field=None, errno: int | None = None):
        MaskLoopError.__init__(self, message, path, field)
        self.errno = errno
        self.strerror = message
        self.filename = self.path
