"""COCO instances JSON: export a project, import a dataset.

Export (`export_coco`)
- One image entry per item: {"id", "file_name", "height", "width", "maskloop_item",
  "maskloop_status"}; for a slice of a stack or DICOM series also "maskloop_source"
  (the stack file / series folder, relative to the JSON) and "slice" (its index).
- file_name is relative to the JSON file. Without copy_images it points at the original
  file (a DICOM series slice: that slice's own file; a stack: the stack file plus "slice").
  With copy_images the JSON stands alone: PNG/JPEG files are copied as they are, every
  other image or slice is written as PNG (8- or 16-bit kept; int16/float images, which
  PNG cannot hold, as a single-page TIFF with the raw values) into `<json folder>/images/`.
- Categories are the LabelSet (category id = Label.id, name = Label.name).
- Each instance is one annotation: compressed RLE (default, `counts` as str) or polygons,
  "area" (pixel count of the mask), "bbox" [x, y, w, h], "iscrowd" 0, "score" when it has
  one, and "maskloop": {"id", "score", "source", "model"}.
- split=0.8 writes <stem>_train.json and <stem>_val.json (a folder OUT: train.json and
  val.json), reproducible for a given seed.
- Every JSON is written atomically at the end; cancel stops before anything is written.

Import (`import_coco`)
- A COCO dataset JSON (dict with images, annotations, categories). A results list (as
  COCO detection results) is refused with a clear error: it has no images or categories.
- Images match project items by the "maskloop_item" key (MaskLoop's exports), then by
  resolved file path, then by file name; otherwise the image file (file_name relative to
  the JSON's folder or images_dir, never outside it) is added to the project.
- Segmentations: compressed RLE (str or bytes counts), uncompressed RLE (list counts) and
  polygons. RLE size must equal the image size; polygon points must lie in the image.
- iscrowd=1 regions are not instances: they are skipped and counted in the report.
- Categories used by the imported annotations are added to the LabelSet by name.
- Unknown category ids -> FormatError naming annotations[i].category_id.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
from pycocotools import mask as coco_mask

from ..annotations import Instance
from ..errors import FormatError, ImageReadError, LabelError
from ..fsutil import atomic_copy, atomic_write_bytes, atomic_write_json
from ..jobs import check, report
from ..limits import check_file_name, check_pixels
from ..masks import mask_to_polygons, polygons_to_mask, rle_decode
from . import (ExportReport, ImportReport, ItemIndex, NewImages, apply_import, check_export_target,
               contained_path, read_json, selected_items, split_items)

COPY_AS_IS = (".png", ".jpg", ".jpeg")


# --- export ----------------------------------------------------------------------------

def crop_rle(inst: Instance, height: int, width: int) -> dict:
    """Compressed COCO RLE (counts as str) of an instance in an image of (height, width),
    computed from its crop alone: O(crop pixels), not O(image size). Identical to
    pycocotools' encode of the full mask; parts outside the image are cut."""
    x0, y0 = inst.x0, inst.y0
    m = inst.mask
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + m.shape[1], width), min(y0 + m.shape[0], height)
    if cx1 <= cx0 or cy1 <= cy0:
        runs = [height * width]
    else:
        sub = m[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        w, h = sub.shape[1], sub.shape[0]
        # columns of the crop (COCO RLE is column-major), each padded with a 0 above and
        # below: every change of value is then inside one column, at row r - 1 of it
        padded = np.zeros((w, h + 2), dtype=np.int8)
        padded[:, 1:h + 1] = sub.T
        flat = padded.ravel()
        pos = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        col, row = np.divmod(pos, h + 2)
        full = (col + cx0) * height + cy0 + row - 1
        if cy0 == 0 and cy1 == height and full.size > 1:
            # a run reaching the image bottom continues at the top of the next column:
            # drop the end/start pair that the padding put at the same place
            same = np.flatnonzero(full[1:] == full[:-1])
            if same.size:
                full = np.delete(full, np.concatenate((same, same + 1)))
        if full.size and full[-1] == height * width:
            full = full[:-1]  # the last run reaches the image's last pixel
        runs = np.diff(np.concatenate(([0], full, [height * width]))).tolist()
    rle = coco_mask.frPyObjects({"counts": runs, "size": [height, width]}, height, width)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _clipped(inst: Instance, height: int, width: int) -> Optional[Instance]:
    """The instance cut to the image (as it is when it fits); None when nothing is left."""
    if inst.mask.size and inst.fits((height, width)):
        return inst
    cx0, cy0 = max(inst.x0, 0), max(inst.y0, 0)
    cx1, cy1 = min(inst.x0 + inst.width, width), min(inst.y0 + inst.height, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return inst.copy(mask=inst.mask[cy0 - inst.y0:cy1 - inst.y0, cx0 - inst.x0:cx1 - inst.x0], x0=cx0, y0=cy0)


def _instance_polygons(inst: Instance, height: int, width: int) -> list:
    t = inst.copy().tight()
    polys = mask_to_polygons(t.mask)
    out = []
    for p in polys:
        arr = np.asarray(p, dtype=np.float64).reshape(-1, 2) + (t.x0, t.y0)
        out.append([round(float(v), 2) for v in arr.ravel()])
    return out


def _out_files(out: Path, split) -> tuple[Path, list[tuple[str, Path]]]:
    """(json folder, [(part name, json path)]) for an OUT argument."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        folder = out.parent
        if split:
            return folder, [("train", folder / f"{out.stem}_train.json"), ("val", folder / f"{out.stem}_val.json")]
        return folder, [("all", out)]
    if out.exists() and not out.is_dir():
        raise FormatError("export target exists and is not a folder or .json file", out)
    if split:
        return out, [("train", out / "train.json"), ("val", out / "val.json")]
    return out, [("all", out / "annotations.json")]


def _rel(target: Path, folder: Path) -> str:
    """target relative to folder (posix), absolute where no relative path exists."""
    try:
        return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive on Windows
        return Path(os.path.abspath(target)).as_posix()


def _encode_image_file(arr: np.ndarray) -> tuple[str, bytes]:
    """(extension, bytes) of a copied slice: PNG for uint8 / uint16, else TIFF (raw values)."""
    import cv2
    if arr.dtype in (np.uint8, np.uint16) and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        a = arr if arr.ndim == 2 else arr[..., [2, 1, 0, 3][:arr.shape[2]]]  # RGB(A) -> BGR(A) for cv2
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
        if not ok:  # pragma: no cover
            raise ImageReadError("PNG encoding failed")
        return ".png", buf.tobytes()
    import tifffile
    bio = io.BytesIO()
    tifffile.imwrite(bio, np.ascontiguousarray(arr))
    return ".tif", bio.getvalue()


def write_item_image(project, item, dest_stem: Path, *, as_is_exts=COPY_AS_IS) -> Path:
    """Write one item's image next to an export as `dest_stem` + extension; returns the path.

    A plain image whose extension is in `as_is_exts` is copied byte for byte; any other
    image or slice is written from its raw pixels (engine.imageio.write_png for 8/16-bit,
    a TIFF for other types). Atomic.
    """
    src = project.sources[item.source]
    spath = project.source_path(src)
    ext = spath.suffix.lower()
    if src.kind == "image" and ext in as_is_exts:
        dest = dest_stem.with_suffix(ext)
        atomic_copy(spath, dest)
        return dest
    arr = project.load_image(item.id)
    if arr.dtype in (np.uint8, np.uint16):
        from .. import imageio
        dest = dest_stem.with_suffix(".png")
        imageio.write_png(dest, arr)
        return dest
    ext, data = _encode_image_file(arr)
    dest = dest_stem.with_suffix(ext)
    atomic_write_bytes(dest, data)
    return dest


def export_coco(project, out, *, polygons: bool = False, only_reviewed: bool = False,
                copy_images: bool = False, split: Optional[float] = None, seed: int = 0,
                items=None, progress=None, cancel=None) -> ExportReport:
    """Write the project's annotations as COCO instances JSON (see the module doc)."""
    out = Path(out)
    if split is not None and not 0.0 < float(split) < 1.0:
        raise FormatError(f"--split must be between 0 and 1, got {split}", None, "split")
    folder, targets = _out_files(out, split)
    check_export_target(project, folder / "images", *(t for _, t in targets))
    chosen = selected_items(project, only_reviewed, items)
    rep = ExportReport("coco")
    labels = project.labels
    categories = [{"id": int(l.id), "name": l.name, "supercategory": ""} for l in labels]
    image_dir = folder / "images"

    images: dict[str, dict] = {}
    anns: dict[str, list] = {}
    ann_id = 0
    total = len(chosen)
    for k, it in enumerate(chosen):
        check(cancel)
        report(progress, k, total, it.name)
        ann = project.load_annotation(it.id)
        H, W = it.height, it.width
        src = project.sources[it.source]
        spath = project.source_path(src)
        entry = {"id": k + 1, "file_name": None, "height": int(H), "width": int(W),
                 "maskloop_item": it.id, "maskloop_status": ann.status}
        if copy_images:
            dest = write_item_image(project, it, image_dir / it.id)
            entry["file_name"] = _rel(dest, folder)
            rep.copied_images += 1
        elif src.kind == "dicom_series" and src.files:
            entry["file_name"] = _rel(spath / src.files[it.slice], folder)
        else:
            entry["file_name"] = _rel(spath, folder)
        if src.n_slices > 1 or src.kind != "image":
            entry["maskloop_source"] = _rel(spath, folder)
            entry["slice"] = int(it.slice)
        images[it.id] = entry
        lst = []
        for inst in ann.instances:
            lab = labels.get(inst.label)
            if lab is None:
                raise LabelError(f"instance {inst.id} has label {inst.label!r}, which is not in the "
                                 f"project's labels", project.annotation_path(it.id))
            t = _clipped(inst, H, W)
            if t is None:
                rep.skipped["empty instance"] += 1
                continue
            rle = crop_rle(t, H, W)
            area = float(coco_mask.area(rle))
            if area == 0:
                rep.skipped["empty instance"] += 1
                continue
            ann_id += 1
            bbox = [float(v) for v in coco_mask.toBbox(rle)]
            seg = _instance_polygons(t, H, W) if polygons else rle
            a = {"id": ann_id, "image_id": k + 1, "category_id": int(lab.id), "segmentation": seg,
                 "area": area, "bbox": bbox, "iscrowd": 0,
                 "maskloop": {"id": inst.id, "score": inst.score, "source": inst.source, "model": inst.model}}
            if inst.score is not None:
                a["score"] = float(inst.score)
            lst.append(a)
        anns[it.id] = lst
    check(cancel)

    if split is not None:
        train, val = split_items(chosen, float(split), seed)
        parts = {"train": train, "val": val}
    else:
        parts = {"all": [it.id for it in chosen]}
    for name, path in targets:
        ids = parts[name]
        data = {
            "info": {"description": "exported by MaskLoop", "version": "1.0",
                     "maskloop": {"split": name, "seed": seed} if split is not None else {}},
            "licenses": [],
            "images": [images[i] for i in ids],
            "annotations": [a for i in ids for a in anns[i]],
            "categories": categories,
        }
        atomic_write_json(path, data, indent=None)
        rep.files.append(path)
    rep.images = len(chosen)
    rep.annotations = ann_id
    report(progress, total, total, "")
    return rep


# --- import ----------------------------------------------------------------------------

def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _hashable_id(v) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def decode_segmentation(seg, height: int, width: int, path=None, field: str = "segmentation") -> np.ndarray:
    """A COCO segmentation (RLE dict or polygon list) -> bool (height, width) mask.
    RLE whose size is not the image's, and polygons reaching outside it, are errors."""
    check_pixels(height, width, path, field, what="mask")
    if isinstance(seg, dict):
        size = seg.get("size")
        if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) for v in size)):
            raise FormatError("RLE needs size [height, width]", path, f"{field}.size")
        if "counts" not in seg:
            raise FormatError("RLE needs counts", path, f"{field}.counts")
        if size != [height, width]:
            bigger = size[0] > height or size[1] > width
            raise FormatError(f"mask is {size[1]}x{size[0]} but the image is {width}x{height}"
                              + (" (mask larger than the image)" if bigger else ""), path, f"{field}.size")
        counts = seg["counts"]
        if not isinstance(counts, (str, bytes, list)):
            raise FormatError("RLE counts must be a string or a list", path, f"{field}.counts")
        if isinstance(counts, list) and not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                for c in counts):
            raise FormatError("uncompressed RLE counts must be non-negative integers", path, f"{field}.counts")
        m = rle_decode(seg, path, field)
        if m.shape != (height, width):
            raise FormatError(f"RLE decodes to {m.shape[1]}x{m.shape[0]}, not {width}x{height}", path, field)
        return m
    if isinstance(seg, list):
        if seg and all(_num(v) for v in seg):   # a single flat polygon, not wrapped in a list
            seg = [seg]
        for j, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(_num(v) for v in poly):
                raise FormatError("polygon must be a list of numbers", path, f"{field}[{j}]")
            if len(poly) < 6 or len(poly) % 2:
                raise FormatError(f"polygon needs at least 3 (x, y) points, got {len(poly)} number(s)",
                                  path, f"{field}[{j}]")
            xs, ys = poly[0::2], poly[1::2]
            if xs and (min(xs) < -1 or max(xs) > width + 1 or min(ys) < -1 or max(ys) > height + 1):
                raise FormatError(f"polygon reaches outside the {width}x{height} image "
                                  f"(x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g})",
                                  path, f"{field}[{j}]")
        return polygons_to_mask(seg, height, width, path, field)
    raise FormatError("segmentation must be an RLE object or a list of polygons", path, field)


