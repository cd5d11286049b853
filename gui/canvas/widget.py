"""The central widget: the canvas and, for stacks and series, a slice slider."""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from .empty_hint import EmptyHint
from .view import CanvasView


class SliceBar(QtWidgets.QWidget):
    """Slider over the slices of the current item's source (hidden for single images)."""

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(6, 2, 6, 2)
        self.label = QtWidgets.QLabel()
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.slider.setFocusPolicy(QtCore.Qt.NoFocus)
        self.slider.setPageStep(10)
        lay.addWidget(QtWidgets.QLabel("Slice"))
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.label)
        self._ids: list[str] = []
        self.slider.valueChanged.connect(self._on_slider)
        controller.currentItemChanged.connect(self.refresh)
        controller.projectClosed.connect(self.refresh)
        controller.itemsChanged.connect(self.refresh)
        self.refresh()

    def refresh(self, *_args) -> None:
        ctl = self.controller
        self._ids = ctl.slice_items() if ctl.item_id else []
        if len(self._ids) <= 1:
            self.setVisible(False)
            return
        k = self._ids.index(ctl.item_id)
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(self._ids) - 1)
        self.slider.setValue(k)
        self.slider.blockSignals(False)
        self.label.setText(f"{k + 1} / {len(self._ids)}")
        self.setVisible(True)

    def _on_slider(self, value: int) -> None:
        if 0 <= value < len(self._ids) and self._ids[value] != self.controller.item_id:
            if not self.controller.request_item(self._ids[value]):
                self.refresh()


class CanvasWidget(QtWidgets.QWidget):
    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.view = CanvasView(controller)
        self.hint = EmptyHint()
        self.pages = QtWidgets.QStackedWidget()
        self.pages.addWidget(self.view)
        self.pages.addWidget(self.hint)
        self.slices = SliceBar(controller)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.pages, 1)
        lay.addWidget(self.slices)
        for sig in (controller.projectOpened, controller.projectClosed, controller.currentItemChanged,
                    controller.itemsChanged):
            sig.connect(self.update_page)
        self.update_page()

    def update_page(self, *_args) -> None:
        """The image when an item is open, else what to do (open / add images)."""
        ctl = self.controller
        if ctl.item_id is not None:
            self.pages.setCurrentWidget(self.view)
        else:
            self.hint.show_for(ctl.project is not None)
            self.pages.setCurrentWidget(self.hint)
