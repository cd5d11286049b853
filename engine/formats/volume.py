"""Label volumes: one integer array (z, y, x) with its voxel geometry and segment names.

Four file formats, one module each, each with `read(path) -> LabelVolume` and
`write(path, volume, reference=None)`:
- volume_nrrd.py      NRRD / NHDR (pynrrd); Slicer's segment keys name the values
- volume_nifti.py     NIfTI-1 .nii / .nii.gz (nibabel); RAS on disk, LPS here
- volume_tiff.py      multi-page TIFF (tifffile, ImageJ hyperstack with spacing)
- volume_dicomseg.py  DICOM-SEG (highdicom); segment labels name the values

This module holds what they share: the LabelVolume, format detection, checks on the
values, and the orientation rule that lines a volume up with a stack (`align`).
Geometry follows engine/geometry.py: arrays (z, y, x), spacing (dz, dy, dx) mm, origin
and direction in LPS.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import FormatError
from ..geometry import VoxelGeometry

#: --volume-format name -> (module, file suffix written)
FORMATS = {
    "nrrd": ("volume_nrrd", ".nrrd"),
    "nifti": ("volume_nifti", ".nii.gz"),
    "tiff": ("volume_tiff", ".tif"),
    "dicom-seg": ("volume_dicomseg", ".dcm"),
}
KINDS = ("instance", "class")
_SUFFIXES = {".nrrd": "nrrd", ".nhdr": "nrrd", ".nii": "nifti", ".nii.gz": "nifti", ".tif": "tiff",
             ".tiff": "tiff", ".dcm": "dicom-seg"}


@dataclass
class LabelVolume:
    data: np.ndarray                           # (z, y, x) non-negative integers, 0 = background
    geometry: Optional[VoxelGeometry] = None   # None: the file carries none
    names: dict = field(default_factory=dict)  # value -> segment / label name
    extra: dict = field(default_factory=dict)  # format specifics (DICOM-SEG: referenced UIDs)

    @property
    def shape(self) -> tuple:
        return tuple(int(v) for v in self.data.shape)


def module(fmt: str):
    if fmt not in FORMATS:
        raise FormatError(f"unknown volume format {fmt!r} (known: {', '.join(FORMATS)})", None, "volume-format")
    return importlib.import_module(f".{FORMATS[fmt][0]}", __package__)


def suffix_of(fmt: str) -> str:
    return FORMATS[fmt][1]


def file_suffixes(fmt: str) -> tuple:
    """The suffixes that name a file of this format (an export OUT ending so is a file)."""
    return tuple(suf for suf, f in _SUFFIXES.items() if f == fmt and suf != ".nhdr")


def detect(path) -> str:
    """The volume format of a file, by suffix, then by content (DICOM has no fixed suffix)."""
    path = Path(path)
    name = path.name.lower()
    for suf in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suf):
            return _SUFFIXES[suf]
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        raise FormatError(f"cannot read file ({e.strerror or e})", path) from None
    if head[128:132] == b"DICM":
        return "dicom-seg"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    raise FormatError("not a label volume this version reads (NRRD, NIfTI, TIFF, DICOM-SEG)", path)


def read_volume(path, fmt: Optional[str] = None) -> LabelVolume:
    """Read and check a label volume file."""
    path = Path(path)
    if not path.is_file():
        raise FormatError("label volume not found", path)
    fmt = fmt or detect(path)
    vol = module(fmt).read(path)
    vol.data = integer_labels(vol.data, path)
    return vol


def integer_labels(arr: np.ndarray, path) -> np.ndarray:
    """(z, y, x) non-negative integers; a 2-D array is one slice."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FormatError(f"a label volume must be 3-D, got shape {arr.shape}", path, "shape")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise FormatError("label volume has non-integer values", path, "dtype")
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint32).max):
            raise FormatError("label values must lie in 0..2^32-1", path, "values")
        return arr.astype(np.uint32)
    if arr.dtype.kind not in "iu":
        raise FormatError(f"label volume must hold integers, got {arr.dtype}", path, "dtype")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise FormatError(f"label volume has negative values (min {arr.min()})", path, "values")
    return arr


