"""The display part of the controller (a mixin of gui.controller.Controller): the window
(centre/width) of each source, and the item on screen as 8-bit for the canvas. Display
only: the stored data and what the model sees never change (engine.imageio windowing)."""
from __future__ import annotations

from typing import Optional

import numpy as np


class Display:
    # provided by Controller: item, image, _windows, _display, windowChanged

    @property
    def window(self) -> Optional[tuple[float, float]]:
        item = self.item
        return self._windows.get(item.source) if item is not None else None

    def _default_window(self, image: np.ndarray) -> Optional[tuple[float, float]]:
        src = self.source
        if src is not None and src.window is not None:
            return tuple(src.window)  # the file's own WindowCenter/WindowWidth (CT 40/400)
        if image.dtype == np.uint8:
            return None  # shown as stored
        from engine.imageio import auto_window
        return tuple(float(v) for v in auto_window(image))

    def set_window(self, center: float, width: float) -> None:
        item = self.item
        win = (float(center), max(1e-6, float(width)))
        if item is None or self._windows.get(item.source) == win:
            return
        self._windows[item.source] = win
        self._display = None
        self.windowChanged.emit(win)

    def auto_window(self) -> None:
        if self.image is not None:
            from engine.imageio import auto_window
            self.set_window(*auto_window(self.image))

    def apply_preset(self, name: str) -> None:
        from engine.imageio import WINDOW_PRESETS
        self.set_window(*WINDOW_PRESETS[name])

    def display_image(self) -> Optional[np.ndarray]:
        """The current image as uint8 for the screen (cached until the window changes)."""
        if self.image is None:
            return None
        if self._display is None:
            win = self.window
            if win is None and self.image.dtype == np.uint8:
                self._display = self.image
            else:
                from engine.imageio import to_uint8
                self._display = to_uint8(self.image, window=win)
        return self._display

    def pixel_value(self, x: int, y: int):
        if self.image is None or not (0 <= y < self.image.shape[0] and 0 <= x < self.image.shape[1]):
            return None
        v = self.image[y, x]
        return tuple(v.tolist()) if np.ndim(v) else v.item()
