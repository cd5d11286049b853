"""NRRD / NHDR label volumes (pynrrd), as 3D Slicer writes and reads them.

World frame: `space` left-posterior-superior (LPS, written) or right-anterior-superior /
left-anterior-superior (read, converted to LPS). `space directions` rows are the index
axes fastest first (x, y, z); their lengths are the spacing. Slicer's segmentation keys
(`Segment0_Name`, `Segment0_LabelValue`, `Segment0_Layer`) name the values; a
multi-layer segmentation (overlapping segments, a 4-D file) is refused with a hint.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import FormatError
from ..fsutil import atomic_writer
from ..geometry import VoxelGeometry
from .volume import LabelVolume

#: per world axis sign that turns the file's space into LPS
_SPACES = {"left-posterior-superior": (1, 1, 1), "lps": (1, 1, 1),
           "right-anterior-superior": (-1, -1, 1), "ras": (-1, -1, 1),
           "left-anterior-superior": (1, -1, 1), "las": (1, -1, 1)}
_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(Name|LabelValue|Layer)$")


def _geometry(header: dict, path) -> Optional[VoxelGeometry]:
    dirs = header.get("space directions")
    space = str(header.get("space", "")).lower()
    if dirs is not None:
        d = np.asarray(dirs, dtype=float)
        d = d[~np.all(np.isnan(d), axis=1)] if d.ndim == 2 else d  # 'none' rows of non-spatial axes
        if d.shape != (3, 3):
            raise FormatError(f"space directions must be 3 vectors of 3, got shape {d.shape}", path,
                              "space directions")
        sign = np.array(_SPACES.get(space, (1, 1, 1)), dtype=float)
        vecs = d * sign[None, :]                 # rows: x, y, z index axes, in LPS
        spacing_xyz = np.linalg.norm(vecs, axis=1)
        if np.any(spacing_xyz <= 0):
            raise FormatError("space directions has a zero vector", path, "space directions")
        direction = (vecs / spacing_xyz[:, None]).T   # columns: x, y, z axes
        origin = np.asarray(header.get("space origin", (0, 0, 0)), dtype=float) * sign
        known = ("spacing", "origin", "direction") if space in _SPACES else ("spacing",)
        if space not in _SPACES:
            direction, origin = np.eye(3), np.zeros(3)
        return VoxelGeometry(tuple(spacing_xyz[::-1]), tuple(origin), tuple(map(tuple, direction)), known)
    spacings = header.get("spacings")
    if spacings is not None and len(spacings) == 3 and np.all(np.isfinite(spacings)):
        return VoxelGeometry(tuple(float(v) for v in spacings[::-1]), known=("spacing",))
    return None


def segment_names(header: dict) -> tuple[dict, set]:
    """({label value: name}, layers) from Slicer's Segment<k>_* keys."""
    segs: dict = {}
    for key, val in header.items():
        m = _SEGMENT_KEY.match(str(key))
        if m:
            segs.setdefault(int(m.group(1)), {})[m.group(2)] = str(val).strip()
    names, layers = {}, set()
    for k, seg in sorted(segs.items()):
        try:
            value = int(seg.get("LabelValue", k + 1))
            layers.add(int(seg.get("Layer", 0)))
        except ValueError:
            continue
        if seg.get("Name"):
            names[value] = seg["Name"]
    return names, layers


def read(path) -> LabelVolume:
    import nrrd
    path = Path(path)
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, ValueError) as e:
        raise FormatError(f"cannot read NRRD ({e})", path) from None
    names, layers = segment_names(header)
    if data.ndim == 4:
        if data.shape[0] == 1:
            data = data[0]
        else:
            raise FormatError(f"a segmentation with {data.shape[0]} layers (overlapping segments); "
                              f"save it from Slicer as a single-layer label map", path, "dimension")
    if data.ndim not in (2, 3):
        raise FormatError(f"a label volume must be 3-D, got {data.ndim} dimensions", path, "dimension")
    geom = _geometry(header, path) if data.ndim == 3 else None
    return LabelVolume(np.ascontiguousarray(data), geom, names, {"layers": sorted(layers)})


def write(path, vol: LabelVolume, reference=None) -> None:
    """Write LPS geometry and one Slicer segment key set per named value."""
    import nrrd
    g = vol.geometry or VoxelGeometry()
    d = np.asarray(g.direction, dtype=float)
    dz, dy, dx = g.spacing
    header = {
        "type": vol.data.dtype.name, "dimension": 3, "space": "left-posterior-superior",
        "space directions": np.stack([d[:, 0] * dx, d[:, 1] * dy, d[:, 2] * dz]),
        "space origin": np.asarray(g.origin, dtype=float), "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    for k, (value, name) in enumerate(sorted(vol.names.items())):
        header[f"Segment{k}_ID"] = f"Segment_{value}"
        header[f"Segment{k}_Name"] = name
        header[f"Segment{k}_LabelValue"] = str(value)
        header[f"Segment{k}_Layer"] = "0"
    with atomic_writer(path) as f:
        nrrd.write(f, np.ascontiguousarray(vol.data), header, index_order="C")
