"""Every file MaskLoop writes goes through here.

- Atomic: a temporary file in the same folder, flushed, fsynced, then os.replace; a crash
  at any instant leaves the old file or the new one.
- Contained: with `inside=ROOT` the target (resolved, symlinked folders included) must lie
  in ROOT, so a hostile item id or a symlinked folder cannot send a project write elsewhere.
- Named: a failed write (disk full, read-only folder) raises WriteError naming the target
  file, never the temporary one.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import filelock

from .errors import PathError, WriteError


def resolved(path: str | Path) -> Path:
    """`path` with every symlink and '..' resolved, also when the file does not exist yet."""
    return Path(os.path.realpath(os.path.abspath(path)))


def is_inside(path: str | Path, root: str | Path) -> bool:
    """True when `path` (resolved) is `root` (resolved) or lies below it."""
    p, r = resolved(path), resolved(root)
    return p == r or r in p.parents


def check_inside(path: str | Path, root: str | Path, what: str = "file") -> Path:
    """`path` when it resolves inside `root`; PathError otherwise."""
    if not is_inside(path, root):
        raise PathError(f"refusing to write a {what} outside {root} (it resolves to {resolved(path)})", path)
    return Path(path)


def _write_error(e: OSError, path: Path) -> WriteError:
    if e.errno == _errno.ENOSPC:
        why = "no space left on the disk"
    elif e.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        why = f"no permission to write in {path.parent}" if e.errno != _errno.EROFS else "read-only file system"
    else:
        why = e.strerror or str(e)
    return WriteError(f"cannot write the file: {why}", path, errno=e.errno)


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, inside: Optional[str | Path] = None) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` only when the block ends without error.

    Writes to a temporary file in the same folder, flushes, fsyncs, then os.replace.
    `inside`: a folder the target must resolve into (PathError before anything is written).
    OSErrors become WriteError naming `path`.
    """
    path = Path(path)
    if inside is not None:
        check_inside(path, inside)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    except WriteError:
        raise
    except OSError as e:
        raise _write_error(e, path) from None
    try:
        # mkstemp makes 0600 files; give the result the mode a plain open() would
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except (AttributeError, OSError):
            pass
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _write_error(exc, path) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, inside=None) -> None:
    with atomic_writer(path, inside=inside) as f:
        f.write(data)


def atomic_copy(src: str | Path, dest: str | Path, *, inside=None) -> None:
    """Copy a file's bytes to `dest` atomically (for exports that copy images)."""
    with open(src, "rb") as fin, atomic_writer(dest, inside=inside) as f:
        shutil.copyfileobj(fin, f, 1 << 20)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str, *, inside=None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), inside=inside)


def atomic_write_json(path: str | Path, obj, indent: int | None = 1, *, inside=None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", inside=inside)


def file_stamp(path: str | Path) -> Optional[tuple[int, int, int]]:
    """(mtime_ns, size, inode) of a file, None when it does not exist. Every atomic write
    makes a new inode, so a rewrite changes the stamp even within the clock's resolution."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def file_lock(path: str | Path, timeout: float) -> filelock.FileLock:
    """An OS lock (flock / LockFileEx) on `path` whose file stays after release, so two
    holders can never lock two different files of the same name."""
    try:
        return filelock.FileLock(str(path), timeout=timeout, preserve_lock_file=True)
    except TypeError:  # filelock 3.x has no such option: its Unix lock files stay anyway
        return filelock.FileLock(str(path), timeout=timeout)
