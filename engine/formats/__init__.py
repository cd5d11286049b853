"""Import and export of annotation interchange formats, one module per format.

- coco.py      COCO instances JSON (compressed RLE or polygons); export with --split and
               --copy-images; import of RLE (compressed / uncompressed) and polygons
- labelme.py   labelme JSON; also the shape <-> Instance conversion of the project's own files
- labelmap.py  integer label images (Cellpose, StarDist, ImageJ): each value > 0 = one instance
- volume*.py   label volumes per stack (NRRD, NIfTI, TIFF, DICOM-SEG) as linked 3-D objects
- registry.py  the one table: format name -> importer / exporter and the options each takes

Rules shared by every importer (this module holds the common machinery):

- Validate everything first, then write: an importer parses every file, decodes every
  mask, checks sizes, labels and paths, and reads the header of every image it would
  add, before it changes the project. Bad input raises a MaskLoopError naming the file
  and field, and the project stays as it was.
- Imported annotations are ground truth: item status "reviewed", instance source
  "imported". With as_predictions=True: status "predicted", source "model".
- Instances are added to an item's existing ones; an instance with the same MaskLoop id,
  or with the same label and the very same pixels as an existing one, replaces / is
  skipped, so importing the same file twice changes nothing.
- Paths inside imported files (COCO file_name, labelme imagePath) resolve relative to the
  dataset folder and must stay inside it ("../", absolute paths, symlinks leading out ->
  FormatError), unless the entry names a project item by its MaskLoop id (MaskLoop's own
  exports do).
- All or nothing (apply_import): everything is checked before the first write; then the
  manifest gets the new labels and images (one locked update each), then each annotation
  file is re-read, merged and rewritten under the project lock. An error or a cancel while
  writing restores every file written so far and takes the new labels and images out again;
  a kill leaves a project that opens and exports (labels are in the manifest before any
  file uses them), and running the same import again completes it (duplicates are skipped).
- Exports never write over the project's own files (check_export_target).

Nothing here loads Qt or torch.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Optional, Sequence

import numpy as np

from ..annotations import Instance, ItemAnnotation
from ..errors import FormatError, ImageReadError, MaskLoopError, PathError, ProjectError
from ..fsutil import atomic_write_bytes, file_stamp, is_inside, resolved
from ..jobs import check, report

# the full list, with options, is registry.FORMATS; these name the 2-D interchange formats
FORMATS = ("coco", "labelme", "labelmap")
EXPORT_FORMATS = ("coco", "labelme", "labelmap")
#: file extensions an importer may add to a project as plain 2-D images
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")


@dataclass
class ImportReport:
    """What an import did (or, when it raised, would have done: nothing)."""

    format: str
    files: int = 0                 # annotation files read
    items_added: int = 0           # images added to the project
    items_updated: int = 0         # items whose annotation file was written
    instances: int = 0             # instances added
    labels_added: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)   # reason -> count

    def summary(self) -> str:
        parts = [f"imported {self.instances} instance(s) into {self.items_updated} item(s)"]
        if self.items_added:
            parts.append(f"added {self.items_added} image(s)")
        if self.labels_added:
            parts.append(f"new label(s): {', '.join(self.labels_added)}")
        if self.skipped:
            parts.append("skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        return "; ".join(parts)


@dataclass
class ExportReport:
    format: str
    files: list = field(default_factory=list)       # JSON files written
    images: int = 0                                 # image entries / labelme files
    annotations: int = 0                            # instances written
    copied_images: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        s = (f"exported {self.annotations} instance(s) of {self.images} image(s) to "
             + ", ".join(str(f) for f in self.files))
        if self.copied_images:
            s += f"; wrote {self.copied_images} image file(s)"
        if self.skipped:
            s += "; skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return s


# --- JSON ------------------------------------------------------------------------------

def read_json(path, what: str = "JSON"):
    """Parse a JSON file; errors name the file and the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{what} file not found", path) from None
    except IsADirectoryError:
        raise FormatError(f"expected a {what} file, found a folder", path) from None
    return parse_json(raw, path)


