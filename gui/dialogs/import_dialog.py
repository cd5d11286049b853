"""Import dialog: COCO JSON, labelme JSON (file or folder) or label maps (Cellpose, StarDist,
ImageJ label images), as ground truth or as predictions to review.

Calls engine.formats (import_coco / import_labelme / import_labelmap) off the GUI thread
with progress and Cancel; bad input changes nothing and the error names the file and
field; the summary (items, instances, what was skipped and why) is shown at the end.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PyQt5 import QtCore, QtWidgets

from engine.errors import CancelledError, MaskLoopError

from .. import theme
from .path_edit import PathEdit


def run_import(project, source, *, fmt: str, label: Optional[str] = None, as_predictions: bool = False,
               images_dir=None, progress=None, cancel=None):
    """The engine call for one import (the same functions `maskloop import` uses)."""
    source = Path(source)
    if fmt == "coco":
        from engine.formats.coco import import_coco
        return import_coco(project, source, images_dir=images_dir or None, as_predictions=as_predictions,
                           progress=progress, cancel=cancel)
    if fmt == "labelme":
        from engine.formats.labelme import import_labelme
        return import_labelme(project, source, as_predictions=as_predictions, progress=progress, cancel=cancel)
    if fmt == "labelmap":
        from engine.formats.labelmap import import_labelmap
        return import_labelmap(project, source, label=label or None, as_predictions=as_predictions,
                               progress=progress, cancel=cancel)
    raise MaskLoopError(f"unknown import format {fmt!r}")


class ImportDialog(QtWidgets.QDialog):
    """After a successful import `report` holds the engine's ImportReport; `imported` is
    emitted so the window can reload the project's views."""

    imported = QtCore.pyqtSignal(object)

    def __init__(self, project, parent=None, *, flush=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import annotations")
        self.setObjectName("ImportDialog")
        self.project = project
        self.flush = flush
        self.report = None
        self.format = QtWidgets.QComboBox()
        self.format.setObjectName("formatCombo")
        self.format.addItem("COCO instances JSON", "coco")
        self.format.addItem("labelme JSON (a file or a folder of them)", "labelme")
        self.format.addItem("Label maps (integer label images: Cellpose, StarDist, ImageJ)", "labelmap")
        self.source = PathEdit()
        self.source.setObjectName("sourceEdit")
        browse_file = QtWidgets.QPushButton("File…")
        browse_file.clicked.connect(self._browse_file)
        browse_dir = QtWidgets.QPushButton("Folder…")
        browse_dir.clicked.connect(self._browse_dir)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(browse_file)
        row.addWidget(browse_dir)
        self.label = QtWidgets.QComboBox()
        self.label.setObjectName("labelCombo")
        self.label.setEditable(True)
        self.label.addItems(project.labels.names())
        self.as_predictions = QtWidgets.QCheckBox("Import as predictions to review (not as reviewed ground truth)")
        self.as_predictions.setObjectName("asPredictions")
        self.summary = QtWidgets.QLabel("Imported annotations are added to the items' existing ones; "
                                        "importing the same file twice changes nothing.")
        self.summary.setObjectName("importSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        form = QtWidgets.QFormLayout()
        form.addRow("Format:", self.format)
        form.addRow("From:", row)
        form.addRow("Label (label maps):", self.label)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.as_predictions)
        lay.addWidget(self.summary)
        self.buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        self.import_button = self.buttons.addButton("Import", QtWidgets.QDialogButtonBox.ActionRole)
        self.import_button.setObjectName("importButton")
        self.import_button.clicked.connect(self.do_import)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.format.currentIndexChanged.connect(self._on_format)
        self._on_format()

    def _on_format(self) -> None:
        self.label.setEnabled(self.format.currentData() == "labelmap")

    def _browse_file(self) -> None:
        filt = "JSON (*.json)" if self.format.currentData() != "labelmap" else \
            "Label images (*.png *.tif *.tiff);;All files (*)"
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Import from", str(self.project.root), filt)
        if path:
            self.source.setText(path)

    def _browse_dir(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Import from folder", str(self.project.root))
        if path:
            self.source.setText(path)

    def options(self) -> dict:
        return {"fmt": self.format.currentData(), "source": self.source.text().strip(),
                "label": self.label.currentText().strip() or None,
                "as_predictions": self.as_predictions.isChecked()}

    def do_import(self):
        from ..background import run_with_progress
        opts = self.options()
        if not opts["source"]:
            self.summary.setText("Choose a file or folder to import.")
            return None
        if opts["fmt"] != "labelmap":
            opts.pop("label")
        if self.flush is not None and not self.flush():
            self.summary.setText("The current item's edits could not be saved; import not started.")
            return None
        source = opts.pop("source")
        self.import_button.setEnabled(False)
        try:
            self.report = run_with_progress(self, "Importing", run_import, self.project, source, **opts)
        except CancelledError:
            self.summary.setText("Import cancelled; the project is unchanged.")
            return None
        except (MaskLoopError, OSError) as e:
            msg = e.one_line() if isinstance(e, MaskLoopError) else str(e)
            theme.set_state(self.summary, "error")
            self.summary.setText(f"Nothing was imported: {msg}")
            return None
        finally:
            self.import_button.setEnabled(True)
        theme.set_state(self.summary, "")
        self.summary.setText("✓ " + self.report.summary())
        self.imported.emit(self.report)
        return self.report
