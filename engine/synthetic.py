"""Synthetic CT-like and microscopy-like images with exact ground truth (numpy + cv2 only).

- `ct_sample`: rock grains (irregular polygons and ellipses, varied densities) in a
  soil matrix, optional dark pores, partial-volume blur, noise, 16-bit.
- `nuclei_sample`: fluorescent nuclei (bright textured blobs, some touching) on a dark,
  unevenly lit background, blur (PSF), shot and read noise, 16-bit.

Each returns a `SyntheticSample` (image + ItemAnnotation with status "reviewed"); the
instances never overlap and their masks are exactly the pixels drawn, so they are
ground truth for training tests and for `maskloop demo`. Everything is seeded and
deterministic: the same arguments give the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from .annotations import Instance, ItemAnnotation

CT_LABELS = ("rock",)
CT_LABELS_WITH_PORES = ("rock", "pore")
NUCLEI_LABELS = ("nucleus",)
KINDS = ("ct", "nuclei")

Size = Union[int, Sequence[int]]


@dataclass
class SyntheticSample:
    image: np.ndarray             # uint16 (H, W)
    annotation: ItemAnnotation    # exact ground truth, status "reviewed"
    kind: str                     # "ct" | "nuclei"
    labels: tuple                 # label names used, in LabelSet order

    @property
    def instances(self) -> list[Instance]:
        return self.annotation.instances

    def label_image(self) -> np.ndarray:
        return self.annotation.label_image()


def labels_for(kind: str, pores: bool = False) -> tuple:
    if kind == "ct":
        return CT_LABELS_WITH_PORES if pores else CT_LABELS
    if kind == "nuclei":
        return NUCLEI_LABELS
    raise ValueError(f"unknown synthetic kind {kind!r} (known: {', '.join(KINDS)})")


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise ValueError(f"synthetic images need at least 32x32 pixels, got {h}x{w}")
    return h, w


# --------------------------------------------------------------------------------------
# shapes and placement
# --------------------------------------------------------------------------------------

def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] with features of `cell` pixels."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    f = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    s = float(f.std()) or 1.0
    return f / (2.0 * s)


def _polygon_crop(rng: np.random.Generator, r: float) -> np.ndarray:
    """An irregular star-convex grain as a bool crop about 2r across."""
    n = int(rng.integers(14, 30))
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = np.full(n, r, dtype=np.float64)
    for k in (2, 3, 4, 5):
        rad *= 1.0 + rng.uniform(0.0, 0.22 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rad *= rng.uniform(0.88, 1.08, n)
    rad = np.clip(rad, 0.35 * r, 1.6 * r)
    size = int(math.ceil(3.4 * r)) + 3
    c = size / 2.0
    pts = np.stack([c + rad * np.cos(theta), c + rad * np.sin(theta)], axis=1)
    crop = np.zeros((size, size), np.uint8)
    cv2.fillPoly(crop, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 1)
    return crop.astype(bool)


def _ellipse_crop(rng: np.random.Generator, r: float, elong=(0.55, 1.0), wobble: float = 0.0) -> np.ndarray:
    a = r
    b = r * rng.uniform(*elong)
    angle = rng.uniform(0, 180)
    size = int(math.ceil(2.4 * r)) + 3
    c = size / 2.0
    if wobble > 0:
        n = 36
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rr = 1.0 + wobble * np.cos(3 * t + rng.uniform(0, 6.3)) + rng.uniform(-wobble, wobble, n) * 0.5
        x, y = a * np.cos(t) * rr, b * np.sin(t) * rr
        ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        pts = np.stack([c + x * ca - y * sa, c + x * sa + y * ca], axis=1)
        crop = np.zeros((size, size), np.uint8)
        cv2.fillPoly(crop, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 1)
        return crop.astype(bool)
    crop = np.zeros((size, size), np.uint8)
    cv2.ellipse(crop, (int(round(c)), int(round(c))), (max(1, int(round(a))), max(1, int(round(b)))),
                angle, 0, 360, 1, -1)
    return crop.astype(bool)


class _Canvas:
    """Label image with non-overlapping objects; later objects only take free pixels."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.labels = np.zeros((h, w), np.int32)
        self.objects: list[dict] = []  # {"k", "label", "box": (y0, y1, x0, x1), "center", "r", ...}

    def place(self, crop: np.ndarray, cy: float, cx: float, label: str, *, min_visible: float,
              min_area: int, **info) -> bool:
        ch, cw = crop.shape
        y0, x0 = int(round(cy - ch / 2)), int(round(cx - cw / 2))
        # clip to the image (objects may be cut by the border, as in a real field of view)
        sy0, sx0 = max(0, -y0), max(0, -x0)
        sy1, sx1 = min(ch, self.h - y0), min(cw, self.w - x0)
        if sy1 <= sy0 or sx1 <= sx0:
            return False
        sub = crop[sy0:sy1, sx0:sx1]
        iy0, ix0 = y0 + sy0, x0 + sx0
        iy1, ix1 = iy0 + sub.shape[0], ix0 + sub.shape[1]
        region = self.labels[iy0:iy1, ix0:ix1]
        drawn = int(sub.sum())
        if drawn < min_area:
            return False
        free = sub & (region == 0)
        n_free = int(free.sum())
        if n_free < min_area or n_free < min_visible * drawn:
            return False
        # keep one connected piece (a shape wrapped around a neighbour could split)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(free.astype(np.uint8), connectivity=4)
        if n > 2:
            big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            free = comp == big
            if int(free.sum()) < max(min_area, min_visible * drawn):
                return False
        k = len(self.objects) + 1
        region[free] = k
        self.objects.append(dict(k=k, label=label, box=(iy0, iy1, ix0, ix1), center=(cy, cx), **info))
        return True

    def instances(self) -> list[Instance]:
        out = []
        for o in self.objects:
            y0, y1, x0, x1 = o["box"]
            m = self.labels[y0:y1, x0:x1] == o["k"]
            inst = Instance(mask=m, x0=x0, y0=y0, label=o["label"], source="manual").tight()
            if not inst.is_empty():
                out.append(inst)
        return out