def parse_json(raw: bytes, path):
    """Parse the bytes of a JSON file; errors name `path` and the line."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text ({e.reason} at byte {e.start})", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"malformed JSON: {e.msg}", path, f"line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise FormatError("malformed JSON: nested too deeply", path) from None


# --- paths -------------------------------------------------------------------------------

def contained_path(base, rel: str, path=None, field: Optional[str] = None) -> Path:
    """`rel` (posix or Windows separators) joined to `base`; FormatError when it is absolute
    or leads outside `base` ("../")."""
    if not isinstance(rel, str) or not rel.strip():
        raise FormatError("must be a non-empty file name", path, field)
    posix = rel.replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(rel).drive or posix.startswith("/"):
        raise FormatError(f"absolute path {rel!r} not allowed; file names must be relative to the "
                          f"dataset folder {base}", path, field)
    base = Path(os.path.abspath(base))
    joined = Path(os.path.normpath(base / posix))
    # lexically inside, and still inside once symlinks are resolved (a link to /etc is out)
    if not joined.is_relative_to(base) or not is_inside(joined, base):
        raise FormatError(f"{rel!r} leads outside the dataset folder {base}; import a folder that "
                          f"contains both the annotations and their images", path, field) from None
    return joined


def check_export_target(project, *targets) -> None:
    """PathError when an export target is (or lies in) one of the project's own files:
    the manifest, its lock, annotations/ or models/, or is the project folder itself
    (a folder export there could write '<item-id>.json' over the manifest)."""
    from ..project import LOCK_FILE, MANIFEST
    root = resolved(project.root)
    own = [project.root / MANIFEST, project.root / LOCK_FILE, project.annotations_dir, project.models_dir]
    for target in targets:
        t = resolved(target)
        if t == root:
            raise PathError("an export cannot be written into the project folder itself; choose a "
                            "file or subfolder (e.g. PROJECT/export)", target)
        for o in own:
            if is_inside(t, o):
                raise PathError(f"an export cannot be written over or into the project's own "
                                f"{Path(o).name}", target)


# --- matching files to project items ---------------------------------------------------------

class ItemIndex:
    """Finds project items by MaskLoop id, by resolved source path (+ slice) or by file name."""

    def __init__(self, project) -> None:
        self.project = project
        self.by_path: dict = {}
        self.by_name: dict = {}
        resolved: dict = {}
        for it in project.items:
            src = project.sources[it.source]
            p = project.source_path(src)
            if it.source not in resolved:
                resolved[it.source] = _norm(p)
            if src.kind == "dicom_series" and src.files:
                f = p / src.files[it.slice]
                self.by_path[(_norm(f), 0)] = it
                self.by_name.setdefault(f.name, []).append(it)
            self.by_path[(resolved[it.source], it.slice)] = it
            if src.n_slices == 1:
                self.by_name.setdefault(p.name, []).append(it)

    def by_id(self, item_id) -> Optional[object]:
        if not isinstance(item_id, str) or not item_id:
            return None
        try:
            return self.project.item(item_id)
        except ProjectError:
            return None

    def find(self, file_path: Optional[Path], slice_index: int = 0) -> Optional[object]:
        if file_path is None:
            return None
        return self.by_path.get((_norm(file_path), int(slice_index)))

    def find_name(self, name: str) -> list:
        return list(self.by_name.get(name, []))


def _norm(p) -> str:
    try:
        return os.path.normcase(str(Path(p).resolve()))
    except OSError:
        return os.path.normcase(os.path.abspath(p))


class NewImages:
    """Images an import will add: probed (header only) during validation, added after."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}     # normalised -> path
        self.shapes: dict[str, tuple] = {}   # normalised -> (height, width)

    def probe(self, file_path: Path, path=None, field: Optional[str] = None) -> tuple[int, int]:
        """(height, width) of a plain 2-D image that would be added; errors name the
        annotation file and field that refer to it."""
        key = _norm(file_path)
        if key in self.shapes:
            return self.shapes[key]
        from .. import imageio
        if not Path(file_path).is_file():
            raise ImageReadError(f"image {str(file_path)!r} not found", path, field)
        try:
            sources = imageio.probe(file_path)
        except MaskLoopError as e:
            raise ImageReadError(f"image {str(file_path)!r} cannot be read ({e.message})", path, field) from None
        if len(sources) != 1 or sources[0].n_slices != 1:
            raise ImageReadError(f"image {str(file_path)!r} is a stack or series; add it with "
                                 f"'maskloop add' first", path, field)
        hw = (int(sources[0].height), int(sources[0].width))
        self.paths[key] = Path(file_path)
        self.shapes[key] = hw
        return hw

    def __len__(self) -> int:
        return len(self.paths)

    def add_to(self, project, progress=None, cancel=None) -> dict:
        """Add the probed images; returns normalised path -> Item."""
        if not self.paths:
            return {}
        project.add(list(self.paths.values()), progress=progress, cancel=cancel)
        index = ItemIndex(project)
        out = {}
        for key, p in self.paths.items():
            it = index.find(p, 0)
            if it is None:  # pragma: no cover - project.add guarantees it
                raise ImageReadError("image was not added to the project", p)
            out[key] = it
        return out


