"""Where a DICOM file's pixel data element lies and whether it is complete, from element and
fragment headers only (pixel values are never read): a cut-off file, missing data, and the
byte length / fragment count the frame count is checked against."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)   # PixelData, FloatPixelData, DoubleFloat...
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


@dataclass
class PixelElement:
    state: str                     # "ok" | "missing" | "truncated" | "unknown"
    tag: int = 0
    length: Optional[int] = None   # native data: its byte length
    fragments: Optional[int] = None  # encapsulated data: number of fragments (after the BOT)


def pixel_element(ds, f, size: int) -> PixelElement:
    """State of the pixel data element, from its header (and fragment headers) only.

    `f` is positioned where dcmread(stop_before_pixels=True) stopped: at that element's
    tag if there is one.
    """
    pos = f.tell()
    tail = f.read(12)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and ts == "1.2.840.10008.1.2.1.99":
        return PixelElement("unknown", PIXEL_TAGS[0])   # deflated: file offsets mean nothing
    if ts is not None:
        try:
            implicit, little = ts.is_implicit_VR, ts.is_little_endian
        except Exception:  # noqa: BLE001 - private/unknown syntax
            implicit, little = False, True
    else:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        implicit = True if implicit is None else implicit
        little = True if little is None else little
    if len(tail) < 8:
        return PixelElement("missing")
    e = "<" if little else ">"
    group, elem = struct.unpack(e + "HH", tail[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_TAGS:
        return PixelElement("missing")
    if implicit:
        (length,), header = struct.unpack(e + "I", tail[4:8]), 8
    elif tail[4:6] in _LONG_VRS:
        if len(tail) < 12:
            return PixelElement("truncated", tag)
        (length,), header = struct.unpack(e + "I", tail[8:12]), 12
    else:
        (length,), header = struct.unpack(e + "H", tail[6:8]), 8
    if length == 0xFFFFFFFF:
        state, n = _fragments(f, pos + header, size)
        return PixelElement(state, tag, fragments=n)
    if length == 0:
        return PixelElement("missing", tag)
    if pos + header + length > size:
        return PixelElement("truncated", tag)
    return PixelElement("ok", tag, length=length)


def _fragments(f, pos: int, size: int) -> tuple[str, Optional[int]]:
    """Walk the item headers of encapsulated (compressed) pixel data: a cut-off file shows
    as an item running past the end or a missing sequence delimiter. Also counts the
    fragments after the basic offset table (None when the walk could not finish)."""
    items = 0
    for _ in range(1 << 20):
        f.seek(pos)
        h = f.read(8)
        if len(h) < 8:
            return "truncated", None
        group, elem, length = struct.unpack("<HHI", h)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return "ok", max(0, items - 1)
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return "unknown", None  # not what the standard says: let the decoder judge
        items += 1
        pos += 8 + length
        if pos > size:
            return "truncated", None
    return "unknown", None
