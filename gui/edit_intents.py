"""The edit part of the controller (a mixin of gui.controller.Controller): every edit of
the item on screen as one undo step. The rules are engine.editing's (which instance a
stroke goes to, what a split or merge makes); the ops engine.history's; this module only
applies them to the item on screen, records them in gui.undo and says what changed."""
from __future__ import annotations

from typing import Optional

import numpy as np

from engine import editing
from engine.annotations import Instance
from engine.history import Change, StatusOp, build_and_apply, replay, touches_status


class EditIntents:
    # provided by Controller: annotation, image, item_id, window, selection, history, autosave,
    # nav, ensure_label(), hidden_labels(), selected_instances(), set_selection(), labels,
    # and the signals annotationEdited, instancesChanged, message

    def _targets(self) -> list[Instance]:
        """The selection, else every instance of a visible label (eraser, split)."""
        hidden = self.hidden_labels()
        return self.selected_instances() or [i for i in self.annotation.instances if i.label not in hidden]

    # ------------------------------------------------------------------ edits
    def commit(self, text: str, changes: list[Change], select: Optional[list[str]] = None) -> bool:
        """Apply changes as one undo step. The generic entry for every edit."""
        if self.annotation is None or not changes:
            return False
        ops, region, structural = build_and_apply(self.annotation, changes)
        if not ops:
            return False
        self.history.push(self.item_id, text, ops)
        self._after_edit(region)
        if select is not None:
            self.set_selection(select)
        else:
            self._prune_selection()
        return True

    def apply(self, edit: editing.Edit) -> bool:
        if not edit.changes:
            if edit.message:
                self.message.emit(edit.message)
            return False
        return self.commit(edit.text, edit.changes, edit.select)

    def macro(self, text: str):
        """`with controller.macro("Accept item"):` several commits as one undo step."""
        return self.history.macro(self.item_id, text)

    def _replay(self, item_id: str, ops: list, forward: bool) -> None:
        if item_id != self.item_id or self.annotation is None:
            return  # stacks of other items are never active
        region, _structural = replay(self.annotation, ops, forward)
        self._after_edit(None if touches_status(ops) else region, full=touches_status(ops))
        self._prune_selection()

    def _after_edit(self, region, full: bool = False) -> None:
        self.autosave.edited()
        if region is not None:
            self.annotationEdited.emit(self.item_id, region)
        self.instancesChanged.emit()
        self.nav.note(self.item_id, count=len(self.annotation.instances))

    def _prune_selection(self) -> None:
        present = {i.id for i in self.annotation.instances}
        if any(i not in present for i in self.selection):
            self.set_selection([i for i in self.selection if i in present])

    def add_mask(self, mask: np.ndarray, x0: int, y0: int, text: str = "Add region", new: bool = False,
                 source: str = "manual") -> bool:
        """Add a cropped mask: onto the one selected instance, else as a new instance (of `source`)."""
        if self.annotation is None:
            return False
        return self.apply(editing.add_region(self.annotation, self.selected_instances(), mask, x0, y0,
                                             self.ensure_label(), text=text, new=new, source=source))

    def subtract_mask(self, mask: np.ndarray, x0: int, y0: int, text: str = "Subtract region") -> bool:
        """Remove a cropped mask's pixels from the selected instances (nothing selected: no change)."""
        if self.annotation is None:
            return False
        edit = editing.erase_stroke(self.annotation, self.selected_instances(), mask, x0, y0)
        edit.text = text
        return self.apply(edit)

    def paint_stroke(self, mask: np.ndarray, x0: int, y0: int, erase: bool = False, extend: bool = False) -> bool:
        """A finished brush (or eraser) stroke as one undo step (rules: engine.editing)."""
        if self.annotation is None:
            return False
        if erase:
            return self.apply(editing.erase_stroke(self.annotation, self._targets(), mask, x0, y0))
        return self.apply(editing.brush_stroke(self.annotation, self.selected_instances(), mask, x0, y0,
                                               self.ensure_label(), extend=extend))

    def add_polygon(self, points_xy, new: bool = False) -> bool:
        """A polygon in pixel coordinates (pixel centres are integers)."""
        shape = editing.polygon_mask(points_xy)
        return shape is not None and self.add_mask(*shape, text="Polygon", new=new)

    def magic_wand(self, x: int, y: int, tolerance: float, new: bool = False) -> bool:
        """Flood fill within `tolerance` raw units (see wand_tolerance for a relative one)."""
        if self.image is None or self.annotation is None:
            return False
        return self.apply(editing.magic_wand(self.annotation, self.image, self.selected_instances(), x, y,
                                             tolerance, self.ensure_label(), new=new))

    def wand_tolerance(self, fraction: float) -> float:
        """A tolerance given as a fraction of the displayed range, in raw units."""
        return editing.wand_tolerance(fraction, self.window, self.image) if self.image is not None else 0.0

    def delete_selected(self) -> bool:
        return self.apply(editing.delete(self.selected_instances()))

    def relabel_selected(self, label: str) -> bool:
        if self.labels is None or label not in self.labels:
            return False
        return self.apply(editing.relabel(self.selected_instances(), label))

    def fill_holes_selected(self) -> bool:
        return self.apply(editing.fill_holes(self.selected_instances()))

    def merge_selected(self) -> bool:
        return self.apply(editing.merge(self.selected_instances()))

    def split_line(self, points_xy, thickness: int = 1) -> bool:
        """Cut the selected instances (else every instance the line crosses) along a polyline."""
        if self.annotation is None:
            return False
        return self.apply(editing.split(self._targets(), points_xy, thickness))

    def set_status(self, status: str) -> bool:
        """Item status (new / predicted / reviewed) as an undoable edit."""
        ann = self.annotation
        if ann is None or status == ann.status:
            return False
        op = StatusOp(ann.status, status)
        op.apply(ann, True)
        self.history.push(self.item_id, f"Mark {status}", [op])
        self._after_edit(None)
        return True
