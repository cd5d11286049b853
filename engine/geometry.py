"""Voxel geometry of a stack, series or label volume (numpy only).

Conventions, one place for all readers and writers:
- A volume array is indexed (z, y, x): slice, row, column.
- `spacing` is (dz, dy, dx) in millimetres: slice spacing, row spacing, column spacing.
- `origin` is the patient/world position (x, y, z) in mm of voxel (0, 0, 0)'s centre, in
  DICOM's LPS frame (NIfTI's RAS is converted on read and write).
- `direction` is a 3x3 matrix whose columns are the unit world vectors of the column (x),
  row (y) and slice (z) index axes, in LPS — DICOM's ImageOrientationPatient gives the first
  two, the slice normal (or the position step) the third.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


def _identity() -> tuple:
    return ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True)
class VoxelGeometry:
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)      # (dz, dy, dx) in mm
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)       # (x, y, z) LPS mm
    direction: tuple = field(default_factory=_identity)        # 3x3, columns = x, y, z axes
    # Which parts the data really carried: a TIFF has an in-plane size but no origin.
    known: tuple[str, ...] = ("spacing", "origin", "direction")

    def __post_init__(self) -> None:
        sp = tuple(float(v) for v in self.spacing)
        if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise ValueError(f"voxel spacing must be three positive numbers, got {self.spacing!r}")
        org = tuple(float(v) for v in self.origin)
        if len(org) != 3 or not all(np.isfinite(org)):
            raise ValueError(f"origin must be three finite numbers, got {self.origin!r}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3) or not np.all(np.isfinite(d)):
            raise ValueError("direction must be a 3x3 matrix of finite numbers")
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", org)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))
        object.__setattr__(self, "known", tuple(self.known))

    @property
    def pixel_size(self) -> tuple[float, float]:
        """(dy, dx) in mm."""
        return (self.spacing[1], self.spacing[2])

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping (x, y, z, 1) voxel indices (column, row, slice) to LPS mm."""
        d = np.asarray(self.direction, dtype=float)
        dz, dy, dx = self.spacing
        a = np.eye(4)
        a[:3, :3] = d * np.array([dx, dy, dz])[None, :]
        a[:3, 3] = self.origin
        return a

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": [list(r) for r in self.direction], "known": list(self.known)}

    @classmethod
    def from_json(cls, d) -> "VoxelGeometry":
        # ValueError/TypeError/KeyError on malformed input: the caller names the file and field.
        if not isinstance(d, dict):
            raise TypeError("geometry must be an object")
        return cls(spacing=tuple(d["spacing"]), origin=tuple(d.get("origin", (0, 0, 0))),
                   direction=tuple(tuple(r) for r in d.get("direction", _identity())),
                   known=tuple(str(k) for k in d.get("known", ("spacing", "origin", "direction"))))


def optional_from_json(d) -> Optional[VoxelGeometry]:
    return None if d is None else VoxelGeometry.from_json(d)
