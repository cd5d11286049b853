"""File type from content (not suffix), file sizes, natural sort order."""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Optional

from ..errors import ImageReadError

# Suffixes that promise an image: such a file that cannot be read is an error, while
# other unreadable files in a scanned folder are just skipped.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff",
                  ".dcm", ".dicom", ".dic", ".ima"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}


def sniff(path: Path, field: Optional[str] = None) -> Optional[str]:
    """File type from its first bytes ('png', 'jpeg', 'bmp', 'tiff', 'dicom') or None.

    Content decides, not the suffix: DICOM files often have no suffix at all.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except FileNotFoundError:
        raise ImageReadError("file not found", path, field) from None
    except IsADirectoryError:
        raise ImageReadError("is a folder, not a file", path, field) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", path, field) from None
    return sniff_bytes(head, path.suffix.lower())


def sniff_bytes(head: bytes, suffix: str) -> Optional[str]:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"BM") and len(head) >= 26 and \
            struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"  # "BM" alone is too common a start; the DIB header size pins it
    # DICOM without the 128-byte preamble (older exports) only when the name says so
    if suffix in DICOM_SUFFIXES and len(head) >= 8:
        return "dicom"
    return None


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", path) from None


_NAT = re.compile(r"(\d+)")


def natural_key(s: str):
    # slice_2 before slice_10
    return [int(t) if t.isdigit() else t.lower() for t in _NAT.split(s)]