def _finish(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------
# CT: rock grains in a soil matrix
# --------------------------------------------------------------------------------------

def ct_sample(size: Size = 512, seed: int = 0, *, n_grains: Optional[int] = None,
              grain_radius: tuple[float, float] = (7.0, 24.0), pores: bool = False,
              noise: float = 900.0, blur: float = 0.9, item_id: Optional[str] = None) -> SyntheticSample:
    """A CT-like 16-bit slice: grains of varied density in a textured matrix.

    grain_radius: (min, max) radius in pixels. n_grains: target count (default: about a
    third of the area covered). pores: add dark air voids as a second class "pore".
    """
    h, w = _hw(size)
    rng = np.random.default_rng([int(seed), 1])
    r_lo, r_hi = grain_radius
    mean_area = math.pi * ((r_lo + r_hi) / 2) ** 2
    if n_grains is None:
        n_grains = max(1, int(0.33 * h * w / mean_area))
    canvas = _Canvas(h, w)
    placed, attempts = 0, 0
    while placed < n_grains and attempts < n_grains * 6:
        attempts += 1
        # more small grains than big ones (sieve curve)
        r = r_lo + (r_hi - r_lo) * rng.beta(1.3, 2.2)
        crop = _polygon_crop(rng, r) if rng.random() < 0.65 else _ellipse_crop(rng, r)
        cy, cx = rng.uniform(-r / 2, h + r / 2), rng.uniform(-r / 2, w + r / 2)
        density = rng.uniform(25500.0, 44000.0)
        if canvas.place(crop, cy, cx, "rock", min_visible=0.75, min_area=max(12, int(0.5 * r * r)),
                        density=density):
            placed += 1
    if pores:
        n_pores = max(1, n_grains // 8)
        done, attempts = 0, 0
        while done < n_pores and attempts < n_pores * 8:
            attempts += 1
            r = rng.uniform(r_lo * 0.6, r_hi * 0.6)
            crop = _ellipse_crop(rng, r, elong=(0.4, 1.0), wobble=0.12)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            if canvas.place(crop, cy, cx, "pore", min_visible=0.85, min_area=12,
                            density=rng.uniform(2500.0, 6000.0)):
                done += 1

    gain = rng.uniform(0.85, 1.15)          # scan-to-scan calibration differences
    offset = rng.uniform(-1500.0, 1500.0)
    matrix = 17500.0 + 1600.0 * _smooth_field(rng, h, w, 48) + 700.0 * _smooth_field(rng, h, w, 6)
    img = matrix.astype(np.float32)
    lab = canvas.labels
    fine = _smooth_field(rng, h, w, 3)
    for o in canvas.objects:
        y0, y1, x0, x1 = o["box"]
        m = lab[y0:y1, x0:x1] == o["k"]
        sub = img[y0:y1, x0:x1]
        # internal texture: mineral inclusions / micro-porosity
        tex = o["density"] * (1.0 + 0.04 * fine[y0:y1, x0:x1])
        sub[m] = tex[m]
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img = img * gain + offset
    img += rng.normal(0.0, noise, size=(h, w)).astype(np.float32)
    image = _finish(img)
    labels = labels_for("ct", pores)
    ann = ItemAnnotation(item_id or f"ct_{seed}", h, w, canvas.instances(), status="reviewed")
    return SyntheticSample(image, ann, "ct", labels)


# --------------------------------------------------------------------------------------
# microscopy: nuclei
# --------------------------------------------------------------------------------------

def nuclei_sample(size: Size = 512, seed: int = 0, *, n_nuclei: Optional[int] = None,
                  radius: tuple[float, float] = (6.0, 14.0), touching: float = 0.35,
                  noise: float = 300.0, blur: float = 1.2, item_id: Optional[str] = None) -> SyntheticSample:
    """A fluorescence-like 16-bit image of nuclei (bright blobs on dark background).

    touching: fraction of nuclei placed right next to an existing one (clusters,
    touching boundaries). n_nuclei: target count (default: about 18% coverage).
    """
    h, w = _hw(size)
    rng = np.random.default_rng([int(seed), 2])
    r_lo, r_hi = radius
    mean_area = math.pi * ((r_lo + r_hi) / 2) ** 2 * 0.75
    if n_nuclei is None:
        n_nuclei = max(1, int(0.18 * h * w / mean_area))
    canvas = _Canvas(h, w)
    placed, attempts = 0, 0
    while placed < n_nuclei and attempts < n_nuclei * 8:
        attempts += 1
        r = rng.uniform(r_lo, r_hi)
        crop = _ellipse_crop(rng, r, elong=(0.6, 1.0), wobble=0.06)
        if canvas.objects and rng.random() < touching:
            nb = canvas.objects[int(rng.integers(len(canvas.objects)))]
            ang = rng.uniform(0, 2 * np.pi)
            d = (nb["r"] + r) * rng.uniform(0.8, 0.95)
            cy, cx = nb["center"][0] + d * math.sin(ang), nb["center"][1] + d * math.cos(ang)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if canvas.place(crop, cy, cx, "nucleus", min_visible=0.72, min_area=max(12, int(0.6 * r * r)),
                        r=r, brightness=rng.uniform(5000.0, 22000.0)):
            placed += 1

    background = 700.0 + 250.0 * (_smooth_field(rng, h, w, max(h, w) // 2) + 1.0)  # uneven illumination
    img = background.astype(np.float32)
    lab = canvas.labels
    chromatin = _smooth_field(rng, h, w, 2)
    for o in canvas.objects:
        y0, y1, x0, x1 = o["box"]
        m = lab[y0:y1, x0:x1] == o["k"]
        # brighter centre, dimmer rim (a nucleus is thicker in the middle)
        dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        prof = 0.7 + 0.3 * np.clip(dist / max(1.0, o["r"] * 0.5), 0, 1)
        val = o["brightness"] * prof * (1.0 + 0.12 * chromatin[y0:y1, x0:x1])
        sub = img[y0:y1, x0:x1]
        sub[m] = val[m]
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    # shot noise (~ sqrt of signal, scaled) plus read noise
    shot = np.sqrt(np.maximum(img, 0.0)) * 4.0
    img = img + rng.standard_normal((h, w)).astype(np.float32) * (shot + noise)
    image = _finish(img)
    ann = ItemAnnotation(item_id or f"nuclei_{seed}", h, w, canvas.instances(), status="reviewed")
    return SyntheticSample(image, ann, "nuclei", NUCLEI_LABELS)


def sample(kind: str, size: Size = 512, seed: int = 0, **kw) -> SyntheticSample:
    if kind == "ct":
        return ct_sample(size, seed, **kw)
    if kind == "nuclei":
        return nuclei_sample(size, seed, **kw)
    raise ValueError(f"unknown synthetic kind {kind!r} (known: {', '.join(KINDS)})")


def samples(kind: str, n: int, size: Size = 512, seed: int = 0, **kw) -> list[SyntheticSample]:
    """n different samples (seeds seed, seed+1, ...); item ids '<kind>_<k>'."""
    return [sample(kind, size, seed + k, item_id=f"{kind}_{k:03d}", **kw) for k in range(n)]


def ct_stack(n_slices: int, size: Size = 256, seed: int = 0, **kw) -> tuple[np.ndarray, list[ItemAnnotation]]:
    """A (Z, H, W) uint16 stack of CT-like slices and one annotation per slice."""
    out = [ct_sample(size, seed + z, item_id=f"ct_stack_{z:03d}", **kw) for z in range(n_slices)]
    return np.stack([s.image for s in out]), [s.annotation for s in out]


# --------------------------------------------------------------------------------------
# CT volume: 3-D rock bodies through the slices
# --------------------------------------------------------------------------------------

@dataclass
class SyntheticVolume:
    image: np.ndarray                  # uint16 (Z, H, W)
    objects: np.ndarray                # int32 (Z, H, W): 0 background, k = body k
    labels_of: dict                    # body k -> "rock" | "pore"
    spacing: tuple                     # (dz, dy, dx) mm

    def annotations(self, item_ids: Sequence[str]) -> list[ItemAnnotation]:
        """One reviewed annotation per slice; each body's section on a slice is one
        instance whose object id is the body number (as a label-volume import gives)."""
        from scipy import ndimage
        out = [ItemAnnotation(i, self.image.shape[1], self.image.shape[2], [], "reviewed") for i in item_ids]
        for k, sl in enumerate(ndimage.find_objects(self.objects), start=1):
            if sl is None:
                continue
            sub = self.objects[sl] == k
            for dz in range(sub.shape[0]):
                inst = Instance.from_full_mask(sub[dz], self.labels_of[k], source="manual", object_id=str(k))
                if inst is not None:
                    inst.x0 += sl[2].start
                    inst.y0 += sl[1].start
                    out[sl[0].start + dz].instances.append(inst)
        return out


def _smooth_field_3d(rng: np.random.Generator, shape: tuple, cell: tuple) -> np.ndarray:
    from scipy import ndimage
    grid = tuple(max(2, s // c + 2) for s, c in zip(shape, cell))
    g = rng.standard_normal(grid).astype(np.float32)
    f = ndimage.zoom(g, [s / gs for s, gs in zip(shape, grid)], order=3)[:shape[0], :shape[1], :shape[2]]
    return f / (2.0 * (float(f.std()) or 1.0))


def _body(rng: np.random.Generator, radii_mm: np.ndarray, spacing: np.ndarray, wobble: float) -> np.ndarray:
    """A bool sub-volume (z, y, x voxels): an irregular, randomly turned ellipsoid with
    radii in mm, shaped in mm so anisotropic voxels do not squash it."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    reach = float(radii_mm.max()) * (1 + wobble)
    half = np.ceil(reach / spacing).astype(int) + 1
    zz, yy, xx = np.meshgrid(*[np.arange(-h, h + 1, dtype=np.float32) * np.float32(s)
                               for h, s in zip(half, spacing)], indexing="ij")
    p = np.stack([zz, yy, xx], axis=-1) @ q.astype(np.float32)
    a, b = rng.uniform(0, 6.3, 2)
    bump = 1.0 + wobble * np.cos(3 * np.arctan2(p[..., 1], p[..., 2]) + a) * np.cos(2 * p[..., 0] / reach + b)
    return ((p / radii_mm.astype(np.float32)) ** 2).sum(-1) <= bump ** 2


def ct_volume(n_slices: int = 24, size: Size = 256, seed: int = 0, *,
              spacing: tuple = (0.5, 0.2, 0.2), n_rocks: Optional[int] = None,
              rock_radius_mm: tuple = (1.4, 4.5), pores: bool = True, noise: float = 900.0) -> SyntheticVolume:
    """A CT-like volume of a soil-rock core: 3-D rock bodies (and air pores) in a matrix,
    with anisotropic voxels (slice spacing larger than the pixel size, as in most scans).
    Bodies never overlap; each is one face-connected piece."""
    from scipy import ndimage
    h, w = _hw(size)
    shape = (int(n_slices), h, w)
    rng = np.random.default_rng([int(seed), 3])
    sp = np.asarray(spacing, dtype=float)
    objects = np.zeros(shape, np.int32)
    labels_of: dict = {}
    vol_mm3 = float(np.prod(shape) * np.prod(sp))
    mean_r = sum(rock_radius_mm) / 2
    if n_rocks is None:
        n_rocks = max(1, int(0.3 * vol_mm3 / (4.19 * mean_r ** 3)))
    # pores first (few, small): placed after the rocks they would rarely find room
    wanted = ([("pore", max(3, n_rocks // 6), (rock_radius_mm[0] * 0.5, rock_radius_mm[1] * 0.5))]
              if pores else []) + [("rock", n_rocks, rock_radius_mm)]
    density: dict = {}
    for label, n, (r_lo, r_hi) in wanted:
        placed = attempts = 0
        while placed < n and attempts < 8 * n:
            attempts += 1
            r_mm = r_lo + (r_hi - r_lo) * rng.beta(1.3, 2.2)
            radii = r_mm * rng.uniform(0.6, 1.0, 3)
            body = _body(rng, np.maximum(radii, sp.max()), sp, 0.12)
            c = np.array([rng.uniform(0, s) for s in shape]).astype(int)
            lo = c - np.array(body.shape) // 2
            src0 = np.maximum(0, -lo)
            dst0 = np.maximum(0, lo)
            dst1 = np.minimum(shape, lo + np.array(body.shape))
            if np.any(dst1 <= dst0):
                continue
            sub = body[tuple(slice(a, a + (d1 - d0)) for a, d0, d1 in zip(src0, dst0, dst1))]
            region = objects[tuple(slice(a, b) for a, b in zip(dst0, dst1))]
            free = sub & (region == 0)
            if free.sum() < 20 or free.sum() < 0.85 * sub.sum():
                continue
            cc, ncc = ndimage.label(free)
            if ncc > 1:
                free = cc == (1 + int(np.argmax(ndimage.sum(free, cc, range(1, ncc + 1)))))
            k = len(labels_of) + 1
            region[free] = k
            labels_of[k] = label
            density[k] = rng.uniform(25500.0, 44000.0) if label == "rock" else rng.uniform(2500.0, 6000.0)
            placed += 1
    cell = tuple(max(2, int(round(v))) for v in (6.0 / sp[0], 6.0 / sp[1], 6.0 / sp[2]))
    img = 17500.0 + 1600.0 * _smooth_field_3d(rng, shape, cell)
    lut = np.zeros(len(labels_of) + 1, np.float32)
    for k, d in density.items():
        lut[k] = d
    inside = objects > 0
    img[inside] = lut[objects[inside]] * (1.0 + 0.04 * rng.standard_normal(int(inside.sum())).astype(np.float32))
    img = ndimage.gaussian_filter(img, sigma=(0.4, 0.9, 0.9))
    img += rng.normal(0.0, noise, size=shape).astype(np.float32)
    return SyntheticVolume(_finish(img), objects, labels_of, tuple(float(v) for v in sp))
