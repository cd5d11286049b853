"""File type from content (not suffix), file sizes, natural sort order."""
from __future__ import annotations

import os
import re
import stat
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
        # O_NONBLOCK: opening a named pipe must not wait for a writer; it is refused below
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise ImageReadError("is a folder, not a file", path, field)
            if not stat.S_ISREG(mode):
                raise ImageReadError("not a regular file (a pipe, socket or device)", path, field)
            head = f.read(132)
    except FileNotFoundError:
        raise ImageReadError("file not found", path, field) from None
    except IsADirectoryError:
        raise ImageReadError("is a folder, not a file", path, field) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", path, field) from None
    return sniff_bytes(head, path.suffix.lower())


def sniff_bytes(head: bytes, suffix: str) -> Optional[str]:
    # DICOM first: its 128-byte preamble is free-form and may itself start like a TIFF
    # (pydicom's CT_small.dcm does); a file that is both is DICOM.
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if _raw_dataset_start(head):
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 26 and \
            struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"  # "BM" alone is too common a start; the DIB header size pins it
    # any other start with a DICOM name: let pydicom judge (it names what is wrong)
    if suffix in DICOM_SUFFIXES and len(head) >= 8:
        return "dicom"
    return None


_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
        b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


def _raw_dataset_start(head: bytes) -> bool:
    """A DICOM dataset without preamble (older exports, files named without .dcm): the
    first element is a little-endian tag of group 0002 or 0008, followed by an explicit
    VR or a small implicit length. pydicom confirms it when the header is read."""
    if len(head) < 8:
        return False
    group, elem = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or elem > 0x1000:
        return False
    if head[4:6] in _VRS:
        return True
    return struct.unpack("<I", head[4:8])[0] < 0x1000


def has_dicm_marker(path: Path) -> bool:
    """DICOM Part 10 file: 'DICM' after the 128-byte preamble (a regular file, already sniffed)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", path) from None


_NAT = re.compile(r"(\d+)")


def natural_key(s: str):
    # slice_2 before slice_10
    return [int(t) if t.isdigit() else t.lower() for t in _NAT.split(s)]

