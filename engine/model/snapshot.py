"""Training data as a snapshot: the annotations of a project (or a COCO file) read once.

- `Snapshot.from_project(project)` reads the reviewed items of a project (or, with
  include_unreviewed, every item that has instances) into memory once, when training
  starts: edits made while a run trains do not change it. `Snapshot.from_coco(path)` does
  the same for a COCO instances file. Instances whose mask is empty, lies outside the
  image, is smaller than `min_size` px across or has an unknown label are dropped and
  counted in `snapshot.dropped` (the Trainer logs the counts). Items without instances
  are kept: a reviewed empty image teaches the model what background looks like.
- Classes are 1..K in LabelSet order (0 is the background), as torchvision expects.
- `snapshot.split(val_fraction, seed)` is reproducible (same ids, fraction and seed give
  the same split whatever the item order) and has at least one validation item when
  there are two or more; unreviewed items (include_unreviewed) are never validation data.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .. import imageio
from ..annotations import Instance
from ..errors import FormatError, ImageReadError, MaskLoopError
from ..jobs import check, report


class DataError(MaskLoopError):
    """Training data that cannot be used (no items, no labels, unreadable image, ...)."""


# --------------------------------------------------------------------------------------
# the snapshot
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRef:
    """How to read the raw pixels of one training image (picklable, for worker processes).

    Either an imageio Source (+ slice, + base folder for relative paths) or a plain file.
    """
    source: Optional[dict] = None  # imageio.Source.to_json()
    slice: int = 0
    base: Optional[str] = None
    path: Optional[str] = None

    def load(self) -> np.ndarray:
        if self.source is not None:
            src = imageio.Source.from_json(self.source)
            return imageio.read_slice(src, self.slice, base=Path(self.base) if self.base else None)
        if self.path is None:
            raise DataError("image reference without a source or path")
        if self.slice:
            srcs = imageio.probe(self.path)
            if not srcs:
                raise ImageReadError("no image found", self.path)
            return imageio.read_slice(srcs[0], self.slice)
        return imageio.read_image(self.path)

    def describe(self) -> str:
        if self.path:
            return self.path + (f" [{self.slice}]" if self.slice else "")
        if self.source:
            p = Path(self.source.get("path", "?"))
            if self.base and not p.is_absolute():
                p = Path(self.base) / p
            return str(p) + (f" [{self.slice}]" if self.source.get("n_slices", 1) > 1 else "")
        return "?"


@dataclass
class TrainItem:
    key: str                     # project item id, or the COCO image's file name
    height: int
    width: int
    instances: list[Instance]    # cropped masks; label = class name
    classes: list[int]           # 1..K per instance
    ref: ImageRef
    reviewed: bool = True


def stack_group(item: TrainItem) -> str:
    """The split group of an item: its stack or series (all slices together), else itself."""
    ref = item.ref
    if ref.source is not None and int(ref.source.get("n_slices", 1)) > 1:
        return f"source:{ref.base or ''}:{ref.source.get('path')}"
    if ref.path is not None:   # a COCO image: slices of one stack file share the path
        return f"file:{ref.path}"
    return f"item:{item.key}"


@dataclass
class Snapshot:
    """The training data of one run, in memory (annotations only; images are read lazily)."""
    label_names: list[str]
    items: list[TrainItem]
    dropped: Counter = field(default_factory=Counter)   # reason -> count
    origin: str = ""

    # -- sources ----------------------------------------------------------------------
    @classmethod
    def from_project(cls, project, *, include_unreviewed: bool = False, items: Optional[Iterable[str]] = None,
                     min_size: int = 1, progress=None, cancel=None) -> "Snapshot":
        """Reviewed items (all reviewed items, or those of `items`) with their instances.

        include_unreviewed: also items with status new/predicted that have instances
        (training data, never validation data).
        """
        names = project.labels.names()
        if not names:
            raise DataError("the project has no labels; add at least one label and annotate some items",
                            project.manifest_path, "labels")
        chosen = project.items
        if items is not None:
            wanted = list(dict.fromkeys(items))
            chosen = [project.item(i) for i in wanted]  # ProjectError for unknown ids
        statuses = project.statuses()
        out, dropped = [], Counter()
        for k, it in enumerate(chosen):
            check(cancel)
            report(progress, k, len(chosen), it.id)
            st = statuses.get(it.id, "new")
            if st != "reviewed" and not include_unreviewed:
                continue
            ann = project.load_annotation(it.id)
            if ann.status != "reviewed" and not include_unreviewed:
                continue  # changed since statuses() was read
            if ann.status != "reviewed" and not ann.instances:
                continue  # nobody said this image is empty
            insts, classes = _clean_instances(ann.instances, (it.height, it.width), names, min_size, dropped)
            src = project.sources[it.source]
            ref = ImageRef(source=src.to_json(), slice=it.slice, base=str(project.root))
            out.append(TrainItem(it.id, it.height, it.width, insts, classes, ref, ann.status == "reviewed"))
        report(progress, len(chosen), len(chosen), "")
        return cls(names, out, dropped, origin=f"project {project.root}")

    @classmethod
    def from_coco(cls, path, *, images_dir=None, label_names: Optional[Sequence[str]] = None,
                  min_size: int = 1) -> "Snapshot":
        """A COCO instances file: every image is a reviewed item; categories in id order
        (or `label_names` order, e.g. a project's) are the classes. iscrowd regions are
        dropped and counted. Image paths must stay inside images_dir (default: the JSON's folder)."""
        from ..formats import contained_path
        from ..formats.coco import decode_segmentation, read_coco
        path = Path(path)
        data = read_coco(path)
        base = Path(images_dir) if images_dir is not None else path.parent
        cats = {}
        for k, c in enumerate(data["categories"]):
            if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
                raise FormatError("category needs an id and a name", path, f"categories[{k}]")
            cats[c["id"]] = c["name"]
        if label_names is not None:
            names = list(label_names)
        else:
            ids = sorted(cats) if all(isinstance(i, int) for i in cats) else sorted(cats, key=str)
            names = [cats[i] for i in ids]
        if not names:
            raise DataError("the COCO file has no categories", path, "categories")
        by_image: dict = {}
        for k, a in enumerate(data["annotations"]):
            if not isinstance(a, dict) or "image_id" not in a:
                raise FormatError("annotation needs an image_id", path, f"annotations[{k}]")
            by_image.setdefault(a["image_id"], []).append((k, a))
        out, dropped, seen = [], Counter(), set()
        for k, im in enumerate(data["images"]):
            if not isinstance(im, dict) or "id" not in im:
                raise FormatError("image needs an id", path, f"images[{k}]")
            try:
                h, w = int(im["height"]), int(im["width"])
            except (KeyError, TypeError, ValueError):
                raise FormatError("image needs integer height and width", path, f"images[{k}]") from None
            file_name = im.get("file_name")
            fpath = contained_path(base, file_name, path, f"images[{k}].file_name")
            if not fpath.exists():
                raise ImageReadError("image file of the COCO dataset not found", fpath)
            key = str(file_name) + (f"#{im['slice']}" if im.get("slice") else "")
            if key in seen:
                raise FormatError(f"image {file_name!r} is listed twice", path, f"images[{k}]")
            seen.add(key)
            insts = []
            for j, a in by_image.get(im["id"], []):
                fld = f"annotations[{j}]"
                if a.get("iscrowd"):
                    dropped["crowd"] += 1
                    continue
                name = cats.get(a.get("category_id"))
                if name is None:
                    raise FormatError(f"unknown category_id {a.get('category_id')!r}", path, f"{fld}.category_id")
                if "segmentation" not in a:
                    raise FormatError("annotation has no segmentation", path, fld)
                m = decode_segmentation(a["segmentation"], h, w, path, f"{fld}.segmentation")
                inst = Instance.from_full_mask(m, name, source="imported")
                if inst is None:
                    dropped["empty"] += 1
                    continue
                insts.append(inst)
            insts, classes = _clean_instances(insts, (h, w), names, min_size, dropped)
            ref = ImageRef(path=str(fpath), slice=int(im.get("slice") or 0))
            out.append(TrainItem(key, h, w, insts, classes, ref, True))
        return cls(names, out, dropped, origin=f"coco {path}")

    def relabel(self, names: Sequence[str]) -> "Snapshot":
        """The same data with classes numbered in `names` order (e.g. a project's labels),
        which must hold every label of this snapshot."""
        names = list(names)
        missing = [n for n in self.label_names if n not in names]
        if missing:
            raise DataError(f"label(s) {', '.join(missing)} are not among {', '.join(names) or 'none'}")
        cls_of = {n: k + 1 for k, n in enumerate(names)}
        items = [TrainItem(it.key, it.height, it.width, it.instances, [cls_of[i.label] for i in it.instances],
                           it.ref, it.reviewed) for it in self.items]
        return Snapshot(names, items, Counter(self.dropped), origin=self.origin)

    # -- split ------------------------------------------------------------------------
    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
        """Indices (train, val). Reproducible; unreviewed items always train; the slices
        of one stack or series are never on both sides (engine.splits), so there is at
        least one validation item when the reviewed items come from two or more images
        or stacks and val_fraction > 0."""
        from ..splits import split_by_group
        reviewed = [it for it in self.items if it.reviewed]
        if val_fraction <= 0 or len(reviewed) < 2:
            val_keys: set = set()
        else:
            frac = min(max(float(val_fraction), 1e-6), 1 - 1e-6)
            val_keys = split_by_group([it.key for it in reviewed], [stack_group(it) for it in reviewed],
                                      frac, seed)
        train = [i for i, it in enumerate(self.items) if it.key not in val_keys]
        val = [i for i, it in enumerate(self.items) if it.key in val_keys]
        return train, val

    # -- stats ------------------------------------------------------------------------
    @property
    def n_instances(self) -> int:
        return sum(len(it.instances) for it in self.items)

    def class_counts(self) -> dict[str, int]:
        c = Counter()
        for it in self.items:
            for k in it.classes:
                c[self.label_names[k - 1]] += 1
        return {n: c.get(n, 0) for n in self.label_names}

    def dropped_summary(self) -> str:
        if not self.dropped:
            return "no instances dropped"
        return "dropped " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()))

    # -- persistence (the run folder keeps the exact data a run trained on) ------------
    def to_json(self) -> dict:
        from ..masks import rle_encode
        items = []
        for it in self.items:
            insts = [{"class": c, "label": inst.label, "x0": inst.x0, "y0": inst.y0, "rle": rle_encode(inst.mask)}
                     for inst, c in zip(it.instances, it.classes)]
            items.append({"key": it.key, "height": it.height, "width": it.width, "reviewed": it.reviewed,
                          "ref": asdict(it.ref), "instances": insts})
        return {"format": "maskloop-train-snapshot", "version": 1, "label_names": list(self.label_names),
                "origin": self.origin, "dropped": dict(self.dropped), "items": items}

    @classmethod
    def from_json(cls, data: dict, path=None) -> "Snapshot":
        from ..masks import rle_decode
        if not isinstance(data, dict) or data.get("format") != "maskloop-train-snapshot":
            raise FormatError("not a MaskLoop training snapshot", path)
        try:
            names = [str(n) for n in data["label_names"]]
            items = []
            for k, d in enumerate(data["items"]):
                insts, classes = [], []
                for j, e in enumerate(d["instances"]):
                    m = rle_decode(e["rle"], path, f"items[{k}].instances[{j}]")
                    insts.append(Instance(mask=m, x0=int(e["x0"]), y0=int(e["y0"]), label=str(e["label"])))
                    classes.append(int(e["class"]))
                ref = ImageRef(**{key: d["ref"].get(key) for key in ("source", "slice", "base", "path")})
                items.append(TrainItem(str(d["key"]), int(d["height"]), int(d["width"]), insts, classes,
                                       ref, bool(d.get("reviewed", True))))
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"malformed training snapshot ({e!r})", path) from None
        return cls(names, items, Counter(data.get("dropped") or {}), origin=str(data.get("origin", "")))


