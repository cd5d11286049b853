"""Training data: a snapshot of annotations, a reproducible split, joint transforms.

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
- `InstanceDataset` yields (image (3, H, W) float32, target {"boxes", "labels", "masks"})
  with the model's normalisation policy (engine.model.normalize) applied exactly as at
  inference, then the augmentations of `Augment`: random crops of large images,
  optional scale jitter, flips, 90-degree rotations, intensity gain/bias, gamma and
  noise. Randomness comes from (seed, epoch, index) only, so a sample is the same in
  any worker process and after a resume.
- Masks stay cropped to their boxes through every transform (1000 nuclei of a 2k image
  never become 1000 full-size arrays). The final target holds them as an (N, H, W) array
  for torchvision's own code, or, for the Trainer (packed_masks=True), still cropped, as
  PackedMasks (engine.model.mask_targets).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from .. import imageio
from ..annotations import Instance
from ..errors import FormatError, ImageReadError, MaskLoopError
from ..jobs import check, report
from .mask_targets import PackedMasks
from .normalize import intensity_bounds, normalize, range_policy, validate_policy


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


# --------------------------------------------------------------------------------------
# augmentation on (image, cropped instances)
# --------------------------------------------------------------------------------------

@dataclass
class Augment:
    """Joint image/target augmentations for CT and microscopy (all optional).

    crop: images larger than this (either side) are cut to a random crop of at most
    crop x crop px (0: never). scale_jitter: (lo, hi) random resize factor, or None.
    flip / rot90: random horizontal and vertical flips and 90-degree rotations (grey
    data has no canonical orientation). gain / bias / gamma / noise: intensity changes
    on the normalised [0, 1] image (gain in 1 +- gain, bias +- bias, gamma exp(+-gamma),
    Gaussian noise up to `noise` sigma), each applied with probability p_intensity.
    min_area: instances cut by a crop to fewer pixels than this (and than min_visible of
    their area) are left out.
    """
    crop: int = 512
    scale_jitter: Optional[tuple[float, float]] = None
    flip: bool = True
    rot90: bool = True
    gain: float = 0.2
    bias: float = 0.05
    gamma: float = 0.3
    noise: float = 0.03
    p_intensity: float = 0.5
    min_area: int = 8
    min_visible: float = 0.25

    def to_json(self) -> dict:
        d = asdict(self)
        d["scale_jitter"] = list(self.scale_jitter) if self.scale_jitter else None
        return d

    @classmethod
    def from_json(cls, d: Optional[dict]) -> "Augment":
        d = dict(d or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if known.get("scale_jitter"):
            known["scale_jitter"] = tuple(float(v) for v in known["scale_jitter"])
        return cls(**known)

    @classmethod
    def none(cls, crop: int = 0) -> "Augment":
        """No randomness except cropping of large images (crop=0: none at all)."""
        return cls(crop=crop, scale_jitter=None, flip=False, rot90=False, gain=0.0, bias=0.0,
                   gamma=0.0, noise=0.0, p_intensity=0.0)


class _Inst:
    """A cropped mask (bool) at (x0, y0) with its class: the unit the transforms move."""
    __slots__ = ("mask", "x0", "y0", "cls", "area0")

    def __init__(self, mask, x0, y0, cls, area0=None):
        self.mask, self.x0, self.y0, self.cls = mask, int(x0), int(y0), int(cls)
        self.area0 = int(area0) if area0 is not None else int(np.count_nonzero(mask))


def crop_instances(insts: list[_Inst], x0: int, y0: int, w: int, h: int) -> list[_Inst]:
    out = []
    for it in insts:
        ih, iw = it.mask.shape
        ax0, ay0 = max(it.x0, x0), max(it.y0, y0)
        ax1, ay1 = min(it.x0 + iw, x0 + w), min(it.y0 + ih, y0 + h)
        if ax1 <= ax0 or ay1 <= ay0:
            continue
        sub = it.mask[ay0 - it.y0:ay1 - it.y0, ax0 - it.x0:ax1 - it.x0]
        out.append(_Inst(sub, ax0 - x0, ay0 - y0, it.cls, it.area0))
    return out


def hflip_instances(insts: list[_Inst], width: int) -> list[_Inst]:
    return [_Inst(it.mask[:, ::-1], width - (it.x0 + it.mask.shape[1]), it.y0, it.cls, it.area0) for it in insts]


def vflip_instances(insts: list[_Inst], height: int) -> list[_Inst]:
    return [_Inst(it.mask[::-1, :], it.x0, height - (it.y0 + it.mask.shape[0]), it.cls, it.area0) for it in insts]


def rot90_instances(insts: list[_Inst], height: int, width: int, k: int) -> list[_Inst]:
    """Rotate like np.rot90(image, k) (counter-clockwise) on an image of (height, width)."""
    k %= 4
    out = insts
    H, W = height, width
    for _ in range(k):
        # np.rot90 once: pixel (r, c) -> (W - 1 - c, r); the new image is (W, H)
        out = [_Inst(np.rot90(it.mask), it.y0, W - (it.x0 + it.mask.shape[1]), it.cls, it.area0) for it in out]
        H, W = W, H
    return out


def scale_instances(insts: list[_Inst], height: int, width: int, new_h: int, new_w: int) -> list[_Inst]:
    """Resample cropped masks onto the grid of an image resized from (height, width) to
    (new_h, new_w): pixel X takes source pixel floor((X + 0.5) * width / new_w), the
    centre-aligned nearest neighbour (cv2.INTER_NEAREST_EXACT), which matches a
    bilinear resize of the image."""
    ry, rx = height / new_h, width / new_w
    out = []
    for it in insts:
        ih, iw = it.mask.shape
        # destination pixels whose source lies in the crop
        ny0 = max(0, int(math.ceil(it.y0 / ry - 0.5)))
        ny1 = min(new_h, int(math.ceil((it.y0 + ih) / ry - 0.5)))
        nx0 = max(0, int(math.ceil(it.x0 / rx - 0.5)))
        nx1 = min(new_w, int(math.ceil((it.x0 + iw) / rx - 0.5)))
        if ny1 <= ny0 or nx1 <= nx0:
            continue
        rows = np.floor((np.arange(ny0, ny1) + 0.5) * ry).astype(np.int64) - it.y0
        cols = np.floor((np.arange(nx0, nx1) + 0.5) * rx).astype(np.int64) - it.x0
        rows = np.clip(rows, 0, ih - 1)
        cols = np.clip(cols, 0, iw - 1)
        m = it.mask[rows[:, None], cols[None, :]]
        if m.any():
            out.append(_Inst(m, nx0, ny0, it.cls, it.area0 * (new_h / height) * (new_w / width)))
    return out


def _choose_crop(rng: np.random.Generator, H: int, W: int, size: int, insts: list[_Inst]) -> tuple[int, int, int, int]:
    """A random window of at most size x size px; prefers windows that contain objects."""
    ch, cw = min(H, size), min(W, size)
    best = None
    for attempt in range(4):
        if insts and attempt < 3 and rng.random() < 0.7:
            # centre on a random object (its centre jittered), so objects are seen often
            it = insts[int(rng.integers(len(insts)))]
            cy = it.y0 + it.mask.shape[0] / 2 + rng.uniform(-ch / 2, ch / 2)
            cx = it.x0 + it.mask.shape[1] / 2 + rng.uniform(-cw / 2, cw / 2)
            y0 = int(np.clip(round(cy - ch / 2), 0, H - ch))
            x0 = int(np.clip(round(cx - cw / 2), 0, W - cw))
        else:
            y0 = int(rng.integers(0, H - ch + 1))
            x0 = int(rng.integers(0, W - cw + 1))
        best = (x0, y0, cw, ch)
        if not insts or crop_instances(insts, x0, y0, cw, ch):
            break
    return best


def apply_augment(image: np.ndarray, insts: list[_Inst], aug: Augment, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[_Inst]]:
    """image: float32 (H, W, 3) in [0, 1] (may be modified); returns the new pair."""
    H, W = image.shape[:2]
    if aug.scale_jitter:
        lo, hi = aug.scale_jitter
        s = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if abs(s - 1.0) > 1e-3:
            import cv2
            nh, nw = max(8, int(round(H * s))), max(8, int(round(W * s)))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
            if image.ndim == 2:
                image = image[..., None]
            insts = scale_instances(insts, H, W, nh, nw)
            H, W = nh, nw
    if aug.crop and (H > aug.crop or W > aug.crop):
        x0, y0, cw, ch = _choose_crop(rng, H, W, int(aug.crop), insts)
        image = image[y0:y0 + ch, x0:x0 + cw]
        insts = crop_instances(insts, x0, y0, cw, ch)
        H, W = ch, cw
    if aug.flip:
        if rng.random() < 0.5:
            image = image[:, ::-1]
            insts = hflip_instances(insts, W)
        if rng.random() < 0.5:
            image = image[::-1, :]
            insts = vflip_instances(insts, H)
    if aug.rot90:
        k = int(rng.integers(4))
        if k:
            image = np.rot90(image, k, axes=(0, 1))
            insts = rot90_instances(insts, H, W, k)
            if k % 2:
                H, W = W, H
    image = np.ascontiguousarray(image, dtype=np.float32)
    if aug.p_intensity > 0:
        changed = False
        if aug.gain > 0 and rng.random() < aug.p_intensity:
            image *= np.float32(rng.uniform(1 - aug.gain, 1 + aug.gain))
            changed = True
        if aug.bias > 0 and rng.random() < aug.p_intensity:
            image += np.float32(rng.uniform(-aug.bias, aug.bias))
            changed = True
        if aug.gamma > 0 and rng.random() < aug.p_intensity:
            np.clip(image, 0.0, 1.0, out=image)
            np.power(image, np.float32(math.exp(rng.uniform(-aug.gamma, aug.gamma))), out=image)
            changed = True
        if aug.noise > 0 and rng.random() < aug.p_intensity:
            sigma = np.float32(rng.uniform(0, aug.noise))
            noise = rng.standard_normal(image.shape[:2], dtype=np.float32) * sigma
            image += noise[..., None]
            changed = True
        if changed:
            np.clip(image, 0.0, 1.0, out=image)
    # objects cut by the crop to a sliver are not worth learning
    kept = []
    for it in insts:
        a = int(np.count_nonzero(it.mask))
        if a == 0:
            continue
        if a < it.area0 and a < aug.min_area and a < aug.min_visible * it.area0:
            continue
        kept.append(it)
    return image, kept


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------

def to_target(insts: list[_Inst], height: int, width: int, *, packed: bool = False) -> dict:
    """torchvision target: boxes (N, 4) float32 xyxy, labels (N,) int64, masks (N, H, W)
    uint8, or with packed=True masks as PackedMasks (the crops only; the Trainer's
    windowed mask targets read them, torchvision's own code cannot)."""
    n = len(insts)
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    labels = torch.zeros((n,), dtype=torch.int64)
    crops = []
    for k, it in enumerate(insts):
        m = it.mask
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crops.append((m[r0:r1, c0:c1], it.x0 + c0, it.y0 + r0))
        boxes[k] = torch.tensor([it.x0 + c0, it.y0 + r0, it.x0 + c1, it.y0 + r1], dtype=torch.float32)
        labels[k] = it.cls
    if packed:
        masks = PackedMasks.from_crops(crops, height, width)
    else:
        masks = torch.zeros((n, height, width), dtype=torch.uint8)
        mv = masks.numpy()
        for k, (m, x0, y0) in enumerate(crops):
            mv[k, y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return {"boxes": boxes, "labels": labels, "masks": masks}


class InstanceDataset(torch.utils.data.Dataset):
    """(image tensor (3, H, W) float32, target dict) per training item.

    The policy is the model's normalisation (the same function as at inference).
    Raw images are cached in memory up to `cache_bytes` (per process).
    """

    def __init__(self, items: Sequence[TrainItem], policy: dict, augment: Optional[Augment] = None, *,
                 seed: int = 0, cache_bytes: int = 1 << 30, packed_masks: bool = False):
        self.items = list(items)
        self.policy = validate_policy(policy)
        self.augment = augment if augment is not None else Augment.none()
        self.seed = int(seed)
        self.epoch = 0
        self.cache_bytes = int(cache_bytes)
        self.packed_masks = bool(packed_masks)  # targets' masks as PackedMasks (the Trainer's)
        self._cache: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def raw(self, idx: int) -> tuple[np.ndarray, tuple[float, float]]:
        """(raw pixels, (lo, hi) of the normalisation) of item idx, cached."""
        hit = self._cache.get(idx)
        if hit is not None:
            return hit
        it = self.items[idx]
        try:
            img = it.ref.load()
        except MaskLoopError:
            raise
        except Exception as e:  # a decoder's own exception type: name the file
            raise ImageReadError(f"cannot read training image ({e})", it.ref.describe()) from None
        if tuple(img.shape[:2]) != (it.height, it.width):
            raise DataError(f"image is {img.shape[1]}x{img.shape[0]} but its annotation is "
                            f"{it.width}x{it.height}", it.ref.describe(), it.key)
        if img.dtype.kind == "f" and not np.isfinite(img).any():
            raise DataError("image has no finite pixel values", it.ref.describe(), it.key)
        bounds = intensity_bounds(img, self.policy)
        if self._cached + img.nbytes <= self.cache_bytes:
            self._cache[idx] = (img, bounds)
            self._cached += img.nbytes
        return img, bounds

    def image(self, idx: int) -> np.ndarray:
        """The normalised (H, W, 3) float32 image, exactly as inference sees it."""
        img, (lo, hi) = self.raw(idx)
        if self.policy["kind"] == "percentile":
            if not hi > lo:
                hi = lo + 1.0
            return normalize(img, range_policy(lo, hi))
        return normalize(img, self.policy)

    def rng(self, idx: int, epoch: Optional[int] = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(idx)])

    def __getitem__(self, key):
        """key: an index (augmented for the current epoch) or an (epoch, index) pair, which
        is what EpochBatches yields, so persistent worker processes need no epoch update."""
        if isinstance(key, tuple):
            epoch, idx = int(key[0]), int(key[1])
        else:
            epoch, idx = self.epoch, int(key)
        it = self.items[idx]
        image = self.image(idx)
        insts = [_Inst(inst.mask, inst.x0, inst.y0, c) for inst, c in zip(it.instances, it.classes)]
        image, insts = apply_augment(image, insts, self.augment, self.rng(idx, epoch))
        H, W = image.shape[:2]
        target = to_target(insts, H, W, packed=self.packed_masks)
        target["image_id"] = torch.tensor(idx, dtype=torch.int64)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x, target


def collate(batch):
    """Lists of images and targets (torchvision detection models take lists)."""
    return [b[0] for b in batch], [b[1] for b in batch]


class EpochBatches:
    """A batch sampler whose batches are set per epoch (set()), yielding (epoch, index)
    pairs; one DataLoader with persistent workers serves the whole run."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def set(self, batches: list[list[int]], epoch: int) -> None:
        self.batches = [[(int(epoch), int(i)) for i in b] for b in batches]

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, *, shuffle: bool = True,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch for one rank: a seeded permutation of range(n) (the same on
    every rank), padded to a multiple of `world` and dealt out like DistributedSampler,
    then cut into batches. Every rank gets the same number of batches."""
    if n <= 0:
        return []
    if shuffle:
        g = torch.Generator()
        g.manual_seed(int(seed) * 100003 + int(epoch))
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if world > 1:
        total = int(math.ceil(n / world)) * world
        order = (order * (total // n + 1))[:total]
        order = order[rank:total:world]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
