"""Box prompt: drag a rectangle around an object; its mask becomes a new instance (one
undo step). Without a model this is GrabCut inside the box on the displayed image
(engine.prompt_classic.grabcut_box); the status bar says which rule answered. Shift+drag
adds the mask to the selected instance. Esc cancels a box being drawn."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from engine.errors import MaskLoopError
from engine.prompt_classic import grabcut_box

from .base import Tool, cosmetic_pen


class BoxPromptTool(Tool):
    name = "box_prompt"
    label = "Box prompt"
    shortcut = ""       # B is the brush, R rejects; the keymap can give it one
    tip = "Drag a box around an object: its mask (GrabCut without a model)"
    cursor = QtCore.Qt.CrossCursor

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self.origin = None
        self._item = QtWidgets.QGraphicsRectItem()
        self._item.setZValue(20)
        self._item.setPen(cosmetic_pen(QtGui.QColor(255, 255, 0), 1.5, QtCore.Qt.DashLine))
        self._item.setVisible(False)
        canvas.scene().addItem(self._item)

    @property
    def busy(self) -> bool:
        return self.origin is not None

    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        self.origin = QtCore.QPointF(pos)
        return True

    def move(self, event, pos) -> bool:
        if self.origin is None or not (event.buttons() & QtCore.Qt.LeftButton):
            return False
        self._item.setRect(QtCore.QRectF(self.origin, pos).normalized())
        self._item.setVisible(True)
        return True

    def release(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton or self.origin is None:
            return False
        box = (self.origin.x(), self.origin.y(), pos.x(), pos.y())
        self.cancel()
        self.prompt(box, add=bool(event.modifiers() & QtCore.Qt.ShiftModifier))
        return True

    def prompt(self, box, add: bool = False) -> bool:
        """Answer a box (x0, y0, x1, y1) in image pixels; True when an instance was made."""
        display = self.controller.display_image()
        if display is None:
            return False
        try:
            answer = grabcut_box(display, box)
        except MaskLoopError as e:
            self.controller.message.emit(f"box prompt: {e}")
            return False
        if answer is None:
            self.controller.message.emit("box prompt (GrabCut): nothing found in the box")
            return False
        inst = answer.instance
        done = self.controller.add_mask(inst.mask, inst.x0, inst.y0, text="Box prompt (GrabCut)", new=not add)
        if done:
            self.controller.message.emit("box prompt answered by GrabCut (no model)")
        return done

    def key_press(self, event) -> bool:
        if event.key() == QtCore.Qt.Key_Escape and self.origin is not None:
            self.cancel()
            return True
        return False

    def cancel(self) -> None:
        self.origin = None
        self._item.setVisible(False)
