"""Tiles and seams: cutting a large image into overlapping tiles and merging the
detections across the seams (pieces joined, duplicates dropped on the full-image grid)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from ..annotations import Instance

EDGE_MARGIN = 2          # px: a mask this close to an interior tile edge is a cut piece
DUP_IOU = 0.5            # complete detections from two tiles with this mask IoU are one object
DUP_COVER = 0.8          # ... or when this much of the smaller one lies inside the other
PIECE_IOU = 0.4          # pieces from two tiles whose masks agree this well in the shared region join
PIECE_COVERED = 0.5      # a piece this much inside a whole detection from another tile is dropped
SAFE_MARGIN = 16         # px: a whole detection this far from interior tile edges is preferred


# --------------------------------------------------------------------------------------
# tiles and seams
# --------------------------------------------------------------------------------------

def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `length` with at least `overlap` px overlap."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    n = int(math.ceil((length - tile) / step)) + 1
    # spread the tiles evenly so every overlap is >= `overlap`
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles as (x0, y0, x1, y1), row by row."""
    th, tw = min(tile, height), min(tile, width)
    return [(x, y, x + tw, y + th) for y in tile_starts(height, tile, overlap)
            for x in tile_starts(width, tile, overlap)]


class _Cand:
    """A detection of one tile on the full-image grid."""

    __slots__ = ("inst", "tile", "rect", "cut", "box", "area", "margin")

    def __init__(self, inst: Instance, tile: int, rect, cut: bool, margin: float):
        self.inst, self.tile, self.rect, self.cut, self.margin = inst, tile, rect, cut, margin
        self.box = (inst.x0, inst.y0, inst.x0 + inst.width, inst.y0 + inst.height)
        self.area = inst.area


