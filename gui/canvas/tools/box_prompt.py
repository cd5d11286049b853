"""Prompt tool: box and click prompts answered by the project's own model.

- Drag a box around an object: its mask becomes a new instance (Shift+drag: added to the
  selected instance, Alt+drag: cut from it).
- Ctrl+click an object: the model's object under the cursor becomes a new instance;
  Shift+click adds it to the selected instance, Alt+click cuts it out of it (as the
  brush's Shift means "onto the selected one" and the eraser removes).
- Holding Ctrl, Shift or Alt while hovering outlines what a click would give (yellow: new,
  green: add, red: cut); the preview is computed in the prompt worker and never blocks.

With an active model (the one Auto-segment uses) the model answers from the item's cached
features (gui.prompt_service); without one, GrabCut answers a box and the wand a click.
The status bar says which rule answered. Each prompt is one undo step and makes an
instance of source "prompt". While an answer is on its way the cursor is busy; the window
keeps working. Esc cancels a box being drawn, else the prompts waiting for their answer
(the busy cursor goes, a late answer is dropped).
"""
from __future__ import annotations

from typing import Optional

from PyQt5 import QtCore, QtGui, QtWidgets

from ..neighbour_outlines import outline_path
from .base import Tool, cosmetic_pen

Qt = QtCore.Qt
CLICK_PX = 4          # a press and release closer than this (screen px) is a click, not a box
MODE_COLORS = {"new": (255, 220, 0), "add": (80, 230, 80), "subtract": (255, 70, 70)}
MODE_TEXT = {"new": "", "add": ": add", "subtract": ": subtract"}


def mode_of(mods) -> Optional[str]:
    """What a click with these modifiers does (None: a plain click, no prompt)."""
    if mods & Qt.AltModifier:
        return "subtract"
    if mods & Qt.ShiftModifier:
        return "add"
    if mods & Qt.ControlModifier:
        return "new"
    return None


class _ModifierWatch(QtCore.QObject):
    """Tells the tool when Ctrl/Shift/Alt are released over the canvas (the canvas passes
    key presses to tools, not releases)."""

    def __init__(self, tool) -> None:
        super().__init__()
        self.tool = tool

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QtCore.QEvent.KeyRelease and event.key() in (Qt.Key_Control, Qt.Key_Shift, Qt.Key_Alt):
            self.tool.modifiers_changed(event.modifiers())
        return False