# --- writing merged annotations ------------------------------------------------------------------

def _pixel_key(inst: Instance) -> tuple:
    """Equal for two instances with the same label and the very same pixels."""
    digest = hashlib.blake2b(np.packbits(inst.mask).tobytes(), digest_size=16).digest()
    return (inst.label, inst.bbox, digest)


def merge_instances(ann: ItemAnnotation, new: Sequence[Instance], skipped: Counter) -> int:
    """Append `new` to `ann` (in place): same id replaces, same label + same pixels is skipped.
    Returns the number of instances added or replaced.

    Linear: existing instances are indexed by id and by a hash of (label, bbox, packed mask),
    so a label map of tens of thousands of objects merges in one pass."""
    pos = {o.id: k for k, o in enumerate(ann.instances)}
    by_pixels: dict = {}
    for o in ann.instances:
        by_pixels.setdefault(_pixel_key(o), []).append(o)
    n = 0
    for inst in new:
        key = _pixel_key(inst)
        k = pos.get(inst.id)
        if k is not None:
            old = ann.instances[k]
            by_pixels[_pixel_key(old)].remove(old)
            ann.instances[k] = inst
            by_pixels.setdefault(key, []).append(inst)
            n += 1
            continue
        if any(np.array_equal(o.mask, inst.mask) for o in by_pixels.get(key, ())):
            skipped["duplicate (already in the project)"] += 1
            continue
        pos[inst.id] = len(ann.instances)
        ann.instances.append(inst)
        by_pixels.setdefault(key, []).append(inst)
        n += 1
    return n


def _check_updates(project, updates: dict, new_labels, new_images) -> None:
    """The last checks before anything is written: every label known or about to be added,
    every mask inside its image. Importers check this against their input already; this
    keeps a bug in one of them from writing half an import."""
    labels = set(project.labels.names()) | set(new_labels)
    for key, insts in updates.items():
        if isinstance(key, tuple):
            shape = new_images.shapes[key[1]]
            where = new_images.paths[key[1]]
        else:
            it = project.item(key)
            shape, where = (it.height, it.width), key
        for inst in insts:
            if inst.label not in labels:
                raise FormatError(f"instance with label {inst.label!r}, which is neither in the project "
                                  f"nor among the import's new labels", where)
            if not inst.fits(shape):
                raise FormatError(f"an instance's mask lies outside the {shape[1]}x{shape[0]} image", where)


