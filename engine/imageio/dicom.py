"""DICOM files through pydicom: one Source per file, one frame per read, values rescaled
(per frame for enhanced files, per file for classic series) into one dtype per source."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ImageReadError
from .dicom_header import DicomInfo, dicom_info, pydicom_module
from .geometry_from import dicom_geometry
from .source import Source


def hu_dtype(infos: Sequence[DicomInfo]) -> np.dtype:
    """One dtype for a whole series: raw when no rescale, int16 HU when it fits, else float32."""
    raws = {i.raw_dtype for i in infos}
    rescales = {r for i in infos for r in i.rescales}
    if rescales <= {(1.0, 0.0)} and len(raws) == 1:
        return raws.pop()
    if any(dt.kind == "f" for dt in raws):
        return np.dtype(np.float32)
    if not all(float(s).is_integer() and float(b).is_integer() for s, b in rescales):
        return np.dtype(np.float32)
    fits = True
    for i in infos:
        lo, hi = i.raw_range
        for s, b in i.rescales:
            ends = (lo * s + b, hi * s + b)
            fits &= min(ends) >= -32768 and max(ends) <= 32767
    # CT stores HU: values beyond int16 are only padding outside the scan (e.g. signed
    # 16-bit storage with intercept -1024), so saturating them loses nothing.
    if fits or all(i.unit == "HU" for i in infos):
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def _rescale(raw: np.ndarray, slope: float, intercept: float, out: np.dtype) -> np.ndarray:
    if raw.dtype == np.bool_:
        raw = raw.view(np.uint8)
    if slope == 1.0 and intercept == 0.0 and raw.dtype == out:
        return raw
    if out == np.int16:
        tmp = raw.astype(np.int32)
        if slope != 1.0:
            tmp *= int(slope)
        if intercept != 0.0:
            tmp += int(intercept)
        np.clip(tmp, -32768, 32767, out=tmp)
        return tmp.astype(np.int16)
    if out.kind == "f":
        res = raw.astype(np.float32)
        if slope != 1.0:
            res *= np.float32(slope)
        if intercept != 0.0:
            res += np.float32(intercept)
        return res
    # identity rescale to another integer type (series mixing signed/unsigned storage)
    return raw.astype(out)


def source_from_info(info: DicomInfo, kind: str) -> Source:
    """A single file: one image, or every frame of a multi-frame (enhanced) file."""
    multi = kind == "dicom_multiframe"
    n = info.frames if multi else 1
    name = (info.description or info.path.stem) if multi else info.path.stem
    positions = (info.frame_positions or [None] * n) if multi else [info.position]
    geometry = dicom_geometry(positions, info.orientation, info.pixel_spacing, info.slice_gap)
    return Source(kind, str(info.path), (), n, info.rows, info.cols, str(hu_dtype([info])),
                  3 if info.samples == 3 else 1, info.modality, name, geometry=geometry,
                  window=info.window, unit=info.unit)


def probe_dicom_file(p: Path) -> Source:
    info = dicom_info(p, strict=True)
    if info is None:
        raise ImageReadError("DICOM file holds no image (no Rows/Columns)", p)
    return source_from_info(info, "dicom_multiframe" if info.frames > 1 else "image")


@functools.lru_cache(maxsize=16)
def _cached_info(path: str, _mtime_ns: int, _size: int) -> Optional[DicomInfo]:
    # keyed on mtime and size: a file changed on disk is read again
    return dicom_info(Path(path), strict=True)


def _header(p: Path) -> Optional[DicomInfo]:
    st = os.stat(p)
    return _cached_info(str(p), st.st_mtime_ns, st.st_size)


def read_dicom(p: Path, frame: Optional[int], out_dtype: Optional[np.dtype],
               field: Optional[str]) -> np.ndarray:
    """Frame `frame` (None: the file's only/first frame), rescaled into `out_dtype`
    (None: the dtype probe would choose)."""
    pydicom = pydicom_module()
    from pydicom.dataset import Dataset
    hdr = Dataset()
    try:
        # index: decode that one frame only (a multi-frame file may hold hundreds)
        arr = pydicom.pixels.pixel_array(str(p), ds_out=hdr, index=frame or 0)
    except FileNotFoundError:
        raise ImageReadError("file not found", p, field) from None
    except MemoryError:
        raise ImageReadError("not enough memory to decode this DICOM file", p, field) from None
    except Exception as e:  # noqa: BLE001 - InvalidDicomError, AttributeError, ValueError, ...
        # The header check names the usual causes (no pixel data, cut-off file) plainly.
        try:
            dicom_info(p, strict=True)
        except ImageReadError as clear:
            raise ImageReadError(clear.message, p, field) from None
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImageReadError(f"cannot decode DICOM pixel data ({msg})", p, field) from None
    try:
        # ds_out holds group 0028 only: a classic file's rescale, but not the functional
        # groups of an enhanced file (nor the modality), so those come from the header.
        info = None
        if frame is not None or "NumberOfFrames" in hdr or out_dtype is None:
            info = _header(p)
        if info is not None:
            slope, intercept = info.rescale(frame or 0)
        else:
            s, b = hdr.get("RescaleSlope", 1), hdr.get("RescaleIntercept", 0)
            slope, intercept = float(1 if s in (None, "") else s), float(0 if b in (None, "") else b)
        if out_dtype is None:  # read_image: no Source, decide as probe would
            out_dtype = hu_dtype([info]) if info is not None else arr.dtype
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        res = _rescale(arr, slope, intercept, np.dtype(out_dtype))
    except ImageReadError as e:
        raise ImageReadError(e.message, p, field) from None
    except Exception as e:  # noqa: BLE001 - malformed rescale values and the like
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p, field) from None
    return np.ascontiguousarray(res)
