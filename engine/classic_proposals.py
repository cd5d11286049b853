"""Cold-start proposals without a model: threshold + distance-transform watershed.

Before any model is trained, "auto-segment without a model" in the GUI calls `propose`
to turn an image into instances a person can then correct: the image is normalised to
[0, 1] by percentiles, smoothed, thresholded (Otsu by default, or a level the user picks),
cleaned, and touching objects are split by a watershed on the distance transform.

Two knobs, each in [0, 1], so a GUI can put them on sliders:

- `level`: the threshold on the normalised image (None -> Otsu's level).
- `split`: how eagerly touching objects are separated: 0 keeps each connected
  foreground blob whole; higher values cut blobs at narrower necks.

numpy + OpenCV only (no Qt, no torch). Instances come back with source "classic".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .annotations import Instance
from .jobs import check


@dataclass
class ProposalParams:
    level: Optional[float] = None      # threshold on the [0, 1] normalised image; None = Otsu
    split: float = 0.6                 # 0 = no splitting ... 1 = split eagerly
    polarity: str = "auto"             # "bright" objects, "dark" objects, or "auto"
    min_area: int = 12                 # smaller components are dropped (pixels)
    smooth: float = 1.0                # Gaussian sigma in pixels (0 = none)
    max_instances: int = 5000


def normalise(image: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """One float32 plane in [0, 1] (colour: channel mean), clipped at the percentiles."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float32).mean(axis=2)
    plane = arr.astype(np.float32, copy=False)
    step = max(1, int(np.sqrt(plane.size / 250_000)))
    sample = plane[::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(plane.shape, np.float32)
    lo, hi = np.percentile(finite, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    out = (plane - lo) / (hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32)


def otsu_level(norm: np.ndarray) -> float:
    """Otsu's threshold of a [0, 1] plane, as a value in [0, 1]."""
    u8 = (norm * 255.0 + 0.5).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255.0


def foreground(image: np.ndarray, params: ProposalParams = ProposalParams()
               ) -> tuple[np.ndarray, float, bool, np.ndarray]:
    """(foreground mask, level used, inverted?, the contrast-compressed object plane).

    Objects become bright (dark objects are inverted), the range is compressed by a
    square root so dim objects next to bright ones still pass one threshold.
    """
    norm = normalise(image)
    invert = params.polarity == "dark"
    if params.polarity == "auto":
        # objects are the minority phase: a mostly "bright" image has dark objects
        invert = float((norm > otsu_level(norm)).mean()) > 0.5
    if invert:
        norm = 1.0 - norm
    plane = np.sqrt(norm)
    smooth = cv2.GaussianBlur(plane, (0, 0), float(params.smooth)) if params.smooth and params.smooth > 0 else plane
    level = otsu_level(smooth) if params.level is None else float(np.clip(params.level, 0.0, 1.0))
    fg = (smooth > level).astype(np.uint8)
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, k3)
    fg = _fill_holes(fg)
    return fg.astype(bool), level, invert, plane


def _fill_holes(fg: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border."""
    h, w = fg.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = fg
    mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(pad, mask, (0, 0), 1)
    holes = pad[1:-1, 1:-1] == 0
    out = fg.copy()
    out[holes] = 1
    return out


def propose(image: np.ndarray, params: Optional[ProposalParams] = None, *, label: str = "",
            cancel=None, **overrides) -> list[Instance]:
    """Instances (source "classic", no score) from threshold + watershed.

    `overrides` set ProposalParams fields directly: propose(img, level=0.4, split=0.6).
    """
    params = params or ProposalParams()
    if overrides:
        params = ProposalParams(**{**params.__dict__, **overrides})
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    fg, _level, _inv, plane = foreground(arr, params)
    check(cancel)
    labels = _split(fg, plane, float(np.clip(params.split, 0.0, 1.0)))
    check(cancel)
    return _instances(labels, label, params.min_area, params.max_instances)


def _split(fg: np.ndarray, plane: np.ndarray, split: float) -> np.ndarray:
    """Integer label image: connected components (split 0), else a watershed from seeds
    at the local maxima of a relief that mixes the distance to the background (shape)
    with the smoothed intensity (touching objects usually differ in brightness). Higher
    `split` -> a smaller seed window -> more, smaller objects."""
    fg8 = fg.astype(np.uint8)
    if split <= 0 or not fg8.any():
        return cv2.connectedComponents(fg8, connectivity=8)[1]
    dist = cv2.distanceTransform(fg8, cv2.DIST_L2, 5)
    relief = 0.3 * dist / (float(dist.max()) + 1e-6) + 0.7 * cv2.GaussianBlur(plane, (0, 0), 2.0)
    r = max(1, int(round(float(np.percentile(dist[fg], 90)) * (1.6 - 1.2 * split))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    peaks = (relief >= cv2.dilate(relief, kernel) - 1e-6) & fg & (dist >= 2)
    n_seeds, seeds = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8)
    # every foreground blob gets at least one seed (thin blobs have no dist >= 2 pixel)
    n_comp, comps = cv2.connectedComponents(fg8, connectivity=8)
    seeded = np.zeros(n_comp, bool)
    seeded[comps[seeds > 0]] = True
    markers = seeds.astype(np.int32)
    for c in np.flatnonzero(~seeded[1:]) + 1:
        n_seeds += 1
        markers[comps == c] = n_seeds - 1
    bg = n_seeds
    markers[~fg] = bg
    relief8 = cv2.normalize(float(relief.max()) - relief, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    cv2.watershed(cv2.cvtColor(relief8, cv2.COLOR_GRAY2BGR), markers)
    out = markers
    line = out < 0
    out[(out == bg) | line] = 0
    # watershed lines inside objects go back to a neighbouring object
    line &= fg
    if line.any():
        grown = cv2.dilate(out.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
        out[line] = grown[line]
    out[~fg] = 0
    return out


def _instances(labels: np.ndarray, label: str, min_area: int, max_instances: int) -> list[Instance]:
    n = int(labels.max())
    if n == 0:
        return []
    out: list[Instance] = []
    stats_input = labels.astype(np.int32)
    # bounding boxes of every label in one pass
    ys, xs = np.nonzero(stats_input)
    vals = stats_input[ys, xs]
    order = np.argsort(vals, kind="stable")
    vals, ys, xs = vals[order], ys[order], xs[order]
    bounds = np.flatnonzero(np.diff(vals)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [vals.size]])
    for s, e in zip(starts, ends):
        if e - s < max(1, int(min_area)):
            continue
        v = vals[s]
        y0, y1 = int(ys[s:e].min()), int(ys[s:e].max()) + 1
        x0, x1 = int(xs[s:e].min()), int(xs[s:e].max()) + 1
        mask = stats_input[y0:y1, x0:x1] == v
        out.append(Instance(mask=mask, x0=x0, y0=y0, label=label, source="classic"))
        if len(out) >= max_instances:
            break
    return out
