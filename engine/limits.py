"""Limits on sizes that come from untrusted files, checked before anything is allocated.

An image header, a COCO entry or a mask PNG can claim any size; decoding or rasterising
at that size is what a hostile file wants (a 100000 x 100000 "image" is 10 GB of
pixels, a tiny PNG can inflate to gigabytes). Every reader checks the size the file
*claims* here, from the header, before it decodes or draws:

- images and label maps: height x width <= max_pixels()
- masks (COCO RLE `size`, labelme mask PNGs): the same limit, and a mask must also have
  the size its annotation says (its image, or its bbox points) before it is decoded
- shape coordinates: within the image, with a margin of one image size on each side
  (labelme lets a point be dragged a little outside the image); a circle's radius at
  most 2 x (height + width), which already covers the whole image

The limit is 2**31 pixels by default (a 46000 x 46000 slide; real CT slices and
microscopy fields are far smaller). The environment variable MASKLOOP_MAX_PIXELS
raises or lowers it (a positive integer; read at each check, so a test or a user
can change it without restarting).
"""
from __future__ import annotations

import math
import os
import struct
from typing import Optional

from .errors import FormatError, MaskLoopError

DEFAULT_MAX_PIXELS = 2 ** 31
ENV_MAX_PIXELS = "MASKLOOP_MAX_PIXELS"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def max_pixels() -> int:
    """The largest height x width MaskLoop decodes (MASKLOOP_MAX_PIXELS or 2**31)."""
    text = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise MaskLoopError(f"must be a positive integer (pixels), got {text!r}", None, ENV_MAX_PIXELS)
    return value


def check_pixels(height: int, width: int, path=None, field: Optional[str] = None, what: str = "image") -> None:
    """FormatError when a claimed height x width is not positive or above max_pixels()."""
    if height <= 0 or width <= 0:
        raise FormatError(f"{what} size {width}x{height} is not positive", path, field)
    limit = max_pixels()
    if height * width > limit:
        raise FormatError(f"{what} of {width}x{height} = {height * width:,} pixels is over the limit of "
                          f"{limit:,} pixels (set {ENV_MAX_PIXELS} to change it)", path, field)


def png_size(raw: bytes) -> Optional[tuple[int, int]]:
    """(height, width) from a PNG's IHDR chunk; None when `raw` is not a PNG."""
    if len(raw) < 24 or raw[:8] != PNG_SIGNATURE or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return height, width


def check_mask_png(raw: bytes, height: int, width: int, path=None, field: Optional[str] = None) -> None:
    """A mask PNG must be a PNG whose header says (height, width), checked before it is
    decoded: a PNG bomb (a huge header, tiny compressed data) is refused unread."""
    if not raw:
        raise FormatError("mask is empty (no PNG data)", path, field)
    hw = png_size(raw)
    if hw is None:
        raise FormatError("mask is not a PNG", path, field)
    check_pixels(*hw, path, field, what="mask")
    if hw != (height, width):
        raise FormatError(f"mask PNG is {hw[1]}x{hw[0]} but its points span {width}x{height}", path, field)


def check_points(points, height: int, width: int, path=None, field: Optional[str] = None) -> None:
    """Shape points (finite [x, y] pairs) must lie within the image, with a margin of one
    image size on each side, so nothing is drawn far outside it."""
    for x, y in points:
        if not (-width <= x <= 2 * width and -height <= y <= 2 * height):
            raise FormatError(f"point [{x:g}, {y:g}] lies far outside the {width}x{height} image",
                              path, field)


def circle_radius(centre, rim, height: int, width: int, path=None, field: Optional[str] = None) -> float:
    """The radius of a labelme circle (centre, rim point), refused when it is larger than
    any circle that still changes the image needs."""
    r = math.hypot(rim[0] - centre[0], rim[1] - centre[1])
    if r > 2 * (height + width):
        raise FormatError(f"circle radius {r:g} is far larger than the {width}x{height} image", path, field)
    return r


#: longest file or folder name (bytes) the common file systems store (ext4, NTFS, APFS)
MAX_NAME_BYTES = 255


def check_file_name(name, path=None, field: Optional[str] = None) -> None:
    """A file name read from a file: a NUL byte (which no file system stores, and which
    makes Python's path functions raise ValueError), another control character, or a part
    longer than MAX_NAME_BYTES (the OS raises "File name too long") is refused."""
    if not isinstance(name, str):
        return
    if any(ord(c) < 32 for c in name):
        raise FormatError(f"file name {name!r} contains a control character", path, field)
    for part in name.replace("\\", "/").split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise FormatError(f"file name part {part[:40]!r}... is longer than {MAX_NAME_BYTES} bytes",
                              path, field)
