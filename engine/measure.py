"""Per-instance measurements of 2-D masks, with units (scikit-image does the measuring).

Every shape and intensity value comes from `skimage.measure.regionprops_table`; this module
only places masks, converts offsets and names columns. Instances are measured on their
bbox crops, packed side by side into one small mosaic label image per item, so one
regionprops_table call measures an item's instances without a full-image label map — and
overlapping instances are each measured whole (a full-image label map would cut them).

Column names carry their unit: `area_um2`, `perimeter_um`, `centroid_x_px`, `orientation_deg`,
`intensity_mean_HU` (CT) or `intensity_mean_raw`. Lengths are in the table's unit, or px
when no scale exists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from skimage.measure import regionprops_table

from .units import PIXELS, UNITS_MM, column

LEVELS = ("instance", "object", "item", "stack")

# (output name, regionprops property, power of length in its unit; None: derived here)
SHAPE_2D = (
    ("area", "area", 2),
    ("perimeter", "perimeter_crofton", 1),  # Crofton: within 1 % on digitised disks (chain code: +5 %)
    ("equivalent_diameter", "equivalent_diameter_area", 1),
    ("major_axis_length", "axis_major_length", 1),
    ("minor_axis_length", "axis_minor_length", 1),
    ("feret_diameter_max", "feret_diameter_max", 1),
    ("orientation_deg", "orientation", 0),
    ("eccentricity", "eccentricity", 0),
    ("solidity", "solidity", 0),
    ("circularity", None, 0),  # 4 pi A / P^2
)
INTENSITY = (("mean", "intensity_mean"), ("std", "intensity_std"), ("min", "intensity_min"),
             ("max", "intensity_max"))
ID_COLUMNS = ("image", "item", "slice", "instance", "object", "label", "source", "score")


@dataclass
class Units:
    """How one table's columns are named and scaled: a length unit (or px) and an intensity unit."""

    length: str = PIXELS       # "px" or one of units.CANONICAL
    intensity: str = "raw"     # "HU" for CT, else "raw"

    def per_mm(self) -> float:
        return 1.0 / UNITS_MM[self.length]

    def spacing2d(self, scale) -> tuple[float, float]:
        """A source's (dy, dx) pixel size in this table's unit; (1, 1) for pixels."""
        if self.length == PIXELS or scale is None or not scale.known:
            return (1.0, 1.0)
        f = self.per_mm()
        return (scale.pixel_mm[0] * f, scale.pixel_mm[1] * f)


@dataclass
class Table:
    """Tidy measurements: one dict per row, in `columns` order."""

    level: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    units: Units = field(default_factory=Units)
    notes: list[str] = field(default_factory=list)
    #: the other table of the same pass: item/stack summaries of an instance/object table, or back
    companion: Optional["Table"] = None

    def values(self, name: str) -> np.ndarray:
        return np.array([r.get(name, np.nan) for r in self.rows], dtype=float)

    def find(self, stem: str) -> Optional[str]:
        """The column whose name starts with `stem` + '_' (e.g. 'area' -> 'area_um2')."""
        for c in self.columns:
            if c == stem or (c.startswith(stem + "_") and not c[len(stem) + 1:].startswith(("mean", "median"))):
                return c
        return None


def instance_columns(units: Units) -> list[str]:
    u = units.length
    cols = list(ID_COLUMNS)
    cols += [column(name, u, p) for name, _prop, p in SHAPE_2D]
    cols += ["bbox_x0_px", "bbox_y0_px", "bbox_width_px", "bbox_height_px", "centroid_x_px", "centroid_y_px"]
    cols += [f"intensity_{k}_{units.intensity}" for k, _ in INTENSITY]
    cols += [f"intensity_integrated_{units.intensity}"]
    return cols


# --- packing crops into a mosaic ---------------------------------------------------------

