"""Model-free helpers for hand correction and cold start (numpy + OpenCV, no Qt, no torch).

flood_fill is the canvas's magic wand: the connected region around a seed pixel whose
raw values lie within a tolerance of the seed's value.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def _as_float_plane(image: np.ndarray) -> np.ndarray:
    """Raw values as one float32 plane (colour images: the channel mean)."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float32).mean(axis=2)
    return np.ascontiguousarray(arr, dtype=np.float32)


def flood_fill(image: np.ndarray, seed: tuple[int, int], tolerance: float,
               connectivity: int = 8, roi: Optional[tuple[int, int, int, int]] = None,
               ) -> Optional[tuple[np.ndarray, int, int]]:
    """Magic wand: pixels connected to `seed` (x, y) with |value - seed value| <= tolerance.

    `tolerance` is in raw units (HU for CT). `roi` (x0, y0, x1, y1), exclusive, limits the
    search (the canvas passes the image, or a window around the seed on huge images).
    Returns (mask cropped to its bbox, x0, y0), or None when the seed lies outside.
    """
    arr = np.asarray(image)
    H, W = arr.shape[:2]
    x, y = int(seed[0]), int(seed[1])
    if not (0 <= x < W and 0 <= y < H):
        return None
    rx0, ry0, rx1, ry1 = (0, 0, W, H) if roi is None else roi
    rx0, ry0 = max(0, int(rx0)), max(0, int(ry0))
    rx1, ry1 = min(W, int(rx1)), min(H, int(ry1))
    if not (rx0 <= x < rx1 and ry0 <= y < ry1):
        return None
    plane = _as_float_plane(arr[ry0:ry1, rx0:rx1])
    h, w = plane.shape
    ff = np.zeros((h + 2, w + 2), np.uint8)
    tol = max(0.0, float(tolerance))
    flags = int(connectivity) | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8)
    cv2.floodFill(plane, ff, (x - rx0, y - ry0), 0, (tol,), (tol,), flags)
    mask = ff[1:-1, 1:-1].astype(bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return mask[r0:r1, c0:c1].copy(), int(rx0 + c0), int(ry0 + r0)


def default_tolerance(image: np.ndarray, window: Optional[tuple[float, float]] = None) -> float:
    """A starting tolerance: 10% of the display window width, else of the 1-99% range."""
    if window is not None and window[1] > 0:
        return max(1.0, 0.1 * float(window[1]))
    plane = _as_float_plane(image)
    step = max(1, int(np.sqrt(plane.size / 250_000)))
    lo, hi = np.percentile(plane[::step, ::step], (1, 99))
    return max(1.0, 0.1 * float(hi - lo))