def smallest_uint(max_value: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise FormatError(f"{max_value} labels do not fit a 32-bit label volume")


# --- lining a volume up with a stack -------------------------------------------------------

def describe(shape, geometry: Optional[VoxelGeometry]) -> str:
    """'300x512x512 (z, y, x), spacing 2.5 x 0.7 x 0.7 mm' for error messages."""
    s = f"{'x'.join(str(v) for v in shape)} (z, y, x)"
    if geometry is not None and "spacing" in geometry.known:
        s += ", spacing " + " x ".join(f"{v:g}" for v in geometry.spacing) + " mm"
    return s


def _close(a, b, tol) -> bool:
    return bool(np.all(np.abs(np.asarray(a, float) - np.asarray(b, float)) <= tol))


def _axis_map(vol_dir: np.ndarray, stack_dir: np.ndarray):
    """For each stack axis (x, y, z): (volume axis, sign) pointing the same way, or None
    when the two frames are not a flip / permutation of each other (oblique)."""
    m = stack_dir.T @ vol_dir   # m[s, v]: cosine between stack axis s and volume axis v
    out = []
    for s in range(3):
        v = int(np.argmax(np.abs(m[s])))
        if abs(abs(m[s, v]) - 1.0) > 1e-3:
            return None
        out.append((v, 1 if m[s, v] > 0 else -1))
    if len({v for v, _ in out}) != 3:
        return None
    return out


def align(vol: LabelVolume, stack_shape: tuple, stack_geom: Optional[VoxelGeometry], path,
          stack_name: str) -> tuple[np.ndarray, Optional[VoxelGeometry]]:
    """The volume's array in the stack's index order, and the geometry the stack should
    adopt (None: keep its own).

    Where both carry a direction, the volume is flipped / transposed onto the stack's
    axes (NIfTI stored RAS-first, NRRD space directions, a reversed slice order); then
    shape, spacing and origin must agree. Where the stack lacks geometry (a plain TIFF),
    shapes must agree and the stack adopts what the volume carries.
    FormatError naming both shapes and spacings otherwise; nothing is changed."""
    data, geom = vol.data, vol.geometry

    def mismatch(what: str) -> FormatError:
        return FormatError(f"{what}: the volume is {describe(data.shape, geom)}, stack '{stack_name}' is "
                           f"{describe(stack_shape, stack_geom)}", path, "geometry")

    both_dir = (geom is not None and stack_geom is not None
                and "direction" in geom.known and "direction" in stack_geom.known)
    if both_dir:
        vd, sd = np.asarray(geom.direction), np.asarray(stack_geom.direction)
        amap = _axis_map(vd, sd)
        if amap is None:
            raise mismatch("the volume's axes are oblique to the stack's (not a flip or permutation)")
        # stack axis s (x, y, z) <- volume axis v; arrays are (z, y, x): array axis = 2 - axis
        perm = [2 - amap[2 - a][0] for a in range(3)]
        data = np.transpose(data, perm)
        for a in range(3):
            if amap[2 - a][1] < 0:
                data = np.flip(data, axis=a)
        # where the aligned array's voxel (0, 0, 0) lies in the volume's own indices (x, y, z)
        vshape_xyz = vol.data.shape[::-1]
        corner = [0.0, 0.0, 0.0]
        for s, (v, sign) in enumerate(amap):
            corner[v] = 0.0 if sign > 0 else vshape_xyz[v] - 1
        origin = (geom.affine_lps() @ np.array([*corner, 1.0]))[:3]
        spacing_xyz = np.array(geom.spacing[::-1])
        spacing = tuple(float(spacing_xyz[amap[s][0]]) for s in (2, 1, 0))
        geom = VoxelGeometry(spacing, tuple(origin), stack_geom.direction, geom.known)
    data = np.ascontiguousarray(data)
    if tuple(data.shape) != tuple(stack_shape):
        raise mismatch("shapes differ")
    if geom is None:
        return data, None
    if stack_geom is None:
        return data, geom
    tol = 1e-3 * max(max(geom.spacing), max(stack_geom.spacing)) + 1e-4
    shared = set(geom.known) & set(stack_geom.known)
    if "spacing" in shared and not _close(geom.spacing, stack_geom.spacing, tol):
        raise mismatch("voxel spacings differ")
    if "origin" in shared and not _close(geom.origin, stack_geom.origin, max(tol, 1e-2 * min(geom.spacing))):
        o1 = ", ".join(f"{v:g}" for v in geom.origin)
        o2 = ", ".join(f"{v:g}" for v in stack_geom.origin)
        raise mismatch(f"origins differ ({o1} vs {o2} mm LPS)")
    missing = set(geom.known) - set(stack_geom.known)
    if not missing:
        return data, None
    # the stack adopts what it did not know (a TIFF stack has no origin or direction)
    merged = VoxelGeometry(
        stack_geom.spacing if "spacing" in stack_geom.known else geom.spacing,
        stack_geom.origin if "origin" in stack_geom.known else geom.origin,
        stack_geom.direction if "direction" in stack_geom.known else geom.direction,
        tuple(k for k in ("spacing", "origin", "direction") if k in set(geom.known) | set(stack_geom.known)))
    return data, merged
