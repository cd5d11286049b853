"""Images and masks embedded in JSON as base64 (labelme's `mask` shapes and imageData).

The size an embedded PNG or JPEG claims is read from its header and checked
(engine.limits) before it is decoded, so a PNG bomb or a header claiming 100000 x 100000
pixels is refused unread; damaged data after a valid header is a FormatError, never a
cv2.error.
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Optional

import cv2
import numpy as np

from .. import limits
from ..errors import FormatError
from ..masks import png_to_mask


def _b64(text: str, what: str, path, field) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise FormatError(f"{what} is not valid base64 ({e})", path, field) from None


def _cv2_reason(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else type(e).__name__


def decode_mask_b64(m64: str, height: int, width: int, path, field) -> np.ndarray:
    """A mask shape's base64 PNG as a bool (height, width) array; the PNG header must
    say (height, width), the size of the shape's bbox, before anything is decoded."""
    raw = _b64(m64, "mask", path, field)
    limits.check_mask_png(raw, height, width, path, field)
    try:
        mask = png_to_mask(raw, path, field)   # the bytes decoded once
    except cv2.error as e:  # a valid header over damaged data
        raise FormatError(f"mask PNG cannot be decoded ({_cv2_reason(e)})", path, field) from None
    if mask.shape != (height, width):  # pragma: no cover - the header said so
        raise FormatError(f"mask PNG decodes to {mask.shape[1]}x{mask.shape[0]}, not {width}x{height}",
                          path, field)
    return mask


def _header_size(raw: bytes, path, field) -> tuple[int, int]:
    """(height, width) an encoded image claims, from its header only (Pillow opens lazily)."""
    import PIL.Image
    try:
        with PIL.Image.open(io.BytesIO(raw)) as im:
            width, height = im.size
    except PIL.Image.DecompressionBombError as e:
        raise FormatError(f"image is too large ({e})", path, field) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types on junk
        raise FormatError("imageData is not a readable image", path, field) from None
    return int(height), int(width)


def embedded_image(data: dict, json_path) -> Optional[tuple[bytes, str, tuple[int, int]]]:
    """(bytes, extension, (h, w)) of a labelme file's imageData, None when it has none."""
    b64 = data.get("imageData")
    if not b64:
        return None
    if not isinstance(b64, str):
        raise FormatError("imageData must be a base64 string", json_path, "imageData")
    raw = _b64(b64, "imageData", json_path, "imageData")
    limits.check_pixels(*_header_size(raw, json_path, "imageData"), json_path, "imageData")
    try:
        arr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise FormatError(f"imageData cannot be decoded ({_cv2_reason(e)})", json_path, "imageData") from None
    if arr is None:
        raise FormatError("imageData is not a readable image", json_path, "imageData")
    ext = ".png" if raw[:8] == limits.PNG_SIGNATURE else ".jpg" if raw[:2] == b"\xff\xd8" else None
    if ext is None:  # some other format: store it as PNG
        ok, buf = cv2.imencode(".png", arr)
        raw, ext = buf.tobytes(), ".png"
    return raw, ext, (int(arr.shape[0]), int(arr.shape[1]))
