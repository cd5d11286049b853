"""Physical lengths and the scale of a source: the one place units are parsed and chosen.

Lengths are kept in millimetres internally (as VoxelGeometry does). A source's scale comes
from, in order:
1. a scale the user set for that source (`maskloop scale --source S`),
2. the data itself (Source.geometry: DICOM PixelSpacing / slice spacing, TIFF tags),
3. a scale the user set for the whole project (`maskloop scale` without --source).
Without any of these the source is measured in pixels, and the output says so.

The user's scales live in the manifest's `settings`:
  "scale":         {"pixel_size_mm": 0.00065, "slice_spacing_mm": 0.002, "unit": "um"}
  "source_scales": {"<stored source path>": {same keys}}
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from .errors import MaskLoopError

# millimetres per unit; µ (micro sign) and μ (Greek mu) both mean micro
UNITS_MM = {"nm": 1e-6, "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0}
CANONICAL = ("nm", "um", "mm", "cm", "m")
PIXELS = "px"
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµμ]+)\s*$")


class UnitError(MaskLoopError):
    """A length or unit the user gave that cannot be a scale."""


def canonical_unit(name: str) -> str:
    n = name.strip()
    if n in ("µm", "μm"):
        return "um"
    if n not in UNITS_MM:
        raise UnitError(f"unknown unit {name!r} (use one of: {', '.join(CANONICAL)})")
    return n


def parse_length(text: str, field: str = "length") -> tuple[float, str]:
    """'0.65um' -> (0.00065, 'um'): the length in mm and the unit it was given in.

    A number without a unit, an unknown unit, zero, negative or non-finite values raise UnitError.
    """
    s = str(text).strip()
    m = _LENGTH.match(s)
    if m is None:
        if re.match(r"^\s*-", s):
            raise UnitError(f"must be positive, got {text!r}", field=field)
        raise UnitError(f"expected a number and a unit such as 0.65um or 0.5mm, got {text!r}", field=field)
    value, unit = float(m.group(1)), canonical_unit_for(m.group(2), field)
    if not math.isfinite(value) or value <= 0:
        raise UnitError(f"must be positive, got {text!r}", field=field)
    return value * UNITS_MM[unit], unit


def canonical_unit_for(name: str, field: str) -> str:
    try:
        return canonical_unit(name)
    except UnitError as e:
        raise UnitError(e.message, field=field) from None


def auto_unit(lengths_mm: Iterable[float]) -> str:
    """The unit in which the smallest pixel size reads between 0.1 and 100 (mm as a fallback)."""
    vals = [v for v in lengths_mm if v and v > 0]
    if not vals:
        return "mm"
    smallest = min(vals)
    for unit in CANONICAL:
        if 0.1 <= smallest / UNITS_MM[unit] < 100:
            return unit
    return "nm" if smallest < 1e-4 else "m"


def column(name: str, unit: str, power: int = 1) -> str:
    """'area', 'um', 2 -> 'area_um2'; power 0 leaves the name alone."""
    if power == 0:
        return name
    return f"{name}_{unit}" + ("" if power == 1 else str(power))


# --- the scale of a source ---------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """Pixel size (dy, dx) and slice spacing in mm; None where unknown. `origin` says where it
    came from: 'source setting', 'data', 'project setting' or 'none'."""

    pixel_mm: Optional[tuple[float, float]] = None
    slice_mm: Optional[float] = None
    origin: str = "none"
    unit: Optional[str] = None  # the unit the user gave, preferred for output

    @property
    def known(self) -> bool:
        return self.pixel_mm is not None


def _from_setting(d, origin: str) -> Optional[Scale]:
    if not isinstance(d, dict) or not d.get("pixel_size_mm"):
        return None
    px = float(d["pixel_size_mm"])
    sl = d.get("slice_spacing_mm")
    unit = d.get("unit") if d.get("unit") in CANONICAL else None
    return Scale((px, px), float(sl) if sl else None, origin, unit)


def _from_geometry(geometry) -> Optional[Scale]:
    """What the data carried: `known` holds "spacing" (all three), or "pixel_spacing" and/or
    "slice_spacing" when the file had only one of them (a DICOM without positions, a TIFF)."""
    if geometry is None:
        return None
    known = set(geometry.known)
    dz, dy, dx = geometry.spacing
    pixel = (dy, dx) if known & {"spacing", "pixel_spacing"} else None
    slice_ = dz if known & {"spacing", "slice_spacing"} else None
    if pixel is None and slice_ is None:
        return None
    return Scale(pixel, slice_, "data")


def source_key(project, source) -> str:
    """The stored path of a source: how per-source scales are keyed (stable across sessions)."""
    return str(source.path)


def scale_of(project, source_index: int) -> Scale:
    """The scale a source is measured at (the rule of the module docstring): the pixel size
    and the slice spacing each come from the first of source setting, data, project setting
    that has them."""
    src = project.sources[source_index]
    settings = project.settings or {}
    per_source = (settings.get("source_scales") or {}).get(source_key(project, src))
    order = [s for s in (_from_setting(per_source, "source setting"), _from_geometry(getattr(src, "geometry", None)),
                         _from_setting(settings.get("scale"), "project setting")) if s is not None]
    pixel = next((s for s in order if s.pixel_mm is not None), None)
    if pixel is None:
        return Scale()
    slice_mm = next((s.slice_mm for s in order if s.slice_mm is not None), None)
    return Scale(pixel.pixel_mm, slice_mm, pixel.origin, pixel.unit)


def find_source(project, text: str) -> int:
    """--source S: a source index, its name, its stored path, or the id of one of its items."""
    matches = set()
    for k, src in enumerate(project.sources):
        if text in (str(k), src.name, src.path) or str(project.source_path(src)) == text:
            matches.add(k)
    for it in project.items:
        if it.id == text:
            matches.add(it.source)
    if len(matches) == 1:
        return matches.pop()
    names = ", ".join(s.name or s.path for s in project.sources) or "none"
    why = "is ambiguous" if matches else "matches no source"
    raise UnitError(f"{text!r} {why} (sources: {names})", project.manifest_path, "--source")


def set_scale(project, pixel_size: str, slice_spacing: Optional[str] = None,
              source: Optional[str] = None) -> Scale:
    """Parse and store a user scale (for one source or the project); saves the manifest.

    Everything is checked before anything changes: a bad value writes nothing.
    """
    px_mm, unit = parse_length(pixel_size, "--pixel-size")
    entry = {"pixel_size_mm": px_mm, "unit": unit}
    if slice_spacing is not None:
        entry["slice_spacing_mm"] = parse_length(slice_spacing, "--slice-spacing")[0]
    index = find_source(project, source) if source is not None else None
    settings = dict(project.settings or {})
    if index is None:
        settings["scale"] = entry
    else:
        scales = dict(settings.get("source_scales") or {})
        scales[source_key(project, project.sources[index])] = entry
        settings["source_scales"] = scales
    project.settings = settings
    project.save()
    return _from_setting(entry, "project setting" if index is None else "source setting")


def describe(scale: Scale) -> str:
    if not scale.known:
        return "no scale (pixels)"
    unit = scale.unit or auto_unit(scale.pixel_mm)
    f = UNITS_MM[unit]
    dy, dx = (v / f for v in scale.pixel_mm)
    text = f"{dx:g} {unit}" if dy == dx else f"{dy:g} x {dx:g} {unit}"
    if scale.slice_mm is not None:
        text += f", slices {scale.slice_mm / f:g} {unit}"
    return f"{text} ({scale.origin})"
