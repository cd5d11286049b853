"""Project: the folder layout, items, status and atomic saves (DESIGN.md section 3).

<root>/maskloop.json               manifest: format version, labels, sources, items, active model, settings
<root>/annotations/<item-id>.json  labelme-compatible JSON, one per item (written only when edited)
<root>/models/<run-id>/            model.pt, config.json, metrics.json, log.jsonl (engine/project_runs.py)

Images stay where they are. Source paths are stored relative to the project when they
lie inside it (so a moved project with its images keeps working), absolute otherwise.

Integrity (docs/reliability.md, "Project integrity"):
- One writer: every change of maskloop.json goes through `update(fn)`: OS file lock
  (<root>/.maskloop.lock), re-read, merge this object's unsaved changes (manifest_merge),
  apply `fn`, atomic write. A CLI command beside the GUI loses nothing.
- Lost updates: `load_annotation` records the file's stamp; `save_annotation` refuses
  (ConflictError) a file changed since, unless told to overwrite; `edit_annotation(id, fn)`
  re-reads and changes a file under the lock.
- Paths: ids are checked (manifest_schema.check_name) where read; writes go through fsutil
  with `inside=root`.
- Threads: one re-entrant lock guards the in-memory state (`locked()` takes it too); a
  refresh replaces lists in one step, so a reader never sees a half-built one.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import filelock
import numpy as np

from . import imageio
from .annotation_index import AnnotationIndex, peek_status, read_stamped
from .annotations import ItemAnnotation, LabelSet
from .errors import ConflictError, ImageReadError, LabelError, MaskLoopError, ProjectError, WriteError
from .fsutil import atomic_write_json, file_lock, file_stamp
from .limits import check_pixels
from .manifest_merge import merge as merge_manifest
from .manifest_ranges import RANGE_VERSION, iter_items, pack
from .manifest_schema import FORMAT, FORMAT_VERSION, check_name, validate_annotation_top, validate_manifest
from .project_runs import ModelRuns

MANIFEST = "maskloop.json"
LOCK_FILE = ".maskloop.lock"          # the one-writer lock (kept, never deleted)
LOCK_TIMEOUT_S = 120.0                # a writer holds the lock for one manifest or one file
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Item:
    id: str
    source: int
    slice: int
    name: str
    height: int
    width: int

    def to_json(self) -> dict:
        return {"id": self.id, "source": self.source, "slice": self.slice, "name": self.name,
                "height": self.height, "width": self.width}


def safe_stem(text: str) -> str:
    s = _SAFE.sub("_", text).strip("._") or "item"
    return s[:80]


def read_json_file(path: Path, what: str = "JSON"):
    """Parse a JSON file; errors name the file and the line."""
    from .formats import read_json
    return read_json(path, what)


def _read_stamped(path: Path):
    """(parsed JSON, stamp) of one version of the file, or (None, None) when it is missing.
    The stamp is taken from the open file, so it belongs to the bytes read."""
    from .formats import parse_json
    raw, stamp = read_stamped(path)
    return (None, None) if raw is None else (parse_json(raw, path), stamp)


def _build(data: dict, path: Path):
    """Objects from a manifest dict that passed validate_manifest."""
    labels = LabelSet.from_json(data.get("labels", []), path)
    try:
        sources = [imageio.Source.from_json(s) for s in data.get("sources", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise ProjectError(f"malformed source entry ({e})", path, "sources") from None
    items = [Item(*t) for t in iter_items(data.get("items", []))]  # runs of slices expanded
    return labels, sources, items, data.get("active_model"), dict(data.get("settings") or {})


def _manifest_json(labels: list, sources: list, items: list, active_model, settings) -> dict:
    """The manifest as a dict, one entry an item (written packed: _write_manifest), from
    the labels' and sources' JSON and the Item objects."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "labels": labels,
        "sources": sources,
        # Item.to_json inlined: this runs a few times per manifest change, on every item
        "items": [{"id": it.id, "source": it.source, "slice": it.slice, "name": it.name,
                   "height": it.height, "width": it.width} for it in items],
        "active_model": active_model,
        # a copy: the last written state is kept to merge against, and callers change
        # project.settings in place
        "settings": copy.deepcopy(settings or {}),
    }


