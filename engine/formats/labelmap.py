"""Label maps: one integer image per item, each value > 0 one instance, 0 background.

The form Cellpose (`<stem>_masks.png`, `<stem>_cp_masks.png`), StarDist and ImageJ users
have. A label map matches a project item by file stem: the exact stem, or the stem with
one of SUFFIXES removed (so `img_masks.tif` matches the item of `img.tif`). A multi-page
TIFF label map with N pages matches a stack source with N slices page by page.

Files in the folder that are the project's own images are left alone; files that match
no item are skipped and counted, but an import in which nothing matches is an error.
A label map whose size differs from its image is an error naming both files. One value
is one instance even when its pixels are not connected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..annotations import Instance
from ..errors import FormatError, ImageReadError, LabelError
from ..jobs import check, report
from . import ImportReport, _norm, apply_import

EXTS = (".tif", ".tiff", ".png")
#: stem suffixes label-map files carry (longest first)
SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg", "_gt", "-masks", "-mask", "-labels",
            "-label")
DEFAULT_LABEL = "object"


def read_labelmap(path) -> np.ndarray:
    """The label map's integer values: (H, W), or (N, H, W) for a multi-page TIFF.
    Reading (and the corrupt / truncated file checks) is engine.imageio's."""
    from .. import imageio
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("label map not found", path)
    sources = imageio.probe(path)
    if len(sources) != 1:
        raise ImageReadError("not a single label-map image", path)
    src = sources[0]
    if src.channels != 1 and path.suffix.lower() in (".tif", ".tiff"):
        # tifffile stores a (3, H, W) or (4, H, W) array as one page of planar samples
        # unless told otherwise: for a label map those planes are slices, not colours
        from .volume_tiff import read_array
        arr, _ = read_array(path)
        return _integers(arr, path)
    if src.channels != 1:
        raise FormatError(f"label map must be a single-channel integer image, got {src.channels} channels",
                          path, "channels")
    pages = [imageio.read_slice(src, k) for k in range(src.n_slices)]
    return _integers(pages[0] if len(pages) == 1 else np.stack(pages), path)


def _integers(arr: np.ndarray, path) -> np.ndarray:
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise FormatError("label map has non-integer values", path, "dtype")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise FormatError(f"label map must hold integers, got {arr.dtype}", path, "dtype")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise FormatError(f"label map has negative values (min {arr.min()})", path, "values")
    return arr


def labelmap_to_instances(lab: np.ndarray, label: str, **kw) -> list[Instance]:
    """One cropped Instance per value > 0 (ascending), in O(pixels log pixels)."""
    H, W = lab.shape
    flat = lab.ravel()
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        return []
    vals = flat[nz]
    order = np.argsort(vals, kind="stable")
    nz, vals = nz[order], vals[order]
    cuts = np.flatnonzero(np.diff(vals)) + 1
    out = []
    for idx in np.split(nz, cuts):
        ys, xs = np.divmod(idx, W)
        y0, x0 = int(ys.min()), int(xs.min())
        m = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), dtype=bool)
        m[ys - y0, xs - x0] = True
        out.append(Instance(mask=m, x0=x0, y0=y0, label=label, **kw))
    return out


def _candidates(stem: str) -> list[str]:
    out = [stem]
    low = stem.lower()
    for suf in SUFFIXES:
        if low.endswith(suf) and len(stem) > len(suf):
            out.append(stem[: -len(suf)])
            break
    return out


def _match(project, stem: str, path) -> tuple[list, object]:
    """(items, stack source or None) matching a label-map file stem; ([], None) when none."""
    for cand in _candidates(stem):
        items = project.find_items_by_stem(cand)
        if len(items) > 1:
            raise FormatError(f"stem {cand!r} matches {len(items)} items "
                              f"({', '.join(i.id for i in items[:4])}); rename the label map to an item id",
                              path)
        if items:
            return items, None
        # a stack source whose file stem matches: page k -> slice k
        for s_index, src in enumerate(project.sources):
            if src.n_slices > 1 and Path(src.path).stem == cand:
                its = sorted((it for it in project.items if it.source == s_index), key=lambda i: i.slice)
                return its, src
    return [], None


