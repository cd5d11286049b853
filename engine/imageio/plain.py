"""PNG, JPEG and BMP through cv2 (headers read without decoding where possible); PNG writing."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageReadError, MaskLoopError
from ..fsutil import atomic_write_bytes
from .sniff import file_size
from .source import Source


_PNG_COLOR = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}   # colour type -> channels after decoding (no alpha)


def png_header(p: Path) -> tuple[int, int, str, int]:
    size = file_size(p)
    with open(p, "rb") as f:
        head = f.read(33)
        f.seek(max(0, size - 4096))
        tail = f.read()
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ImageReadError("corrupt PNG (no IHDR header)", p)
    w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
    if ctype not in _PNG_COLOR or depth not in (1, 2, 4, 8, 16) or w == 0 or h == 0:
        raise ImageReadError(f"corrupt PNG header (colour type {ctype}, depth {depth})", p)
    if b"IEND" not in tail:
        raise ImageReadError("truncated PNG (no end chunk)", p)
    return h, w, ("uint16" if depth == 16 else "uint8"), _PNG_COLOR[ctype]


def jpeg_header(p: Path) -> tuple[int, int, str, int]:
    size = file_size(p)
    with open(p, "rb") as f:
        f.seek(max(0, size - 2048))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        # cameras may append data after the image; only then read the whole file
        if not _jpeg_complete(p.read_bytes()):
            raise ImageReadError("truncated JPEG (no end-of-image marker)", p)
    try:
        from PIL import Image  # labelme's dependency; reads the header only
    except ImportError:
        arr = decode_cv2(p, "jpeg")
        return arr.shape[0], arr.shape[1], "uint8", (3 if arr.ndim == 3 else 1)
    try:
        with Image.open(p) as im:
            w, h = im.size
            mode = im.mode
            orientation = im.getexif().get(0x0112, 1)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad input
        raise ImageReadError(f"corrupt JPEG ({e})", p) from None
    if orientation in (5, 6, 7, 8):  # cv2 applies EXIF rotation when decoding, like labelme
        w, h = h, w
    return h, w, "uint8", (1 if mode in ("L", "1", "I", "I;16") else 3)


def _jpeg_complete(data: bytes) -> bool:
    # The end-of-image marker must follow the last start-of-scan (an EXIF thumbnail has
    # its own EOI before the main image, so "contains FFD9" alone is not enough).
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.find(b"\xff\xd9", sos) > 0


_CV2_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR  # keeps 16 bit and grey; drops alpha


def decode_cv2(p: Path, kind: str) -> np.ndarray:
    """Decode PNG/JPEG/BMP to raw values, (H, W) or (H, W, 3) RGB."""
    try:
        data = p.read_bytes()  # not cv2.imread: it fails on non-ASCII paths on Windows
    except FileNotFoundError:
        raise ImageReadError("file not found", p) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", p) from None
    # Detect truncation ourselves: clearer than cv2's None (and older cv2 decodes a cut
    # JPEG as grey-filled without complaint).
    if kind == "jpeg" and not _jpeg_complete(data):
        raise ImageReadError("truncated JPEG (no end-of-image marker)", p)
    if kind == "png" and b"IEND" not in data[-4096:]:
        raise ImageReadError("truncated PNG (no end chunk)", p)
    if kind == "bmp" and len(data) >= 6 and len(data) < struct.unpack("<I", data[2:6])[0]:
        raise ImageReadError(f"truncated BMP ({len(data)} of {struct.unpack('<I', data[2:6])[0]} bytes)", p)
    flags = _CV2_FLAGS
    if kind == "png" and len(data) > 25 and data[25] in (0, 4):
        # grey (+ alpha or tRNS): ANYCOLOR would expand it to colour
        flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
    if kind != "jpeg":
        flags |= cv2.IMREAD_IGNORE_ORIENTATION  # labelme rotates JPEGs only
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise ImageReadError(f"cannot decode {kind.upper()} ({str(e).strip().splitlines()[-1]})", p) from None
    if arr is None:  # cv2 reports failure by returning None
        raise ImageReadError(f"cannot decode {kind.upper()}: corrupt or truncated file", p)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
        elif arr.shape[2] == 3:
            cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)  # in place: no second 3-channel copy
        elif arr.shape[2] == 1:
            arr = arr[:, :, 0]
    return arr


def probe_plain(p: Path, kind: str) -> Source:
    if kind == "png":
        h, w, dtype, ch = png_header(p)
    elif kind == "jpeg":
        h, w, dtype, ch = jpeg_header(p)
    else:  # bmp: palette files decode grey or colour depending on the palette; just decode
        arr = decode_cv2(p, "bmp")
        h, w = arr.shape[:2]
        dtype, ch = str(arr.dtype), (3 if arr.ndim == 3 else 1)
    return Source("image", str(p), (), 1, int(h), int(w), dtype, ch, "", p.stem)


def write_png(path, arr) -> None:
    """Write an 8- or 16-bit grey, RGB or RGBA array as PNG, atomically."""
    a = np.asarray(arr)
    if a.dtype not in (np.uint8, np.uint16):
        raise MaskLoopError(f"cannot write {a.dtype} as PNG (uint8 or uint16 only)", path)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR)  # cv2 writes BGR
    elif a.ndim == 3 and a.shape[2] == 4:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2BGRA)
    elif a.ndim != 2:
        raise MaskLoopError(f"cannot write an array of shape {a.shape} as PNG", path)
    if a.size == 0:
        raise MaskLoopError("cannot write an empty image", path)
    try:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
    except cv2.error as e:
        raise MaskLoopError(f"PNG encoding failed ({str(e).strip().splitlines()[-1]})", path) from None
    if not ok:
        raise MaskLoopError("PNG encoding failed", path)
    atomic_write_bytes(path, memoryview(buf).cast("B"))
