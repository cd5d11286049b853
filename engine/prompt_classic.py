"""Cold-start prompts: what a box or a click gives before any model is trained.

- Box prompt: GrabCut (OpenCV) inside the box on the *displayed* 8-bit image (what the
  user sees is what they boxed); the largest connected piece is kept, holes filled.
- Click prompt: the canvas's magic wand rule (engine.classic.flood_fill) on raw values.

Both return `PromptAnswer`s whose `method` says which rule answered, so the GUI can say
"GrabCut" / "wand" / "model" in the status bar. numpy + OpenCV only (no Qt, no torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .annotations import Instance
from .classic import default_tolerance, flood_fill
from .errors import MaskLoopError
from .masks import components, fill_holes

GRABCUT_ITERS = 5
GRABCUT_PAD = 8      # px of context around the box that GrabCut sees as sure background


@dataclass
class PromptAnswer:
    """One prompt's result: the instance (source "prompt"), how it was made and the
    label the answerer chose (None: the caller's label applies)."""

    instance: Instance
    method: str                       # "grabcut", "wand", "model-box", "model-click"
    label: Optional[str] = None
    score: Optional[float] = None     # the model's class score for the answer, when any
    refined: bool = False             # the box head's refined box was used


def clip_box(box, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in image pixels, exclusive, clipped; refuses an empty box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    bx1, by1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        raise MaskLoopError(f"the box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) is empty or outside "
                            f"the {width}x{height} image", field="box")
    return bx0, by0, bx1, by1


def _as_bgr8(display: np.ndarray) -> np.ndarray:
    arr = np.asarray(display)
    if arr.dtype != np.uint8:
        raise MaskLoopError(f"GrabCut needs the displayed 8-bit image, got {arr.dtype}", field="image")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return np.ascontiguousarray(arr[..., 2::-1])  # RGB(A) -> BGR
    raise MaskLoopError(f"unexpected display image shape {arr.shape}", field="image")


def grabcut_box(display: np.ndarray, box, *, label: str = "", iterations: int = GRABCUT_ITERS
                ) -> Optional[PromptAnswer]:
    """GrabCut inside `box` (x0, y0, x1, y1) on the 8-bit display image.

    GrabCut runs on a window of the box plus a margin (cost follows the box, not the
    image). Returns None when GrabCut finds no foreground.
    """
    img = _as_bgr8(display)
    H, W = img.shape[:2]
    bx0, by0, bx1, by1 = clip_box(box, H, W)
    wx0, wy0 = max(0, bx0 - GRABCUT_PAD), max(0, by0 - GRABCUT_PAD)
    wx1, wy1 = min(W, bx1 + GRABCUT_PAD), min(H, by1 + GRABCUT_PAD)
    win = np.ascontiguousarray(img[wy0:wy1, wx0:wx1])
    mask = np.zeros(win.shape[:2], np.uint8)
    rect = (bx0 - wx0, by0 - wy0, bx1 - bx0, by1 - by0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(win, mask, rect, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # e.g. a flat window: no colour model can be fitted
        return None
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    pieces = components(fg)
    if not pieces:
        return None
    best = fill_holes(max(pieces, key=lambda m: int(m.sum())))
    inst = Instance.from_full_mask(best, label, source="prompt")
    if inst is None:
        return None
    inst.x0 += wx0
    inst.y0 += wy0
    return PromptAnswer(inst, "grabcut")


def wand_click(image: np.ndarray, point, *, tolerance: Optional[float] = None, label: str = "",
               window: Optional[tuple[float, float]] = None) -> Optional[PromptAnswer]:
    """The magic wand at `point` (x, y) on raw values; tolerance defaults to the wand's."""
    tol = default_tolerance(image, window) if tolerance is None else float(tolerance)
    res = flood_fill(image, (int(point[0]), int(point[1])), tol)
    if res is None:
        return None
    mask, x0, y0 = res
    return PromptAnswer(Instance(mask=mask, x0=x0, y0=y0, label=label, source="prompt"), "wand")


def grabcut_answerer(display_of, label: str = ""):
    """A propagation answerer (engine.propagate): GrabCut in the box on slice k's display
    image, `display_of(k)` -> 8-bit image."""
    def answer(k: int, box):
        got = grabcut_box(display_of(k), box, label=label)
        return got.instance if got is not None else None
    return answer