def _pair_pages(items, stack, arr, path) -> list:
    """[(item, page or None)] after checking the page count against the match."""
    if stack is None:
        if arr.ndim == 3:
            raise FormatError(f"label map has {arr.shape[0]} pages but {items[0].name} is one image",
                              path, "pages")
        return [(items[0], None)]
    if arr.ndim == 2:
        raise FormatError(f"label map is a single page but {Path(stack.path).name} is a stack of "
                          f"{stack.n_slices} slices; use a multi-page TIFF or name the file after a "
                          f"slice's item id (e.g. {items[0].id})", path)
    if arr.shape[0] != stack.n_slices:
        raise FormatError(f"label map has {arr.shape[0]} pages but {Path(stack.path).name} has "
                          f"{stack.n_slices} slices", path, "pages")
    return [(it, it.slice) for it in items]


def find_labelmap_files(path) -> tuple[Path, list[Path]]:
    path = Path(path)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FormatError("no such file or folder", path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise FormatError(f"no label map files ({', '.join(EXTS)}) in the folder", path)
    return path, files


def import_labelmap(project, path, *, label: Optional[str] = None, as_predictions: bool = False,
                    progress=None, cancel=None) -> ImportReport:
    """Import label maps (a file or a folder of them) as instances of class `label`.

    label: default the project's only label, or "object" when it has none; a project with
    several labels needs it named (LabelError).
    """
    root, files = find_labelmap_files(path)
    if label is None:
        names = project.labels.names()
        if len(names) > 1:
            raise LabelError(f"the project has several labels ({', '.join(names)}); choose one with --label",
                             None, "label")
        label = names[0] if names else DEFAULT_LABEL
    label = label.strip()
    if not label:
        raise LabelError("label name is empty", None, "label")
    rep = ImportReport("labelmap", files=0)
    own = {_norm(project.source_path(s)) for s in project.sources}
    source = "model" if as_predictions else "imported"
    updates: dict = {}
    matched_by: dict = {}
    for k, f in enumerate(files):
        check(cancel)
        report(progress, k, len(files), f.name)
        if _norm(f) in own:
            continue  # one of the project's images, not a label map
        single = len(files) == 1 and Path(path).is_file()
        items, stack = _match(project, f.stem, f)
        if not items:
            if single:
                raise FormatError(f"no project item matches the file stem {f.stem!r} "
                                  f"(add the image first, or name the label map after its image)", f)
            rep.skipped["files matching no item"] += 1
            continue
        arr = read_labelmap(f)
        pairs = _pair_pages(items, stack, arr, f)
        rep.files += 1
        for it, page in pairs:
            lab = arr if page is None else arr[page]
            if lab.shape != (it.height, it.width):
                img = project.source_path(project.sources[it.source])
                raise FormatError(f"label map is {lab.shape[1]}x{lab.shape[0]} but image {img} "
                                  f"({it.name}) is {it.width}x{it.height}", f, "size")
            if it.id in matched_by:
                raise FormatError(f"both {matched_by[it.id].name} and {f.name} match item {it.id!r}", f)
            matched_by[it.id] = f
            insts = labelmap_to_instances(lab, label, source=source)
            updates[it.id] = insts
    if not updates:
        raise FormatError("no label map matched a project item by file stem", path)
    report(progress, len(files), len(files), "")
    status = "predicted" if as_predictions else "reviewed"
    new_labels = [label] if label not in project.labels else []
    return apply_import(project, updates, rep, status=status, new_labels=new_labels,
                        progress=progress, cancel=cancel)


def export_labelmap(project, out, *, only_reviewed: bool = False, progress=None, cancel=None):
    """One label image per item: OUT/<item id>_masks.tif, 0 background, instance k = k
    (uint16, uint32 above 65535 instances). The names match `import_labelmap`, so an
    export imports back into the same items. Items without instances are skipped."""
    import io

    import tifffile

    from ..fsutil import atomic_write_bytes
    from . import ExportReport, selected_items
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FormatError("the label map export needs a folder", out)
    rep = ExportReport("labelmap")
    chosen = selected_items(project, only_reviewed)
    for k, it in enumerate(chosen):
        check(cancel)
        report(progress, k, len(chosen), it.name)
        if not project.annotation_path(it.id).exists():
            continue
        ann = project.load_annotation(it.id)
        if not ann.instances:
            rep.skipped["items without instances"] += 1
            continue
        dtype = np.uint16 if len(ann.instances) <= 65535 else np.uint32
        buf = io.BytesIO()
        tifffile.imwrite(buf, ann.label_image(dtype), photometric="minisblack", compression="zlib")
        target = out / f"{it.id}_masks.tif"
        atomic_write_bytes(target, buf.getvalue())
        rep.images += 1
        rep.annotations += len(ann.instances)
    report(progress, len(chosen), len(chosen), "")
    rep.files.append(out)   # the folder: one file per item would make a long summary
    return rep