class BoxPromptTool(Tool):
    name = "box_prompt"
    label = "Prompt (box / Ctrl+click)"
    tip = ("Drag a box around an object, or Ctrl+click it: the model's mask (GrabCut / wand without a model); "
           "Shift adds to the selected instance, Alt cuts from it; hold the key to preview")
    cursor = Qt.CrossCursor

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self.origin: Optional[QtCore.QPointF] = None
        self._origin_vp: Optional[QtCore.QPoint] = None
        self._rect = QtWidgets.QGraphicsRectItem()
        self._rect.setZValue(20)
        self._rect.setPen(cosmetic_pen(QtGui.QColor(255, 255, 0), 1.5, Qt.DashLine))
        self._rect.setVisible(False)
        canvas.scene().addItem(self._rect)
        self._preview = QtWidgets.QGraphicsPathItem()
        self._preview.setZValue(21)
        self._preview.setAcceptedMouseButtons(Qt.NoButton)
        self._preview.setVisible(False)
        canvas.scene().addItem(self._preview)
        self._hover: Optional[tuple[int, int]] = None      # pixel under the cursor
        self._asked: Optional[tuple[int, int]] = None      # pixel of the newest preview request
        self._shown = None                                   # PromptResult drawn as the preview
        self._watch = _ModifierWatch(self)
        self.service = None
        self.last_result = None                              # the last applied (or refused) result

    # -- the prompt service -------------------------------------------------------------------
    def attach(self, service) -> None:
        self.service = service
        service.answered.connect(self._on_answer)
        self.controller.currentItemChanged.connect(lambda *_: self._clear_preview())

    def _service(self):
        if self.service is None:        # a canvas without a main window: a service of its own
            from ...prompt_service import PromptService
            self.attach(PromptService(self.controller, self.canvas))
        return self.service

    # -- life cycle -----------------------------------------------------------------------------
    def activate(self) -> None:
        super().activate()
        self.canvas.installEventFilter(self._watch)

    def deactivate(self) -> None:
        self.canvas.removeEventFilter(self._watch)
        self.cancel()
        self._clear_preview()

    def leave(self) -> None:
        self._hover = None
        self._clear_preview()

    @property
    def busy(self) -> bool:
        return self.origin is not None

    # -- mouse ----------------------------------------------------------------------------------
    def press(self, event, pos) -> bool:
        if event.button() != Qt.LeftButton:
            return False
        self.origin = QtCore.QPointF(pos)
        self._origin_vp = event.pos()
        return True

    def move(self, event, pos) -> bool:
        self._hover = self.pixel(pos)
        if self.origin is not None and event.buttons() & Qt.LeftButton:
            if self._is_drag(event.pos()):
                self._clear_preview()
                color = MODE_COLORS[mode_of(event.modifiers()) or "new"]
                self._rect.setPen(cosmetic_pen(QtGui.QColor(*color), 1.5, Qt.DashLine))
                self._rect.setRect(QtCore.QRectF(self.origin, pos).normalized())
                self._rect.setVisible(True)
            return True
        self._update_preview(event.modifiers())
        return False

    def release(self, event, pos) -> bool:
        if event.button() != Qt.LeftButton or self.origin is None:
            return False
        drag = self._is_drag(event.pos())
        box = (self.origin.x(), self.origin.y(), pos.x(), pos.y())
        mods = event.modifiers()
        self.cancel()
        if drag:
            self.prompt(box, mode=mode_of(mods) or "new")
        elif mode_of(mods) is not None:
            self.click(self.pixel(pos), mode=mode_of(mods))
        else:
            self.controller.message.emit("prompt: drag a box around an object, or Ctrl+click it")
        return True

    def _is_drag(self, vp: QtCore.QPoint) -> bool:
        if self._origin_vp is None:
            return False
        d = vp - self._origin_vp
        return abs(d.x()) + abs(d.y()) >= CLICK_PX

    def key_press(self, event) -> bool:
        if event.key() == Qt.Key_Escape and self.origin is not None:
            self.cancel()
            return True
        if event.key() == Qt.Key_Escape and self.service is not None and self.service.waiting:
            self.service.cancel_waiting()
            self._idle_cursor()
            self.controller.message.emit("prompt cancelled; its answer will be dropped")
            return True
        if event.key() in (Qt.Key_Control, Qt.Key_Shift, Qt.Key_Alt):
            self.modifiers_changed(event.modifiers())
        return False

    def modifiers_changed(self, mods) -> None:
        if self.origin is None:
            self._update_preview(mods)

    def cancel(self) -> None:
        self.origin = None
        self._origin_vp = None
        self._rect.setVisible(False)

    # -- prompts --------------------------------------------------------------------------------
    def prompt(self, box, mode: str = "new"):
        """Ask for the mask in a box (x0, y0, x1, y1) in image pixels; it is applied when the
        answer arrives (PromptService.answered). Returns the request (None: nothing to ask)."""
        return self._ask("box", mode, box=box)

    def click(self, pixel: tuple[int, int], mode: str = "new"):
        """Ask for the object under a pixel; the shown preview answers at once when it is
        the answer for this pixel."""
        svc = self._service()
        shown = self._shown
        if shown is not None and shown.request.point == tuple(pixel) and svc.is_current(shown.request):
            self._apply(shown, mode)
            return shown.request
        return self._ask("click", mode, point=tuple(pixel))

    def _ask(self, kind: str, mode: str, **where):
        svc = self._service()
        if mode == "subtract" and not self.controller.selected_instances():
            self.controller.message.emit("prompt: select the instance to cut from first (Alt cuts from it)")
            return None
        tol = self.controller.wand_tolerance(self.canvas.tolerance / 100.0) if kind == "click" else None
        req = svc.ask(kind, mode=mode, tolerance=tol, **where)
        if req is not None:
            self.canvas.viewport().setCursor(Qt.BusyCursor)
        return req

    def _on_answer(self, res) -> None:
        if res.request.preview:
            self._show_preview(res)
            return
        if not self.service.waiting:
            self._idle_cursor()
        self._apply(res, res.request.mode)

    def _idle_cursor(self) -> None:
        self.canvas.viewport().setCursor(self.cursor if self.canvas.tool is self else self.canvas.tool.cursor)

    def _apply(self, res, mode: str) -> bool:
        c = self.controller
        self.last_result = res
        kind = "box" if res.request.kind == "box" else "click"
        if res.error:
            c.message.emit(f"{kind} prompt: {res.error}")
            return False
        who = self.describe(res)
        if res.answer is None:
            c.message.emit(f"{kind} prompt ({who}): nothing found" + (" in the box" if kind == "box" else " here"))
            return False
        inst = res.answer.instance
        text = f"{kind.capitalize()} prompt ({res.rule}){MODE_TEXT[mode]}"
        if mode == "subtract":
            done = c.subtract_mask(inst.mask, inst.x0, inst.y0, text=text)
        else:
            done = c.add_mask(inst.mask, inst.x0, inst.y0, text=text, new=mode == "new", source="prompt")
        c.message.emit(f"{kind} prompt answered by {who}" if done else
                       f"{kind} prompt ({who}): nothing changed")
        if done:
            self._clear_preview()
        return done

    @staticmethod
    def describe(res) -> str:
        """Which rule answered, for the status bar."""
        if res.rule != "model":
            why = res.note or "no model"
            return f"{res.rule} ({why})"
        ans = res.answer
        bits = [f"run {res.run}"] if res.run else []
        if ans is not None:
            if ans.label and ans.label != ans.instance.label:
                bits.append(f"the model's class: {ans.label}")
            if ans.score is not None:
                bits.append(f"score {ans.score:.2f}")
            if getattr(ans, "refined", False):
                bits.append("refined box")
        return "the model" + (f" ({', '.join(bits)})" if bits else "")

    # -- hover preview --------------------------------------------------------------------------
    def _update_preview(self, mods) -> None:
        mode = mode_of(mods)
        ann = self.controller.annotation
        if (mode is None or self._hover is None or ann is None
                or not (0 <= self._hover[0] < ann.width and 0 <= self._hover[1] < ann.height)):
            self._clear_preview()
            return
        self._style_preview(mode)
        if self._hover == self._asked:
            return
        self._asked = self._hover
        shown = self._shown
        if shown is not None and shown.request.point != self._hover:
            self._preview.setVisible(False)
        tol = self.controller.wand_tolerance(self.canvas.tolerance / 100.0)
        self._service().ask("click", point=self._hover, preview=True, mode=mode, tolerance=tol)

    def _style_preview(self, mode: str) -> None:
        r, g, b = MODE_COLORS[mode]
        self._preview.setPen(cosmetic_pen(QtGui.QColor(r, g, b), 2.0))
        self._preview.setBrush(QtGui.QColor(r, g, b, 60))

    def _show_preview(self, res) -> None:
        if self._asked is None or res.request.point != self._asked:
            return                       # the cursor moved on, or the modifier went up
        self._shown = res
        ans = res.answer
        if ans is None or res.error:
            self._preview.setVisible(False)
            return
        inst = ans.instance
        self._preview.setPath(outline_path(inst.mask, inst.x0, inst.y0))
        self._preview.setVisible(True)

    def _clear_preview(self) -> None:
        self._asked = None
        self._shown = None
        self._preview.setVisible(False)
        if self.service is not None:
            self.service.cancel_previews()

    @property
    def preview_visible(self) -> bool:
        return self._preview.isVisible()
