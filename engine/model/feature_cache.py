"""The feature cache behind prompts: an item's backbone/FPN features and RPN proposals,
computed once per item per model, so that a prompt costs only RoIAlign and the heads,
and the masks of the window's detections, so that a click inside one costs a lookup.

One cache holds one item of one model. Asking for another item or another model drops
everything first (no stale answers), as does an item key whose image changed (a cheap
fingerprint of the pixels is part of the key). Large (tiled) items keep the features of
up to `max_windows` windows (one tile each), least recently used dropped first.

A lock serialises computing and reading: a prompt that arrives while the inference
worker is still caching the item waits for it instead of computing it twice.
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import numpy as np
import torch

Window = tuple[int, int, int, int]   # (x0, y0, x1, y1) of the item, exclusive


@dataclass
class WindowFeatures:
    """What the model computed once for one window of an item."""

    window: Window
    features: "OrderedDict[str, torch.Tensor]"   # FPN levels of the batched window
    image_size: tuple[int, int]                  # (h, w) after the model's transform
    scale: tuple[float, float]                   # (sy, sx): transformed px per window px
    proposals: torch.Tensor                      # (N, 4) RPN boxes, transformed coordinates
    objectness: torch.Tensor                     # (N,) RPN scores (probabilities)
    class_probs: torch.Tensor                    # (N, C) the box head's class probabilities per proposal
    refined: torch.Tensor                        # (N, C, 4) the box head's class-specific boxes
    detections: Optional["Detections"] = None    # predict's detections with their masks (clicks)


@dataclass
class Detections:
    """The window's best detections and their mask probabilities, computed with the
    features so that a click inside one is a lookup (dropped with the features)."""

    boxes: torch.Tensor          # (K, 4) transformed coordinates, best score first
    classes: torch.Tensor        # (K,) class index (1..)
    scores: torch.Tensor         # (K,)
    proposal: torch.Tensor       # (K,) the RPN proposal each came from
    probs: np.ndarray            # (K, M, M) mask probabilities
    crops: dict = field(default_factory=dict)   # k -> (bool crop, x0, y0) in item px, pasted on demand


def fingerprint(image: np.ndarray) -> str:
    """A cheap identity of an image's pixels (shape, dtype and a strided sample)."""
    arr = np.asarray(image)
    step_y = max(1, arr.shape[0] // 64)
    step_x = max(1, arr.shape[1] // 64)
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((arr.shape, arr.dtype.str)).encode())
    h.update(np.ascontiguousarray(arr[::step_y, ::step_x]).tobytes())
    return h.hexdigest()


class FeatureCache:
    """Features of the current item of the current model, per window."""

    def __init__(self, max_windows: int = 4):
        self.max_windows = max(1, int(max_windows))
        self._lock = threading.RLock()
        self._owner: Optional[weakref.ref] = None
        self._item: Optional[tuple[Hashable, str]] = None
        self._windows: "OrderedDict[Window, WindowFeatures]" = OrderedDict()
        self.computed = 0        # windows computed since creation (tests, benchmarks)

    def clear(self) -> None:
        with self._lock:
            self._owner, self._item = None, None
            self._windows.clear()

    def holds(self, model: object, item_key: Hashable, image: np.ndarray, window: Window) -> bool:
        with self._lock:
            return self._is_current(model, item_key, fingerprint(image)) and window in self._windows

    def _is_current(self, model: object, item_key: Hashable, fp: str) -> bool:
        return (self._owner is not None and self._owner() is model and self._item == (item_key, fp))

    def get(self, model: object, item_key: Hashable, image: np.ndarray, window: Window,
            compute: Callable[[Window], WindowFeatures]) -> WindowFeatures:
        """The window's features, computed by `compute(window)` unless cached for this
        model (compared by identity) and this item (key + pixel fingerprint)."""
        fp = fingerprint(image)
        with self._lock:
            if not self._is_current(model, item_key, fp):
                self._windows.clear()        # another item or another model: nothing is valid
                self._owner, self._item = weakref.ref(model), (item_key, fp)
            hit = self._windows.get(window)
            if hit is not None:
                self._windows.move_to_end(window)
                return hit
            feats = compute(window)
            self.computed += 1
            self._windows[window] = feats
            while len(self._windows) > self.max_windows:
                self._windows.popitem(last=False)
            return feats
