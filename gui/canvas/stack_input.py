"""Mouse input CT users expect on the canvas, as an event filter on the view's viewport.

- Wheel on a stack or series: scroll through the slices (down = next slice), as in CT viewers.
  Ctrl+wheel zooms there; on a plain image the wheel zooms as before (the view's own handler).
- Right-drag: window/level. Horizontal motion changes the width (right = wider), vertical
  the centre (down = higher centre, a darker image), scaled to the width at the press so
  the feel is the same for 8-bit images and HU.

A filter, not a subclass, so the canvas stays as it is: `install(view)` is the one hook.
"""
from __future__ import annotations

from typing import Optional

from PyQt5 import QtCore

WHEEL_STEP = 120          # one notch (touchpads send fractions; they add up)
WIDTH_DOUBLING_PX = 150   # a drag this far right doubles the width
CENTER_PX_PER_WIDTH = 256  # a drag this far down moves the centre by one width


class StackInput(QtCore.QObject):
    def __init__(self, view) -> None:
        super().__init__(view)
        self.view = view
        self.controller = view.controller
        self._wheel = 0
        self._drag_from: Optional[QtCore.QPoint] = None
        self._drag_window: Optional[tuple[float, float]] = None
        self._pending: Optional[tuple[float, float]] = None
        # one window change per event-loop turn: a fast drag re-maps the image once, not per event
        self._apply = QtCore.QTimer(self)
        self._apply.setSingleShot(True)
        self._apply.setInterval(0)
        self._apply.timeout.connect(self._push_window)

    # ------------------------------------------------------------------ helpers
    def on_stack(self) -> bool:
        return len(self.controller.slice_items()) > 1

    def start_window(self) -> tuple[float, float]:
        """The window shown now; 8-bit images shown as stored count as (127.5, 255)."""
        win = self.controller.window
        return tuple(win) if win is not None else (127.5, 255.0)

    @staticmethod
    def dragged_window(start: tuple[float, float], dx: float, dy: float) -> tuple[float, float]:
        c0, w0 = start
        width = max(1e-3, w0 * 2.0 ** (dx / WIDTH_DOUBLING_PX))
        center = c0 + dy * w0 / CENTER_PX_PER_WIDTH
        return center, width

    def step_slices(self, step: int) -> bool:
        """Move `step` slices (clamped to the stack), from the slice being opened if any."""
        ctl = self.controller
        ids = ctl.slice_items()
        here = ctl.opening if ctl.opening in ids else ctl.item_id
        if here not in ids:
            return False
        k = max(0, min(len(ids) - 1, ids.index(here) + step))
        return ids[k] != here and ctl.request_item(ids[k])

    def _push_window(self) -> None:
        if self._pending is not None:
            c, w = self._pending
            self._pending = None
            self.controller.set_window(c, w)
            self.controller.message.emit(f"window: level {c:.0f}, width {w:.0f}")

    # ------------------------------------------------------------------ events
    def eventFilter(self, obj, event) -> bool:
        t = event.type()
        if t == QtCore.QEvent.Wheel:
            return self._wheel_event(event)
        if t == QtCore.QEvent.MouseButtonPress and event.button() == QtCore.Qt.RightButton:
            if self.controller.image is None or self.view.tool is not None and self.view.tool.busy:
                return False
            self._drag_from = event.pos()
            self._drag_window = self.start_window()
            event.accept()
            return True
        if t == QtCore.QEvent.MouseMove and self._drag_from is not None:
            if not event.buttons() & QtCore.Qt.RightButton:
                self._drag_from = None
                return False
            d = event.pos() - self._drag_from
            self._pending = self.dragged_window(self._drag_window, d.x(), d.y())
            self._apply.start()
            event.accept()
            return True
        if t == QtCore.QEvent.MouseButtonRelease and event.button() == QtCore.Qt.RightButton \
                and self._drag_from is not None:
            self._drag_from = None
            self._push_window()
            event.accept()
            return True
        if t == QtCore.QEvent.ContextMenu:
            return True  # the right button belongs to window/level
        return False

    def _wheel_event(self, event) -> bool:
        if event.modifiers() & QtCore.Qt.ControlModifier:
            if self.on_stack():
                self.view.wheelEvent(event)  # Ctrl+wheel zooms (the view ignores modifiers)
                return True
            return False
        if not self.on_stack():
            return False  # plain image: the view zooms
        self._wheel += event.angleDelta().y()
        steps = int(self._wheel / WHEEL_STEP)
        if steps:
            self._wheel -= steps * WHEEL_STEP
            self.step_slices(-steps)  # wheel down (negative delta) = next slice
        event.accept()
        return True


def install(view) -> StackInput:
    """Attach to a gui.canvas.CanvasView (idempotent); returns the filter."""
    existing = getattr(view, "stack_input", None)
    if isinstance(existing, StackInput):
        return existing
    f = StackInput(view)
    view.viewport().installEventFilter(f)
    view.stack_input = f
    return f
