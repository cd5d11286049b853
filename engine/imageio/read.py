"""read_slice / read_image: raw values of one slice, whatever the source kind."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ImageReadError
from .dicom import read_dicom
from .plain import decode_cv2
from .sniff import sniff
from .source import Source
from .tiff import read_tiff, read_tiff_first


def _resolve(source: Source, base) -> Path:
    p = Path(source.path)
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    return p


def read_slice(source: Source, index: int, base: Optional[Path] = None, *,
               mapped: bool = False) -> np.ndarray:
    """Raw values of slice `index` only: (H, W) or (H, W, 3), dtype `source.dtype`.

    Reads one TIFF page, one DICOM file or one frame, never the whole stack. A relative
    `source.path` resolves from `base` (the project root).

    `mapped=True` (for a viewer): a large uncompressed TIFF page stored as it is returned
    comes back as a read-only memory map of the file (tiff.map_page) with the same values;
    reading is deferred to when pixels are used. The file must then not be truncated in
    place while the array lives (the OS would fault on the vanished pages).
    """
    p = _resolve(source, base)
    index = int(index)
    field = f"slice {index}" if source.n_slices > 1 else None
    if not 0 <= index < source.n_slices:
        raise ImageReadError(f"slice {index} out of range (0..{source.n_slices - 1})", p,
                             f"slice {index}")
    if source.kind == "dicom_series":
        fp = p / source.files[index]
        arr = _read_any(fp, None, field, source)
        where = fp
    elif source.kind == "dicom_multiframe":
        arr = read_dicom(p, index, np.dtype(source.dtype), field)
        where = p
    else:
        arr = _read_any(p, index, field, source, mapped)
        where = p
    if arr.shape[:2] != (source.height, source.width):
        raise ImageReadError(f"image changed on disk: {arr.shape[1]}x{arr.shape[0]}, expected "
                             f"{source.width}x{source.height}", where, field)
    if source.channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)  # a grey-palette file probed as colour
    elif source.channels == 1 and arr.ndim == 3:
        raise ImageReadError("image changed on disk: colour, expected grey", where, field)
    if str(arr.dtype) != source.dtype:
        if arr.dtype.kind in "ui" and np.dtype(source.dtype).kind in "uif" and \
                np.can_cast(arr.dtype, source.dtype):
            arr = arr.astype(source.dtype)  # e.g. one uint16 slice in an int16 series
        else:
            raise ImageReadError(f"image changed on disk: {arr.dtype}, expected {source.dtype}",
                                 where, field)
    return arr


def _read_any(p: Path, index: Optional[int], field: Optional[str],
              source: Optional[Source], mapped: bool = False) -> np.ndarray:
    kind = sniff(p, field)
    if kind == "tiff":
        return read_tiff(p, index or 0, source.n_slices if source is not None else None, field,
                         mapped)
    if kind == "dicom":
        out = np.dtype(source.dtype) if source is not None else None
        return read_dicom(p, None, out, field)
    if kind in ("png", "jpeg", "bmp"):
        return decode_cv2(p, kind)
    raise ImageReadError(f"unsupported or corrupt file ({p.suffix or 'no suffix'}): expected "
                         "PNG, JPEG, BMP, TIFF or DICOM", p, field)


def read_image(path) -> np.ndarray:
    """A plain 2-D image file's raw values (the first page / frame), (H, W) or (H, W, 3)."""
    p = Path(path)
    if p.is_dir():
        raise ImageReadError("is a folder, not an image file", p)
    if not p.exists():
        raise ImageReadError("file not found", p)
    if sniff(p) == "tiff":
        return read_tiff_first(p)  # first page of series 0, whatever the page count
    return _read_any(p, None, None, None)

