"""VoxelGeometry from what a file says: DICOM positions/orientation/pixel spacing, TIFF
resolution tags and ImageJ metadata. One place for the rules (engine/geometry.py holds the
conventions: spacing (dz, dy, dx) mm, origin LPS, direction columns x, y, z).

`known` names what the file really carried:
  "pixel_spacing" (dy, dx), "slice_spacing" (dz), "spacing" (both), "origin", "direction".
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..geometry import VoxelGeometry

# Relative and absolute tolerance for "equally spaced" slices (mm): scanners round positions.
_STEP_RTOL, _STEP_ATOL = 0.01, 1e-3


def _known(pixel: bool, slice_: bool, origin: bool, direction: bool) -> tuple[str, ...]:
    out = []
    if pixel and slice_:
        out.append("spacing")
    if pixel:
        out.append("pixel_spacing")
    if slice_:
        out.append("slice_spacing")
    if origin:
        out.append("origin")
    if direction:
        out.append("direction")
    return tuple(out)


def _orientation(iop: Optional[Sequence[float]]) -> Optional[np.ndarray]:
    """(row direction, column direction, normal) as columns, or None when IOP is unusable."""
    if iop is None or len(iop) != 6:
        return None
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6:
        return None
    r, c = r / nr, c / nc
    if abs(float(np.dot(r, c))) > 1e-3:  # not orthogonal: not a usable frame
        return None
    return np.stack([r, c, np.cross(r, c)], axis=1)


def slice_step(positions: Sequence) -> Optional[np.ndarray]:
    """The common step vector between consecutive slice positions, or None when the
    positions are missing, repeated or not equally spaced along one line."""
    if len(positions) < 2 or any(p is None for p in positions):
        return None
    pts = np.asarray(positions, float)
    steps = np.diff(pts, axis=0)
    mean = (pts[-1] - pts[0]) / (len(pts) - 1)
    length = float(np.linalg.norm(mean))
    if length < 1e-6:
        return None
    dev = np.linalg.norm(steps - mean[None, :], axis=1)
    if float(dev.max()) > max(_STEP_ATOL, _STEP_RTOL * length):
        return None
    return mean


def dicom_geometry(positions: Sequence, iop, pixel_spacing, slice_gap) -> Optional[VoxelGeometry]:
    """Geometry of slices in read order: `positions` are their ImagePositionPatient (or
    None), `iop` ImageOrientationPatient, `pixel_spacing` (dy, dx), `slice_gap` the
    header's SpacingBetweenSlices/SliceThickness (used for a single slice only)."""
    frame = _orientation(iop)
    dy, dx = pixel_spacing if pixel_spacing else (1.0, 1.0)
    origin_known = bool(positions) and positions[0] is not None
    step = slice_step(positions)
    direction = np.eye(3) if frame is None else frame.copy()
    dz, slice_known = 1.0, False
    if step is not None:
        dz, slice_known = float(np.linalg.norm(step)), True
        direction[:, 2] = step / dz  # the position step: handles reversed order and tilt
    elif len(positions) == 1 and slice_gap:
        dz, slice_known = float(slice_gap), True
    if not (pixel_spacing or slice_known or origin_known or frame is not None):
        return None
    return VoxelGeometry(
        spacing=(dz, float(dy), float(dx)),
        origin=tuple(positions[0]) if origin_known else (0.0, 0.0, 0.0),
        direction=tuple(map(tuple, direction)),
        known=_known(bool(pixel_spacing), slice_known, origin_known, frame is not None))


# --- TIFF --------------------------------------------------------------------------------

# ImageJ 'unit' strings -> millimetres per unit
_UNIT_MM = {"nm": 1e-6, "nanometer": 1e-6, "um": 1e-3, "µm": 1e-3, "\u00b5m": 1e-3,
            "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3, "\\u00b5m": 1e-3,
            "mm": 1.0, "millimeter": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0,
            "meter": 1000.0, "inch": 25.4, "in": 25.4}
_RESUNIT_MM = {2: 25.4, 3: 10.0}   # TIFF ResolutionUnit: inch, centimetre
# Writers stamp these dots-per-inch on any picture; they say nothing about a pixel's size.
_SCREEN_DPI = {72.0, 96.0}


def tiff_geometry(page, imagej: Optional[dict], n_slices: int) -> Optional[VoxelGeometry]:
    """Pixel size from XResolution/YResolution (pixels per unit) in ResolutionUnit or
    ImageJ's 'unit'; slice spacing from ImageJ's 'spacing'. None when the file has no scale."""
    imagej = imagej or {}
    unit_mm = None
    unit = str(imagej.get("unit", "") or "").strip()
    if unit:
        unit_mm = _UNIT_MM.get(unit.lower()) or _UNIT_MM.get(unit)
    tags = page.tags
    resunit = int(getattr(tags.get("ResolutionUnit"), "value", 1) or 1)
    if unit_mm is None:
        unit_mm = _RESUNIT_MM.get(resunit)
    pixel = None
    xr, yr = _rational(tags.get("XResolution")), _rational(tags.get("YResolution"))
    if unit_mm is not None and xr and yr:
        screen = not unit and resunit == 2 and xr in _SCREEN_DPI and yr in _SCREEN_DPI
        if not screen:
            pixel = (unit_mm / yr, unit_mm / xr)
    dz, slice_known = 1.0, False
    sp = imagej.get("spacing")
    try:
        sp = float(sp) if sp is not None else None
    except (TypeError, ValueError):
        sp = None
    if sp is not None and sp > 0 and np.isfinite(sp) and n_slices > 1 and unit_mm is not None:
        dz, slice_known = sp * unit_mm, True
    if pixel is None and not slice_known:
        return None
    dy, dx = pixel if pixel else (1.0, 1.0)
    return VoxelGeometry(spacing=(dz, dy, dx),
                         known=_known(pixel is not None, slice_known, False, False))


def _rational(tag) -> Optional[float]:
    if tag is None:
        return None
    v = tag.value
    try:
        num, den = (v if isinstance(v, tuple) else (v, 1))[:2]
        x = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if np.isfinite(x) and x > 0 else None
