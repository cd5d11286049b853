"""Multi-page TIFF label volumes (tifffile): one page per slice, or one page with one
sample plane per slice (what tifffile writes for a (3, H, W) array by default).

Written as an ImageJ hyperstack (Fiji opens it with its voxel size): `spacing` and
`unit` mm for the slice step, the resolution tags for the pixel size, and the full
geometry (exact spacing, LPS origin and direction) in ImageJ `Properties`
(maskloop_spacing, maskloop_origin, maskloop_direction), which ImageJ keeps.
Values above 65535 are written as 32-bit float (exact to 2^24), ImageJ having no
32-bit integer type. A one-page colour TIFF (RGB pixels) is not a label volume.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..fsutil import atomic_write_bytes
from ..geometry import VoxelGeometry
from .volume import LabelVolume

_UNITS_MM = {"mm": 1.0, "millimeter": 1.0, "micron": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\\u00B5m": 1e-3,
             "nm": 1e-6, "cm": 10.0, "m": 1000.0}


def read_array(path) -> tuple[np.ndarray, object]:
    """(z, y, x) label array of a TIFF and the open file's ImageJ metadata/tags summary."""
    import tifffile
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise FormatError("TIFF contains no images", path)
            s = tif.series[0]
            data = s.asarray()
            page = s.keyframe
            meta = {"imagej": tif.imagej_metadata or {}, "planar": page.planarconfig == 2,
                    "samples": int(page.samplesperpixel),
                    "xres": _res(page, "XResolution"), "yres": _res(page, "YResolution")}
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for a bad file
        raise FormatError(f"cannot read TIFF ({e})", path) from None
    data = np.squeeze(data)
    if meta["samples"] > 1 and not meta["planar"] and data.ndim >= 3 and data.shape[-1] == meta["samples"]:
        raise FormatError(f"a colour image ({meta['samples']} samples per pixel) is not a label map",
                          path, "channels")
    if data.ndim not in (2, 3):
        raise FormatError(f"a label volume must be 2-D or 3-D, got shape {data.shape}", path, "shape")
    return data, meta


def _res(page, tag) -> float:
    t = page.tags.get(tag)
    if t is None:
        return 0.0
    v = t.value
    return float(v[0]) / float(v[1]) if isinstance(v, tuple) and v[1] else float(v or 0)


def _geometry(meta) -> VoxelGeometry | None:
    ij = meta["imagej"]
    props = ij.get("Properties") or {}
    try:
        if "maskloop_spacing" in props:
            return VoxelGeometry(tuple(json.loads(props["maskloop_spacing"])),
                                 tuple(json.loads(props.get("maskloop_origin", "[0, 0, 0]"))),
                                 tuple(map(tuple, json.loads(props.get("maskloop_direction",
                                                                       "[[1,0,0],[0,1,0],[0,0,1]]")))))
    except (ValueError, TypeError):
        pass  # damaged properties: fall back to the ImageJ spacing
    unit = str(ij.get("unit", "")).strip().lower()
    scale = _UNITS_MM.get(unit)
    if scale is None or not meta["xres"] or not meta["yres"]:
        return None
    dz = float(ij.get("spacing", 1.0)) * scale
    return VoxelGeometry((dz, scale / meta["yres"], scale / meta["xres"]), known=("spacing",))


def read(path) -> LabelVolume:
    data, meta = read_array(path)
    geom = _geometry(meta) if data.ndim == 3 else None
    names = {}
    props = meta["imagej"].get("Properties") or {}
    if "maskloop_names" in props:
        try:
            names = {int(k): str(v) for k, v in json.loads(props["maskloop_names"]).items()}
        except (ValueError, TypeError, AttributeError):
            names = {}
    return LabelVolume(np.ascontiguousarray(data), geom, names, {})


def write(path, vol: LabelVolume, reference=None) -> None:
    import tifffile
    g = vol.geometry or VoxelGeometry()
    data = vol.data
    if data.dtype.itemsize > 2 or data.dtype.kind != "u":
        if data.size and int(data.max()) > 2 ** 24:
            raise FormatError(f"label values up to {int(data.max())} do not fit an ImageJ TIFF; "
                              f"use --volume-format nrrd or nifti", path)
        data = data.astype(np.uint16 if (not data.size or int(data.max()) <= 65535) else np.float32)
    dz, dy, dx = g.spacing
    props = {"maskloop_spacing": json.dumps(list(g.spacing)), "maskloop_origin": json.dumps(list(g.origin)),
             "maskloop_direction": json.dumps([list(r) for r in g.direction])}
    if vol.names:
        props["maskloop_names"] = json.dumps({str(k): v for k, v in sorted(vol.names.items())})
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, imagej=True, resolution=(1.0 / dx, 1.0 / dy),
                     metadata={"spacing": dz, "unit": "mm", "axes": "ZYX", "Properties": props},
                     compression="zlib")
    atomic_write_bytes(path, buf.getvalue())
