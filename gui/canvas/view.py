"""CanvasView: a QGraphicsView over one item's image and its mask overlay.

Scene coordinates are image pixels (pixel (i, j) covers [i, i+1) x [j, j+1)). The image
(gui.canvas.image_levels) and the overlay (gui.canvas.overlay) are resolution levels made
tile by tile when the screen shows them, so opening a 16384² image converts only what the
fit view needs; an edit re-renders the overlay only inside its rectangle. Tools
(gui.canvas.tools) receive the mouse and keys; panning and zooming stay here:
wheel = zoom to the cursor, middle-drag or Space+drag = pan, H held = image only.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from PyQt5 import QtCore, QtGui, QtWidgets

from .. import theme
from .image_levels import ImageLevels
from .layers import LevelLayer, OverlayLayer
from .overlay import MARGIN, Overlay, instance_color_index, instance_colors, palette
from .tools import TOOLS, Tool

MIN_ZOOM, MAX_ZOOM = 1 / 64, 64.0
HOLD_KEY = QtCore.Qt.Key_H


class CanvasView(QtWidgets.QGraphicsView):
    cursorMoved = QtCore.pyqtSignal(int, int)        # pixel under the cursor, (-1, -1) outside
    zoomChanged = QtCore.pyqtSignal(float)
    toolChanged = QtCore.pyqtSignal(str)
    brushSizeChanged = QtCore.pyqtSignal(int)
    toleranceChanged = QtCore.pyqtSignal(float)
    overlayOptionsChanged = QtCore.pyqtSignal()

    def __init__(self, controller, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setScene(QtWidgets.QGraphicsScene(self))
        self.image_layer = LevelLayer()
        self.image_layer.setZValue(0)
        self.overlay_layer = OverlayLayer()
        self.overlay_layer.setZValue(1)
        self.scene().addItem(self.image_layer)
        self.scene().addItem(self.overlay_layer)
        self.overlay: Optional[Overlay] = None
        self.image_levels: Optional[ImageLevels] = None
        self._shape: Optional[tuple[int, int]] = None
        self._selected: set[str] = set()
        self._label_index: dict[str, int] = {}
        self.opacity = 0.45
        self.show_outlines = True
        self.masks_visible = True
        self.color_by = "label"   # or "instance"
        self._holding = False
        self._brush_size = 15
        self._tolerance = 10.0   # magic wand: percent of the displayed range
        self._pan_from: Optional[QtCore.QPoint] = None
        self._fitted = False  # the image was fitted and the user has not zoomed since
        # previewed image tiles are made exact one per event-loop turn (ImageLevels.refine)
        self._refiner = QtCore.QTimer(self)
        self._refiner.setInterval(0)
        self._refiner.timeout.connect(self._refine_step)
        self._filter = None   # instance -> bool: which instances are drawn (e.g. the score slider)
        self._space = False

        self.setTransformationAnchor(QtWidgets.QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QtWidgets.QGraphicsView.AnchorViewCenter)
        self.setViewportUpdateMode(QtWidgets.QGraphicsView.MinimalViewportUpdate)
        self.setOptimizationFlag(QtWidgets.QGraphicsView.DontAdjustForAntialiasing, True)
        self.setOptimizationFlag(QtWidgets.QGraphicsView.DontSavePainterState, True)
        self.setBackgroundBrush(theme.color("canvas.background"))
        self.setFrameShape(QtWidgets.QFrame.NoFrame)
        self.setMouseTracking(True)
        self.setFocusPolicy(QtCore.Qt.StrongFocus)
        self.setAcceptDrops(False)

        self.tools: dict[str, Tool] = {}
        for cls in TOOLS:
            self.register_tool(cls)
        self.tool: Optional[Tool] = None
        self.set_tool("select")

        c = controller
        c.currentItemChanged.connect(self._on_item)
        c.annotationEdited.connect(self._on_edited)
        c.selectionChanged.connect(self._on_selection)
        c.labelsChanged.connect(self._on_labels)
        c.windowChanged.connect(self._on_window)
        c.projectClosed.connect(self.clear)

    # ------------------------------------------------------------------ tools
    def register_tool(self, cls) -> Tool:
        tool = cls(self)
        self.tools[tool.name] = tool
        return tool

    def set_tool(self, name: str) -> None:
        tool = self.tools[name]
        if tool is self.tool:
            return
        if self.tool is not None:
            self.tool.deactivate()
        self.tool = tool
        tool.activate()
        self.toolChanged.emit(name)

    @property
    def brush_size(self) -> int:
        return self._brush_size

    @brush_size.setter
    def brush_size(self, value: int) -> None:
        value = int(max(1, min(1000, value)))
        if value != self._brush_size:
            self._brush_size = value
            for t in self.tools.values():
                if hasattr(t, "update_ring") and t is self.tool:
                    t.update_ring()
            self.brushSizeChanged.emit(value)

    def change_brush_size(self, step: int) -> None:
        s = self._brush_size
        delta = max(1, int(round(s * 0.15)))
        self.brush_size = s + (delta if step > 0 else -delta)

    @property
    def tolerance(self) -> float:
        return self._tolerance

    @tolerance.setter
    def tolerance(self, value: float) -> None:
        value = float(max(0.0, min(100.0, value)))
        if value != self._tolerance:
            self._tolerance = value
            self.toleranceChanged.emit(value)

    # ------------------------------------------------------------------ content
    def clear(self) -> None:
        if self.tool is not None:
            self.tool.cancel()
        self.image_layer.set_source(None)
        self.overlay_layer.set_source(None)
        self.overlay = None
        self.image_levels = None
        self._shape = None
        self._selected = set()

    def label_index(self, name: str) -> int:
        return self._label_index.get(name, 0)

    def color_index(self, inst) -> int:
        if self.color_by == "instance":
            return instance_color_index(inst)
        return self._label_index.get(inst.label, 0)

    def _on_item(self, item_id: str) -> None:
        ctl = self.controller
        if self.tool is not None:
            self.tool.cancel()
        ann = ctl.annotation
        shape = (ann.height, ann.width)
        self._show_image()
        if self.overlay is None or (self.overlay.height, self.overlay.width) != shape:
            self.overlay = Overlay(*shape)
            self.overlay_layer.set_source(self.overlay)
        self._selected = set(ctl.selection)
        self._label_index = {n: k for k, n in enumerate(ctl.labels.names())}
        self._apply_palette()
        self.rerender(None)
        if shape != self._shape:
            self._shape = shape
            self.scene().setSceneRect(QtCore.QRectF(0, 0, shape[1], shape[0]))
            self.fit()

    def _show_image(self) -> None:
        """The item's image through the current window, as levels made when shown."""
        ctl = self.controller
        image, window = ctl.image, ctl.window
        if image is None:
            self.image_levels = None
        else:
            if window is None and image.dtype != np.uint8:
                image = ctl.display_image()  # no window: the controller's own mapping
            self.image_levels = ImageLevels(image, window)
            self.image_levels.on_rough = self._refiner.start
        self.image_layer.set_source(self.image_levels)

    def _refine_step(self) -> None:
        box = self.image_levels.refine() if self.image_levels is not None else None
        if box is None:
            self._refiner.stop()
            return
        x0, y0, x1, y1 = box
        self.image_layer.update(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))

    @property
    def settled(self) -> bool:
        """Every image tile drawn so far is exact (no preview is waiting to be refined)."""
        return self.image_levels is None or not self.image_levels.rough()

    def _on_window(self, _win) -> None:
        levels, ctl = self.image_levels, self.controller
        if levels is not None and levels.image is ctl.image and ctl.window is not None:
            levels.set_window(ctl.window)   # the reduced data is kept; only the mapping is redone
            self.image_layer.update()
        elif ctl.image is not None:
            self._show_image()

    def _on_edited(self, item_id: str, region) -> None:
        if item_id == self.controller.item_id:
            self.rerender(region)

    def _on_selection(self, ids: list) -> None:
        new = set(ids)
        changed = new ^ self._selected
        self._selected = new
        ann = self.controller.annotation
        if ann is None:
            return
        self.rerender_boxes([(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height)
                             for i in ann.instances if i.id in changed])

    def _on_labels(self) -> None:
        labels = self.controller.labels
        self._label_index = {n: k for k, n in enumerate(labels.names())} if labels is not None else {}
        self._apply_palette()
        self.rerender(None)

    def _apply_palette(self) -> None:
        if self.overlay is None or self.controller.labels is None:
            return
        if self.color_by == "instance":
            colors = instance_colors()
        else:
            colors = [tuple(l.color) for l in self.controller.labels]
        self.overlay.set_palette(palette(colors, self.opacity, self.show_outlines))
        self.overlay_layer.invalidate()
        self.overlay_layer.update()

    def set_opacity(self, value: float) -> None:
        self.opacity = float(max(0.0, min(1.0, value)))
        self._apply_palette()
        self.overlayOptionsChanged.emit()

    def set_outlines(self, on: bool) -> None:
        self.show_outlines = bool(on)
        self._apply_palette()
        self.overlayOptionsChanged.emit()

    def set_color_by(self, mode: str) -> None:
        self.color_by = "instance" if mode == "instance" else "label"
        self._apply_palette()
        self.rerender(None)
        self.overlayOptionsChanged.emit()

    def set_masks_visible(self, on: bool) -> None:
        self.masks_visible = bool(on)
        self.overlay_layer.setVisible(self.masks_visible and not self._holding)
        self.overlayOptionsChanged.emit()

    def set_instance_filter(self, keep) -> None:
        """Draw only the instances for which keep(instance) is true (None: all)."""
        self._filter = keep
        self.rerender(None)

    def shown_instances(self) -> list:
        ann = self.controller.annotation
        if ann is None:
            return []
        return ann.instances if self._filter is None else [i for i in ann.instances if self._filter(i)]

    def instances_at(self, x: int, y: int) -> list[str]:
        """Ids of the drawn instances under pixel (x, y), topmost first (what a click picks)."""
        hits = self.controller.instances_at(x, y)
        if self._filter is None or not hits:
            return hits
        shown = {i.id for i in self.shown_instances()}
        return [i for i in hits if i in shown]

    def rerender(self, region) -> None:
        """Re-render the overlay in region (x0, y0, x1, y1), or all of it when None."""
        self.rerender_boxes([region])

    def rerender_boxes(self, regions: list) -> None:
        """Re-render the overlay in each region (None: all of it); the content is read once."""
        ann = self.controller.annotation
        if self.overlay is None or ann is None or not regions:
            return
        self.overlay.set_content(self.shown_instances(), self.color_index, self.controller.hidden_labels(),
                                 self._selected)
        for region in regions:
            if region is not None:
                region = (region[0] - MARGIN, region[1] - MARGIN, region[2] + MARGIN, region[3] + MARGIN)
            drawn = self.overlay.redraw(region)
            if drawn is not None:
                self.overlay_changed(drawn)

    def overlay_changed(self, box) -> None:
        x0, y0, x1, y1 = box
        self.overlay_layer.invalidate(box)
        self.overlay_layer.update(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))

    # ------------------------------------------------------------------ zoom
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, scale: float, anchor_scene: Optional[QtCore.QPointF] = None) -> None:
        self._fitted = False   # the user chose a zoom: a resize keeps it
        scale = max(MIN_ZOOM, min(MAX_ZOOM, scale))
        f = scale / self.zoom
        if abs(f - 1) < 1e-9:
            return
        self.scale(f, f)
        if anchor_scene is not None:
            self.centerOn(anchor_scene)
        self.zoomChanged.emit(self.zoom)

    def zoom_by(self, factor: float) -> None:
        self.set_zoom(self.zoom * factor)

    def fit(self) -> None:
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        self.fitInView(rect, QtCore.Qt.KeepAspectRatio)
        self._fitted = True    # until the user zooms, a resize fits again
        self.zoomChanged.emit(self.zoom)

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.25 ** steps)
        event.accept()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    # ------------------------------------------------------------------ mouse
    def _scene_pos(self, event) -> QtCore.QPointF:
        inv, _ = self.viewportTransform().inverted()
        return inv.map(QtCore.QPointF(event.localPos()))

    def _start_pan(self, event) -> bool:
        if event.button() == QtCore.Qt.MiddleButton or (
                event.button() == QtCore.Qt.LeftButton and self._space):
            self._pan_from = event.pos()
            self.viewport().setCursor(QtCore.Qt.ClosedHandCursor)
            return True
        return False

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        self.setFocus(QtCore.Qt.MouseFocusReason)
        if self._start_pan(event):
            event.accept()
            return
        if self.controller.annotation is not None and self.tool.press(event, self._scene_pos(event)):
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._pan_from is not None:
            d = event.pos() - self._pan_from
            self._pan_from = event.pos()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - d.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - d.y())
            event.accept()
            return
        pos = self._scene_pos(event)
        x, y = int(math.floor(pos.x())), int(math.floor(pos.y()))
        if self._shape is not None and 0 <= x < self._shape[1] and 0 <= y < self._shape[0]:
            self.cursorMoved.emit(x, y)
        else:
            self.cursorMoved.emit(-1, -1)
        if self.controller.annotation is not None and self.tool.move(event, pos):
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._pan_from is not None and event.button() in (QtCore.Qt.MiddleButton, QtCore.Qt.LeftButton):
            self._pan_from = None
            self.viewport().setCursor(self.tool.cursor)
            event.accept()
            return
        if self.controller.annotation is not None and self.tool.release(event, self._scene_pos(event)):
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QtGui.QMouseEvent) -> None:
        if self.controller.annotation is not None and self.tool.double_click(event, self._scene_pos(event)):
            event.accept()
            return
        # a double-click is otherwise a second press (e.g. two quick brush dabs)
        self.mousePressEvent(event)

    def leaveEvent(self, event) -> None:
        self.cursorMoved.emit(-1, -1)
        if self.tool is not None:
            self.tool.leave()
        super().leaveEvent(event)

    # ------------------------------------------------------------------ keys
    def event(self, event: QtCore.QEvent) -> bool:
        # Tab cycles overlapping instances instead of moving the keyboard focus
        if event.type() == QtCore.QEvent.KeyPress and event.key() in (QtCore.Qt.Key_Tab, QtCore.Qt.Key_Backtab):
            self.keyPressEvent(event)
            return True
        return super().event(event)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        if self.tool is not None and self.controller.annotation is not None and self.tool.key_press(event):
            event.accept()
            return
        key = event.key()
        if key == HOLD_KEY and not event.isAutoRepeat():
            self._holding = True
            self.overlay_layer.setVisible(False)
            event.accept()
            return
        if key == QtCore.Qt.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(QtCore.Qt.OpenHandCursor)
            event.accept()
            return
        if key == QtCore.Qt.Key_Escape:
            self.controller.set_selection([])
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QtGui.QKeyEvent) -> None:
        key = event.key()
        if key == HOLD_KEY and not event.isAutoRepeat():
            self._holding = False
            self.overlay_layer.setVisible(self.masks_visible)
            event.accept()
            return
        if key == QtCore.Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().setCursor(self.tool.cursor)
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:
        if self._holding:
            self._holding = False
            self.overlay_layer.setVisible(self.masks_visible)
        self._space = False
        super().focusOutEvent(event)
