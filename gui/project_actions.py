"""The File side of the main window (a mixin of gui.main_window.MainWindow): new, open,
open images or a folder (a project is made next to them), add images, save, reload,
close, and the recent projects (QSettings)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PyQt5 import QtCore, QtWidgets

MAX_RECENT = 10
IMAGE_FILTER = ("Images, TIFF stacks, DICOM (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.dcm *.dicom *.ima);;"
                "All files (*)")


def settings() -> QtCore.QSettings:
    return QtCore.QSettings("MaskLoop", "MaskLoop")


class ProjectActions:
    # provided by MainWindow: controller, canvas, notify, recent_menu
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
        """Create (or reuse) the project at root, add paths off the GUI thread, open it.
        When a new project gets none of the paths (unreadable, cancelled), it is removed
        again: a failed "Open images" leaves nothing behind."""
        from engine.errors import MaskLoopError
        from engine.project import MANIFEST, Project
        from .background import run_with_progress
        root = Path(root)
        if not self.controller.close_project():
            return False
        existed = (root / MANIFEST).exists()
        root_existed = root.exists()

        def work(progress=None, cancel=None):
            proj = Project.open(root) if existed else Project.create(root)
            if paths:
                proj.add(paths, progress=progress, cancel=cancel)
            return proj

        try:
            proj = run_with_progress(self, "Adding images", work)
        except MaskLoopError as e:
            self.notify(e.one_line(), error=True)
            proj = None
        if not existed and (proj is None or (paths and not proj.items)):
            _remove_new_project(root, root_existed)
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
            self.notify(e.one_line(), error=True)
            return []
        c.on_items_added(new)
        return new

    def save(self) -> None:
        c = self.controller
        if c.save():
            self.show_message("saved", 2000)
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



def _remove_new_project(root: Path, root_existed: bool) -> None:
    """Undo Project.create: the manifest, its empty folders, and the root if we made it."""
    from engine.project import MANIFEST
    (root / MANIFEST).unlink(missing_ok=True)
    for sub in ("annotations", "models"):
        try:
            (root / sub).rmdir()          # only when empty: never remove anyone's files
        except OSError:
            pass
    if not root_existed:
        try:
            root.rmdir()
        except OSError:
            pass
