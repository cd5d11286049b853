"""Header facts of one DICOM file (pixel values never read): size, rescale, unit, window,
position/orientation/pixel spacing — classic (top-level) and enhanced (functional groups).

The frame count is checked against the bytes actually present before anything per frame
is built, so a 700-byte file claiming 2,000,000,000 frames is refused at once.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ImageReadError
from .dicom_pixeldata import PIXEL_TAGS, PixelElement, pixel_element

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_MAX_INFLATE = 1100          # > deflate's maximum compression ratio (1032:1)


def pydicom_module():
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
    position: Optional[tuple[float, float, float]]   # IPP of (the first) frame
    orientation: Optional[tuple[float, ...]]         # IOP, 6 values
    pixel_spacing: Optional[tuple[float, float]]     # (dy, dx) mm: row, column spacing
    slice_gap: Optional[float]                       # SpacingBetweenSlices, else SliceThickness
    raw_dtype: np.dtype
    raw_range: tuple[float, float]
    # (slope, intercept): one entry for the whole file, or one per frame (enhanced files)
    rescales: tuple = ((1.0, 0.0),)
    unit: str = ""                                   # "HU" when the rescale says so
    window: Optional[tuple[float, float]] = None     # (center, width) the file recommends
    frame_positions: Optional[list] = None           # enhanced: IPP of each frame, in frame order

    def rescale(self, frame: int) -> tuple[float, float]:
        return self.rescales[frame] if len(self.rescales) > 1 else self.rescales[0]


def dicom_info(p: Path, strict: bool = True) -> Optional[DicomInfo]:
    """Header facts of one DICOM file (pixel data not read).

    None for a valid DICOM file that holds no image (DICOMDIR, reports); ImageReadError for
    a segmentation (import it instead), for an image whose pixel data is missing or cut
    off, or (strict) for unreadable files.
    """
    pydicom = pydicom_module()
    try:
        with open(p, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            pix = PixelElement("missing")
            size = os.fstat(f.fileno()).st_size
            if "Rows" in ds and "Columns" in ds:
                pix = pixel_element(ds, f, size)
    except FileNotFoundError:
        raise ImageReadError("file not found", p) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", p) from None
    except Exception as e:  # noqa: BLE001 - pydicom raises InvalidDicomError, ValueError, ...
        raise ImageReadError(f"not a readable DICOM file ({e})", p) from None
    _refuse_annotations(ds, p)
    if "Rows" not in ds or "Columns" not in ds:
        if strict and "SOPClassUID" not in ds and not getattr(ds, "file_meta", None):
            raise ImageReadError("not a DICOM file", p)
        return None
    if pix.state == "missing":
        raise ImageReadError("DICOM file has no pixel data", p)
    if pix.state == "truncated":
        raise ImageReadError("truncated DICOM file (pixel data cut off)", p)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except Exception as e:  # noqa: BLE001 - malformed values (non-numeric strings, ...)
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p) from None
    if rows < 1 or cols < 1 or frames < 1:
        raise ImageReadError(f"DICOM image of size {rows}x{cols}x{frames}", p)
    if samples not in (1, 3):
        raise ImageReadError(f"unsupported DICOM: {samples} samples per pixel", p)
    _check_frames_present(ds, pix, frames, rows, cols, samples, size, p)
    try:
        return _build_info(ds, p, pix.tag, frames, rows, cols, samples)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed values (non-numeric strings, ...)
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p) from None


def _refuse_annotations(ds, p: Path) -> None:
    """A DICOM-SEG is never an image: its frames are labels (shown black as pixels); the
    user imports it as annotations. (RT structure sets have no pixels and are skipped.)"""
    if str(ds.get("Modality", "") or "").upper() == "SEG" or \
            str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
        raise ImageReadError(
            "this is a DICOM-SEG (annotations, not an image): add the scan it belongs to, "
            "then import this file with `maskloop import PROJECT FILE --format volume`", p)


def _check_frames_present(ds, pix: PixelElement, frames: int, rows: int, cols: int,
                          samples: int, size: int, p: Path) -> None:
    """The frame count must fit in the pixel data actually stored."""
    try:
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        bits = 16
    if pix.tag and pix.tag != PIXEL_TAGS[0]:
        bits = 32 if pix.tag == PIXEL_TAGS[1] else 64
    need = (rows * cols * samples * frames * bits + 7) // 8
    claim = f"DICOM header claims {frames} frames of {cols}x{rows}"
    if pix.fragments is not None and frames > max(1, pix.fragments):
        # PS3.5 A.4: a fragment never holds data of more than one frame
        raise ImageReadError(f"{claim} but the pixel data holds {pix.fragments} fragment(s)", p)
    if pix.length is not None and pix.length < need:
        if frames > 1:
            raise ImageReadError(f"{claim} but the pixel data holds {pix.length} bytes", p)
        raise ImageReadError("truncated DICOM file (pixel data cut off)", p)
    if pix.state == "unknown" and (frames > size or need > _MAX_INFLATE * size):
        # deflated or non-standard encapsulation: no byte count to check, but every frame
        # takes at least a byte, and deflate never packs more than ~1032 bytes into one
        raise ImageReadError(f"{claim} but the file holds only {size} bytes", p)


def _build_info(ds, p: Path, pixel_tag: int, frames: int, rows: int, cols: int,
                samples: int) -> DicomInfo:
    raw_dtype, raw_range = dicom_raw_type(ds, pixel_tag)
    inst, sn = ds.get("InstanceNumber"), ds.get("SeriesNumber")
    modality = str(ds.get("Modality", "") or "")
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    per = ds.get("PerFrameFunctionalGroupsSequence") or None
    if per is not None and len(per) != frames:
        per = None  # inconsistent: ignore the per-frame groups rather than misassign them
    first = per[0] if per else None
    ori = _group_value(first, shared, "PlaneOrientationSequence", "ImageOrientationPatient") \
        or ds.get("ImageOrientationPatient")
    spacing = _group_value(first, shared, "PixelMeasuresSequence", "PixelSpacing") \
        or ds.get("PixelSpacing")
    gap = _group_value(first, shared, "PixelMeasuresSequence", "SpacingBetweenSlices") \
        or ds.get("SpacingBetweenSlices") \
        or _group_value(first, shared, "PixelMeasuresSequence", "SliceThickness") \
        or ds.get("SliceThickness")
    frame_positions = None
    if per is not None:
        frame_positions = [_vec(_group_value(item, shared, "PlanePositionSequence",
                                             "ImagePositionPatient"), 3) for item in per]
        if any(v is None for v in frame_positions):
            frame_positions = None
    pos = frame_positions[0] if frame_positions else _vec(ds.get("ImagePositionPatient"), 3)
    rescales, rtype = _rescales(ds, per, shared)
    return DicomInfo(
        path=p, series_uid=str(ds.get("SeriesInstanceUID", "") or ""), rows=rows, cols=cols,
        samples=samples, frames=frames, modality=modality,
        description=str(ds.get("SeriesDescription", "") or "").strip(),
        series_number=int(sn) if sn not in (None, "") else None,
        instance=int(inst) if inst not in (None, "") else None,
        position=pos, orientation=_vec(ori, 6),
        pixel_spacing=_positive(_vec(spacing, 2)), slice_gap=_positive_scalar(gap),
        raw_dtype=raw_dtype, raw_range=raw_range, rescales=rescales,
        unit=hu_unit(modality, rtype, samples),
        window=_window(first, shared, ds), frame_positions=frame_positions,
    )


def hu_unit(modality: str, rescale_type: Optional[str], samples: int = 1) -> str:
    """'HU' only when the data is in Hounsfield units: a RescaleType of HU, or a CT image
    without a RescaleType (the CT Image IOD rescales to HU). 'US' (unspecified) is not HU."""
    if samples != 1:
        return ""
    if rescale_type:
        return "HU" if rescale_type.strip().upper() == "HU" else ""
    return "HU" if modality.upper() == "CT" else ""


def _first(seq):
    return seq[0] if seq else None


def _group_value(frame_item, shared_item, seq_name: str, keyword: str):
    """A functional-group attribute: the frame's own group wins over the shared one."""
    for item in (frame_item, shared_item):
        if item is None:
            continue
        seq = item.get(seq_name)
        if seq and keyword in seq[0] and seq[0].get(keyword) not in (None, ""):
            return seq[0].get(keyword)
    return None


