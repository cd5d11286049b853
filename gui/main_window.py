"""The main window: menus, toolbars and docks around the canvas, wired to the controller.

Building blocks other parts of the window use (the loop, gui.loop, builds on these):
- `window.controller`: signals for everything that changes (see gui.controller).
- `window.add_dock(name, title, widget, area)`: a dock, remembered in the saved layout.
- `window.menu(name, title)` / `window.toolbar(name, title)`: get or create by name
  ("file", "edit", "view", "tools", "item", "help"; new menus go before Help).
- `window.add_action(menu, text, slot, shortcut=..., toolbar=...)`.
`window.loop` (gui.loop.Loop) adds the model menu, review, training and models docks;
`MainWindow(loop=False)` is the bare annotation window (tests, benchmarks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from PyQt5 import QtCore, QtGui, QtWidgets

from .canvas import CanvasWidget
from .controller import Controller
from .panels import ImagesPanel, InstancesPanel, LabelsPanel, WindowLevelPanel

MAX_RECENT = 10
IMAGE_FILTER = ("Images, TIFF stacks, DICOM (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.dcm *.dicom *.ima);;"
                "All files (*)")


def settings() -> QtCore.QSettings:
    return QtCore.QSettings("MaskLoop", "MaskLoop")


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, controller: Optional[Controller] = None, loop: bool = True, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("MaskLoopMainWindow")
        self.setWindowTitle("MaskLoop")
        self.setDockOptions(QtWidgets.QMainWindow.AnimatedDocks | QtWidgets.QMainWindow.AllowTabbedDocks)
        self.controller = controller or Controller(self)
        self.controller.conflict_resolver = self.ask_conflict
        self.canvas_widget = CanvasWidget(self.controller)
        self.canvas = self.canvas_widget.view
        self.setCentralWidget(self.canvas_widget)
        self.menus: dict[str, QtWidgets.QMenu] = {}
        self.toolbars: dict[str, QtWidgets.QToolBar] = {}
        self.docks: dict[str, QtWidgets.QDockWidget] = {}
        self.actions: dict[str, QtWidgets.QAction] = {}
        self.extra_shortcut_actions: list[QtWidgets.QAction] = []
        self._build_docks()
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self._update_title()
        self._update_enabled()
        self.loop = None
        if loop:
            from .loop import Loop
            self.loop = Loop(self)

    # ------------------------------------------------------------------ building blocks
    def menu(self, name: str, title: Optional[str] = None) -> QtWidgets.QMenu:
        m = self.menus.get(name)
        if m is None:
            m = QtWidgets.QMenu(title or name.capitalize(), self)
            m.setObjectName(f"menu_{name}")
            help_menu = self.menus.get("help")
            if help_menu is not None:
                self.menuBar().insertMenu(help_menu.menuAction(), m)
            else:
                self.menuBar().addMenu(m)
            self.menus[name] = m
        return m

    def toolbar(self, name: str, title: Optional[str] = None,
                area=QtCore.Qt.TopToolBarArea) -> QtWidgets.QToolBar:
        tb = self.toolbars.get(name)
        if tb is None:
            tb = QtWidgets.QToolBar(title or name.capitalize(), self)
            tb.setObjectName(f"toolbar_{name}")
            tb.setToolButtonStyle(QtCore.Qt.ToolButtonTextOnly)
            self.addToolBar(area, tb)
            self.toolbars[name] = tb
        return tb

    def add_dock(self, name: str, title: str, widget: QtWidgets.QWidget,
                 area=QtCore.Qt.RightDockWidgetArea) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(f"dock_{name}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[name] = dock
        if "view" in self.menus:
            self._docks_menu.addAction(dock.toggleViewAction())
        return dock

    def add_action(self, menu: Optional[str], text: str, slot: Callable, shortcut=None, *,
                   name: Optional[str] = None, toolbar: Optional[str] = None, tip: str = "",
                   checkable: bool = False) -> QtWidgets.QAction:
        act = QtWidgets.QAction(text, self)
        if shortcut:
            keys = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            act.setShortcuts([QtGui.QKeySequence(k) if isinstance(k, str) else QtGui.QKeySequence(k)
                              for k in keys])
        act.setShortcutContext(QtCore.Qt.WindowShortcut)
        if tip:
            act.setToolTip(tip)
            act.setStatusTip(tip)
        act.setCheckable(checkable)
        (act.toggled if checkable else act.triggered).connect(slot)
        self.addAction(act)
        if menu:
            self.menu(menu).addAction(act)
        if toolbar:
            self.toolbar(toolbar).addAction(act)
        self.actions[name or text.replace("&", "").replace("…", "").strip().lower()] = act
        return act

    # ------------------------------------------------------------------ construction
    def _build_docks(self) -> None:
        c = self.controller
        self.images_panel = ImagesPanel(c)
        self.labels_panel = LabelsPanel(c)
        self.instances_panel = InstancesPanel(c)
        self.window_panel = WindowLevelPanel(c)
        self.add_dock("images", "Images", self.images_panel, QtCore.Qt.LeftDockWidgetArea)
        self.add_dock("labels", "Labels", self.labels_panel, QtCore.Qt.RightDockWidgetArea)
        self.add_dock("instances", "Instances", self.instances_panel, QtCore.Qt.RightDockWidgetArea)
        self.add_dock("window", "Window / level", self.window_panel, QtCore.Qt.LeftDockWidgetArea)

    def _build_actions(self) -> None:
        c, cv = self.controller, self.canvas
        for name, title in (("file", "&File"), ("edit", "&Edit"), ("view", "&View"),
                            ("tools", "&Tools"), ("item", "&Item"), ("help", "&Help")):
            self.menu(name, title)
        A = self.add_action
        # File
        A("file", "&New project…", self.new_project_dialog, "Ctrl+N")
        A("file", "&Open project…", self.open_project_dialog, QtGui.QKeySequence.Open, name="open project")
        A("file", "Open &images…", self.open_images_dialog, "Ctrl+Shift+O",
          tip="Image files, TIFF stacks or DICOM files; makes a project next to them")
        A("file", "Open &folder or DICOM series…", self.open_folder_dialog, name="open folder",
          tip="A folder of images or a DICOM series; makes a project next to it")
        A("file", "&Add images to project…", self.add_images_dialog, name="add images")
        self.recent_menu = self.menu("file").addMenu("Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self.menu("file").addSeparator()
        A("file", "&Save", self.save, QtGui.QKeySequence.Save, name="save")
        A("file", "Reload from disk", self.reload_item, name="reload")
        A("file", "Resolve conflict…", self.resolve_conflict_dialog, name="resolve conflict")
        A("file", "&Close project", self.close_project, name="close project")
        self.menu("file").addSeparator()
        A("file", "&Quit", self.close, QtGui.QKeySequence.Quit, name="quit")
        # Edit
        undo = c.undo_group.createUndoAction(self, "&Undo")
        undo.setShortcuts([QtGui.QKeySequence("Ctrl+Z")])
        redo = c.undo_group.createRedoAction(self, "&Redo")
        redo.setShortcuts([QtGui.QKeySequence("Ctrl+Shift+Z"), QtGui.QKeySequence("Ctrl+Y")])
        for name, act in (("undo", undo), ("redo", redo)):
            act.setShortcutContext(QtCore.Qt.WindowShortcut)
            self.addAction(act)
            self.menu("edit").addAction(act)
            self.actions[name] = act
        self.menu("edit").addSeparator()
        A("edit", "&Delete selected", c.delete_selected, QtGui.QKeySequence.Delete, name="delete")
        A("edit", "&Relabel selected…", self.relabel_dialog, "L", name="relabel")
        A("edit", "&Merge selected", c.merge_selected, "M", name="merge")
        A("edit", "&Fill holes", c.fill_holes_selected, "G", name="fill holes")
        A("edit", "Select &all", lambda: c.set_selection([i.id for i in c.annotation.instances])
          if c.annotation else None, QtGui.QKeySequence.SelectAll, name="select all")
        # View
        A("view", "Zoom &in", lambda: cv.zoom_by(1.25), ["+", "=", "Ctrl++", "Ctrl+="], name="zoom in")
        A("view", "Zoom &out", lambda: cv.zoom_by(0.8), ["-", "Ctrl+-"], name="zoom out")
        A("view", "&Fit", cv.fit, "F", name="fit")
        A("view", "Actual pixels (100%)", lambda: cv.set_zoom(1.0), "Ctrl+0", name="zoom 100")
        self.menu("view").addSeparator()
        show = A("view", "Show &masks", cv.set_masks_visible, "Ctrl+M", name="show masks", checkable=True)
        show.setChecked(True)
        outl = A("view", "&Outlines", cv.set_outlines, "O", name="outlines", checkable=True)
        outl.setChecked(True)
        A("view", "&Colour by instance", lambda on: cv.set_color_by("instance" if on else "label"), "C",
          name="colour by instance", checkable=True)
        self.menu("view").addSeparator()
        self._docks_menu = self.menu("view").addMenu("Panels")
        for dock in self.docks.values():
            self._docks_menu.addAction(dock.toggleViewAction())
        A("view", "Reset layout", self.reset_layout, name="reset layout")
        # Tools
        group = QtWidgets.QActionGroup(self)
        group.setExclusive(True)
        self.tool_actions: dict[str, QtWidgets.QAction] = {}
        for tool in cv.tools.values():
            act = A("tools", tool.label, lambda _on=False, n=tool.name: cv.set_tool(n), tool.shortcut,
                    name=f"tool {tool.name}", toolbar="tools", tip=tool.tip)
            act.setCheckable(True)
            group.addAction(act)
            self.tool_actions[tool.name] = act
        self.tool_actions[cv.tool.name].setChecked(True)
        self.menu("tools").addSeparator()
        A("tools", "Smaller brush", lambda: cv.change_brush_size(-1), "[", name="brush smaller")
        A("tools", "Larger brush", lambda: cv.change_brush_size(+1), "]", name="brush larger")
        # Item
        A("item", "&Next item", lambda: self.step_item(+1), "N", name="next item")
        A("item", "&Previous item", lambda: self.step_item(-1), "Shift+N", name="previous item")
        A("item", "Next slice", lambda: c.step_slice(+1), QtCore.Qt.Key_PageDown, name="next slice")
        A("item", "Previous slice", lambda: c.step_slice(-1), QtCore.Qt.Key_PageUp, name="previous slice")
        # Labels 1-9 (not in a menu; listed in the shortcuts help)
        for k in range(9):
            act = QtWidgets.QAction(f"Label {k + 1}", self)
            act.setShortcut(QtGui.QKeySequence(str(k + 1)))
            act.triggered.connect(lambda _=False, i=k: c.set_label_index(i))
            self.addAction(act)
            self.extra_shortcut_actions.append(act)
        # Help
        A("help", "&Keyboard shortcuts", self.show_shortcuts, ["F1", "?"], name="shortcuts")
        A("help", "&About MaskLoop", self.show_about, name="about")
        # the main toolbar: file + edit basics
        main = self.toolbar("main", "Main")
        for key in ("open project", "save", "undo", "redo", "delete", "merge", "fill holes", "fit"):
            main.addAction(self.actions[key])
        self.insertToolBar(self.toolbars["tools"], main)
        self._build_options_toolbar()

    def _build_options_toolbar(self) -> None:
        cv = self.canvas
        self.addToolBarBreak(QtCore.Qt.TopToolBarArea)
        tb = self.toolbar("options", "Tool options")
        self.brush_box = QtWidgets.QSpinBox()
        self.brush_box.setRange(1, 1000)
        self.brush_box.setValue(cv.brush_size)
        self.brush_box.setSuffix(" px")
        self.brush_box.setToolTip("Brush / eraser diameter ([ and ])")
        self.brush_box.valueChanged.connect(lambda v: setattr(cv, "brush_size", v))
        cv.brushSizeChanged.connect(self.brush_box.setValue)
        self.tolerance_box = QtWidgets.QDoubleSpinBox()
        self.tolerance_box.setRange(0, 1e6)
        self.tolerance_box.setDecimals(1)
        self.tolerance_box.setValue(cv.tolerance)
        self.tolerance_box.setToolTip("Magic wand tolerance in raw units (HU for CT)")
        self.tolerance_box.valueChanged.connect(lambda v: setattr(cv, "tolerance", v))
        cv.toleranceChanged.connect(self.tolerance_box.setValue)
        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(cv.opacity * 100))
        self.opacity_slider.setMaximumWidth(120)
        self.opacity_slider.setToolTip("Mask opacity")
        self.opacity_slider.setFocusPolicy(QtCore.Qt.NoFocus)
        self.opacity_slider.valueChanged.connect(lambda v: cv.set_opacity(v / 100.0))
        for w in (self.brush_box, self.tolerance_box):
            w.setKeyboardTracking(False)
            w.setFocusPolicy(QtCore.Qt.ClickFocus)
        tb.addWidget(QtWidgets.QLabel(" Brush "))
        tb.addWidget(self.brush_box)
        tb.addWidget(QtWidgets.QLabel(" Tolerance "))
        tb.addWidget(self.tolerance_box)
        tb.addWidget(QtWidgets.QLabel(" Opacity "))
        tb.addWidget(self.opacity_slider)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.pos_label = QtWidgets.QLabel()
        self.value_label = QtWidgets.QLabel()
        self.zoom_label = QtWidgets.QLabel()
        self.item_label = QtWidgets.QLabel()
        self.save_label = QtWidgets.QLabel()
        for w, width in ((self.item_label, 0), (self.pos_label, 90), (self.value_label, 120),
                         (self.zoom_label, 60), (self.save_label, 80)):
            if width:
                w.setMinimumWidth(width)
            sb.addPermanentWidget(w)

    def _connect(self) -> None:
        c, cv = self.controller, self.canvas
        cv.cursorMoved.connect(self._on_cursor)
        cv.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        cv.toolChanged.connect(self._on_tool)
        c.projectOpened.connect(lambda _p: (self._update_title(), self._update_enabled()))
        c.projectClosed.connect(lambda: (self._update_title(), self._update_enabled()))
        c.currentItemChanged.connect(self._on_item)
        c.itemLoading.connect(self._on_loading)
        c.dirtyChanged.connect(self._on_dirty)
        c.saved.connect(lambda _i: self._on_dirty(False))
        c.saveFailed.connect(lambda i, msg: self._notify(f"Could not save {i}: {msg}", error=True))
        c.externalChange.connect(self._on_external)
        c.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        c.error.connect(lambda m: self._notify(m, error=True))
        c.selectionChanged.connect(lambda _s: self._update_enabled())

    # ------------------------------------------------------------------ state display
    def _update_title(self) -> None:
        p = self.controller.project
        self.setWindowTitle(f"{p.root.name} — MaskLoop" if p is not None else "MaskLoop")

    def _update_enabled(self) -> None:
        c = self.controller
        has_project = c.project is not None
        has_item = c.annotation is not None
        n_sel = len(c.selection)
        for key in ("add images", "close project", "save", "reload"):
            self.actions[key].setEnabled(has_project)
        for key in ("delete", "relabel", "fill holes"):
            self.actions[key].setEnabled(has_item and n_sel > 0)
        self.actions["merge"].setEnabled(has_item and n_sel > 1)
        self.actions["resolve conflict"].setEnabled(c.in_conflict)

    def _on_tool(self, name: str) -> None:
        act = getattr(self, "tool_actions", {}).get(name)
        if act is not None:
            act.setChecked(True)

    def _on_item(self, item_id: str) -> None:
        c = self.controller
        item = c.item
        ids = c.slice_items()
        where = f"  slice {ids.index(item_id) + 1}/{len(ids)}" if len(ids) > 1 else ""
        self.item_label.setText(f"{item.name}  {item.width}×{item.height}{where}")
        self._update_enabled()
        self._on_dirty(c.dirty)

    def _on_loading(self, item_id: str) -> None:
        """A large item is decoded in the background: say so where the item is named."""
        c = self.controller
        if item_id and c.project is not None:
            item = c.project.item(item_id)
            self.item_label.setText(f"loading {item.name}  {item.width}×{item.height} …")
        elif c.item_id:
            self._on_item(c.item_id)

    def _on_cursor(self, x: int, y: int) -> None:
        if x < 0:
            self.pos_label.setText("")
            self.value_label.setText("")
            return
        self.pos_label.setText(f"x {x}  y {y}")
        v = self.controller.pixel_value(x, y)
        src = self.controller.source
        unit = " HU" if src is not None and src.modality == "CT" else ""
        if isinstance(v, tuple):
            self.value_label.setText("RGB " + ", ".join(f"{c:g}" for c in v))
        elif v is not None:
            self.value_label.setText(f"value {v:g}{unit}")

    def _on_dirty(self, dirty: bool) -> None:
        c = self.controller
        if c.in_conflict:
            self.save_label.setText("⚠ conflict")
        else:
            self.save_label.setText("unsaved…" if dirty else "saved")
        self.actions["resolve conflict"].setEnabled(c.in_conflict)

    def _on_external(self, item_id: str, what: str) -> None:
        self._on_dirty(self.controller.dirty)
        if what == "reloaded":
            self.statusBar().showMessage(f"{item_id} was changed by another program and has been reloaded", 8000)

    def _notify(self, message: str, error: bool = False) -> None:
        """Status bar plus a non-blocking message box (never a nested event loop)."""
        self.statusBar().showMessage(message, 10000)
        if error and self.isVisible():
            box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Warning, "MaskLoop", message,
                                        QtWidgets.QMessageBox.Ok, self)
            box.setAttribute(QtCore.Qt.WA_DeleteOnClose)
            box.setWindowModality(QtCore.Qt.NonModal)
            box.show()

    # ------------------------------------------------------------------ conflicts
    def ask_conflict(self, item_id: str) -> str:
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Warning)
        box.setWindowTitle("Annotation changed on disk")
        box.setText(f"The annotation file of {item_id} was changed by another program while you "
                    "have unsaved edits here.")
        box.setInformativeText("Reload discards your unsaved edits; Keep mine overwrites the other "
                               "program's change. Decide later keeps both as they are (nothing is saved).")
        reload_b = box.addButton("Reload from disk", QtWidgets.QMessageBox.DestructiveRole)
        mine_b = box.addButton("Keep mine", QtWidgets.QMessageBox.AcceptRole)
        box.addButton("Decide later", QtWidgets.QMessageBox.RejectRole)
        box.exec_()
        clicked = box.clickedButton()
        return "reload" if clicked is reload_b else "overwrite" if clicked is mine_b else "later"

    def resolve_conflict_dialog(self) -> None:
        c = self.controller
        if c.in_conflict:
            c.resolve_conflict(self.ask_conflict(c.item_id))
            self._on_dirty(c.dirty)

    # ------------------------------------------------------------------ file actions
    def open_project(self, root) -> bool:
        ok = self.controller.open_project(root)
        if ok:
            self.add_recent(self.controller.project.root)
            self.canvas.setFocus()
        return ok

    def new_project_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "New project: name its folder", str(Path.home() / "maskloop-project"), "Folders (*)")
        if path:
            self.make_project(path, [])

    def open_project_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a MaskLoop project folder",
                                                          self._last_dir())
        if path:
            self.open_project(path)

    def _last_dir(self) -> str:
        return str(settings().value("last_dir", str(Path.home())))

    def _choose_project_folder(self, first: Path) -> Optional[Path]:
        base = first.parent if first.is_file() else first.parent
        stem = first.stem if first.is_file() else first.name
        suggestion = base / f"{stem}_maskloop"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Project folder (created if needed; the images stay where they are)",
            str(suggestion), "Folders (*)", options=QtWidgets.QFileDialog.DontConfirmOverwrite)
        return Path(path) if path else None

    def open_images_dialog(self) -> None:
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open images, TIFF stacks or DICOM files",
                                                          self._last_dir(), IMAGE_FILTER)
        if files:
            settings().setValue("last_dir", str(Path(files[0]).parent))
            root = self._choose_project_folder(Path(files[0]))
            if root is not None:
                self.make_project(root, [Path(f) for f in files])

    def open_folder_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a folder of images or a DICOM series",
                                                            self._last_dir())
        if folder:
            settings().setValue("last_dir", str(Path(folder).parent))
            root = self._choose_project_folder(Path(folder))
            if root is not None:
                self.make_project(root, [Path(folder)])

    def make_project(self, root, paths: list) -> bool:
        """Create (or reuse) the project at root, add paths off the GUI thread, open it."""
        from engine.errors import MaskLoopError
        from engine.project import MANIFEST, Project
        from .background import run_with_progress
        root = Path(root)
        if not self.controller.close_project():
            return False

        def work(progress=None, cancel=None):
            proj = Project.open(root) if (root / MANIFEST).exists() else Project.create(root)
            if paths:
                proj.add(paths, progress=progress, cancel=cancel)
            return proj

        try:
            run_with_progress(self, "Adding images", work)
        except MaskLoopError as e:
            self._notify(e.one_line(), error=True)
            if not (root / MANIFEST).exists():
                return False
        return self.open_project(root)

    def add_images_dialog(self) -> None:
        c = self.controller
        if c.project is None:
            return
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Add images, TIFF stacks or DICOM files",
                                                          self._last_dir(), IMAGE_FILTER)
        if files:
            self.add_paths([Path(f) for f in files])

    def add_paths(self, paths: list) -> list:
        from engine.errors import MaskLoopError
        from .background import run_with_progress
        c = self.controller
        try:
            new = run_with_progress(self, "Adding images", c.project.add, paths)
        except MaskLoopError as e:
            self._notify(e.one_line(), error=True)
            return []
        c.on_items_added(new)
        return new

    def save(self) -> None:
        c = self.controller
        if c.save():
            self.statusBar().showMessage("saved", 2000)
        elif c.in_conflict:
            self.resolve_conflict_dialog()

    def reload_item(self) -> None:
        c = self.controller
        if c.dirty:
            answer = QtWidgets.QMessageBox.question(
                self, "Reload", "Discard the unsaved edits of this item and read it from disk?")
            if answer != QtWidgets.QMessageBox.Yes:
                return
        c.reload_current()

    def close_project(self) -> bool:
        c = self.controller
        if c.close_project():
            return True
        answer = QtWidgets.QMessageBox.question(
            self, "Unsaved edits", "The current item's edits could not be saved. Close anyway and lose them?")
        return answer == QtWidgets.QMessageBox.Yes and c.close_project(force=True)

    # recent projects
    def recent_projects(self) -> list[str]:
        v = settings().value("recent_projects", [])
        if isinstance(v, str):
            v = [v]
        return [p for p in (v or []) if p]

    def add_recent(self, root) -> None:
        root = str(Path(root))
        items = [root] + [p for p in self.recent_projects() if p != root]
        settings().setValue("recent_projects", items[:MAX_RECENT])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self.recent_projects()
        if not items:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for p in items:
            act = self.recent_menu.addAction(p)
            act.setEnabled(Path(p, "maskloop.json").exists())
            act.triggered.connect(lambda _=False, path=p: self.open_project(path))

    # ------------------------------------------------------------------ edit / item actions
    def relabel_dialog(self) -> None:
        c = self.controller
        if not c.selection or c.labels is None:
            return
        names = c.labels.names()
        current = c.selected_instances()[0].label
        name, ok = QtWidgets.QInputDialog.getItem(self, "Relabel", "New label of the selected instances:",
                                                  names, names.index(current) if current in names else 0,
                                                  False)
        if ok:
            c.relabel_selected(name)

    def step_item(self, step: int) -> bool:
        """N / Shift+N: walk the image list as filtered and sorted."""
        return self.controller.step_item(step, self.images_panel.visible_item_ids())

    # ------------------------------------------------------------------ help
    def show_shortcuts(self) -> None:
        from .dialogs.shortcuts import ShortcutsDialog
        dlg = ShortcutsDialog(self)
        dlg.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        dlg.show()
        self._shortcuts_dialog = dlg

    def show_about(self) -> None:
        QtWidgets.QMessageBox.about(
            self, "About MaskLoop",
            "MaskLoop: segment CT and microscopy images, correct the masks by hand, retrain.\n"
            "Licensed under the GPL-3.0-or-later.")

    # ------------------------------------------------------------------ layout
    def restore_layout(self) -> None:
        s = settings()
        geom = s.value("window/geometry")
        state = s.value("window/state")
        if geom is not None:
            self.restoreGeometry(geom)
        else:
            self.resize(1400, 900)
        if state is None or not self.restoreState(state):
            self.resizeDocks([self.docks["images"], self.docks["labels"]], [280, 300], QtCore.Qt.Horizontal)

    def save_layout(self) -> None:
        s = settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())

    def reset_layout(self) -> None:
        for name, dock in self.docks.items():
            dock.setFloating(False)
            dock.setVisible(True)
        for tb in self.toolbars.values():
            tb.setVisible(True)
        settings().remove("window/state")

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if not self.close_project():
            event.ignore()
            return
        self.save_layout()
        event.accept()
