"""A line edit for a file or folder path that, when it is too long to fit and the field
is not being edited, shows the path elided in the middle ("…/data/…/export/coco.json"):
both the start (where) and the end (the file name) stay readable. The full path is in
the tooltip and comes back as soon as the field has the focus."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets


class PathEdit(QtWidgets.QLineEdit):
    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(text, parent)
        self.textChanged.connect(self.setToolTip)
        self.setToolTip(text)

    def _contents(self) -> QtCore.QRect:
        opt = QtWidgets.QStyleOptionFrame()
        self.initStyleOption(opt)
        return self.style().subElementRect(QtWidgets.QStyle.SE_LineEditContents, opt, self).adjusted(2, 0, -2, 0)

    def displayed_text(self) -> str:
        """What the field shows now: the path, or the path elided in the middle."""
        if self.hasFocus():
            return self.text()
        return self.fontMetrics().elidedText(self.text(), QtCore.Qt.ElideMiddle, self._contents().width())

    def paintEvent(self, event) -> None:
        shown = self.displayed_text()
        if shown == self.text():
            super().paintEvent(event)
            return
        p = QtGui.QPainter(self)
        opt = QtWidgets.QStyleOptionFrame()
        self.initStyleOption(opt)
        self.style().drawPrimitive(QtWidgets.QStyle.PE_PanelLineEdit, opt, p, self)
        p.setPen(self.palette().color(QtGui.QPalette.Text))
        p.drawText(self._contents(), QtCore.Qt.AlignVCenter | QtCore.Qt.AlignLeft, shown)
        p.end()
