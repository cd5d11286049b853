"""Human-readable summaries of sources: lengths in mm or µm, voxel geometry, one line each.
One place for the formatting, used by `info` and the GUI."""
from __future__ import annotations

from typing import Optional

from ..geometry import VoxelGeometry
from .source import Source


def format_length(mm: float) -> str:
    """A length given in mm: '0.661 mm', '5 mm', or '0.25 µm' / '12.5 µm' below 0.1 mm."""
    v = float(mm)
    if abs(v) < 0.1:
        return f"{_num(v * 1000.0)} µm"
    return f"{_num(v)} mm"


def _num(v: float) -> str:
    # three significant digits, no trailing zeros: 0.661, 5, 12.5 (four from 1000 up: no 1e+03)
    return f"{v:.4g}" if abs(v) >= 1000 else f"{v:.3g}"


def format_spacing(geometry: Optional[VoxelGeometry], n_slices: int = 1) -> str:
    """'0.661 × 0.661 mm, slices 5 mm' (x × y in-plane, then slice step); what the file did
    not carry is left out or marked, so a guessed 1 mm is never shown as a measurement."""
    if geometry is None:
        return "no physical size"
    known = set(geometry.known)
    dz, dy, dx = geometry.spacing
    parts = []
    if known & {"spacing", "pixel_spacing"}:
        same = format_length(dx) == format_length(dy)
        parts.append(f"pixel {format_length(dx)}" if same else
                     f"pixel {format_length(dx)} × {format_length(dy)}")  # width × height
    else:
        parts.append("pixel size unknown")
    if n_slices > 1:
        if known & {"spacing", "slice_spacing"}:
            parts.append(f"slices {format_length(dz)} apart")
        else:
            parts.append("slice spacing unknown")
    return ", ".join(parts)


def describe_source(src: Source) -> str:
    """One line: name, kind, size and geometry, e.g.
    'CT AX: DICOM series, 3 × 128 × 128, pixel 0.661 mm, slices 5 mm apart, origin (...) mm'."""
    kinds = {"image": "image", "stack": "stack", "dicom_series": "DICOM series",
             "dicom_multiframe": "DICOM multi-frame"}
    size = f"{src.height} × {src.width}" if src.n_slices == 1 else \
        f"{src.n_slices} × {src.height} × {src.width}"
    text = f"{src.name}: {kinds.get(src.kind, src.kind)}, {size}, {format_spacing(src.geometry, src.n_slices)}"
    g = src.geometry
    if g is not None and "origin" in g.known:
        text += ", origin (" + ", ".join(f"{v:.1f}" for v in g.origin) + ") mm"
    if src.unit:
        text += f", {src.unit}"
    if src.window is not None:
        text += f", window {src.window[0]:g}/{src.window[1]:g}"
    return text
