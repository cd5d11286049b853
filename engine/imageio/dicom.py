"""DICOM files through pydicom (imported on first use: it takes half a second)."""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ImageReadError
from .sniff import natural_key
from .source import Source


def _pydicom():
    import pydicom  # noqa: F401 - imported lazily: it takes half a second
    import pydicom.pixels  # noqa: F401
    return pydicom


@dataclass
class DicomInfo:
    path: Path
    series_uid: str
    rows: int
    cols: int
    samples: int
    frames: int
    modality: str
    description: str
    series_number: Optional[int]
    instance: Optional[int]
    position: Optional[tuple[float, float, float]]
    orientation: Optional[tuple[float, ...]]
    raw_dtype: np.dtype
    raw_range: tuple[float, float]
    rescales: list = field(default_factory=list)   # (slope, intercept) per frame


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)   # PixelData, FloatPixelData, DoubleFloat...
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def dicom_info(p: Path, strict: bool = True) -> Optional[DicomInfo]:
    """Header facts of one DICOM file (pixel data not read).

    None for a valid DICOM file that holds no image (DICOMDIR, reports); ImageReadError for
    an image whose pixel data is missing or cut off, or (strict) for unreadable files.
    """
    pydicom = _pydicom()
    try:
        with open(p, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            if "Rows" in ds and "Columns" in ds:
                state, pixel_tag = _pixel_element_state(ds, f, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise ImageReadError("file not found", p) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", p) from None
    except Exception as e:  # noqa: BLE001 - pydicom raises InvalidDicomError, ValueError, ...
        raise ImageReadError(f"not a readable DICOM file ({e})", p) from None
    if "Rows" not in ds or "Columns" not in ds:
        if strict and "SOPClassUID" not in ds and not getattr(ds, "file_meta", None):
            raise ImageReadError("not a DICOM file", p)
        return None
    if state == "missing":
        raise ImageReadError("DICOM file has no pixel data", p)
    if state == "truncated":
        raise ImageReadError("truncated DICOM file (pixel data cut off)", p)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        raw_dtype, raw_range = _dicom_raw_type(ds, pixel_tag)
        pos_ = ds.get("ImagePositionPatient")
        ori = ds.get("ImageOrientationPatient")
        inst = ds.get("InstanceNumber")
        sn = ds.get("SeriesNumber")
        info = DicomInfo(
            path=p, series_uid=str(ds.get("SeriesInstanceUID", "") or ""), rows=rows, cols=cols,
            samples=samples, frames=frames, modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or "").strip(),
            series_number=int(sn) if sn not in (None, "") else None,
            instance=int(inst) if inst not in (None, "") else None,
            position=tuple(float(v) for v in pos_) if pos_ and len(pos_) == 3 else None,
            orientation=tuple(float(v) for v in ori) if ori and len(ori) == 6 else None,
            raw_dtype=raw_dtype, raw_range=raw_range,
            rescales=[_dicom_rescale(ds, k) for k in range(frames)],
        )
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed values (non-numeric strings, ...)
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p) from None
    if rows < 1 or cols < 1 or frames < 1:
        raise ImageReadError(f"DICOM image of size {rows}x{cols}x{frames}", p)
    if samples not in (1, 3):
        raise ImageReadError(f"unsupported DICOM: {samples} samples per pixel", p)
    return info


def _pixel_element_state(ds, f, size: int) -> tuple[str, int]:
    """('ok' | 'missing' | 'truncated' | 'unknown', tag) of the pixel data element.

    `f` is positioned where dcmread(stop_before_pixels=True) stopped: at that element's
    tag if there is one. Only element and fragment headers are read, never pixel values.
    """
    pos = f.tell()
    tail = f.read(12)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and ts == "1.2.840.10008.1.2.1.99":
        return "unknown", _PIXEL_TAGS[0]   # deflated: file offsets mean nothing
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
        return "missing", 0
    e = "<" if little else ">"
    group, elem = struct.unpack(e + "HH", tail[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return "missing", 0
    if implicit:
        (length,), header = struct.unpack(e + "I", tail[4:8]), 8
    elif tail[4:6] in _LONG_VRS:
        if len(tail) < 12:
            return "truncated", tag
        (length,), header = struct.unpack(e + "I", tail[8:12]), 12
    else:
        (length,), header = struct.unpack(e + "H", tail[6:8]), 8
    if length == 0xFFFFFFFF:
        return _fragments_state(f, pos + header, size), tag
    if length == 0:
        return "missing", tag
    if pos + header + length > size:
        return "truncated", tag
    try:
        need = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 16)) + 7) // 8
        if tag == _PIXEL_TAGS[0] and length < need:
            return "truncated", tag
    except Exception:  # noqa: BLE001
        pass
    return "ok", tag


