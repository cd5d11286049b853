"""The data model: Instance, ItemAnnotation, Label, LabelSet (numpy only, no Qt, no torch).

An Instance's mask is canonical and stored cropped to its bounding box with the
offset of its top-left pixel; polygons exist only as an import/export form.
"""
from __future__ import annotations

import colorsys
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import numpy as np

from .errors import LabelError

SOURCES = ("manual", "model", "classic", "imported", "prompt")
STATUSES = ("new", "predicted", "reviewed")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(eq=False)  # identity equality: masks are arrays, compare with same_pixels()
class Instance:
    """One object: a bool mask cropped to its bbox, placed at (x0, y0) in the image."""

    mask: np.ndarray
    x0: int = 0
    y0: int = 0
    label: str = ""
    id: str = field(default_factory=new_id)
    score: Optional[float] = None
    source: str = "manual"
    model: Optional[str] = None
    object_id: Optional[str] = None  # the 3-D object (instances on a stack's slices) it belongs to

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 2:
            raise ValueError(f"instance mask must be 2-D, got shape {self.mask.shape}")
        self.x0 = int(self.x0)
        self.y0 = int(self.y0)
        if self.source not in SOURCES:
            raise ValueError(f"unknown instance source {self.source!r}")

    # --- geometry -------------------------------------------------------------------
    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the stored crop in image pixels."""
        return (self.x0, self.y0, self.width, self.height)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def is_empty(self) -> bool:
        return not self.mask.any()

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask pasted into a zero image of `shape` (H, W); parts outside are cut."""
        out = np.zeros(shape[:2], dtype=bool)
        self.paste_into(out)
        return out

    def paste_into(self, canvas: np.ndarray, value=True) -> None:
        """Set canvas[mask] = value where the crop overlaps the canvas."""
        H, W = canvas.shape[:2]
        ys, xs = self.y0, self.x0
        y1, x1 = max(ys, 0), max(xs, 0)
        y2, x2 = min(ys + self.height, H), min(xs + self.width, W)
        if y2 <= y1 or x2 <= x1:
            return
        sub = self.mask[y1 - ys : y2 - ys, x1 - xs : x2 - xs]
        canvas[y1:y2, x1:x2][sub] = value

    def tight(self) -> "Instance":
        """Shrink the crop to the true bbox of the set pixels (in place); returns self."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        if rows.size == 0:
            self.mask = np.zeros((0, 0), dtype=bool)
            return self
        cols = np.flatnonzero(self.mask.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        if (r0, c0, r1, c1) != (0, 0, self.height, self.width):
            self.mask = self.mask[r0:r1, c0:c1].copy()
            self.x0 += int(c0)
            self.y0 += int(r0)
        return self

    def fits(self, shape: tuple[int, int]) -> bool:
        H, W = shape[:2]
        return self.x0 >= 0 and self.y0 >= 0 and self.x0 + self.width <= W and self.y0 + self.height <= H

    @classmethod
    def from_full_mask(cls, mask: np.ndarray, label: str, **kw) -> Optional["Instance"]:
        """Crop a full-image mask to its bbox; None when the mask is empty."""
        mask = np.asarray(mask, dtype=bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls(mask=mask[r0:r1, c0:c1].copy(), x0=int(c0), y0=int(r0), label=label, **kw)

    def copy(self, **changes) -> "Instance":
        d = dict(mask=self.mask.copy(), x0=self.x0, y0=self.y0, label=self.label, id=self.id,
                 score=self.score, source=self.source, model=self.model,
                 object_id=self.object_id)
        d.update(changes)
        return Instance(**d)

    def same_pixels(self, other: "Instance") -> bool:
        """True when both cover exactly the same image pixels (crop padding ignored)."""
        a, b = self.copy().tight(), other.copy().tight()
        return a.bbox == b.bbox and np.array_equal(a.mask, b.mask)


@dataclass
class ItemAnnotation:
    """The instances of one item (a 2-D image or one slice) and its review status."""

    item_id: str
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)
    status: str = "new"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown item status {self.status!r}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def find(self, instance_id: str) -> Optional[Instance]:
        for inst in self.instances:
            if inst.id == instance_id:
                return inst
        return None

    def label_image(self, dtype=np.int32) -> np.ndarray:
        """Integer image: 0 background, k = k-th instance (later instances on top)."""
        out = np.zeros(self.shape, dtype=dtype)
        for k, inst in enumerate(self.instances, start=1):
            inst.paste_into(out, k)
        return out

    def copy(self) -> "ItemAnnotation":
        return ItemAnnotation(self.item_id, self.height, self.width,
                              [i.copy() for i in self.instances], self.status)


# --- labels -------------------------------------------------------------------------

def default_color(index: int) -> tuple[int, int, int]:
    """Distinct, saturated colours by the golden-angle hue sequence."""
    h = (index * 0.618033988749895 + 0.05) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


@dataclass
class Label:
    id: int
    name: str
    color: tuple[int, int, int]
    visible: bool = True

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "color": list(self.color), "visible": self.visible}


class LabelSet:
    """Ordered classes; ids are stable across renames and never reused."""

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self._labels: list[Label] = []
        self._next_id = 1  # ids are not reused within a session, even after a removal
        for lab in labels:
            self._append(lab)

    def _append(self, lab: Label) -> None:
        if not lab.name or not lab.name.strip():
            raise LabelError("label name is empty")
        if self.get(lab.name) is not None:
            raise LabelError(f"duplicate label {lab.name!r}")
        if any(l.id == lab.id for l in self._labels):
            raise LabelError(f"duplicate label id {lab.id}")
        self._labels.append(lab)
        self._next_id = max(self._next_id, lab.id + 1)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "LabelSet":
        ls = cls()
        for n in names:
            ls.add(n)
        return ls

    def __iter__(self) -> Iterator[Label]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def names(self) -> list[str]:
        return [l.name for l in self._labels]

    def get(self, name: str) -> Optional[Label]:
        for l in self._labels:
            if l.name == name:
                return l
        return None

    def by_id(self, label_id: int) -> Optional[Label]:
        for l in self._labels:
            if l.id == label_id:
                return l
        return None

    def require(self, name: str, path=None) -> Label:
        lab = self.get(name)
        if lab is None:
            raise LabelError(f"unknown label {name!r} (known: {', '.join(self.names()) or 'none'})", path)
        return lab

    def add(self, name: str, color: Optional[tuple[int, int, int]] = None) -> Label:
        """Add a label (or return the existing one with that name)."""
        name = name.strip()
        existing = self.get(name)
        if existing is not None:
            return existing
        next_id = self._next_id
        lab = Label(next_id, name, tuple(color) if color else default_color(next_id - 1))
        self._append(lab)
        return lab

    def rename(self, old: str, new: str) -> Label:
        lab = self.require(old)
        new = new.strip()
        if not new:
            raise LabelError("label name is empty")
        if new != old and self.get(new) is not None:
            raise LabelError(f"label {new!r} already exists")
        lab.name = new
        return lab

    def remove(self, name: str) -> None:
        lab = self.require(name)
        self._labels.remove(lab)

    def index(self, name: str) -> int:
        """0-based position, used for number-key shortcuts and contiguous model classes."""
        for k, l in enumerate(self._labels):
            if l.name == name:
                return k
        raise LabelError(f"unknown label {name!r}")

    def to_json(self) -> list[dict]:
        return [l.to_json() for l in self._labels]

    @classmethod
    def from_json(cls, data, path=None) -> "LabelSet":
        if not isinstance(data, list):
            raise LabelError("labels must be a list", path, "labels")
        out = cls()
        for k, d in enumerate(data):
            try:
                out._append(Label(int(d["id"]), str(d["name"]), tuple(int(c) for c in d["color"])[:3],
                                  bool(d.get("visible", True))))
            except (KeyError, TypeError, ValueError) as e:
                raise LabelError(f"malformed label entry ({e})", path, f"labels[{k}]") from None
            except LabelError as e:
                raise LabelError(e.message, path, f"labels[{k}]") from None
        return out
