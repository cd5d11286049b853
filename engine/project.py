"""Project: the folder layout, items, status and atomic saves (DESIGN.md section 3).

<root>/maskloop.json               manifest: format version, labels, sources, items, active model, settings
<root>/annotations/<item-id>.json  labelme-compatible JSON, one per item (written only when edited)
<root>/models/<run-id>/            model.pt, config.json, metrics.json, log.jsonl

Images stay where they are. Source paths are stored relative to the project when they
lie inside it (so a moved project with its images keeps working), absolute otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from . import imageio
from .annotations import ItemAnnotation, LabelSet
from .errors import ImageReadError, LabelError, ProjectError
from .fsutil import atomic_write_json

MANIFEST = "maskloop.json"
FORMAT = "maskloop-project"
FORMAT_VERSION = 1
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


class Project:
    def __init__(self, root: Path, labels: LabelSet, sources: list, items: list[Item],
                 active_model: Optional[str] = None, settings: Optional[dict] = None) -> None:
        self.root = Path(root).resolve()
        self.labels = labels
        self.sources: list[imageio.Source] = sources
        self.items: list[Item] = items
        self.active_model = active_model
        self.settings: dict = settings or {}
        self._by_id = {it.id: it for it in items}

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
        proj.save()
        return proj

    @classmethod
    def open(cls, root) -> "Project":
        root = Path(root)
        if root.is_file() and root.name == MANIFEST:
            root = root.parent
        path = root / MANIFEST
        if not path.exists():
            raise ProjectError("no MaskLoop project here (maskloop.json missing)", root)
        data = read_json_file(path, "manifest")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProjectError("not a MaskLoop manifest", path, "format")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise ProjectError(f"written by a newer MaskLoop (format {data.get('version')})", path, "version")
        labels = LabelSet.from_json(data.get("labels", []), path)
        try:
            sources = [imageio.Source.from_json(s) for s in data.get("sources", [])]
        except (KeyError, TypeError, ValueError) as e:
            raise ProjectError(f"malformed source entry ({e})", path, "sources") from None
        items = []
        for k, d in enumerate(data.get("items", [])):
            try:
                it = Item(str(d["id"]), int(d["source"]), int(d["slice"]), str(d["name"]),
                          int(d["height"]), int(d["width"]))
            except (KeyError, TypeError, ValueError) as e:
                raise ProjectError(f"malformed item entry ({e})", path, f"items[{k}]") from None
            if not 0 <= it.source < len(sources):
                raise ProjectError(f"item refers to source {it.source} of {len(sources)}", path, f"items[{k}]")
            items.append(it)
        return cls(root, labels, sources, items, data.get("active_model"), data.get("settings") or {})

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "labels": self.labels.to_json(),
            "sources": [s.to_json() for s in self.sources],
            "items": [it.to_json() for it in self.items],
            "active_model": self.active_model,
            "settings": self.settings,
        }

    def save(self) -> None:
        atomic_write_json(self.manifest_path, self.to_json())

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
        # a series is its folder and its files: one folder may hold several series
        known = {(str(self.source_path(s).resolve()), s.files) for s in self.sources}
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
            known.add(key)
            found.append(src)
        new_items: list[Item] = []
        taken = set(self._by_id)
        for src in found:
            stored = _replace_path(src, self._stored_path(Path(src.path)))
            self.sources.append(stored)
            s_index = len(self.sources) - 1
            for z in range(src.n_slices):
                item_id = self._make_id(stored, z, taken)
                taken.add(item_id)
                name = src.name if src.n_slices == 1 else f"{src.name} [{z}]"
                it = Item(item_id, s_index, z, name, src.height, src.width)
                new_items.append(it)
        self.items.extend(new_items)
        self._by_id.update({it.id: it for it in new_items})
        self.save()
        return new_items

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

    def load_image(self, item_id: str) -> np.ndarray:
        it = self.item(item_id)
        src = self.sources[it.source]
        return imageio.read_slice(src, it.slice, base=self.root)

    # --- annotations -------------------------------------------------------------------
    def annotation_path(self, item_id: str) -> Path:
        return self.annotations_dir / f"{item_id}.json"

    def load_annotation(self, item_id: str) -> ItemAnnotation:
        from .formats.labelme import labelme_to_annotation
        it = self.item(item_id)
        path = self.annotation_path(item_id)
        if not path.exists():
            return ItemAnnotation(item_id, it.height, it.width, [], "new")
        data = read_json_file(path, "annotation")
        ann = labelme_to_annotation(data, path, item_id=item_id, height=it.height, width=it.width)
        return ann

    def save_annotation(self, ann: ItemAnnotation) -> None:
        """Validate, then atomically rewrite that one item's file."""
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
        atomic_write_json(path, data, indent=None)

    def status(self, item_id: str) -> str:
        path = self.annotation_path(item_id)
        if not path.exists():
            return "new"
        return self.load_annotation(item_id).status

    def statuses(self) -> dict[str, str]:
        """Status of every item; reads only the small top of files that exist."""
        out = {}
        for it in self.items:
            path = self.annotation_path(it.id)
            out[it.id] = _peek_status(path) if path.exists() else "new"
        return out

    # --- models ------------------------------------------------------------------------
    def new_run(self, prefix: str = "run") -> tuple[str, Path]:
        self.models_dir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 0
        while True:
            run_id = f"{prefix}-{stamp}" + (f"-{n}" if n else "")
            folder = self.models_dir / run_id
            try:
                folder.mkdir()
                return run_id, folder
            except FileExistsError:
                n += 1

    def _run_folders(self, newest_first: bool = False) -> list[Path]:
        if not self.models_dir.exists():
            return []
        return sorted((p for p in self.models_dir.iterdir() if p.is_dir()), reverse=newest_first)

    @staticmethod
    def _run_json(folder: Path, key: str) -> dict:
        """A run's config.json / metrics.json ({} when missing or unreadable)."""
        try:
            data = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def list_models(self) -> list[dict]:
        out = []
        for folder in self._run_folders():
            if not (folder / "model.pt").exists():
                continue  # an unfinished or failed run
            out.append({"run": folder.name, "path": str(folder / "model.pt"),
                        "config": self._run_json(folder, "config"), "metrics": self._run_json(folder, "metrics")})
        return out

    def resumable_runs(self) -> list[dict]:
        """Runs that stopped before their end (cancelled, interrupted) and can continue:
        a last.pt and no model.pt. Newest first, each {"run", "epochs_done", "epochs"}
        (None where the run's files do not say)."""
        out = []
        for folder in self._run_folders(newest_first=True):
            if not (folder / "last.pt").exists() or (folder / "model.pt").exists():
                continue
            history = self._run_json(folder, "metrics").get("history")
            epochs = (self._run_json(folder, "config").get("train") or {}).get("epochs")
            out.append({"run": folder.name, "epochs_done": len(history) if isinstance(history, list) else None,
                        "epochs": int(epochs) if isinstance(epochs, int) else None})
        return out

    def set_active_model(self, run_id: Optional[str]) -> None:
        if run_id is not None and not (self.models_dir / run_id / "model.pt").exists():
            raise ProjectError(f"no finished model run {run_id!r}", self.models_dir)
        self.active_model = run_id
        self.save()

    def resolve_model(self, run_or_path=None) -> Path:
        """A run id or a checkpoint path -> the model.pt path; None -> the active model."""
        if run_or_path is None:
            if not self.active_model:
                raise ProjectError("no active model: train one first (maskloop train) or pass --model",
                                   self.manifest_path, "active_model")
            run_or_path = self.active_model
        cand = self.models_dir / str(run_or_path) / "model.pt"
        if cand.exists():
            return cand
        p = Path(run_or_path)
        if p.is_dir() and (p / "model.pt").exists():
            return p / "model.pt"
        if p.is_file():
            return p
        raise ProjectError(f"no model run or checkpoint file {str(run_or_path)!r}", self.models_dir)


def _replace_path(src, new_path: str):
    import dataclasses
    return dataclasses.replace(src, path=new_path)


def _peek_status(path: Path) -> str:
    """Status from the file's top-level maskloop block, without decoding the masks."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return "new"
    ml = data.get("maskloop") if isinstance(data, dict) else None
    if isinstance(ml, dict) and ml.get("status") in ("new", "predicted", "reviewed"):
        return ml["status"]
    return "new"