def _clip_crop(inst, shape) -> Optional[tuple[np.ndarray, int, int]]:
    """The instance's mask cut to the image and to its set pixels: (mask, x0, y0) or None."""
    H, W = shape[:2]
    x0, y0 = max(inst.x0, 0), max(inst.y0, 0)
    x1, y1 = min(inst.x0 + inst.width, W), min(inst.y0 + inst.height, H)
    if x1 <= x0 or y1 <= y0:
        return None
    m = inst.mask[y0 - inst.y0:y1 - inst.y0, x0 - inst.x0:x1 - inst.x0]
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    m = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return m, x0 + int(cols[0]), y0 + int(rows[0])


def pack(sizes: Sequence[tuple[int, int]], gap: int = 1) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Shelf packing of (h, w) boxes: their (row, col) places and the mosaic's (H, W)."""
    if not sizes:
        return [], (0, 0)
    total = sum((h + gap) * (w + gap) for h, w in sizes)
    width = max(max(w for _h, w in sizes) + gap, int(math.sqrt(total) * 1.3))
    places, r, c, shelf = [], 0, 0, 0
    for h, w in sizes:
        if c + w > width:
            r, c, shelf = r + shelf + gap, 0, 0
        places.append((r, c))
        c += w + gap
        shelf = max(shelf, h)
    return places, (r + shelf, width)


def grey(image: np.ndarray) -> np.ndarray:
    """The raw values measured: the image itself, or the mean of an RGB image's channels."""
    return image.mean(axis=2) if image.ndim == 3 else image


def measure_instances(instances, image: np.ndarray, spacing=(1.0, 1.0), units: Optional[Units] = None,
                      meta: Optional[dict] = None) -> list[dict]:
    """One row per non-empty instance: shape, place and raw intensity (columns of instance_columns).

    `spacing` is (dy, dx) in the table's length unit; `meta` adds fixed columns (item, image, slice).
    """
    units = units or Units()
    img = grey(np.asarray(image))
    crops, kept = [], []
    for inst in instances:
        c = _clip_crop(inst, img.shape)
        if c is not None:
            crops.append(c)
            kept.append(inst)
    if not crops:
        return []
    places, shape = pack([m.shape for m, _x, _y in crops])
    labels = np.zeros(shape, dtype=np.int32)
    values = np.zeros(shape, dtype=img.dtype)
    for k, ((m, x0, y0), (r, c)) in enumerate(zip(crops, places), start=1):
        h, w = m.shape
        labels[r:r + h, c:c + w][m] = k
        values[r:r + h, c:c + w] = img[y0:y0 + h, x0:x0 + w]
    dy, dx = float(spacing[0]), float(spacing[1])
    props = [p for _n, p, _pow in SHAPE_2D if p is not None] + ["label", "bbox", "centroid"]
    props += [p for _n, p in INTENSITY]
    isotropic = dy == dx
    if not isotropic:  # skimage's perimeter needs square pixels
        props.remove("perimeter_crofton")
    t = regionprops_table(labels, values, properties=props, spacing=(dy, dx))
    u, iu = units.length, units.intensity
    rows = []
    for j, k in enumerate(t["label"]):
        inst = kept[k - 1]
        m, x0, y0 = crops[k - 1]
        r, c = places[k - 1]
        row = dict(meta or {})
        row.update(instance=inst.id, object=inst.object_id or inst.id, label=inst.label,
                   source=inst.source, score=inst.score)
        for name, prop, p in SHAPE_2D:
            if prop is None or prop not in t:
                continue
            v = float(t[prop][j])
            row[column(name, u, p)] = math.degrees(v) if prop == "orientation" else v
        area = row[column("area", u, 2)]
        per = row.get(column("perimeter", u, 1), float("nan"))
        row.setdefault(column("perimeter", u, 1), per)
        row["circularity"] = 4 * math.pi * area / per ** 2 if per and per > 0 else float("nan")
        row["bbox_x0_px"], row["bbox_y0_px"] = x0, y0
        row["bbox_width_px"], row["bbox_height_px"] = m.shape[1], m.shape[0]
        # regionprops' centroid is in scaled mosaic coordinates: back to image pixels
        row["centroid_y_px"] = float(t["centroid-0"][j]) / dy - r + y0
        row["centroid_x_px"] = float(t["centroid-1"][j]) / dx - c + x0
        for key, prop in INTENSITY:
            row[f"intensity_{key}_{iu}"] = float(t[prop][j])
        row[f"intensity_integrated_{iu}"] = float(t["intensity_mean"][j]) * int(m.sum())
        rows.append(row)
    return rows


