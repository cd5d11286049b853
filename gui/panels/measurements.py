"""The Measurements dock: a sortable table (current item, or the whole project by level), a
per-label summary, the three plots, CSV and plot export, and the scale.

Every number comes from engine.measure_project (scikit-image); this panel only shows it.
The current item's table follows every edit; project-wide measuring runs off the GUI
thread behind a progress dialog with Cancel (gui.background.run_with_progress).
"""
from __future__ import annotations

from typing import Callable, Optional

from PyQt5 import QtCore, QtWidgets

from engine.errors import CancelledError, MaskLoopError
from engine.measure import write_csv
from engine.measure_plots import PLOTS, draw, save_plots
from engine.measure_project import measure_item, measure_project
from engine.units import describe, scale_of, set_scale

from ..background import run_with_progress

SCOPES = (("Current item", None), ("Project: instances", "instance"), ("Project: 3-D objects", "object"),
          ("Project: items × labels", "item"), ("Project: stacks × labels", "stack"))
HIDDEN = {"instance", "object"}  # long ids: kept in the CSV, not shown
PLOT_TITLES = {"size_distribution": "Size distribution", "gradation": "Gradation curve",
               "fractions": "Area / volume fraction per label"}


class MeasurementsPanel(QtWidgets.QWidget):
    def __init__(self, controller, centre: Optional[Callable[[float, float], None]] = None, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.centre = centre
        self.table_data = None   # the engine Table shown
        self._stale = False
        self.scope = QtWidgets.QComboBox()
        for text, _level in SCOPES:
            self.scope.addItem(text)
        self.measure_button = QtWidgets.QPushButton("Measure project")
        self.scale_button = QtWidgets.QPushButton("Scale…")
        self.export_button = QtWidgets.QPushButton("Export CSV…")
        self.plots_button = QtWidgets.QPushButton("Save plots…")
        self.note = QtWidgets.QLabel()
        self.note.setWordWrap(True)
        self.table = self._make_table()
        self.summary = self._make_table()
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(self.summary, "Summary")
        self.figures = {}
        self.canvases = {}
        self._add_plot_tabs()
        split = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.scope, 1)
        top.addWidget(self.measure_button)
        top.addWidget(self.scale_button)
        bottom = QtWidgets.QHBoxLayout()
        bottom.addWidget(self.export_button)
        bottom.addWidget(self.plots_button)
        bottom.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(self.note)
        lay.addWidget(split, 1)
        lay.addLayout(bottom)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)  # a burst of edits costs one measuring
        self._timer.timeout.connect(self.refresh)
        self.scope.currentIndexChanged.connect(self._on_scope)
        self.measure_button.clicked.connect(self.measure_project)
        self.scale_button.clicked.connect(self.scale_dialog)
        self.export_button.clicked.connect(self.export_dialog)
        self.plots_button.clicked.connect(self.save_plots_dialog)
        self.table.itemSelectionChanged.connect(self._on_row)
        for sig in (controller.instancesChanged, controller.currentItemChanged, controller.labelsChanged):
            sig.connect(self.schedule_refresh)
        controller.projectOpened.connect(self._on_scope)  # another project: drop its table
        controller.projectClosed.connect(self._on_scope)
        self._on_scope()

    def _make_table(self) -> QtWidgets.QTableWidget:
        t = QtWidgets.QTableWidget(0, 0)
        t.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        t.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        t.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        t.verticalHeader().setVisible(False)
        t.verticalHeader().setDefaultSectionSize(20)
        t.setSortingEnabled(True)
        return t

    def _add_plot_tabs(self) -> None:
        from matplotlib.backends.backend_qt5agg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        plots = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(plots)  # side by side: the dock sits in the wide bottom area
        row.setContentsMargins(0, 0, 0, 0)
        for name in PLOTS:
            fig = Figure(figsize=(4.5, 3.2))
            canvas = FigureCanvasQTAgg(fig)
            canvas.setMinimumSize(160, 180)
            canvas.setToolTip(PLOT_TITLES[name])
            self.figures[name], self.canvases[name] = fig, canvas
            row.addWidget(canvas)
        self.tabs.addTab(plots, "Plots")

    # ------------------------------------------------------------------ state
    @property
    def level(self) -> Optional[str]:
        return SCOPES[self.scope.currentIndex()][1]

    def _on_scope(self, *_args) -> None:
        self.measure_button.setEnabled(self.level is not None and self.controller.project is not None)
        if self.level is None:
            self.refresh()
        else:
            self._show(None, "Press “Measure project” to measure every item at this level.")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.level is None:
            self._timer.start()

    def schedule_refresh(self, *_args) -> None:
        if self.level is None:
            if self.isVisible():  # a hidden dock measures when it is shown
                self._timer.start()
        elif self.table_data is not None and not self._stale:
            self._stale = True
            self.note.setText(self.note.text() + "  (edited since: measure again to update)")
        self.measure_button.setEnabled(self.level is not None and self.controller.project is not None)

    def refresh(self) -> None:
        """Measure the current item as it is in memory (unsaved edits included)."""
        if self.level is not None:
            return
        ctl = self.controller
        if ctl.project is None or ctl.annotation is None or ctl.image is None:
            self._show(None, "No item open.")
            return
        try:
            table = measure_item(ctl.project, ctl.item_id, ctl.annotation, ctl.image)
        except MaskLoopError as e:
            self._show(None, e.one_line())
            return
        self._show(table, self._units_note(table))

    def _units_note(self, table) -> str:
        ctl = self.controller
        if table.units.length == "px":
            return "Lengths in pixels: this image has no scale (set one with Scale…)."
        if self.level is None and ctl.item is not None:
            return f"Lengths in {table.units.length}: {describe(scale_of(ctl.project, ctl.item.source))}."
        return f"Lengths in {table.units.length}. " + " · ".join(table.notes)

    def measure_project(self) -> None:
        ctl = self.controller
        if ctl.project is None or self.level is None:
            return
        ctl.save()  # the project is measured from its files
        try:
            table = run_with_progress(self, "Measuring", measure_project, ctl.project, self.level)
        except CancelledError:
            ctl.message.emit("Measuring cancelled")
            return
        except MaskLoopError as e:
            QtWidgets.QMessageBox.warning(self, "Measurements", e.one_line())
            return
        self._show(table, self._units_note(table))

    # ------------------------------------------------------------------ showing
    def _show(self, table, note: str) -> None:
        self.table_data, self._stale = table, False
        self.note.setText(note)
        self._fill(self.table, table)
        self._fill(self.summary, table.companion if table is not None and table.level in ("instance", "object")
                   else None)
        for name in PLOTS:
            fig = self.figures[name]
            fig.clear()
            if table is not None:
                draw(name, fig, table, self.controller.label_color)
            self.canvases[name].draw_idle()
        self.export_button.setEnabled(table is not None)
        self.plots_button.setEnabled(table is not None)

    def _fill(self, widget: QtWidgets.QTableWidget, table) -> None:
        widget.setSortingEnabled(False)
        widget.blockSignals(True)
        widget.clear()
        cols = [] if table is None else [c for c in table.columns if c not in HIDDEN]
        rows = [] if table is None else table.rows
        widget.setColumnCount(len(cols))
        widget.setHorizontalHeaderLabels(cols)
        widget.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, name in enumerate(cols):
                v = row.get(name)
                cell = QtWidgets.QTableWidgetItem()
                if isinstance(v, float):
                    v = float(f"{v:.4g}") if v == v else None
                cell.setData(QtCore.Qt.DisplayRole, "" if v is None else v)
                cell.setData(QtCore.Qt.UserRole, r)
                widget.setItem(r, c, cell)
        widget.blockSignals(False)
        widget.setSortingEnabled(True)
        widget.resizeColumnsToContents()

    def row_data(self, view_row: int) -> Optional[dict]:
        cell = self.table.item(view_row, 0)
        if cell is None or self.table_data is None:
            return None
        return self.table_data.rows[cell.data(QtCore.Qt.UserRole)]

    def _on_row(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        row = self.row_data(rows[0].row()) if rows else None
        if row is not None:
            self.go_to(row)

    def go_to(self, row: dict) -> None:
        """Open the row's item, select its instance and centre the view on it."""
        ctl = self.controller
        item, inst_id = row.get("item"), row.get("instance")
        if not item:
            return
        if item != ctl.item_id and not ctl.set_current_item(item):
            return
        inst = ctl.annotation.find(inst_id) if (inst_id and ctl.annotation is not None) else None
        if inst is None:
            return
        ctl.set_selection([inst.id])
        if self.centre is not None:
            x, y, w, h = inst.bbox
            self.centre(x + w / 2, y + h / 2)

    # ------------------------------------------------------------------ export and scale
    def export_dialog(self) -> None:
        if self.table_data is None:
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export measurements",
                                                        f"measurements_{self.table_data.level}.csv",
                                                        "CSV (*.csv)")
        if path:
            self._guarded(lambda: write_csv(self.table_data, path), f"Measurements written to {path}")

    def save_plots_dialog(self) -> None:
        if self.table_data is None:
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Save plots to folder")
        if folder:
            self._guarded(lambda: save_plots(self.table_data, folder, self.controller.label_color),
                          f"Plots saved in {folder}")

    def _guarded(self, fn, done: str) -> bool:
        try:
            fn()
        except (MaskLoopError, OSError) as e:
            QtWidgets.QMessageBox.warning(self, "Measurements", e.one_line() if isinstance(e, MaskLoopError)
                                          else str(e))
            return False
        self.controller.message.emit(done)
        return True

    def scale_dialog(self) -> None:
        ctl = self.controller
        if ctl.project is None:
            return
        dlg = ScaleDialog(self, ctl.project.sources[ctl.item.source].name if ctl.item is not None else None)
        if dlg.exec_() != QtWidgets.QDialog.Accepted:
            return
        self.apply_scale(dlg.pixel.text(), dlg.slices.text() or None, dlg.this_source.isChecked())

    def apply_scale(self, pixel: str, slices: Optional[str], this_source: bool) -> bool:
        ctl = self.controller
        src = str(ctl.item.source) if (this_source and ctl.item is not None) else None
        ok = self._guarded(lambda: set_scale(ctl.project, pixel, slices, src), "Scale set")
        if ok:
            self.schedule_refresh()
        return ok


