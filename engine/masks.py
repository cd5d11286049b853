"""Mask helpers: RLE (pycocotools), polygons, PNG/base64 (labelme), bbox, holes, merge, split.

Full-image masks are bool (H, W) arrays; Instances hold bbox-cropped masks
(engine.annotations). Nothing here loads torch or Qt.
"""
from __future__ import annotations

import base64
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from .annotations import Instance
from .errors import FormatError


# --- RLE ----------------------------------------------------------------------------

def rle_encode(mask: np.ndarray) -> dict:
    """Full-image bool mask -> COCO compressed RLE with `counts` as str (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle




def rle_decode(rle: dict, path=None, field=None) -> np.ndarray:
    """COCO RLE (compressed str/bytes or uncompressed list counts) -> bool (H, W)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, list):
            if sum(int(c) for c in counts) != h * w:
                raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {h}*{w}")
            rle = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        m = coco_mask.decode(rle)
    except FormatError:
        raise
    except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors on junk
        raise FormatError(f"invalid RLE segmentation ({e})", path, field) from None
    return m.astype(bool)


# --- polygons -----------------------------------------------------------------------

def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int,
                     path=None, field=None) -> np.ndarray:
    """COCO polygons (flat [x1, y1, x2, y2, ...] lists) -> bool mask, as pycocotools rasterises."""
    polys = []
    for p in polygons:
        p = [float(v) for v in p]
        if len(p) < 6 or len(p) % 2:
            raise FormatError(f"polygon needs at least 3 (x, y) points, got {len(p)} numbers", path, field)
        polys.append(p)
    if not polys:
        return np.zeros((height, width), dtype=bool)
    rles = coco_mask.frPyObjects(polys, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer contours of a bool mask as COCO flat polygons (holes cannot be kept)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2)
        if len(c) < min_points:
            # Tiny blobs (1-2 px): use the pixel square so the polygon is valid.
            x, y = c.min(axis=0)
            x2, y2 = c.max(axis=0) + 1
            c = np.array([[x, y], [x2, y], [x2, y2], [x, y2]])
        polys.append([float(v) for v in c.flatten()])
    return polys


def fill_polygon(points_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel-centre polygon fill of (N, 2) x,y points, as a drawing tool expects."""
    out = np.zeros((height, width), dtype=np.uint8)
    pts = np.round(np.asarray(points_xy, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(out, [pts], 1)
    return out.astype(bool)


# --- PNG / base64 (labelme's `mask` shape) --------------------------------------------

def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise ValueError("PNG encoding of a mask failed")
    return buf.tobytes()


def mask_to_b64(mask: np.ndarray) -> str:
    return base64.b64encode(mask_to_png_bytes(mask)).decode("ascii")


def b64_to_mask(data: str, path=None, field=None) -> np.ndarray:
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError) as e:
        raise FormatError(f"mask is not valid base64 ({e})", path, field) from None
    return png_to_mask(raw, path, field)


def png_to_mask(raw: bytes, path=None, field=None) -> np.ndarray:
    """A mask PNG's bytes -> bool array (set where the value, or the alpha, is > 0)."""
    arr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise FormatError("mask is not a readable PNG", path, field)
    if arr.ndim == 3:
        arr = arr[..., -1] if arr.shape[2] == 4 else arr.max(axis=2)
    return arr > 0


# --- geometry -----------------------------------------------------------------------



def union_box(instances: Iterable[Instance]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) exclusive box enclosing every instance's crop."""
    boxes = [(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height) for i in instances]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def iou(a: Instance, b: Instance) -> float:
    x0, y0, x1, y1 = union_box([a, b])
    h, w = y1 - y0, x1 - x0
    ma = np.zeros((h, w), bool)
    mb = np.zeros((h, w), bool)
    a.copy(x0=a.x0 - x0, y0=a.y0 - y0).paste_into(ma)
    b.copy(x0=b.x0 - x0, y0=b.y0 - y0).paste_into(mb)
    inter = np.count_nonzero(ma & mb)
    uni = np.count_nonzero(ma | mb)
    return inter / uni if uni else 0.0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the border."""
    m = np.pad(mask.astype(np.uint8), 1)
    flood = m.copy()
    ffmask = np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ffmask, (0, 0), 1)
    holes = flood == 0
    return (m.astype(bool) | holes)[1:-1, 1:-1]




def merge_instances(instances: Sequence[Instance], label: Optional[str] = None) -> Instance:
    """Union of several instances as one new manual instance (label of the first)."""
    if not instances:
        raise ValueError("nothing to merge")
    x0, y0, x1, y1 = union_box(instances)
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for i in instances:
        i.copy(x0=i.x0 - x0, y0=i.y0 - y0).paste_into(m)
    first = instances[0]
    return Instance(mask=m, x0=x0, y0=y0, label=label or first.label, source="manual")


def components(mask: np.ndarray, connectivity: int = 8) -> list[np.ndarray]:
    """Connected components of a bool mask, largest first."""
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=connectivity)
    parts = [lab == k for k in range(1, n)]
    parts.sort(key=lambda p: -int(p.sum()))
    return parts


def split_instance(inst: Instance, line_xy: np.ndarray, thickness: int = 1) -> list[Instance]:
    """Cut an instance along a polyline (image x, y points).

    Pixels under the line go to the neighbouring part, so no pixel is lost.
    Returns one instance per resulting piece; a line that does not cut gives [inst].
    """
    pts = np.asarray(line_xy, dtype=np.float64).reshape(-1, 2) - (inst.x0, inst.y0)
    cut = np.zeros(inst.mask.shape, np.uint8)
    cv2.polylines(cut, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, 1,
                  thickness=max(1, thickness))
    cut = cut.astype(bool) & inst.mask
    # 4-connectivity: a 1-px 8-connected line would otherwise not separate diagonally
    n, lab = cv2.connectedComponents((inst.mask & ~cut).astype(np.uint8), connectivity=4)
    if n <= 2:
        return [inst]
    # give each cut pixel the label of a neighbouring piece, growing until all are placed
    lab = lab.astype(np.int32)
    remaining = cut.copy()
    kernel = np.ones((3, 3), np.uint8)
    while remaining.any():
        grown = cv2.dilate(lab.astype(np.float32), kernel).astype(np.int32)
        take = remaining & (grown > 0)
        if not take.any():
            break
        lab[take] = grown[take]
        remaining &= ~take
    out = []
    for k in range(1, n):
        piece = Instance(mask=lab == k, x0=inst.x0, y0=inst.y0, label=inst.label, source="manual")
        piece.tight()
        if not piece.is_empty():
            out.append(piece)
    out.sort(key=lambda p: -p.area)
    out[0].id = inst.id  # the largest piece keeps the identity
    return out


def paint_disk(mask: np.ndarray, cx: float, cy: float, radius: float, value: bool = True) -> None:
    """Paint a filled disk on a full-size bool mask in place (brush / eraser)."""
    tmp = mask.view(np.uint8) if mask.dtype == bool else mask
    cv2.circle(tmp, (int(round(cx)), int(round(cy))), max(0, int(round(radius))), int(value), -1)
