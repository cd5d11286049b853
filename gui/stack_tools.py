"""Stacks and 3-D objects in the main window (an extension: `install(window)`).

- The canvas scrolls slices with the wheel and sets window/level with a right-drag
  (gui.canvas.stack_input).
- Selecting an instance that belongs to a 3-D object shows the object and its extent
  (first–last slice) in the status bar, and the object's outline on the previous and next
  slice faintly on the canvas (gui.canvas.neighbour_outlines).
- Copy to next / previous slice (Ctrl+] / Ctrl+[): the selected instances' masks go onto
  the adjacent slice as new instances of the same objects, and that slice opens with them
  selected, so the user corrects the copy at once. The copy is one undo step on that slice;
  an instance without an object first gets one (one undo step on its own slice).
- Link objects in this stack: the engine's linker (engine.objects) over every slice of the
  stack, as `maskloop link` does; Split object here: the selected instance's object is cut
  at this slice (from here on, a new object); Propagate up / down / both ways: the selected
  instance carried slice by slice to the end of its object (engine.propagate's stop rule),
  behind a progress dialog with Cancel. Each is ONE undo step on this slice, though it
  changes many slices (gui.stack_undo, engine.stack_history).
- Propagate to next / previous slice (Alt+PgDown / Alt+PgUp): one slice, then that slice
  opens with the new instance selected, so the next press walks on; holding the key
  repeats it, one slice per auto-repeat, and a repeat that comes while a step is still
  being answered is dropped (never queued). Esc cancels the step being answered. One undo
  step on the slice it lands on.
- Propagation is answered by the project's active model (its box prompt on each slice, in
  the prompt worker: gui.prompt_service, where each slice's features are computed), and by
  GrabCut on the displayed slice without one; the status bar says which.
- Unlink from 3-D object: the selected instances leave their objects (one undo step on
  this slice).
- The orthogonal views dock (gui.panels.orthogonal).
"""
from __future__ import annotations

import importlib.util

from typing import Optional

from PyQt5 import QtCore, QtWidgets

from engine.annotations import Instance, new_id
from engine.errors import CancelledError, MaskLoopError
from engine.jobs import CancelToken
from engine.stack_edits import STOP_RULE

from .canvas import stack_input
from .canvas.neighbour_outlines import NeighbourOutlines
from engine.history import Change
from .object_index import ObjectIndex
from .stack_undo import StackEdits


def short_object_id(object_id: str) -> str:
    return object_id if len(object_id) <= 8 else object_id[:8]


class _Step:
    """A one-slice propagation being answered in the prompt worker."""

    def __init__(self, project, item_id: str, target: str, step: int) -> None:
        self.project, self.item_id, self.target, self.step = project, item_id, target, step
        self.cancel = CancelToken()


