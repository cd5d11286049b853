"""NIfTI-1 label volumes (.nii, .nii.gz) with nibabel, as ITK-SNAP and 3D Slicer use them.

NIfTI's affine maps (i, j, k) voxel indices -- the first array axis is x -- to RAS mm;
MaskLoop's geometry is LPS with (z, y, x) arrays, so reading flips the first two world
axes and transposes the array, and writing does the reverse. The sform is used when its
code is set, else the qform; both are written (code 1, scanner) with units mm. NIfTI
stores the affine in float32: a round trip keeps geometry to about 1e-6 relative.
NIfTI carries no segment names (use --labels).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..fsutil import atomic_write_bytes
from ..geometry import VoxelGeometry
from .volume import LabelVolume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read(path) -> LabelVolume:
    import nibabel as nib
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise FormatError(f"cannot read NIfTI ({e})", path) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise FormatError(f"a label volume must be 3-D, got shape {data.shape}", path, "dim")
    if data.ndim == 2:
        data = data[..., None]
    hdr = img.header
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    zooms = tuple(float(v) for v in hdr.get_zooms()[:3])
    unit = hdr.get_xyzt_units()[0]
    scale = {"meter": 1000.0, "micron": 1e-3}.get(unit, 1.0)
    if sform_code > 0 or qform_code > 0:
        aff = _RAS_TO_LPS @ (img.get_sform() if sform_code > 0 else img.get_qform())
        m = aff[:3, :3] * scale
        spacing_xyz = np.linalg.norm(m, axis=0)
        if np.any(spacing_xyz <= 0):
            raise FormatError("the affine has a zero column", path, "sform")
        geom = VoxelGeometry(tuple(spacing_xyz[::-1]), tuple(aff[:3, 3] * scale),
                             tuple(map(tuple, m / spacing_xyz[None, :])))
    else:
        geom = VoxelGeometry(tuple(v * scale for v in zooms[::-1]), known=("spacing",))
    return LabelVolume(np.ascontiguousarray(np.transpose(data, (2, 1, 0))), geom, {}, {})


def write(path, vol: LabelVolume, reference=None) -> None:
    import nibabel as nib
    g = vol.geometry or VoxelGeometry()
    aff = np.linalg.inv(_RAS_TO_LPS) @ g.affine_lps()
    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(vol.data, (2, 1, 0))), aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units("mm")
    raw = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=6, mtime=0)
    atomic_write_bytes(path, raw)
