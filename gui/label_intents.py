"""The label part of the controller (a mixin of gui.controller.Controller): the current
label, adding, recolouring, hiding and renaming labels of the open project."""
from __future__ import annotations

from typing import Optional

from engine.errors import MaskLoopError

DEFAULT_LABEL = "object"    # created on the first edit of a project without labels


class LabelIntents:
    # provided by Controller: project, annotation, item_id, current_label, history, autosave,
    # nav, flush(), and the signals labelsChanged, currentLabelChanged, instancesChanged, error

    @property
    def labels(self):
        return self.project.labels if self.project is not None else None

    def label_color(self, name: str) -> tuple[int, int, int]:
        lab = self.labels.get(name) if self.labels is not None else None
        return tuple(lab.color) if lab is not None else (255, 0, 0)

    def hidden_labels(self) -> set:
        return {l.name for l in self.labels if not l.visible} if self.labels is not None else set()

    def set_current_label(self, name: str) -> None:
        if self.labels is None or name not in self.labels or name == self.current_label:
            return
        self.current_label = name
        self.currentLabelChanged.emit(name)

    def set_label_index(self, index: int) -> None:
        names = self.labels.names() if self.labels is not None else []
        if 0 <= index < len(names):
            self.set_current_label(names[index])

    def ensure_label(self) -> str:
        """The label for new instances; creates DEFAULT_LABEL in an empty label set."""
        if self.current_label and self.current_label in self.labels:
            return self.current_label
        if not self.labels.names():
            self.add_label(DEFAULT_LABEL)
        self.set_current_label(self.labels.names()[0])
        return self.current_label

    def _save_manifest(self) -> bool:
        try:
            self.project.save()
        except (MaskLoopError, OSError) as e:
            self.error.emit(f"could not save the project manifest: {e}")
            return False
        return True

    def add_label(self, name: str, color=None) -> Optional[str]:
        if self.project is None:
            return None
        if color is None:   # the theme's palette (resources/theme.json), in order
            from . import theme
            color = theme.label_color(len(self.labels))
        try:
            lab = self.labels.add(name, color)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return None
        self._save_manifest()
        self.labelsChanged.emit()
        if not self.current_label:
            self.set_current_label(lab.name)
        return lab.name

    def recolor_label(self, name: str, color: tuple[int, int, int]) -> None:
        lab = self.labels.require(name)
        lab.color = tuple(int(c) for c in color[:3])
        self._save_manifest()
        self.labelsChanged.emit()

    def set_label_visible(self, name: str, visible: bool) -> None:
        lab = self.labels.require(name)
        if lab.visible == bool(visible):
            return
        lab.visible = bool(visible)
        self._save_manifest()
        self.labelsChanged.emit()

    def rename_label(self, old: str, new: str) -> bool:
        """Rename in the label set, in every annotation file that uses it and in the undo history."""
        if self.project is None or old == new.strip():
            return False
        if not self.flush():
            return False
        try:
            self.labels.rename(old, new)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        new = new.strip()
        failures = []
        for it in self.project.items:
            if it.id == self.item_id or not self.project.annotation_path(it.id).exists():
                continue
            try:
                ann = self.project.load_annotation(it.id)
            except MaskLoopError as e:  # the file may use the old name that no longer exists
                failures.append(e.one_line())
                continue
            if any(i.label == old for i in ann.instances):
                for i in ann.instances:
                    i.label = new if i.label == old else i.label
                try:
                    self.project.save_annotation(ann)
                except (MaskLoopError, OSError) as e:
                    failures.append(str(e))
        self.history.rename_label(old, new)
        if self.annotation is not None:
            touched = [i for i in self.annotation.instances if i.label == old]
            for i in touched:
                i.label = new
            if touched:
                self.autosave.write_now()
        if self.current_label == old:
            self.current_label = new
            self.currentLabelChanged.emit(new)
        self._save_manifest()
        self.labelsChanged.emit()
        self.instancesChanged.emit()
        if failures:
            self.error.emit("label renamed, but some files were not updated: " + "; ".join(failures[:3]))
        return True