def _vec(v, n: int) -> Optional[tuple]:
    if v is None or isinstance(v, (str, bytes)):
        return None
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(x) for x in out) else None


def _positive(v: Optional[tuple]) -> Optional[tuple]:
    return v if v is not None and min(v) > 0 else None


def _positive_scalar(v) -> Optional[float]:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _rescale_of(item) -> Optional[tuple[float, float, Optional[str]]]:
    if item is None or ("RescaleSlope" not in item and "RescaleIntercept" not in item):
        return None
    slope, inter = item.get("RescaleSlope", 1), item.get("RescaleIntercept", 0)
    rtype = item.get("RescaleType")
    return (float(1 if slope in (None, "") else slope), float(0 if inter in (None, "") else inter),
            str(rtype) if rtype else None)


def _rescales(ds, per, shared) -> tuple[tuple, Optional[str]]:
    """((slope, intercept) once or per frame, RescaleType): per-frame group, shared group,
    then top level — PixelValueTransformationSequence in enhanced files."""
    def pvt(item):
        seq = item.get("PixelValueTransformationSequence") if item is not None else None
        return _rescale_of(seq[0]) if seq else None
    top = _rescale_of(ds) or (1.0, 0.0, None)
    base = pvt(shared) or top
    if per is None:
        return ((base[0], base[1]),), base[2]
    values = [pvt(item) or base for item in per]
    pairs = tuple((s, b) for s, b, _t in values)
    rtype = next((t for _s, _b, t in values if t), None)
    return (pairs if len(set(pairs)) > 1 else pairs[:1]), rtype


def _window(first, shared, ds) -> Optional[tuple[float, float]]:
    def pick(item):
        if item is None:
            return None
        c, w = item.get("WindowCenter"), item.get("WindowWidth")
        if c in (None, "") or w in (None, ""):
            return None
        # several windows may be listed: the first is the recommended one
        c = c[0] if not isinstance(c, (str, float, int)) and len(c) else c
        w = w[0] if not isinstance(w, (str, float, int)) and len(w) else w
        try:
            c, w = float(c), float(w)
        except (TypeError, ValueError):
            return None
        return (c, w) if math.isfinite(c) and math.isfinite(w) and w > 0 else None
    for item in (first, shared):
        seq = item.get("FrameVOILUTSequence") if item is not None else None
        if seq and pick(seq[0]):
            return pick(seq[0])
    return pick(ds)


def dicom_raw_type(ds, pixel_tag: int) -> tuple[np.dtype, tuple[float, float]]:
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