class StackTools(QtCore.QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self._step: Optional[_Step] = None      # the one-slice propagation being answered
        self._running = False                   # a propagation behind the progress dialog
        self.dropped_steps = 0                  # step triggers dropped while one ran (tests)
        self.window = window
        self.controller = c = window.controller
        self.canvas = window.canvas
        self.input = stack_input.install(self.canvas)
        self.index = ObjectIndex(c, self)
        self.edits = StackEdits(window, self._slices_changed)
        self.outlines = NeighbourOutlines(self.canvas.scene())
        self.show_neighbours = True
        self.object_label = QtWidgets.QLabel()
        self.object_label.setObjectName("objectInfo")
        window.statusBar().addPermanentWidget(self.object_label)
        self._build_actions()
        self._build_dock()
        c.selectionChanged.connect(self.refresh)
        c.currentItemChanged.connect(self.refresh)
        c.instancesChanged.connect(self.refresh)
        c.labelsChanged.connect(self.refresh)
        c.projectClosed.connect(self.refresh)
        self.index.changed.connect(self.refresh)
        window.destroyed.connect(self.index.shutdown)
        self.refresh()

    # ------------------------------------------------------------------ building
    def _build_actions(self) -> None:
        w = self.window
        A = w.add_action
        menu = "item"
        w.menu(menu).addSeparator()
        self.act_next = A(menu, "Copy to next slice", lambda: self.copy_to_slice(+1),
                          name="copy to next slice",
                          tip="Put the selected instances on the next slice as the same 3-D objects")
        self.act_prev = A(menu, "Copy to previous slice", lambda: self.copy_to_slice(-1),
                          name="copy to previous slice",
                          tip="Put the selected instances on the previous slice as the same 3-D objects")
        self.act_link = A(menu, "Link objects in this stack", self.link_stack, name="link objects",
                          tip="Link instances of the same label on adjacent slices into 3-D objects (by overlap)")
        self.act_unlink = A(menu, "Unlink from 3-D object", self.unlink_selected, name="unlink object",
                            tip="The selected instances leave their 3-D objects (each becomes its own)")
        self.act_split = A(menu, "Split object here", self.split_here, name="split object here",
                           tip="Cut the selected instance's 3-D object at this slice: from here on it "
                               "is a new object")
        how = "(the active model's box prompt in its grown box; GrabCut without a model)"
        self.act_props = {
            d: A(menu, text, lambda _=False, d=d: self.propagate(d), name=name, tip=f"{tip} {how}; {STOP_RULE}")
            for d, text, name, tip in (
                (-1, "Propagate up to the end of the object", "propagate up",
                 "Carry the selected instance to the previous slices"),
                (+1, "Propagate down to the end of the object", "propagate down",
                 "Carry the selected instance to the next slices"),
                (0, "Propagate both ways", "propagate both", "Carry the selected instance up and down the "
                 "stack to the ends of its object"))}
        for act in self.act_props.values():
            act.setAutoRepeat(False)      # a held key must not start it again behind its dialog
        self.act_steps = {
            d: A(menu, text, lambda _=False, d=d: self.propagate_step(d), name=name,
                 tip=f"{tip} {how}; hold the key to walk on slice by slice; Esc cancels")
            for d, text, name, tip in (
                (+1, "Propagate to next slice", "propagate next slice",
                 "Carry the selected instance to the next slice and go there with it selected"),
                (-1, "Propagate to previous slice", "propagate previous slice",
                 "Carry the selected instance to the previous slice and go there with it selected"))}
        self.canvas.installEventFilter(self)    # Esc cancels a step being answered
        self.act_neigh = A("view", "Neighbour slice outlines", self.set_show_neighbours,
                           name="neighbour outlines", checkable=True,
                           tip="Outline the selected 3-D object as it lies on the previous (cyan, dashed) "
                               "and next (yellow, dotted) slice")
        self.act_neigh.setChecked(True)
        colour = w.actions.get("colour by instance")
        if colour is not None:  # the canvas colours a 3-D object alike on every slice
            colour.setText("&Colour by object / instance")
        c = self.controller
        for sig in (c.currentItemChanged, c.selectionChanged, c.projectClosed, c.instancesChanged):
            sig.connect(self._update_enabled)
        self._update_enabled()

    def _build_dock(self) -> None:
        from .panels.orthogonal import OrthogonalPanel
        self.ortho = OrthogonalPanel(self.controller, self.canvas)
        dock = self.window.add_dock("orthogonal", "Orthogonal views", self.ortho,
                                    QtCore.Qt.RightDockWidgetArea)
        dock.hide()  # optional: View > Panels
        dock.visibilityChanged.connect(self.ortho.set_active)

    def _update_enabled(self, *_args) -> None:
        c = self.controller
        on_stack = len(c.slice_items()) > 1 if c.item_id else False
        has_sel = bool(c.selection)
        self.act_next.setEnabled(on_stack and has_sel)
        self.act_prev.setEnabled(on_stack and has_sel)
        engine_has = self.objects_module() is not None
        self.act_link.setEnabled(on_stack and engine_has)
        self.act_unlink.setEnabled(engine_has and any(i.object_id for i in c.selected_instances()))
        one = c.selected_instances() if len(c.selection) == 1 else []
        self.act_split.setEnabled(on_stack and bool(one) and bool(one[0].object_id))
        for act in (*self.act_props.values(), *self.act_steps.values()):
            act.setEnabled(on_stack and bool(one))

    # ------------------------------------------------------------------ object info + outlines
    def set_show_neighbours(self, on: bool) -> None:
        self.show_neighbours = bool(on)
        self.refresh()

    def selected_objects(self) -> list[Instance]:
        return [i for i in self.controller.selected_instances() if i.object_id]

    def object_text(self) -> str:
        """'object 1a2b3c4d · slices 3–9 (7)' for the selected instance; '' when none."""
        c = self.controller
        sel = c.selected_instances()
        if len(sel) != 1:
            return ""
        inst = sel[0]
        if not inst.object_id:
            return "no 3-D object" if len(c.slice_items()) > 1 else ""
        text = f"object {short_object_id(inst.object_id)}"
        if len(c.slice_items()) <= 1:
            return text
        ext = self.index.extent(inst.object_id)
        if ext is None:
            return text + " · slices …"
        first, last, n = ext
        gaps = "" if n == last - first + 1 else f", {n} with it"
        return text + f" · slices {first + 1}–{last + 1} ({last - first + 1}{gaps})"

    def refresh(self, *_args) -> None:
        c = self.controller
        self.object_label.setText(self.object_text())
        self.outlines.clear()
        if not self.show_neighbours or c.item_id is None or c.project is None:
            return
        objs = {i.object_id: i.label for i in self.selected_objects()}
        if not objs:
            return
        ids = c.slice_items()
        k = ids.index(c.item_id) if c.item_id in ids else -1
        hidden = c.hidden_labels()
        for side in (-1, +1):
            j = k + side
            if k < 0 or not 0 <= j < len(ids):
                continue
            ann = self.index.annotation(ids[j])
            if ann is None:
                continue  # being read: index.changed brings it
            there = [i for i in ann.instances if i.object_id in objs and i.label not in hidden]
            if there:
                self.outlines.show(side, there)

    # ------------------------------------------------------------------ copy to a slice
    def copy_to_slice(self, step: int) -> bool:
        """The selected instances onto the slice `step` away, as the same objects."""
        c = self.controller
        sel = c.selected_instances()
        ids = c.slice_items()
        if not sel or c.item_id not in ids:
            c.message.emit("select an instance on a stack slice to copy")
            return False
        k = ids.index(c.item_id) + step
        if not 0 <= k < len(ids):
            c.message.emit("no " + ("next" if step > 0 else "previous") + " slice")
            return False
        loose = [i for i in sel if not i.object_id]
        if loose:
            c.commit("Start 3-D object", [Change(i, i.copy(object_id=new_id())) for i in loose],
                     select=[i.id for i in sel])
            sel = c.selected_instances()
        copies = [(i.mask.copy(), i.x0, i.y0, i.label, i.object_id) for i in sel]
        if not c.set_current_item(ids[k]):
            return False
        there = {i.object_id: i.id for i in c.annotation.instances if i.object_id}
        new = [Instance(mask=m, x0=x0, y0=y0, label=lab, object_id=oid, source="manual")
               for m, x0, y0, lab, oid in copies if oid not in there]
        kept = [there[oid] for *_rest, oid in copies if oid in there]
        if new:
            c.commit(f"Copy from the {'previous' if step > 0 else 'next'} slice",
                     [Change(None, n) for n in new])
        c.set_selection([n.id for n in new] + kept)
        msg = f"copied {len(new)} instance(s) to the {'next' if step > 0 else 'previous'} slice"
        if kept:
            msg += f"; {len(kept)} object(s) were there already (selected, not copied)"
        c.message.emit(msg)
        return bool(new)

    # ------------------------------------------------------------------ linking
    @staticmethod
    def objects_module():
        """engine.objects (linking, link/unlink/split) when this build has it, else None."""
        if importlib.util.find_spec("engine.objects") is None:
            return None
        from engine import objects
        return objects

    def link_stack(self) -> bool:
        """Link the whole stack by overlap (the engine's rule; `maskloop link` does the same):
        one undo step here, though it rewrites many slices."""
        c = self.controller
        if self.objects_module() is None or c.item_id is None or len(c.slice_items()) <= 1:
            return False
        from engine.stack_edits import link_changes
        sel = list(c.selection)
        changes = self.edits.compute("Linking objects", link_changes, c.item_id)
        if changes is None:
            return False
        if not self.edits.commit("Link objects in this stack", changes, select=sel):
            c.message.emit("linking changed nothing: the stack's objects were linked already")
            return False
        n = sum(len(v) for v in changes.values())
        c.message.emit(f"linked the stack: {len(changes)} slice(s), {n} instance(s) changed (Ctrl+Z undoes it)")
        return True

    def split_here(self) -> bool:
        """Cut the selected instance's object at this slice: one undo step."""
        c = self.controller
        sel = c.selected_instances()
        if len(sel) != 1 or not sel[0].object_id or len(c.slice_items()) <= 1:
            c.message.emit("select one instance of a 3-D object to split its object here")
            return False
        from engine.stack_edits import split_changes
        changes = self.edits.compute("Splitting object", split_changes, c.item_id, sel[0].object_id)
        if not self.edits.commit("Split object here", changes, select=[sel[0].id]):
            return False
        c.message.emit(f"split the object here: {sum(len(v) for v in changes.values())} instance(s) on "
                       f"this slice and after it form a new object")
        return True

    # ------------------------------------------------------------------ propagation
    def _prompts(self):
        """The window's prompt service (gui.prompt_service): its worker answers propagation."""
        return getattr(self.window, "prompts", None)

    def _one_selected(self) -> Optional[Instance]:
        c = self.controller
        sel = c.selected_instances()
        if len(sel) != 1 or len(c.slice_items()) <= 1 or c.item_id not in c.slice_items():
            c.message.emit("select one instance on a stack slice to propagate")
            return None
        return sel[0]

    def propagate(self, direction: int) -> bool:
        """Carry the selected instance up (-1), down (+1) or both ways (0) to the end of its
        object, behind a progress dialog with Cancel: one undo step."""
        c = self.controller
        svc = self._prompts()
        start = self._one_selected()
        if start is None or svc is None or self._running or self._step is not None:
            return False
        job = svc.propagation_job(c.item_id, start, direction, window=c.window)
        self._running = True
        try:
            res = self.edits.compute("Propagating", job)
        finally:
            self._running = False
            svc.refresh()     # the worker's cache holds the last slice it answered: the shown one again
        if res is None:
            return False
        added = sum(1 for v in res.changes.values() for ch in v if ch.old is None)
        where = {-1: "up", 1: "down", 0: "up and down"}[direction]
        who = res.describe()
        if not added:
            c.message.emit(f"propagating {where} ({who}): nothing added ({STOP_RULE})")
            return False
        if not self.edits.commit(f"Propagate {where}", res.changes, select=[start.id]):
            return False
        c.message.emit(f"propagated {where}: {added} new instance(s) of this object, answered by {who} "
                       f"(Ctrl+Z removes them all)")
        return True

    @property
    def stepping(self) -> bool:
        """A one-slice propagation is being answered."""
        return self._step is not None

    def propagate_step(self, step: int) -> bool:
        """Carry the selected instance to the next (+1) or previous (-1) slice only; when it
        lands, that slice opens with the new instance selected (so a held key walks on). A
        trigger while a step is being answered is dropped: auto-repeat never builds a backlog."""
        c = self.controller
        if self._step is not None or self._running:
            self.dropped_steps += 1
            return False
        svc = self._prompts()
        start = self._one_selected()
        if start is None or svc is None:
            return False
        ids = c.slice_items()
        k = ids.index(c.item_id) + step
        if not 0 <= k < len(ids):
            c.message.emit("no " + ("next" if step > 0 else "previous") + " slice")
            return False
        if not c.flush():
            c.error.emit("the current slice could not be saved; nothing was changed")
            return False
        st = self._step = _Step(c.project, c.item_id, ids[k], step)
        self.canvas.viewport().setCursor(QtCore.Qt.BusyCursor)
        who = "the model" if svc.model_path() else "GrabCut"
        c.message.emit(f"propagating to the {'next' if step > 0 else 'previous'} slice ({who}); Esc cancels")
        svc.propagate(c.item_id, start, step, window=c.window, max_slices=1, cancel=st.cancel,
                      on_done=lambda res: self._step_done(st, res), on_error=lambda e: self._step_failed(st, e))
        return True

    def cancel_step(self) -> bool:
        """Esc: the step being answered is cancelled (its late answer is dropped)."""
        st = self._step
        if st is None:
            return False
        st.cancel.cancel()
        self._end_step()
        self.controller.message.emit("propagation step cancelled; nothing changed")
        return True

    def _end_step(self) -> None:
        self._step = None
        tool = self.canvas.tool
        if tool is not None:
            self.canvas.viewport().setCursor(tool.cursor)
        svc = self._prompts()
        if svc is not None:
            svc.refresh()     # the worker's cache holds the slice it answered: the shown one again

    def _step_failed(self, st: _Step, exc: BaseException) -> None:
        if self._step is not st:
            return            # cancelled (Esc) meanwhile: already said
        self._end_step()
        c = self.controller
        if isinstance(exc, CancelledError):
            c.message.emit("propagation step cancelled; nothing changed")
        elif isinstance(exc, MaskLoopError):
            c.error.emit(exc.one_line())
        else:
            c.error.emit(f"propagation failed: {type(exc).__name__}: {exc}")

    def _step_done(self, st: _Step, res) -> bool:
        if self._step is not st:
            return False      # cancelled meanwhile: the answer is dropped
        self._end_step()
        c = self.controller
        if c.project is not st.project or c.item_id != st.item_id:
            c.message.emit("propagation step dropped: the slice on screen changed meanwhile")
            return False
        where = "next" if st.step > 0 else "previous"
        added = [ch.new for v in res.changes.values() for ch in v if ch.old is None]
        if not added:
            c.message.emit(f"propagating to the {where} slice ({res.describe()}): nothing added ({STOP_RULE})")
            return False
        if not c.set_current_item(st.target):
            return False
        if not self.edits.commit(f"Propagate to the {where} slice", res.changes, select=[added[0].id]):
            return False
        n = c.slice_items().index(st.target) + 1
        c.message.emit(f"propagated to slice {n}, answered by {res.describe()} (hold the key to walk on; "
                       f"Ctrl+Z removes it)")
        return True

    def eventFilter(self, obj, event) -> bool:
        if (event.type() == QtCore.QEvent.KeyPress and event.key() == QtCore.Qt.Key_Escape
                and self._step is not None):
            return self.cancel_step()
        return False

    def _slices_changed(self) -> None:
        """Slices were rewritten by a stack step (or its undo): outlines, extent, ortho views."""
        self.index.refresh()
        self.ortho.volume.stop()
        self.ortho.set_active(self.ortho.active)
        self.refresh()
        self._update_enabled()

    def unlink_selected(self) -> bool:
        """The selected instances leave their objects (each its own object): one undo step."""
        c = self.controller
        objects = self.objects_module()
        sel = [i for i in c.selected_instances() if i.object_id]
        if objects is None or not sel:
            return False
        changed = objects.unlink([c.annotation], [(c.item_id, i.id) for i in sel])
        if not changed:
            return False
        new_ids = {i.id: i.object_id for i in changed[0].instances}
        return c.commit("Unlink from 3-D object",
                        [Change(i, i.copy(object_id=new_ids[i.id])) for i in sel if i.id in new_ids],
                        select=[i.id for i in sel])


def install(window) -> StackTools:
    existing = getattr(window, "stack_tools", None)
    if isinstance(existing, StackTools):
        return existing
    tools = StackTools(window)
    window.stack_tools = tools
    return tools