def union_areas(instances, shape) -> dict[str, int]:
    """Pixels covered by each label (overlaps counted once): the numerator of area fractions."""
    out: dict[str, int] = {}
    by_label: dict[str, list] = {}
    for inst in instances:
        by_label.setdefault(inst.label, []).append(inst)
    for label, insts in by_label.items():
        canvas = np.zeros(shape[:2], dtype=bool)
        for inst in insts:
            inst.paste_into(canvas)
        out[label] = int(np.count_nonzero(canvas))
    return out


# --- summaries per item / stack and label ----------------------------------------------------

def summary_columns(units: Units, level: str) -> list[str]:
    u = units.length
    if level == "stack":
        return ["image", "label", "count", "volume_fraction", column("label_volume", u, 3),
                column("total_volume", u, 3), column("equivalent_sphere_diameter_mean", u),
                column("equivalent_sphere_diameter_median", u)]
    return ["image", "item", "slice", "label", "count", "area_fraction", column("label_area", u, 2),
            column("image_area", u, 2), column("equivalent_diameter_mean", u),
            column("equivalent_diameter_median", u)]


def summarise(rows: list[dict], covered: dict[str, int], total_px: int, px_size: float,
              units: Units, level: str, meta: dict, labels: Sequence[str]) -> list[dict]:
    """One row per label: count, covered fraction, mean and median equivalent diameter.

    `covered` maps label -> covered pixels (voxels), `total_px` is the image (volume) size in
    pixels (voxels), `px_size` one pixel's area (voxel's volume) in the table's unit.
    """
    u = units.length
    size_col = column("equivalent_sphere_diameter" if level == "stack" else "equivalent_diameter", u)
    out = []
    for label in labels:
        sizes = np.array([r[size_col] for r in rows if r["label"] == label], dtype=float)
        row = dict(meta, label=label, count=int(sizes.size))
        frac = covered.get(label, 0) / total_px if total_px else float("nan")
        if level == "stack":
            row.update({"volume_fraction": frac, column("label_volume", u, 3): covered.get(label, 0) * px_size,
                        column("total_volume", u, 3): total_px * px_size})
            stem = "equivalent_sphere_diameter"
        else:
            row.update({"area_fraction": frac, column("label_area", u, 2): covered.get(label, 0) * px_size,
                        column("image_area", u, 2): total_px * px_size})
            stem = "equivalent_diameter"
        row[column(stem + "_mean", u)] = float(sizes.mean()) if sizes.size else float("nan")
        row[column(stem + "_median", u)] = float(np.median(sizes)) if sizes.size else float("nan")
        out.append(row)
    return out


def measure_annotation(ann, image: np.ndarray, scale=None, units: Optional[Units] = None,
                       meta: Optional[dict] = None) -> Table:
    """Instance table of one item (what the GUI shows for the current item)."""
    units = units or Units()
    rows = measure_instances(ann.instances, image, units.spacing2d(scale), units,
                             dict(meta or {}, item=ann.item_id))
    return Table("instance", instance_columns(units), rows, units)


def write_csv(table: Table, path) -> None:
    """The table as CSV, written atomically (a failure leaves no file or the old one)."""
    import csv
    import io
    from .fsutil import atomic_write_text
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=table.columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in table.rows:
        w.writerow({k: _fmt(row.get(k)) for k in table.columns})
    atomic_write_text(path, buf.getvalue())


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v