def read_coco(path) -> dict:
    """Parse and check the structure of a COCO dataset JSON (not its masks)."""
    data = read_json(path, "COCO")
    if isinstance(data, list):
        raise FormatError("this is a COCO results list (detections without images or categories); "
                          "import the COCO dataset JSON with 'images', 'annotations' and 'categories'", path)
    if not isinstance(data, dict):
        raise FormatError("a COCO file must be a JSON object", path)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise FormatError(f"missing '{key}' (not a COCO instances file)", path, key)
        if not isinstance(data[key], list):
            raise FormatError("must be a list", path, key)
    return data


def import_coco(project, path, *, images_dir=None, as_predictions: bool = False,
                progress=None, cancel=None) -> ImportReport:
    """Import a COCO instances JSON into the project (see the module doc).
    Validates the whole file and every image it would add before changing anything."""
    path = Path(path)
    data = read_coco(path)
    base = Path(images_dir) if images_dir is not None else path.parent
    rep = ImportReport("coco", files=1)
    source = "model" if as_predictions else "imported"

    cats = {}
    for j, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            raise FormatError("category needs an integer id", path, f"categories[{j}].id")
        if not isinstance(c.get("name"), str) or not c["name"].strip():
            raise FormatError("category needs a name", path, f"categories[{j}].name")
        if c["id"] in cats:
            raise FormatError(f"duplicate category id {c['id']}", path, f"categories[{j}].id")
        cats[c["id"]] = c["name"].strip()

    index = ItemIndex(project)
    new_images = NewImages()
    targets: dict = {}          # image id -> (update key, height, width)
    for j, im in enumerate(data["images"]):
        field = f"images[{j}]"
        if not isinstance(im, dict):
            raise FormatError("image entry must be an object", path, field)
        iid = im.get("id")
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise FormatError("image needs an id", path, f"{field}.id")
        if iid in targets:
            raise FormatError(f"duplicate image id {iid!r}", path, f"{field}.id")
        h, w = im.get("height"), im.get("width")
        if not _pos_int(h) or not _pos_int(w):
            raise FormatError("image needs positive integer height and width", path, f"{field}.height")
        check_pixels(h, w, path, f"{field}.height")  # before any image is probed or mask drawn
        slice_index = im.get("slice", 0)
        if not isinstance(slice_index, int) or isinstance(slice_index, bool) or slice_index < 0:
            raise FormatError("slice must be a non-negative integer", path, f"{field}.slice")
        item = index.by_id(im.get("maskloop_item"))
        file_path = None
        if item is None:
            check_file_name(im.get("file_name"), path, f"{field}.file_name")
            file_path = contained_path(base, im.get("file_name"), path, f"{field}.file_name")
            # "slice" indexes into file_name only when that is the stack itself (an export
            # without --copy-images); a copied slice or a DICOM slice file is one image.
            in_file = im.get("maskloop_source") == im.get("file_name")
            item = index.find(file_path, slice_index if in_file else 0)
            if item is None:
                item = match_by_name(index, file_path, path, f"{field}.file_name")
        if item is not None:
            if (item.height, item.width) != (h, w):
                raise FormatError(f"image is {w}x{h} in the file but item {item.id!r} is "
                                  f"{item.width}x{item.height}", path, f"{field}.height")
            key = item.id
        else:
            ih, iw = new_images.probe(file_path, path, f"{field}.file_name")
            if (ih, iw) != (h, w):
                raise FormatError(f"image is {w}x{h} in the file but {file_path.name} is {iw}x{ih}",
                                  path, f"{field}.height")
            key = ("new", _key(file_path))
        targets[iid] = (key, h, w)

    updates: dict = {}
    for iid, (key, h, w) in targets.items():
        updates.setdefault(key, [])
    used_labels: list[str] = []
    total = len(data["annotations"])
    for j, a in enumerate(data["annotations"]):
        if j % 64 == 0:
            check(cancel)
            report(progress, j, total, "reading annotations")
        field = f"annotations[{j}]"
        if not isinstance(a, dict):
            raise FormatError("annotation must be an object", path, field)
        if not _hashable_id(a.get("image_id")) or a.get("image_id") not in targets:
            raise FormatError(f"unknown image id {a.get('image_id')!r}", path, f"{field}.image_id")
        cid = a.get("category_id")
        if not _hashable_id(cid) or isinstance(cid, bool) or cid not in cats:
            raise FormatError(f"unknown category id {cid!r} (categories: "
                              f"{', '.join(str(c) for c in list(cats)[:10])}{'...' if len(cats) > 10 else ''})",
                              path, f"{field}.category_id")
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1, True, False):
            raise FormatError(f"iscrowd must be 0 or 1, got {crowd!r}", path, f"{field}.iscrowd")
        key, h, w = targets[a["image_id"]]
        if "segmentation" not in a or a["segmentation"] in (None, [], {}):
            raise FormatError("annotation has no segmentation (box-only COCO files cannot be imported "
                              "as instance masks)", path, f"{field}.segmentation")
        mask = decode_segmentation(a["segmentation"], h, w, path, f"{field}.segmentation")
        if crowd:
            rep.skipped["crowd region (iscrowd=1)"] += 1
            continue
        extra = _ann_extra(a, source, as_predictions, path, field)
        inst = Instance.from_full_mask(mask, cats[cid], **extra)
        if inst is None:
            rep.skipped["empty mask"] += 1
            continue
        if cats[cid] not in used_labels:
            used_labels.append(cats[cid])
        updates[key].append(inst)
    report(progress, total, total, "")
    check(cancel)
    new_labels = [n for n in used_labels if n not in project.labels]
    status = "predicted" if as_predictions else "reviewed"
    return apply_import(project, updates, rep, status=status, new_labels=new_labels,
                        new_images=new_images, progress=progress, cancel=cancel)