def apply_import(project, updates: dict, report_: ImportReport, *, status: str,
                 new_labels: Iterable[str] = (), new_images: Optional[NewImages] = None,
                 progress=None, cancel=None) -> ImportReport:
    """Phase two of an import (everything already validated): add labels and images,
    then merge and save the annotations, all or nothing (see the module doc).

    `updates` maps an item id, or ("new", normalised image path) for an image about to
    be added, to its list of instances.
    """
    new_labels = list(new_labels)
    _check_updates(project, updates, new_labels, new_images)
    check(cancel)
    undo = _ImportUndo(project)
    try:
        def add_labels(proj):
            for name in new_labels:
                if name not in proj.labels:
                    proj.labels.add(name)
                    undo.labels.append(name)
        project.update(add_labels)
        report_.labels_added.extend(undo.labels)
        added = {}
        if new_images is not None and len(new_images):
            ids_before = {it.id for it in project.items}
            added = new_images.add_to(project, cancel=cancel)
            undo.items = [it.id for it in added.values() if it.id not in ids_before]
            report_.items_added = len(added)
        total = len(updates)
        for k, (key, insts) in enumerate(updates.items()):
            check(cancel)
            report(progress, k, total, "saving annotations")
            item_id = added[key[1]].id if isinstance(key, tuple) else key

            def merge(ann, insts=insts, item_id=item_id):
                undo.remember(item_id)
                report_.instances += merge_instances(ann, insts, report_.skipped)
                ann.status = status
                return ann
            project.edit_annotation(item_id, merge)
            undo.written(item_id)
            report_.items_updated += 1
    except BaseException:
        undo.rollback()
        raise
    report(progress, total, total, "")
    return report_


class _ImportUndo:
    """What an import wrote, to take it back when the import fails or is cancelled."""

    def __init__(self, project) -> None:
        self.project = project
        self.labels: list = []          # labels the import added
        self.items: list = []           # items the import added
        self.files: dict = {}           # item id -> (bytes before or None, stamp after)

    def remember(self, item_id: str) -> None:
        path = self.project.annotation_path(item_id)
        self.files[item_id] = (path.read_bytes() if path.exists() else None, None)

    def written(self, item_id: str) -> None:
        before, _ = self.files[item_id]
        self.files[item_id] = (before, file_stamp(self.project.annotation_path(item_id)))

    def rollback(self) -> None:
        proj = self.project
        with proj.locked():
            for item_id, (before, stamp) in self.files.items():
                path = proj.annotation_path(item_id)
                if stamp is None or file_stamp(path) != stamp:
                    continue  # not written by us, or changed by someone since: leave it
                if before is None:
                    path.unlink()
                else:
                    atomic_write_bytes(path, before, inside=proj.root)
                proj.load_annotation(item_id)  # re-arm the stamp on the restored file
            if self.labels or self.items:
                proj.update(self._remove_added)

    def _remove_added(self, proj) -> None:
        proj.drop_items(self.items)
        for name in self.labels:
            if name in proj.labels:
                proj.labels.remove(name)


# --- splits ---------------------------------------------------------------------------------------

def split_ids(ids: Sequence[str], fraction: float, seed: int = 0) -> tuple[list, list]:
    """Reproducible train/val split: the same ids, fraction and seed give the same split
    whatever their order. Both parts keep the input order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    ordered = sorted(ids)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ordered))
    n_train = int(round(fraction * len(ordered)))
    if len(ordered) >= 2:
        n_train = min(max(n_train, 1), len(ordered) - 1)
    train = {ordered[i] for i in perm[:n_train]}
    return [i for i in ids if i in train], [i for i in ids if i not in train]


def split_items(items: Sequence, fraction: float, seed: int = 0) -> tuple[list, list]:
    """split_ids over whole stacks: the slices of one stack or series (items sharing a
    source) go to the same side, so no stack leaks between train and val. Without stacks
    it is exactly split_ids of the item ids."""
    per_source = Counter(it.source for it in items)
    group = {it.id: (f"stack:{it.source}" if per_source[it.source] > 1 else it.id) for it in items}
    train_groups, _ = split_ids(sorted(set(group.values())), fraction, seed)
    train = set(train_groups)
    return ([it.id for it in items if group[it.id] in train],
            [it.id for it in items if group[it.id] not in train])


def selected_items(project, only_reviewed: bool = False, items: Optional[Iterable[str]] = None) -> list:
    """The items an export covers, in project order."""
    chosen = project.items
    if items is not None:
        wanted = set(items)
        for i in wanted:
            project.item(i)  # ProjectError for unknown ids
        chosen = [it for it in chosen if it.id in wanted]
    if only_reviewed:
        st = project.statuses()
        chosen = [it for it in chosen if st.get(it.id) == "reviewed"]
    return list(chosen)