class ScaleDialog(QtWidgets.QDialog):
    def __init__(self, parent, source_name: Optional[str]) -> None:
        super().__init__(parent)
        self.setWindowTitle("Scale")
        self.pixel = QtWidgets.QLineEdit()
        self.pixel.setPlaceholderText("e.g. 0.65um or 0.5mm")
        self.slices = QtWidgets.QLineEdit()
        self.slices.setPlaceholderText("optional, e.g. 2um")
        self.this_source = QtWidgets.QRadioButton(f"this image only ({source_name})" if source_name else "this image")
        self.whole = QtWidgets.QRadioButton("the whole project (where the data has no scale)")
        self.whole.setChecked(True)
        self.this_source.setEnabled(source_name is not None)
        form = QtWidgets.QFormLayout(self)
        form.addRow("Pixel size", self.pixel)
        form.addRow("Slice spacing", self.slices)
        form.addRow(self.this_source)
        form.addRow(self.whole)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


def install(window) -> None:
    """Add the dock to the main window (called by MainWindow.__init__)."""
    panel = MeasurementsPanel(window.controller, centre=lambda x, y: window.canvas.centerOn(x, y))
    window.measurements_panel = panel
    dock = window.add_dock("measurements", "Measurements", panel, QtCore.Qt.BottomDockWidgetArea)
    dock.hide()  # opened from View › Panels or Tools › Measurements
    window.add_action("tools", "&Measurements", lambda: (dock.show(), dock.raise_(), panel.refresh()),
                      name="measurements")