def match_by_name(index: ItemIndex, file_path: Path, path, field):
    """The one project item whose file has this file name; None when there is none
    (the file will be added); FormatError when several have it and the file named is
    none of them."""
    named = index.find_name(Path(file_path).name)
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise FormatError(f"file name {Path(file_path).name!r} matches {len(named)} project items "
                          f"({', '.join(i.id for i in named[:4])}); cannot tell which", path, field)
    return None


def _key(p: Path) -> str:
    from . import _norm
    return _norm(p)


def _ann_extra(a: dict, source: str, as_predictions: bool, path, field) -> dict:
    """Instance fields from an annotation: MaskLoop's own key when present, "score"."""
    extra: dict = {"source": source}
    ml = a.get("maskloop")
    if isinstance(ml, dict):
        if isinstance(ml.get("id"), str) and ml["id"]:
            extra["id"] = ml["id"]
        if not as_predictions and ml.get("source") in ("manual", "model", "classic", "imported"):
            extra["source"] = ml["source"]
        if ml.get("model") is not None:
            extra["model"] = str(ml["model"])
        if _num(ml.get("score")):
            extra["score"] = float(ml["score"])
    if "score" in a and a["score"] is not None:
        if not _num(a["score"]):
            raise FormatError(f"score must be a number, got {a['score']!r}", path, f"{field}.score")
        extra["score"] = float(a["score"])
    return extra