def _state_json(labels: LabelSet, sources: list, items, active_model, settings) -> dict:
    return _manifest_json(labels.to_json(), [s.to_json() for s in sources], items, active_model, settings)


class Project(ModelRuns):
    def __init__(self, root: Path, labels: LabelSet, sources: list, items: list[Item],
                 active_model: Optional[str] = None, settings: Optional[dict] = None) -> None:
        self.root = Path(root).resolve()
        self.labels = labels
        self.sources: list[imageio.Source] = sources
        self.items: list[Item] = items
        self.active_model = active_model
        self.settings: dict = settings or {}
        self._by_id = {it.id: it for it in items}
        self._lock = threading.RLock()                    # this object's in-memory state
        self._flock: Optional[filelock.FileLock] = None  # the project's OS lock (lazy)
        # the manifest as last read or written (for merging); made into a dict only when a
        # merge needs it, so opening 100,000 items to read them does not pay for it
        self._base_dict: Optional[dict] = None
        self._base_state = (labels.to_json(), [s.to_json() for s in sources], tuple(items), active_model,
                            copy.deepcopy(settings or {}))
        self._stamps: dict = {}       # item id -> annotation file stamp when read/written here
        self._index = AnnotationIndex(self.annotations_dir, self.root)  # statuses and counts

    # --- create / open / save ----------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @classmethod
    def create(cls, root, labels: Optional[Iterable[str]] = None) -> "Project":
        root = Path(root)
        if (root / MANIFEST).exists():
            raise ProjectError("a MaskLoop project already exists here", root / MANIFEST)
        if root.exists() and not root.is_dir():
            raise ProjectError("not a folder", root)
        root.mkdir(parents=True, exist_ok=True)
        proj = cls(root, LabelSet.from_names(labels or []), [], [])
        proj.annotations_dir.mkdir(exist_ok=True)
        proj.models_dir.mkdir(exist_ok=True)
        with proj.locked():
            if proj.manifest_path.exists():
                raise ProjectError("a MaskLoop project already exists here", proj.manifest_path)
            proj._write_manifest()
        return proj

    @classmethod
    def open(cls, root) -> "Project":
        root = Path(root)
        if root.is_file() and root.name == MANIFEST:
            root = root.parent
        path = root / MANIFEST
        if not path.exists():
            raise ProjectError("no MaskLoop project here (maskloop.json missing)", root)
        with _gc_paused():
            return cls(root, *_build(cls._read_manifest(path), path))

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        with _gc_paused():
            data = read_json_file(path, "manifest")
            validate_manifest(data, path)
        return data

    def to_json(self) -> dict:
        return _state_json(self.labels, self.sources, self.items, self.active_model, self.settings)

    @property
    def _base(self) -> dict:
        if self._base_dict is None:
            self._base_dict = _manifest_json(*self._base_state)
        return self._base_dict

    @_base.setter
    def _base(self, data: dict) -> None:
        self._base_dict = data

    # --- one writer at a time ---------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Hold the project's OS file lock (one writer across processes and Project objects)
        and this object's thread lock. Re-entrant."""
        with self._lock:
            if self._flock is None:
                self._flock = file_lock(self.root / LOCK_FILE, LOCK_TIMEOUT_S)
            try:
                self._flock.acquire()
            except filelock.Timeout:
                raise ProjectError(f"another MaskLoop program has held the project's lock for over "
                                   f"{LOCK_TIMEOUT_S:.0f} s; try again when it is done",
                                   self.root / LOCK_FILE) from None
            except OSError as e:
                raise WriteError(f"cannot take the project's lock ({e.strerror or e})",
                                 self.root / LOCK_FILE, errno=e.errno) from None
            try:
                yield self
            finally:
                self._flock.release()

    def update(self, fn: Optional[Callable[["Project"], object]] = None):
        """Change the manifest without losing anyone's update: lock, re-read maskloop.json,
        merge this object's unsaved changes onto it, apply `fn(self)`, write atomically.
        Returns fn's result. If fn raises, nothing is written and this object holds the
        state on disk (plus its earlier unsaved changes)."""
        with self.locked():
            disk = self._normalised(self._read_manifest(self.manifest_path))
            ours = self.to_json()  # each to_json is 100,000 dicts at 100,000 items: made once a step
            merged = merge_manifest(self._base, ours, disk, self.manifest_path)
            self._adopt(merged, current=ours)
            try:
                result = fn(self) if fn is not None else None
            except BaseException:
                self._adopt(merged)
                raise
            now = self.to_json()
            if now != disk:
                self._write_manifest(now)
            else:
                self._base = disk
            return result

    def save(self) -> None:
        """Write this object's changes (merged with what others wrote meanwhile)."""
        self.update()

    def reload(self) -> None:
        """Take in what other programs wrote to maskloop.json; unsaved changes stay."""
        with self._lock:
            disk = self._normalised(self._read_manifest(self.manifest_path))
            self._adopt(merge_manifest(self._base, self.to_json(), disk, self.manifest_path))
            self._base = disk

    def _write_manifest(self, data: Optional[dict] = None) -> None:
        """Write `data` (this object's to_json(), made by the caller or here)."""
        data = self.to_json() if data is None else data
        items, packed = pack(data["items"])  # a stack's slices as one run (manifest_ranges)
        on_disk = dict(data, version=RANGE_VERSION if packed else 1, items=items)
        atomic_write_json(self.manifest_path, on_disk, inside=self.root)
        self._base = data

    def _normalised(self, data: dict) -> dict:
        """A manifest dict in this version's own form (so it compares with to_json())."""
        with _gc_paused():
            return _state_json(*_build(data, self.manifest_path))

    def _adopt(self, data: dict, current: Optional[dict] = None) -> None:
        """Make this object hold `data` (a normalised manifest), swapping whole objects.
        `current`: this object's to_json() when the caller has just made it."""
        with self._lock:
            if data == (self.to_json() if current is None else current):
                return
            labels, sources, items, active, settings = _build(data, self.manifest_path)
            old = self._by_id
            items = [old[it.id] if old.get(it.id) == it else it for it in items]  # keep identities
            if labels.to_json() != self.labels.to_json():
                self.labels = labels
            self.sources[:] = sources
            self.items[:] = items
            self._by_id = {it.id: it for it in items}
            self.active_model = active
            self.settings = settings

    # --- sources and items -----------------------------------------------------------
    def _stored_path(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def source_path(self, source) -> Path:
        if isinstance(source, int):
            source = self.sources[source]
        p = Path(source.path)
        return p if p.is_absolute() else self.root / p

    def add(self, paths, progress=None, cancel=None) -> list[Item]:
        """Add image files, folders, TIFF stacks or DICOM series; returns the new items.

        Everything is probed before the manifest changes, so a bad file adds nothing.
        Sources already in the project are skipped.
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        known = self._known_sources()
        found: list = []
        paths = [Path(p) for p in paths]
        for p in paths:
            if not p.exists():
                raise ImageReadError("no such file or folder", p)
        # probed together: the files of one DICOM series selected one by one make one series
        for src in imageio.probe_paths(paths, progress=progress, cancel=cancel):
            key = (str(Path(src.path).resolve()), src.files)
            if key in known:
                continue
            check_pixels(src.height, src.width, src.path)  # from the header, before any decode
            known.add(key)
            found.append(src)
        # ids are given under the lock, against the manifest as it is on disk now
        return self.update(lambda proj: proj._append_sources(found))

    def _known_sources(self) -> set:
        # a series is its folder and its files: one folder may hold several series
        return {(str(self.source_path(s).resolve()), s.files) for s in self.sources}

    def _append_sources(self, found: list) -> list[Item]:
        known = self._known_sources()  # another program may have added some meanwhile
        new_items: list[Item] = []
        taken = set(self._by_id)
        sources = list(self.sources)
        for src in found:
            if (str(Path(src.path).resolve()), src.files) in known:
                continue
            stored = _replace_path(src, self._stored_path(Path(src.path)))
            sources.append(stored)
            s_index = len(sources) - 1
            for z in range(src.n_slices):
                item_id = self._make_id(stored, z, taken)
                taken.add(item_id)
                name = src.name if src.n_slices == 1 else f"{src.name} [{z}]"
                new_items.append(Item(item_id, s_index, z, name, src.height, src.width))
        self.sources[:] = sources
        self.items[:] = self.items + new_items
        self._by_id = {it.id: it for it in self.items}
        return new_items

    def drop_items(self, item_ids: Iterable[str]) -> None:
        """Take items, and sources left without items, out of this object's state (for an
        update(fn) that undoes an add). Their annotation files are the caller's business."""
        gone = set(item_ids)
        keep = [it for it in self.items if it.id not in gone]
        used = sorted({it.source for it in keep})
        index = {old: new for new, old in enumerate(used)}
        sources = [self.sources[k] for k in used]
        keep = [Item(it.id, index[it.source], it.slice, it.name, it.height, it.width) for it in keep]
        self.sources[:] = sources
        self.items[:] = keep
        self._by_id = {it.id: it for it in keep}

    @staticmethod
    def _make_id(src, z: int, taken: set) -> str:
        base = safe_stem(Path(src.path).stem if src.kind != "dicom_series" else Path(src.path).name)
        if src.n_slices > 1:
            base = f"{base}_z{z:04d}"
        if base not in taken:
            return base
        # same stem from another folder: disambiguate with a hash of the stored path
        digest = hashlib.sha1(f"{src.path}#{z}".encode()).hexdigest()[:8]
        candidate = f"{base}_{digest}"
        n = 2
        while candidate in taken:
            candidate = f"{base}_{digest}_{n}"
            n += 1
        return candidate

    def item(self, item_id: str) -> Item:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise ProjectError(f"no item {item_id!r} in this project", self.manifest_path) from None

    def item_source(self, item_id: str):
        return self.sources[self.item(item_id).source]

    def find_items_by_stem(self, stem: str) -> list[Item]:
        """Items whose source file stem (or id) equals `stem`; slices match `stem_z0003` too."""
        out = []
        for it in self.items:
            src = self.sources[it.source]
            if it.id == stem or (src.n_slices == 1 and Path(src.path).stem == stem):
                out.append(it)
        return out

    def load_image(self, item_id: str, *, mapped: bool = False) -> np.ndarray:
        """The item's raw values; `mapped`: see imageio.read_slice (a viewer's choice)."""
        it = self.item(item_id)
        src = self.sources[it.source]
        return imageio.read_slice(src, it.slice, base=self.root, mapped=mapped)

    # --- annotations -------------------------------------------------------------------
    def annotation_path(self, item_id: str) -> Path:
        check_name(item_id, self.manifest_path, "item id")
        return self.annotations_dir / f"{item_id}.json"

    def load_annotation(self, item_id: str) -> ItemAnnotation:
        """The item's annotation as on disk now. The file's stamp is recorded, so a later
        save_annotation notices when another program changed the file in between."""
        it = self.item(item_id)
        path = self.annotation_path(item_id)
        with self._lock:  # read and record together: a save from another thread is not between
            data, stamp = _read_stamped(path)
            self._stamps[item_id] = stamp
        if data is None:
            return ItemAnnotation(item_id, it.height, it.width, [], "new")
        return self._decode(item_id, data, path)

    def _decode(self, item_id: str, data, path: Path) -> ItemAnnotation:
        from .formats.labelme import labelme_to_annotation
        it = self.item(item_id)
        validate_annotation_top(data, path, item_id)
        return labelme_to_annotation(data, path, item_id=item_id, height=it.height, width=it.width)

    def edit_annotation(self, item_id: str, fn: Callable[[ItemAnnotation], Optional[ItemAnnotation]]):
        """Re-read an item's annotation and change it under the project lock, so nothing
        another program wrote is lost. `fn(ann)` returns the annotation to save, or None to
        leave the file as it is. Returns what was saved (or None)."""
        with self.locked():
            new = fn(self.load_annotation(item_id))
            if new is not None:
                self.save_annotation(new)
            return new

    def save_annotation(self, ann: ItemAnnotation, *, overwrite: bool = False) -> None:
        """Validate, then atomically rewrite that one item's file.

        ConflictError (nothing written) when the file changed on disk since this object
        last read or wrote it; `overwrite=True` writes anyway (the user chose to)."""
        from .formats.labelme import annotation_to_labelme
        it = self.item(ann.item_id)
        path = self.annotation_path(ann.item_id)
        if (ann.height, ann.width) != (it.height, it.width):
            raise ProjectError(f"annotation is {ann.width}x{ann.height} but the image is "
                               f"{it.width}x{it.height}", path)
        for k, inst in enumerate(ann.instances):
            if inst.label not in self.labels:
                raise LabelError(f"unknown label {inst.label!r}", path, f"instances[{k}]")
            if not inst.fits(ann.shape):
                raise ProjectError("mask lies outside the image", path, f"instances[{k}]")
        src = self.sources[it.source]
        image_path = os.path.relpath(self.source_path(src), self.annotations_dir)
        data = annotation_to_labelme(ann, Path(image_path).as_posix(), self.labels,
                                     extra={"item": it.id, "slice": it.slice, "source_kind": src.kind})
        with self.locked():
            known = self._stamps.get(it.id, False)
            if not overwrite and known is not False and file_stamp(path) != known:
                raise ConflictError(f"item {it.id!r} was changed on disk by another program since it "
                                    f"was read here; nothing was saved (reload it, then redo the change)",
                                    path)
            atomic_write_json(path, data, indent=None, inside=self.root)
            self._stamps[it.id] = file_stamp(path)
            # one shape a non-empty instance, no group_id: what a re-read of the file counts
            self._index.record(it.id, self._stamps[it.id], peek_status(data), [sh["label"] for sh in data["shapes"]])

    def rename_label(self, old: str, new: str, *, skip_items: Iterable[str] = ()) -> list[str]:
        """Rename a label in the manifest, then in every annotation file that uses it.

        The manifest changes first (under the lock), then each file is re-read and rewritten
        under the lock. A repeated call finishes a rename that was interrupted. Items in
        `skip_items` (e.g. one the caller holds in memory and saves itself) are left alone.
        Returns one line per file that could not be updated (the others are)."""
        new = new.strip()

        def rename(proj):
            if old in proj.labels:
                proj.labels.rename(old, new)
            elif new not in proj.labels:
                proj.labels.require(old, self.manifest_path)  # LabelError: unknown label
        self.update(rename)

        def relabel(ann):
            hits = [i for i in ann.instances if i.label == old]
            for i in hits:
                i.label = new
            return ann if hits else None

        skip, failures = set(skip_items), []
        for it in list(self.items):
            if it.id in skip or not self.annotation_path(it.id).exists():
                continue
            try:
                self.edit_annotation(it.id, relabel)
            except (MaskLoopError, OSError) as e:
                failures.append(e.one_line() if isinstance(e, MaskLoopError) else str(e))
        return failures

    def status(self, item_id: str) -> str:
        path = self.annotation_path(item_id)
        if not path.exists():
            return "new"
        return self.load_annotation(item_id).status

    def statuses(self) -> dict[str, str]:
        """Status of every item: one listing of annotations/, plus a read of the files the
        annotation index does not know as they are (engine/annotation_index.py)."""
        found = self._index.scan(self._by_id)
        return {it.id: found[it.id].status if it.id in found else "new" for it in self.items}

    def annotation_counts(self) -> dict:
        """{item id: FileCounts (status, instances per label)} of the items with an
        annotation file; files changed outside this index are decoded again (their errors
        raise, as load_annotation's would)."""
        return self._index.scan(self._by_id, decode=lambda i, data, path: [
            inst.label for inst in self._decode(i, data, path).instances])


@contextlib.contextmanager
def _gc_paused():
    """Hold off the cyclic garbage collector while many objects without cycles are made
    (100,000 items: otherwise collections pass over them again and again as they are built)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _replace_path(src, new_path: str):
    import dataclasses
    return dataclasses.replace(src, path=new_path)

