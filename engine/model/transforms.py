"""Joint augmentation of an image and its cropped instances (`Augment`): random crops of
large images, optional scale jitter, flips, 90-degree rotations, intensity gain/bias,
gamma and noise. Randomness comes from the generator the caller passes (the dataset
seeds it from (seed, epoch, index)). Masks stay cropped to their boxes through every
transform (1000 nuclei of a 2k image never become 1000 full-size arrays).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np


# --------------------------------------------------------------------------------------
# augmentation on (image, cropped instances)
# --------------------------------------------------------------------------------------

@dataclass
class Augment:
    """Joint image/target augmentations for CT and microscopy (all optional).

    crop: images larger than this (either side) are cut to a random crop of at most
    crop x crop px (0: never). scale_jitter: (lo, hi) random resize factor, or None.
    flip / rot90: random horizontal and vertical flips and 90-degree rotations (grey
    data has no canonical orientation). gain / bias / gamma / noise: intensity changes
    on the normalised [0, 1] image (gain in 1 +- gain, bias +- bias, gamma exp(+-gamma),
    Gaussian noise up to `noise` sigma), each applied with probability p_intensity.
    min_area: instances cut by a crop to fewer pixels than this (and than min_visible of
    their area) are left out.
    """
    crop: int = 512
    scale_jitter: Optional[tuple[float, float]] = None
    flip: bool = True
    rot90: bool = True
    gain: float = 0.2
    bias: float = 0.05
    gamma: float = 0.3
    noise: float = 0.03
    p_intensity: float = 0.5
    min_area: int = 8
    min_visible: float = 0.25

    def to_json(self) -> dict:
        d = asdict(self)
        d["scale_jitter"] = list(self.scale_jitter) if self.scale_jitter else None
        return d

    @classmethod
    def from_json(cls, d: Optional[dict]) -> "Augment":
        d = dict(d or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if known.get("scale_jitter"):
            known["scale_jitter"] = tuple(float(v) for v in known["scale_jitter"])
        return cls(**known)

    @classmethod
    def none(cls, crop: int = 0) -> "Augment":
        """No randomness except cropping of large images (crop=0: none at all)."""
        return cls(crop=crop, scale_jitter=None, flip=False, rot90=False, gain=0.0, bias=0.0,
                   gamma=0.0, noise=0.0, p_intensity=0.0)


class InstanceCrop:
    """A cropped mask (bool) at (x0, y0) with its class: the unit the transforms move."""
    __slots__ = ("mask", "x0", "y0", "cls", "area0")

    def __init__(self, mask, x0, y0, cls, area0=None):
        self.mask, self.x0, self.y0, self.cls = mask, int(x0), int(y0), int(cls)
        self.area0 = int(area0) if area0 is not None else int(np.count_nonzero(mask))


def crop_instances(insts: list[InstanceCrop], x0: int, y0: int, w: int, h: int) -> list[InstanceCrop]:
    out = []
    for it in insts:
        ih, iw = it.mask.shape
        ax0, ay0 = max(it.x0, x0), max(it.y0, y0)
        ax1, ay1 = min(it.x0 + iw, x0 + w), min(it.y0 + ih, y0 + h)
        if ax1 <= ax0 or ay1 <= ay0:
            continue
        sub = it.mask[ay0 - it.y0:ay1 - it.y0, ax0 - it.x0:ax1 - it.x0]
        out.append(InstanceCrop(sub, ax0 - x0, ay0 - y0, it.cls, it.area0))
    return out


def hflip_instances(insts: list[InstanceCrop], width: int) -> list[InstanceCrop]:
    return [InstanceCrop(it.mask[:, ::-1], width - (it.x0 + it.mask.shape[1]), it.y0, it.cls, it.area0) for it in insts]


def vflip_instances(insts: list[InstanceCrop], height: int) -> list[InstanceCrop]:
    return [InstanceCrop(it.mask[::-1, :], it.x0, height - (it.y0 + it.mask.shape[0]), it.cls, it.area0) for it in insts]


def rot90_instances(insts: list[InstanceCrop], height: int, width: int, k: int) -> list[InstanceCrop]:
    """Rotate like np.rot90(image, k) (counter-clockwise) on an image of (height, width)."""
    k %= 4
    out = insts
    H, W = height, width
    for _ in range(k):
        # np.rot90 once: pixel (r, c) -> (W - 1 - c, r); the new image is (W, H)
        out = [InstanceCrop(np.rot90(it.mask), it.y0, W - (it.x0 + it.mask.shape[1]), it.cls, it.area0) for it in out]
        H, W = W, H
    return out


def scale_instances(insts: list[InstanceCrop], height: int, width: int, new_h: int, new_w: int) -> list[InstanceCrop]:
    """Resample cropped masks onto the grid of an image resized from (height, width) to
    (new_h, new_w): pixel X takes source pixel floor((X + 0.5) * width / new_w), the
    centre-aligned nearest neighbour (cv2.INTER_NEAREST_EXACT), which matches a
    bilinear resize of the image."""
    ry, rx = height / new_h, width / new_w
    out = []
    for it in insts:
        ih, iw = it.mask.shape
        # destination pixels whose source lies in the crop
        ny0 = max(0, int(math.ceil(it.y0 / ry - 0.5)))
        ny1 = min(new_h, int(math.ceil((it.y0 + ih) / ry - 0.5)))
        nx0 = max(0, int(math.ceil(it.x0 / rx - 0.5)))
        nx1 = min(new_w, int(math.ceil((it.x0 + iw) / rx - 0.5)))
        if ny1 <= ny0 or nx1 <= nx0:
            continue
        rows = np.floor((np.arange(ny0, ny1) + 0.5) * ry).astype(np.int64) - it.y0
        cols = np.floor((np.arange(nx0, nx1) + 0.5) * rx).astype(np.int64) - it.x0
        rows = np.clip(rows, 0, ih - 1)
        cols = np.clip(cols, 0, iw - 1)
        m = it.mask[rows[:, None], cols[None, :]]
        if m.any():
            out.append(InstanceCrop(m, nx0, ny0, it.cls, it.area0 * (new_h / height) * (new_w / width)))
    return out


def _choose_crop(rng: np.random.Generator, H: int, W: int, size: int, insts: list[InstanceCrop]) -> tuple[int, int, int, int]:
    """A random window of at most size x size px; prefers windows that contain objects."""
    ch, cw = min(H, size), min(W, size)
    best = None
    for attempt in range(4):
        if insts and attempt < 3 and rng.random() < 0.7:
            # centre on a random object (its centre jittered), so objects are seen often
            it = insts[int(rng.integers(len(insts)))]
            cy = it.y0 + it.mask.shape[0] / 2 + rng.uniform(-ch / 2, ch / 2)
            cx = it.x0 + it.mask.shape[1] / 2 + rng.uniform(-cw / 2, cw / 2)
            y0 = int(np.clip(round(cy - ch / 2), 0, H - ch))
            x0 = int(np.clip(round(cx - cw / 2), 0, W - cw))
        else:
            y0 = int(rng.integers(0, H - ch + 1))
            x0 = int(rng.integers(0, W - cw + 1))
        best = (x0, y0, cw, ch)
        if not insts or crop_instances(insts, x0, y0, cw, ch):
            break
    return best


def apply_augment(image: np.ndarray, insts: list[InstanceCrop], aug: Augment, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[InstanceCrop]]:
    """image: float32 (H, W, 3) in [0, 1] (may be modified); returns the new pair."""
    H, W = image.shape[:2]
    if aug.scale_jitter:
        lo, hi = aug.scale_jitter
        s = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if abs(s - 1.0) > 1e-3:
            import cv2
            nh, nw = max(8, int(round(H * s))), max(8, int(round(W * s)))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
            if image.ndim == 2:
                image = image[..., None]
            insts = scale_instances(insts, H, W, nh, nw)
            H, W = nh, nw
    if aug.crop and (H > aug.crop or W > aug.crop):
        x0, y0, cw, ch = _choose_crop(rng, H, W, int(aug.crop), insts)
        image = image[y0:y0 + ch, x0:x0 + cw]
        insts = crop_instances(insts, x0, y0, cw, ch)
        H, W = ch, cw
    if aug.flip:
        if rng.random() < 0.5:
            image = image[:, ::-1]
            insts = hflip_instances(insts, W)
        if rng.random() < 0.5:
            image = image[::-1, :]
            insts = vflip_instances(insts, H)
    if aug.rot90:
        k = int(rng.integers(4))
        if k:
            image = np.rot90(image, k, axes=(0, 1))
            insts = rot90_instances(insts, H, W, k)
            if k % 2:
                H, W = W, H
    image = np.ascontiguousarray(image, dtype=np.float32)
    if aug.p_intensity > 0:
        changed = False
        if aug.gain > 0 and rng.random() < aug.p_intensity:
            image *= np.float32(rng.uniform(1 - aug.gain, 1 + aug.gain))
            changed = True
        if aug.bias > 0 and rng.random() < aug.p_intensity:
            image += np.float32(rng.uniform(-aug.bias, aug.bias))
            changed = True
        if aug.gamma > 0 and rng.random() < aug.p_intensity:
            np.clip(image, 0.0, 1.0, out=image)
            np.power(image, np.float32(math.exp(rng.uniform(-aug.gamma, aug.gamma))), out=image)
            changed = True
        if aug.noise > 0 and rng.random() < aug.p_intensity:
            sigma = np.float32(rng.uniform(0, aug.noise))
            noise = rng.standard_normal(image.shape[:2], dtype=np.float32) * sigma
            image += noise[..., None]
            changed = True
        if changed:
            np.clip(image, 0.0, 1.0, out=image)
    # objects cut by the crop to a sliver are not worth learning
    kept = []
    for it in insts:
        a = int(np.count_nonzero(it.mask))
        if a == 0:
            continue
        if a < it.area0 and a < aug.min_area and a < aug.min_visible * it.area0:
            continue
        kept.append(it)
    return image, kept
