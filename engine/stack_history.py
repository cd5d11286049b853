"""One undo step that spans several items (the slices of a stack): link, split, propagate.

engine.history records one item's edit as ops; a `StackStep` holds the ops of every item
one user step changed, and `apply_step` writes them forwards (redo) or backwards (undo)
through the Project's safe save path, all or nothing:

1. under the project lock, every item is read from disk and checked: it must be in the
   state the step expects (after it, to undo; before it, to redo). An item changed since
   (an edit on that slice, another program) stops the whole step with a ConflictError
   naming the item, and nothing is written.
2. the items are written one by one (Project.save_annotation: its own ConflictError rule).
   When one write fails, the items already written are put back as they were, and the
   error names the item that failed (and any item that could not be put back).

`commit_step` turns requested changes ({item id: [Change]}) into a StackStep and writes it
the same way. No Qt: gui.stack_undo wraps a step in a QUndoCommand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from .annotations import Instance, ItemAnnotation
from .errors import ConflictError, MaskLoopError, WriteError
from .history import AddOp, AttrOp, Change, Op, PatchOp, RemoveOp, StatusOp, build_and_apply, replay


@dataclass
class ItemOps:
    item_id: str
    ops: list[Op]


@dataclass
class StackStep:
    """One user step over several items; `items` in the order they are written."""
    text: str
    items: list[ItemOps] = field(default_factory=list)

    @property
    def item_ids(self) -> list[str]:
        return [it.item_id for it in self.items]

    @property
    def ops(self) -> list[Op]:
        """Every op of the step (shared objects: a label rename reaches them here)."""
        return [op for it in self.items for op in it.ops]

    def __bool__(self) -> bool:
        return bool(self.items)


# --- checking that an item is where the step expects it -----------------------------------

def _same_instance(a: Instance, b: Instance) -> bool:
    return a.label == b.label and a.object_id == b.object_id and a.same_pixels(b)


def _op_mismatch(ann: ItemAnnotation, op: Op, forward: bool) -> Optional[str]:
    """Why `op` cannot be applied (forward) or reverted (not forward) on ann now; None if it can."""
    if isinstance(op, AttrOp):
        inst = ann.find(op.inst_id)
        if inst is None:
            return f"instance {op.inst_id} is gone"
        want = op.before if forward else op.after
        if getattr(inst, op.name) != want:
            return f"instance {op.inst_id}'s {op.name} is now {getattr(inst, op.name)!r}, not {want!r}"
    elif isinstance(op, (AddOp, RemoveOp)):
        present = isinstance(op, AddOp) != forward   # AddOp: absent before, present after
        inst = ann.find(op.inst.id)
        if present and (inst is None or not _same_instance(inst, op.inst)):
            return f"instance {op.inst.id} was " + ("removed" if inst is None else "edited")
        if not present and inst is not None:
            return f"instance {op.inst.id} is there again"
    elif isinstance(op, PatchOp):
        if ann.find(op.inst_id) is None:
            return f"instance {op.inst_id} is gone"
    elif isinstance(op, StatusOp):
        if ann.status != (op.before if forward else op.after):
            return f"its status is now {ann.status!r}"
    return None


def check_and_apply(ann: ItemAnnotation, ops: Sequence[Op], forward: bool) -> Optional[str]:
    """Apply ops (backwards when not forward) to ann in memory, checking each first.
    Returns why they do not fit (ann may then be partly changed: use a fresh copy), or None."""
    for op in (ops if forward else list(reversed(ops))):
        problem = _op_mismatch(ann, op, forward)
        if problem is not None:
            return problem
        op.apply(ann, forward)
    return None


# --- writing a step ---------------------------------------------------------------------------

def _write(project, staged: list[tuple[ItemOps, ItemAnnotation]], forward: bool, text: str) -> None:
    """Save each staged annotation; on a failure put back those written, then raise."""
    done: list[ItemOps] = []
    for it, ann in staged:
        try:
            project.save_annotation(ann)
        except (MaskLoopError, OSError) as e:
            stuck = _put_back(project, done, forward)
            reason = e.one_line() if isinstance(e, MaskLoopError) else str(e)
            msg = f"{text!r}: item {it.item_id!r} could not be saved ({reason}); "
            msg += ("the other items were put back as they were" if not stuck else
                    f"item(s) {', '.join(stuck)} could not be put back and keep the change")
            cls = type(e) if isinstance(e, MaskLoopError) else WriteError
            raise cls(msg, project.annotation_path(it.item_id)) from e
        done.append(it)


def _put_back(project, done: list[ItemOps], forward: bool) -> list[str]:
    stuck = []
    for it in reversed(done):
        try:
            ann = project.load_annotation(it.item_id)
            replay(ann, it.ops, not forward)
            project.save_annotation(ann)
        except (MaskLoopError, OSError, RuntimeError):
            stuck.append(it.item_id)
    return stuck


def apply_step(project, step: StackStep, forward: bool) -> dict[str, ItemAnnotation]:
    """Redo (forward) or undo the step on disk, all or nothing; {item id: annotation saved}.

    ConflictError (nothing written) when an item is no longer in the state the step left
    it in (undo) or found it in (redo), naming the item and what differs."""
    verb = "redo" if forward else "undo"
    with project.locked():
        staged = []
        for it in step.items:
            ann = project.load_annotation(it.item_id)
            problem = check_and_apply(ann, it.ops, forward)
            if problem is not None:
                raise ConflictError(f"cannot {verb} {step.text!r}: item {it.item_id!r} was changed since "
                                    f"({problem}); nothing was changed", project.annotation_path(it.item_id))
            staged.append((it, ann))
        _write(project, staged, forward, step.text)
    return {it.item_id: ann for it, ann in staged}


def commit_step(project, text: str, changes: Mapping[str, Sequence[Change]]
                ) -> tuple[StackStep, dict[str, ItemAnnotation]]:
    """Apply {item id: [Change]} as one step (all or nothing) and write it.

    Each item is read fresh under the lock, so the changes' `old` instances are found by
    id. Returns the step (empty when nothing changed) and {item id: annotation saved}."""
    step = StackStep(text)
    staged = []
    with project.locked():
        for item_id, item_changes in changes.items():
            if not item_changes:
                continue
            ann = project.load_annotation(item_id)
            ops, _region, _structural = build_and_apply(ann, list(item_changes))
            if ops:
                it = ItemOps(item_id, ops)
                step.items.append(it)
                staged.append((it, ann))
        _write(project, staged, True, text)
    return step, {it.item_id: ann for it, ann in staged}


def changes_between(old: ItemAnnotation, new: ItemAnnotation) -> list[Change]:
    """The changes that turn `old` into `new` (instances matched by id)."""
    before = {i.id: i for i in old.instances}
    after = {i.id for i in new.instances}
    out = [Change(before.get(i.id), i) for i in new.instances]
    out += [Change(i, None) for i in old.instances if i.id not in after]
    return out
