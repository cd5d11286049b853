"""Source: one openable thing (plain image, TIFF stack, DICOM series or multi-frame file)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..geometry import VoxelGeometry, optional_from_json

KINDS = ("image", "stack", "dicom_series", "dicom_multiframe")


@dataclass(frozen=True)
class Source:
    """One openable thing: a plain image, a TIFF stack, a DICOM series or multi-frame file."""

    kind: str                    # "image" | "stack" | "dicom_series" | "dicom_multiframe"
    path: str                    # the file, or the folder of a DICOM series
    files: tuple[str, ...] = ()  # dicom_series: slice files relative to path, in slice order
    n_slices: int = 1
    height: int = 0
    width: int = 0
    dtype: str = "uint8"         # numpy dtype of what read_slice returns
    channels: int = 1            # 1 (grey) or 3 (RGB)
    modality: str = ""           # "CT", "MR", ... for DICOM, "" otherwise
    name: str = ""               # display name
    geometry: Optional[VoxelGeometry] = None  # voxel size, origin, direction when the data has them
    # The file's own default display window (DICOM WindowCenter/WindowWidth), in the units
    # read_slice returns; None when the file names none.
    window: Optional[tuple[float, float]] = None   # (center, width)
    unit: str = ""               # "HU" only when the rescale says Hounsfield units, else ""

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "path": self.path, "files": list(self.files),
            "n_slices": self.n_slices, "height": self.height, "width": self.width,
            "dtype": self.dtype, "channels": self.channels, "modality": self.modality,
            "name": self.name,
            **({"geometry": self.geometry.to_json()} if self.geometry is not None else {}),
            **({"window": list(self.window)} if self.window is not None else {}),
            **({"unit": self.unit} if self.unit else {}),
        }

    @classmethod
    def from_json(cls, d: dict) -> "Source":
        # KeyError/TypeError/ValueError on malformed input: the project names the field.
        kind = str(d["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown source kind {kind!r}")
        files = d.get("files") or []
        if not isinstance(files, (list, tuple)):
            raise TypeError("'files' must be a list")
        src = cls(
            kind=kind, path=str(d["path"]), files=tuple(str(f) for f in files),
            n_slices=int(d["n_slices"]), height=int(d["height"]), width=int(d["width"]),
            dtype=str(np.dtype(d.get("dtype", "uint8"))), channels=int(d.get("channels", 1)),
            modality=str(d.get("modality", "")), name=str(d.get("name", "")),
            geometry=optional_from_json(d.get("geometry")),
            window=_window_from_json(d.get("window")), unit=str(d.get("unit", "")),
        )
        if src.n_slices < 1 or src.height < 1 or src.width < 1 or src.channels not in (1, 3):
            raise ValueError("n_slices, height, width must be >= 1 and channels 1 or 3")
        if kind == "dicom_series" and len(src.files) != src.n_slices:
            raise ValueError(f"{len(src.files)} files for {src.n_slices} slices")
        return src


def _window_from_json(w) -> Optional[tuple[float, float]]:
    if w is None:
        return None
    if not isinstance(w, (list, tuple)) or len(w) != 2:
        raise TypeError("'window' must be [center, width]")
    c, width = float(w[0]), float(w[1])
    if not (np.isfinite(c) and np.isfinite(width) and width > 0):
        raise ValueError("'window' needs a finite center and a positive width")
    return (c, width)
