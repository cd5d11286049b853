"""Per-object measurements of 3-D objects (instances sharing an object id on a stack's slices).

Each object is assembled from its instances' crops into a small (z, y, x) volume — never a
full-stack label volume — and measured with scikit-image at the stack's anisotropic voxel
spacing: volume and intensity statistics from `regionprops`, the surface from
`marching_cubes` + `mesh_surface_area`. An instance without an object id is its own object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from skimage.measure import marching_cubes, mesh_surface_area, regionprops

from .measure import Units, grey, _clip_crop
from .units import column


@dataclass
class Piece:
    """One instance of an object on one slice: its mask crop, place and raw values under it."""

    z: int
    item: str
    instance: object      # the Instance
    mask: np.ndarray
    x0: int
    y0: int
    values: np.ndarray


def pieces_of(ann, image: np.ndarray, z: int) -> list[Piece]:
    img = grey(np.asarray(image))
    out = []
    for inst in ann.instances:
        c = _clip_crop(inst, img.shape)
        if c is None:
            continue
        m, x0, y0 = c
        h, w = m.shape
        out.append(Piece(z, ann.item_id, inst, m, x0, y0, img[y0:y0 + h, x0:x0 + w].copy()))
    return out


def object_columns(units: Units) -> list[str]:
    u, iu = units.length, units.intensity
    return ["image", "object", "label", "source", "item", "instance", "n_instances",
            "slice_first", "slice_last", "n_slices", "voxel_count",
            column("volume", u, 3), column("surface_area", u, 2), column("equivalent_sphere_diameter", u),
            "sphericity", column("axis_major_length", u), column("axis_middle_length", u),
            column("axis_minor_length", u), "centroid_z_px", "centroid_y_px", "centroid_x_px",
            f"intensity_mean_{iu}", f"intensity_std_{iu}", f"intensity_min_{iu}", f"intensity_max_{iu}",
            f"intensity_integrated_{iu}"]


def group_objects(pieces: list[Piece]) -> dict[str, list[Piece]]:
    groups: dict[str, list[Piece]] = {}
    for p in pieces:
        groups.setdefault(p.instance.object_id or p.instance.id, []).append(p)
    return groups


def assemble(pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The object's bool volume, its raw values and the (z, y, x) offset of voxel (0, 0, 0)."""
    z0 = min(p.z for p in pieces)
    z1 = max(p.z for p in pieces) + 1
    y0 = min(p.y0 for p in pieces)
    x0 = min(p.x0 for p in pieces)
    y1 = max(p.y0 + p.mask.shape[0] for p in pieces)
    x1 = max(p.x0 + p.mask.shape[1] for p in pieces)
    vol = np.zeros((z1 - z0, y1 - y0, x1 - x0), dtype=bool)
    val = np.zeros(vol.shape, dtype=np.float64)
    for p in pieces:
        h, w = p.mask.shape
        sl = (p.z - z0, slice(p.y0 - y0, p.y0 - y0 + h), slice(p.x0 - x0, p.x0 - x0 + w))
        vol[sl] |= p.mask
        val[sl] = np.where(p.mask, p.values, val[sl])
    return vol, val, (z0, y0, x0)


SMOOTH_SIGMA = 0.8  # voxels


def surface_area(vol: np.ndarray, spacing) -> float:
    """Area of the marching-cubes surface at level 0.5 of the mask, lightly smoothed.

    On the raw binary mask marching cubes keeps the voxel staircase: a voxelised sphere reads
    9 % too large (19 % with 4:1 slices). A Gaussian of 0.8 voxel first brings resolved
    spheres within 4 % (tests); an object too small to survive it is measured unsmoothed.
    """
    from scipy.ndimage import gaussian_filter
    padded = np.pad(vol, 3).astype(np.float32)
    smooth = gaussian_filter(padded, SMOOTH_SIGMA)
    field = smooth if smooth.max() > 0.5 else padded
    verts, faces, _n, _v = marching_cubes(field, level=0.5, spacing=tuple(float(s) for s in spacing))
    return float(mesh_surface_area(verts, faces))


def principal_axes(eigvals) -> tuple[float, float, float]:
    """Full axis lengths of the ellipsoid with the object's inertia (skimage's 3-D convention)."""
    e0, e1, e2 = (float(v) for v in eigvals)  # descending
    return tuple(math.sqrt(max(0.0, 10 * v)) for v in (e0 + e1 - e2, e0 - e1 + e2, -e0 + e1 + e2))


def measure_object(pieces: list[Piece], spacing, units: Units, meta: Optional[dict] = None) -> dict:
    """One object's row. `spacing` is (dz, dy, dx) in the table's length unit."""
    vol, val, (z0, y0, x0) = assemble(pieces)
    dz, dy, dx = (float(s) for s in spacing)
    rp = regionprops(vol.astype(np.uint8), intensity_image=val, spacing=(dz, dy, dx))[0]
    u, iu = units.length, units.intensity
    volume = float(rp.area)
    area = surface_area(vol, (dz, dy, dx))
    eq = (6 * volume / math.pi) ** (1 / 3)
    # the representative instance: the largest slice (a click on the row goes there)
    rep = max(pieces, key=lambda p: int(p.mask.sum()))
    by_label: dict[str, int] = {}
    for p in pieces:
        by_label[p.instance.label] = by_label.get(p.instance.label, 0) + int(p.mask.sum())
    sources = sorted({p.instance.source for p in pieces})
    cz, cy, cx = (float(v) for v in rp.centroid)
    axes = principal_axes(rp.inertia_tensor_eigvals)
    n_vox = int(vol.sum())
    row = dict(meta or {})
    row.update({
        "object": rep.instance.object_id or rep.instance.id,
        "label": max(by_label, key=by_label.get), "source": "+".join(sources),
        "item": rep.item, "instance": rep.instance.id, "n_instances": len(pieces),
        "slice_first": z0, "slice_last": z0 + vol.shape[0] - 1,
        "n_slices": len({p.z for p in pieces}), "voxel_count": n_vox,
        column("volume", u, 3): volume, column("surface_area", u, 2): area,
        column("equivalent_sphere_diameter", u): eq,
        "sphericity": (math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area > 0 else float("nan"),
        column("axis_major_length", u): axes[0], column("axis_middle_length", u): axes[1],
        column("axis_minor_length", u): axes[2],
        "centroid_z_px": cz / dz + z0, "centroid_y_px": cy / dy + y0, "centroid_x_px": cx / dx + x0,
        f"intensity_mean_{iu}": float(rp.intensity_mean), f"intensity_std_{iu}": float(rp.intensity_std),
        f"intensity_min_{iu}": float(rp.intensity_min), f"intensity_max_{iu}": float(rp.intensity_max),
        f"intensity_integrated_{iu}": float(rp.intensity_mean) * n_vox,
    })
    return row


def measure_objects(pieces: list[Piece], spacing, units: Units, meta: Optional[dict] = None,
                    cancel=None) -> list[dict]:
    from .jobs import check
    rows = []
    for _oid, group in group_objects(pieces).items():
        check(cancel)
        rows.append(measure_object(group, spacing, units, meta))
    rows.sort(key=lambda r: (r["slice_first"], r["centroid_y_px"], r["centroid_x_px"]))
    return rows