def _inter(a: Instance, b: Instance, rect=None) -> int:
    """Pixels set in both a and b (optionally only inside rect = (x0, y0, x1, y1))."""
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1, y1 = min(a.x0 + a.width, b.x0 + b.width), min(a.y0 + a.height, b.y0 + b.height)
    if rect is not None:
        x0, y0, x1, y1 = max(x0, rect[0]), max(y0, rect[1]), min(x1, rect[2]), min(y1, rect[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    ma = a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
    mb = b.mask[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]
    return int(np.count_nonzero(ma & mb))


def _area_in(a: Instance, rect) -> int:
    x0, y0 = max(a.x0, rect[0]), max(a.y0, rect[1])
    x1, y1 = min(a.x0 + a.width, rect[2]), min(a.y0 + a.height, rect[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    return int(np.count_nonzero(a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]))


def _rect_and(r, s):
    x0, y0, x1, y1 = max(r[0], s[0]), max(r[1], s[1]), min(r[2], s[2]), min(r[3], s[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _boxes_meet(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _cross_tile_pairs(cands: list[_Cand], tiles: list) -> Iterable[tuple[int, int, tuple]]:
    """(i, j, shared_rect) for candidates of two different, overlapping tiles whose boxes
    meet inside the region both tiles cover."""
    by_tile: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        by_tile.setdefault(c.tile, []).append(i)
    keys = sorted(by_tile)
    for ai, ta in enumerate(keys):
        for tb in keys[ai + 1:]:
            shared = _rect_and(tiles[ta], tiles[tb])
            if shared is None:
                continue
            ia = [i for i in by_tile[ta] if _boxes_meet(cands[i].box, shared)]
            ib = [j for j in by_tile[tb] if _boxes_meet(cands[j].box, shared)]
            if not ia or not ib:
                continue
            ba = np.array([cands[i].box for i in ia]).reshape(-1, 4)
            bb = np.array([cands[j].box for j in ib]).reshape(-1, 4)
            meet = ((ba[:, None, 0] < bb[None, :, 2]) & (bb[None, :, 0] < ba[:, None, 2]) &
                    (ba[:, None, 1] < bb[None, :, 3]) & (bb[None, :, 1] < ba[:, None, 3]))
            for p, q in zip(*np.nonzero(meet)):
                yield ia[p], ib[q], shared


def merge_tiles(per_tile: Sequence[Sequence[Instance]], tiles: Sequence[tuple], height: int, width: int,
                edge_margin: int = EDGE_MARGIN) -> list[Instance]:
    """Merge detections of overlapping tiles (Instances already on the full-image grid).

    1. A detection whose mask comes within `edge_margin` px of an interior tile edge (an
       edge that is not the image border) is a *piece*; others are *whole*.
    2. Whole detections from different tiles that are the same object (mask IoU >= 0.5
       or >= 80 % of the smaller inside the other) are deduplicated, best score kept.
    3. Pieces from different tiles that agree in the region both tiles cover
       (IoU there >= 0.4) are joined into one instance (union of the masks).
    4. A (joined) piece mostly inside a whole detection from another tile is dropped.
    Detections of one tile are never merged with each other (the model's NMS did that).
    """
    cands: list[_Cand] = []
    for t, insts in enumerate(per_tile):
        tx0, ty0, tx1, ty1 = tiles[t]
        for inst in insts:
            x0, y0, x1, y1 = inst.x0, inst.y0, inst.x0 + inst.width, inst.y0 + inst.height
            # distance of the mask to the nearest interior tile edge (image borders do not count)
            gaps = [g for g, interior in ((x0 - tx0, tx0 > 0), (tx1 - x1, tx1 < width),
                                          (y0 - ty0, ty0 > 0), (ty1 - y1, ty1 < height)) if interior]
            margin = float(min(gaps)) if gaps else math.inf
            cands.append(_Cand(inst, t, tiles[t], margin <= edge_margin, margin))
    if not cands:
        return []
    n = len(cands)
    dup: dict[int, list[int]] = {}
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    covered_by: dict[int, list[int]] = {}  # piece -> whole detections it lies inside
    for i, j, shared in _cross_tile_pairs(cands, list(tiles)):
        a, b = cands[i], cands[j]
        inter = _inter(a.inst, b.inst)
        if inter == 0:
            continue
        if not a.cut and not b.cut:
            union = a.area + b.area - inter
            if inter / union >= DUP_IOU or inter / max(1, min(a.area, b.area)) >= DUP_COVER:
                dup.setdefault(i, []).append(j)
                dup.setdefault(j, []).append(i)
        elif a.cut and b.cut:
            ia, ib = _area_in(a.inst, shared), _area_in(b.inst, shared)
            inter_s = _inter(a.inst, b.inst, shared)
            if ia and ib and inter_s / (ia + ib - inter_s) >= PIECE_IOU:
                ra, rb = find(i), find(j)
                if ra != rb:
                    parent[ra] = rb
        else:
            piece, whole = (i, j) if a.cut else (j, i)
            if inter / max(1, cands[piece].area) >= PIECE_COVERED:
                covered_by.setdefault(piece, []).append(whole)

    def score(c: _Cand) -> float:
        return c.inst.score if c.inst.score is not None else 1.0

    # 2. whole detections: greedy over the duplicate graph; the view with the object well
    #    inside its tile (>= SAFE_MARGIN px from interior edges) first, then by score
    def rank(i: int):
        return (-min(cands[i].margin, SAFE_MARGIN), -score(cands[i]))

    kept_whole: set[int] = set()
    for i in sorted((i for i in range(n) if not cands[i].cut), key=rank):
        if not any(j in kept_whole for j in dup.get(i, ())):
            kept_whole.add(i)
    # 3./4. pieces: join by group; drop a group lying mostly inside a whole detection of
    #    another tile (kept, or dropped as a duplicate of a kept one: the same object)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        if cands[i].cut:
            groups.setdefault(find(i), []).append(i)
    out: list[Instance] = [cands[i].inst for i in kept_whole]
    for members in groups.values():
        joined = _join([cands[m].inst for m in members]) if len(members) > 1 else cands[members[0]].inst
        wholes = {w for m in members for w in covered_by.get(m, ())}
        if any(_inter(joined, cands[w].inst) / max(1, joined.area) >= PIECE_COVERED for w in wholes):
            continue
        out.append(joined)
    out.sort(key=lambda inst: -(inst.score if inst.score is not None else 1.0))
    return out


def _join(parts: list[Instance]) -> Instance:
    best = max(parts, key=lambda p: (p.score if p.score is not None else 1.0, p.area))
    x0, y0 = min(p.x0 for p in parts), min(p.y0 for p in parts)
    x1, y1 = max(p.x0 + p.width for p in parts), max(p.y0 + p.height for p in parts)
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for p in parts:
        m[p.y0 - y0:p.y0 - y0 + p.height, p.x0 - x0:p.x0 - x0 + p.width] |= p.mask
    return best.copy(mask=m, x0=x0, y0=y0)
