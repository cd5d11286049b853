"""The window's status bar: one field per kind of information, side by side, never drawn
over each other. Messages go to their own field (not QStatusBar.showMessage, whose
temporary text covers the other widgets) and clear themselves after a while.

Fields, left to right: message · [widgets the loop adds: auto-segment progress, "no
model"] · item · position · pixel value · zoom · saved state.
"""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets


def _field(min_width: int = 0, name: str = "") -> QtWidgets.QLabel:
    lab = QtWidgets.QLabel()
    lab.setProperty("field", True)      # style.qss draws a separator before each field
    lab.setObjectName(name)
    # an explicit minimum: a long text is cut, it never makes the window wider than the screen
    lab.setMinimumWidth(min_width or 40)
    return lab


class StatusBar(QtWidgets.QStatusBar):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSizeGripEnabled(False)
        self.message_label = QtWidgets.QLabel()
        self.message_label.setObjectName("statusMessage")
        self.message_label.setTextFormat(QtCore.Qt.PlainText)
        self.message_label.setMinimumWidth(80)
        self.message_label.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        self.addWidget(self.message_label, 1)
        self.item_label = _field(0, "statusItem")
        self.pos_label = _field(96, "statusPosition")
        self.value_label = _field(120, "statusValue")
        self.zoom_label = _field(52, "statusZoom")
        self.save_label = _field(84, "statusSaved")
        for w in (self.item_label, self.pos_label, self.value_label, self.zoom_label, self.save_label):
            self.addPermanentWidget(w)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._clear_message)

    def add_field(self, widget: QtWidgets.QWidget) -> None:
        """A widget of its own between the message and the item (e.g. a progress bar)."""
        if isinstance(widget, QtWidgets.QLabel) and widget.minimumWidth() == 0:
            widget.setMinimumWidth(40)
        self.insertWidget(1, widget)

    def show_message(self, text: str, ms: int = 6000) -> None:
        """Text in the message field for ms milliseconds (0: until the next message)."""
        self.message_label.setText(text)
        self.message_label.setToolTip(text)
        if ms > 0:
            self._timer.start(ms)
        else:
            self._timer.stop()

    def _clear_message(self) -> None:
        self.message_label.setText("")

    def message(self) -> str:
        return self.message_label.text()

    def clear_pixel(self) -> None:
        """The position and value belong to the item they were read from."""
        self.pos_label.setText("")
        self.value_label.setText("")
