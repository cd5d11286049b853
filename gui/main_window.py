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

from engine.imageio import format_spacing
from . import theme
from .canvas import CanvasWidget
from .controller import Controller
from .panels import ImagesPanel, InstancesPanel, LabelsPanel, WindowLevelPanel
from .project_actions import ProjectActions, settings
from .status_bar import StatusBar

#: Toolbar buttons that show their text beside the icon (the loop's main steps).
TEXT_BESIDE = ("train", "accept item", "next unreviewed")


class MainWindow(QtWidgets.QMainWindow, ProjectActions):
    def __init__(self, controller: Optional[Controller] = None, loop: bool = True, parent=None) -> None:
        super().__init__(parent)
        theme.apply(QtWidgets.QApplication.instance())
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
        # other parts of the window in modules of their own: call their install(self) here
        from . import ranking, stack_tools
        from .panels import measurements
        stack_tools.install(self)
        measurements.install(self)
        from . import prompt_service
        prompt_service.install(self)
        ranking.install(self)   # uncertainty column, Rank by uncertainty, Next most uncertain
        self._set_empty_canvas_actions()

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
            tb.setToolButtonStyle(QtCore.Qt.ToolButtonIconOnly)
            tb.setIconSize(QtCore.QSize(22, 22))
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
                   checkable: bool = False, icon: Optional[str] = None) -> QtWidgets.QAction:
        """An action, named `name` (default: its text, lower case); its shortcuts come from
        the keymap (resources/keymap.json) by that name unless `shortcut` is given."""
        name = name or text.replace("&", "").replace("…", "").strip().lower()
        act = QtWidgets.QAction(text, self)
        act.setObjectName(f"action_{name.replace(' ', '_')}")
        shortcut = shortcut or theme.keys(name)
        if icon:
            act.setIcon(theme.icon(icon))
        if shortcut:
            keys = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            act.setShortcuts([QtGui.QKeySequence(k) if isinstance(k, str) else QtGui.QKeySequence(k)
                              for k in keys])
        act.setShortcutContext(QtCore.Qt.WindowShortcut)
        plain = text.replace("&", "").replace("…", "")
        keys = act.shortcut().toString(QtGui.QKeySequence.NativeText)
        act.setToolTip(f"{plain}{f' ({keys})' if keys else ''}" + (f" — {tip}" if tip else ""))
        if tip:
            act.setStatusTip(tip)
        act.setCheckable(checkable)
        (act.toggled if checkable else act.triggered).connect(slot)
        self.addAction(act)
        if menu:
            self.menu(menu).addAction(act)
        if toolbar:
            self.add_to_toolbar(toolbar, act, text_beside=name in TEXT_BESIDE)
        self.actions[name] = act
        return act

    def add_to_toolbar(self, toolbar: str, act: QtWidgets.QAction, text_beside: bool = False) -> None:
        tb = self.toolbar(toolbar)
        tb.addAction(act)
        if text_beside:
            tb.widgetForAction(act).setToolButtonStyle(QtCore.Qt.ToolButtonTextBesideIcon)

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
        A("file", "&New project…", self.new_project_dialog, icon="new_project")
        A("file", "&Open project…", self.open_project_dialog, name="open project", icon="open_project")
        A("file", "Open &images…", self.open_images_dialog, name="open images", icon="open_images",
          tip="Image files, TIFF stacks or DICOM files; makes a project next to them")
        A("file", "Open &folder or DICOM series…", self.open_folder_dialog, name="open folder",
          tip="A folder of images or a DICOM series; makes a project next to it")
        A("file", "&Add images to project…", self.add_images_dialog, name="add images", icon="open_images")
        self.recent_menu = self.menu("file").addMenu("Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self.menu("file").addSeparator()
        A("file", "&Save", self.save, name="save", icon="save",
          tip="Edits are saved within a second anyway; this writes them now")
        A("file", "Reload from disk", self.reload_item, name="reload")
        A("file", "Resolve conflict…", self.resolve_conflict_dialog, name="resolve conflict")
        A("file", "&Close project", self.close_project, name="close project")
        self.menu("file").addSeparator()
        A("file", "&Quit", self.close, name="quit")
        # Edit
        undo = c.undo_group.createUndoAction(self, "&Undo")
        redo = c.undo_group.createRedoAction(self, "&Redo")
        for name, act in (("undo", undo), ("redo", redo)):
            act.setShortcuts([QtGui.QKeySequence(k) for k in theme.keys(name)])
            act.setIcon(theme.icon(name))
            act.setShortcutContext(QtCore.Qt.WindowShortcut)
            self.addAction(act)
            self.menu("edit").addAction(act)
            self.actions[name] = act
        self.menu("edit").addSeparator()
        A("edit", "&Delete selected", c.delete_selected, name="delete", icon="delete")
        A("edit", "&Relabel selected…", self.relabel_dialog, name="relabel")
        A("edit", "&Merge selected", c.merge_selected, name="merge", icon="merge")
        A("edit", "&Fill holes", c.fill_holes_selected, name="fill holes", icon="fill_holes")
        A("edit", "Select &all", lambda: c.set_selection([i.id for i in c.annotation.instances])
          if c.annotation else None, name="select all")
        # View
        A("view", "Zoom &in", lambda: cv.zoom_by(1.25), name="zoom in", icon="zoom_in")
        A("view", "Zoom &out", lambda: cv.zoom_by(0.8), name="zoom out", icon="zoom_out")
        A("view", "&Fit", cv.fit, name="fit", icon="fit", tip="Fit the image to the window")
        A("view", "Actual pixels (100%)", lambda: cv.set_zoom(1.0), name="zoom 100")
        self.menu("view").addSeparator()
        show = A("view", "Show &masks", cv.set_masks_visible, name="show masks", checkable=True)
        show.setChecked(True)
        outl = A("view", "&Outlines", cv.set_outlines, name="outlines", checkable=True)
        outl.setChecked(True)
        A("view", "&Colour by instance", lambda on: cv.set_color_by("instance" if on else "label"),
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
            act = A("tools", tool.label, lambda _on=False, n=tool.name: cv.set_tool(n),
                    name=f"tool {tool.name}", toolbar="tools", tip=tool.tip, icon=tool.name)
            act.setCheckable(True)
            group.addAction(act)
            self.tool_actions[tool.name] = act
        self.tool_actions[cv.tool.name].setChecked(True)
        self.menu("tools").addSeparator()
        A("tools", "Smaller brush", lambda: cv.change_brush_size(-1), name="brush smaller")
        A("tools", "Larger brush", lambda: cv.change_brush_size(+1), name="brush larger")
        # Item
        A("item", "&Next item", lambda: self.step_item(+1), name="next item", icon="next_item")
        A("item", "&Previous item", lambda: self.step_item(-1), name="previous item", icon="previous_item")
        A("item", "Next slice", lambda: c.step_slice(+1), name="next slice")
        A("item", "Previous slice", lambda: c.step_slice(-1), name="previous slice")
        # Labels 1-9 (not in a menu; listed in the shortcuts help)
        for k in range(9):
            act = A(None, f"Label {k + 1}", lambda _=False, i=k: c.set_label_index(i), name=f"label {k + 1}")
            self.extra_shortcut_actions.append(act)
        # Help
        A("help", "&Keyboard shortcuts", self.show_shortcuts, name="shortcuts", icon="shortcuts")
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
        self.tolerance_box.setRange(0, 100)
        self.tolerance_box.setDecimals(1)
        self.tolerance_box.setSuffix(" %")
        self.tolerance_box.setValue(cv.tolerance)
        self.tolerance_box.setToolTip("Magic wand tolerance: a percentage of the displayed range (window width)")
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
        self.status = StatusBar(self)
        self.setStatusBar(self.status)
        st = self.status
        self.pos_label, self.value_label, self.zoom_label = st.pos_label, st.value_label, st.zoom_label
        self.item_label, self.save_label = st.item_label, st.save_label

    def show_message(self, text: str, ms: int = 6000) -> None:
        """A message in the status bar's message field (gui.status_bar)."""
        self.status.show_message(text, ms)

    def event(self, event) -> bool:
        # a hovered action's status tip goes to the message field too (Qt would paint it
        # as a temporary message over the status bar's widgets)
        if event.type() == QtCore.QEvent.StatusTip:
            if event.tip():
                self.status.show_message(event.tip(), 4000)
            return True
        return super().event(event)

    def _set_empty_canvas_actions(self) -> None:
        a = self.actions
        first = [a[k] for k in ("open project", "open images", "open demo") if k in a]
        self.canvas_widget.hint.set_actions(first, [a["add images"]])
        self.canvas_widget.update_page()

    def _connect(self) -> None:
        c, cv = self.controller, self.canvas
        cv.cursorMoved.connect(self._on_cursor)
        cv.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        cv.toolChanged.connect(self._on_tool)
        c.projectOpened.connect(lambda _p: (self._update_title(), self._update_enabled(), self._clear_item()))
        c.projectClosed.connect(lambda: (self._update_title(), self._update_enabled(), self._clear_item()))
        c.currentItemChanged.connect(self._on_item)
        c.itemLoading.connect(self._on_loading)
        c.dirtyChanged.connect(self._on_dirty)
        c.saved.connect(lambda _i: self._on_dirty(False))
        c.saveFailed.connect(lambda i, msg: self.notify(f"Could not save {i}: {msg}", error=True))
        c.externalChange.connect(self._on_external)
        c.message.connect(lambda m: self.show_message(m, 6000))
        c.error.connect(lambda m: self.notify(m, error=True))
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
        act = self.tool_actions.get(name)
        if act is not None:
            act.setChecked(True)

    def _clear_item(self) -> None:
        self.item_label.setText("")
        self.status.clear_pixel()

    def _on_item(self, item_id: str) -> None:
        self.status.clear_pixel()   # the last readout belonged to the item before
        c = self.controller
        item = c.item
        ids = c.slice_items()
        where = f"  slice {ids.index(item_id) + 1}/{len(ids)}" if len(ids) > 1 else ""
        src = c.source  # voxel size in mm/µm when the file carried one
        scale = f"  {format_spacing(src.geometry, src.n_slices)}" if src is not None and src.geometry else ""
        self.item_label.setText(f"{item.name}  {item.width}×{item.height}{where}{scale}")
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
            self.show_message(f"{item_id} was changed by another program and has been reloaded", 8000)

    def notify(self, message: str, error: bool = False) -> None:
        """Status bar plus a non-blocking message box (never a nested event loop)."""
        self.show_message(message, 10000)
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
            avail = QtWidgets.QApplication.primaryScreen().availableGeometry()
            self.resize(min(1400, avail.width()), min(900, avail.height()))
        if state is None or not self.restoreState(state):
            self.default_layout()

    def default_layout(self) -> None:
        """Dock sizes for a first start: the instance list gets the height on the right."""
        d = self.docks
        self.resizeDocks([d["images"], d["labels"]], [280, 340], QtCore.Qt.Horizontal)
        right = [d[k] for k in ("labels", "instances", "review") if k in d]
        self.resizeDocks(right, [150, 400, 150][:len(right)], QtCore.Qt.Vertical)

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
        self.controller.shutdown()   # the worker threads of prefetch and autosave
        event.accept()