def _fragments_state(f, pos: int, size: int) -> str:
    """Walk the item headers of encapsulated (compressed) pixel data: a cut-off file shows
    as an item running past the end or a missing sequence delimiter."""
    for _ in range(1 << 20):
        f.seek(pos)
        h = f.read(8)
        if len(h) < 8:
            return "truncated"
        group, elem, length = struct.unpack("<HHI", h)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return "ok"
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return "unknown"  # not what the standard says: let the decoder judge
        pos += 8 + length
        if pos > size:
            return "truncated"
    return "unknown"


def _dicom_raw_type(ds, pixel_tag: int) -> tuple[np.dtype, tuple[float, float]]:
    """dtype pydicom decodes to (after our normalisation) and the range BitsStored allows."""
    if pixel_tag == 0x7FE00008 or pixel_tag == 0x7FE00009:
        return np.dtype(np.float32), (-math.inf, math.inf)
    alloc = int(ds.get("BitsAllocated", 16) or 16)
    stored = int(ds.get("BitsStored", alloc) or alloc)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if alloc == 1:
        return np.dtype(np.uint8), (0.0, 1.0)
    if alloc not in (8, 16, 32):
        raise ValueError(f"unsupported BitsAllocated {alloc}")
    dt = np.dtype(("i" if signed else "u") + str(alloc // 8))
    lo, hi = ((-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1))
    return dt, (float(lo), float(hi))


def _dicom_rescale(ds, frame: int) -> tuple[float, float]:
    """(slope, intercept) of one frame: per-frame group, shared group, then top level."""
    def from_seq(item):
        seq = item.get("PixelValueTransformationSequence") if item is not None else None
        if seq:
            t = seq[0]
            if "RescaleSlope" in t or "RescaleIntercept" in t:
                return float(t.get("RescaleSlope", 1) or 1), float(t.get("RescaleIntercept", 0) or 0)
        return None
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and frame < len(per):
        r = from_seq(per[frame])
        if r:
            return r
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        r = from_seq(shared[0])
        if r:
            return r
    slope = ds.get("RescaleSlope", 1)
    inter = ds.get("RescaleIntercept", 0)
    return float(1 if slope in (None, "") else slope), float(0 if inter in (None, "") else inter)


def _hu_dtype(infos: Sequence[DicomInfo]) -> np.dtype:
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
    if fits or all(i.modality == "CT" for i in infos):
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
    n = info.frames if kind == "dicom_multiframe" else 1
    name = (info.description or info.path.stem) if kind == "dicom_multiframe" else info.path.stem
    return Source(kind, str(info.path), (), n, info.rows, info.cols, str(_hu_dtype([info])),
                  3 if info.samples == 3 else 1, info.modality, name)


def series_source(infos: list[DicomInfo]) -> Source:
    if len(infos) == 1:
        return source_from_info(infos[0], "image")
    infos = _order_series(infos)
    folder = Path(os.path.commonpath([str(i.path.parent) for i in infos]))
    files = tuple(i.path.relative_to(folder).as_posix() for i in infos)
    first = infos[0]
    name = first.description or folder.name or first.path.stem
    return Source("dicom_series", str(folder), files, len(infos), first.rows, first.cols,
                  str(_hu_dtype(infos)), 3 if first.samples == 3 else 1, first.modality, name)


def _order_series(infos: list[DicomInfo]) -> list[DicomInfo]:
    """Slice order: position along the slice normal, else InstanceNumber, else file name."""
    ori = next((i.orientation for i in infos if i.orientation), None)
    if ori and all(i.position for i in infos):
        normal = np.cross(np.asarray(ori[:3]), np.asarray(ori[3:]))
        if np.linalg.norm(normal) > 1e-6:
            return sorted(infos, key=lambda i: (float(np.dot(normal, i.position)),
                                                i.instance or 0, natural_key(i.path.name)))
    if all(i.instance is not None for i in infos):
        return sorted(infos, key=lambda i: (i.instance, natural_key(i.path.name)))
    return sorted(infos, key=lambda i: natural_key(str(i.path)))


def probe_dicom_file(p: Path) -> Source:
    info = dicom_info(p, strict=True)
    if info is None:
        raise ImageReadError("DICOM file holds no image (no Rows/Columns)", p)
    return source_from_info(info, "dicom_multiframe" if info.frames > 1 else "image")


def read_dicom(p: Path, frame: Optional[int], out_dtype: Optional[np.dtype],
                field: Optional[str]) -> np.ndarray:
    pydicom = _pydicom()
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
        slope, intercept = _dicom_rescale(hdr, frame or 0)
        if out_dtype is None:  # read_image: no Source, decide as probe would
            pixel_tag = 0x7FE00008 if arr.dtype.kind == "f" else 0x7FE00010
            raw_dtype, raw_range = _dicom_raw_type(hdr, pixel_tag)
            info = DicomInfo(p, "", 0, 0, 1, 1, str(hdr.get("Modality", "") or ""), "", None,
                              None, None, None, raw_dtype, raw_range, [(slope, intercept)])
            out_dtype = _hu_dtype([info])
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        res = _rescale(arr, slope, intercept, np.dtype(out_dtype))
    except Exception as e:  # noqa: BLE001 - malformed rescale values and the like
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p, field) from None
    return np.ascontiguousarray(res)

