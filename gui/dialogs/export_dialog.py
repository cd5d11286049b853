"""Export dialog: COCO (only reviewed, copy images, train/val split, polygons) or labelme.

The dialog collects options and calls engine.formats (export_coco / export_labelme) off
the GUI thread with a progress bar and Cancel (gui.background.run_with_progress); the summary
(items, instances, what was skipped and why) is shown in the dialog at the end. No
format logic here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PyQt5 import QtCore, QtWidgets

from engine.errors import CancelledError, MaskLoopError

from .. import theme
from .path_edit import PathEdit


def run_export(project, out, *, fmt: str = "coco", only_reviewed: bool = True, copy_images: bool = False,
               split: Optional[float] = None, polygons: bool = False, progress=None, cancel=None):
    """The engine call for one export (the same functions `maskloop export` uses)."""
    if fmt == "coco":
        from engine.formats.coco import export_coco
        return export_coco(project, out, polygons=polygons, only_reviewed=only_reviewed,
                           copy_images=copy_images, split=split, progress=progress, cancel=cancel)
    if fmt == "labelme":
        from engine.formats.labelme import export_labelme
        return export_labelme(project, out, only_reviewed=only_reviewed, copy_images=copy_images,
                              split=split, progress=progress, cancel=cancel)
    raise MaskLoopError(f"unknown export format {fmt!r}")


class ExportDialog(QtWidgets.QDialog):
    def __init__(self, project, parent=None, *, flush=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export annotations")
        self.setObjectName("ExportDialog")
        self.project = project
        self.flush = flush
        self.report = None
        statuses = project.statuses()
        n_rev = sum(1 for s in statuses.values() if s == "reviewed")

        self.format = QtWidgets.QComboBox()
        self.format.setObjectName("formatCombo")
        self.format.addItem("COCO instances JSON", "coco")
        self.format.addItem("labelme JSON (one file per image)", "labelme")
        self.out = PathEdit(str(project.root / "export" / "coco.json"))
        self.out.setObjectName("outEdit")
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QtWidgets.QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        self.only_reviewed = QtWidgets.QCheckBox(f"Only reviewed items ({n_rev} of {len(statuses)})")
        self.only_reviewed.setObjectName("onlyReviewed")
        self.only_reviewed.setChecked(n_rev > 0)
        self.copy_images = QtWidgets.QCheckBox("Copy images next to the export (a dataset that stands alone)")
        self.copy_images.setObjectName("copyImages")
        self.split = QtWidgets.QCheckBox("Split into train / val:")
        self.split.setObjectName("splitCheck")
        self.split_frac = QtWidgets.QDoubleSpinBox()
        self.split_frac.setObjectName("splitFraction")
        self.split_frac.setRange(0.05, 0.95)
        self.split_frac.setSingleStep(0.05)
        self.split_frac.setValue(0.8)
        self.split_frac.setSuffix(" train")
        self.split_frac.setEnabled(False)
        self.split.toggled.connect(self.split_frac.setEnabled)
        split_row = QtWidgets.QHBoxLayout()
        split_row.addWidget(self.split)
        split_row.addWidget(self.split_frac)
        split_row.addStretch(1)
        self.polygons = QtWidgets.QCheckBox("Polygons instead of RLE masks (COCO)")
        self.polygons.setObjectName("polygons")
        self.summary = QtWidgets.QLabel("")
        self.summary.setObjectName("exportSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)

        form = QtWidgets.QFormLayout()
        form.addRow("Format:", self.format)
        form.addRow("Save to:", out_row)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        for w in (self.only_reviewed, self.copy_images):
            lay.addWidget(w)
        lay.addLayout(split_row)
        lay.addWidget(self.polygons)
        lay.addWidget(self.summary)
        self.buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        self.export_button = self.buttons.addButton("Export", QtWidgets.QDialogButtonBox.ActionRole)
        self.export_button.setObjectName("exportButton")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.export)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.format.currentIndexChanged.connect(self._on_format)

    def _on_format(self) -> None:
        fmt = self.format.currentData()
        self.polygons.setEnabled(fmt == "coco")
        p = Path(self.out.text() or str(self.project.root / "export"))
        if fmt == "labelme" and p.suffix.lower() == ".json":
            self.out.setText(str(p.parent / "labelme"))
        elif fmt == "coco" and p.suffix.lower() != ".json":
            self.out.setText(str(p.parent / "coco.json"))

    def _browse(self) -> None:
        if self.format.currentData() == "coco":
            path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "COCO JSON file", self.out.text(),
                                                            "JSON (*.json)")
        else:
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "labelme export folder", self.out.text())
        if path:
            self.out.setText(path)

    def options(self) -> dict:
        return {"fmt": self.format.currentData(), "out": self.out.text().strip(),
                "only_reviewed": self.only_reviewed.isChecked(), "copy_images": self.copy_images.isChecked(),
                "split": self.split_frac.value() if self.split.isChecked() else None,
                "polygons": self.polygons.isChecked() and self.format.currentData() == "coco"}

    def export(self):
        """Run the export with a progress bar; the summary goes into the dialog."""
        from ..background import run_with_progress
        opts = self.options()
        if not opts["out"]:
            self.summary.setText("Choose where to save the export.")
            return None
        if self.flush is not None:
            self.flush()  # the current item's last edits go into the export
        out = opts.pop("out")
        self.export_button.setEnabled(False)
        try:
            self.report = run_with_progress(self, "Exporting", run_export, self.project, out, **opts)
        except CancelledError:
            self.summary.setText("Export cancelled; nothing was written.")
            return None
        except (MaskLoopError, OSError) as e:
            msg = e.one_line() if isinstance(e, MaskLoopError) else str(e)
            theme.set_state(self.summary, "error")
            self.summary.setText(f"Export failed: {msg}")
            return None
        finally:
            self.export_button.setEnabled(True)
        theme.set_state(self.summary, "")
        self.summary.setText("✓ " + self.report.summary())
        return self.report