def object_extents(items: Iterable[TrainItem]) -> list[int]:
    """The larger side (px) of every instance in `items` (the CPU training crop's measure)."""
    return [max(inst.mask.shape) for it in items for inst in it.instances]


def largest_object(items: Iterable[TrainItem]) -> int:
    """The largest width or height (px) of any instance in `items` (0 when there are none);
    the Predictor widens its tile overlap to it."""
    return max((max(inst.mask.shape) for it in items for inst in it.instances), default=0)


def _clean_instances(instances: Sequence[Instance], shape: tuple[int, int], names: Sequence[str],
                     min_size: int, dropped: Counter) -> tuple[list[Instance], list[int]]:
    """Keep usable instances (tight, inside the image, known label); count the rest."""
    cls_of = {n: k + 1 for k, n in enumerate(names)}
    H, W = shape
    out, classes = [], []
    for inst in instances:
        if inst.label not in cls_of:
            dropped["unknown label"] += 1
            continue
        inst = inst.copy()
        if not inst.fits(shape):  # cut what lies outside the image
            full = np.zeros(shape, bool)
            inst.paste_into(full)
            if not full.any():
                dropped["outside the image"] += 1
                continue
            inst = Instance.from_full_mask(full, inst.label, id=inst.id, source=inst.source)
        inst.tight()
        if inst.is_empty():
            dropped["empty mask"] += 1
            continue
        if inst.width < min_size or inst.height < min_size:
            dropped["degenerate box"] += 1
            continue
        out.append(inst)
        classes.append(cls_of[inst.label])
    return out, classes
