"""labelme JSON: the project's own annotation files, and labelme import/export.

Shape <-> Instance conversion is shared with engine.project (the project's
annotation files are labelme JSON with `mask` shapes):

- A MaskLoop instance is one `mask` shape: `points` = [[x1, y1], [x2, y2]], the
  inclusive corners of the crop, `mask` = base64 PNG of the crop, and MaskLoop's
  fields in the extra key `"maskloop": {"id", "score", "source", "model"}`, which
  labelme keeps as `other_data`.
- Foreign shapes are rasterised exactly as labelme's own
  `labelme.utils.shape_to_mask` does (PIL ImageDraw; labelme itself is not imported
  because importing it loads Qt): polygon, rectangle, circle, oriented_rectangle and
  mask become instances; point, line and linestrip are ignored and counted; the
  label `__ignore__` is skipped; shapes with the same (label, group_id) join into
  one instance, as in labelme's `shapes_to_label`.

Nothing here loads Qt or torch.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from functools import partial
from pathlib import Path, PureWindowsPath
from typing import Optional

import numpy as np

from .. import limits
from ..annotations import SOURCES, STATUSES, Instance, ItemAnnotation, LabelSet
from ..errors import FormatError, ImageReadError, LabelError
from ..masks import mask_to_b64
from .embedded import decode_mask_b64, embedded_image
from .ordered_runs import in_order

#: The labelme file-format version written into exported files (mask shapes exist since 5.x).
LABELME_VERSION = "5.5.0"
#: Version of MaskLoop's own extra keys.
MASKLOOP_FORMAT = 1

AREA_SHAPES = ("polygon", "rectangle", "circle", "oriented_rectangle", "mask")
IGNORED_SHAPES = ("point", "points", "line", "linestrip")
IGNORE_LABEL = "__ignore__"


# --- rasterisation (labelme.utils.shape_to_mask semantics) ------------------------------

def shape_to_mask(height: int, width: int, points, shape_type: Optional[str]) -> np.ndarray:
    """Full-image bool mask of a polygon / rectangle / circle / oriented_rectangle shape,
    pixel for pixel as labelme.utils.shape_to_mask draws it (PIL ImageDraw).

    The drawing canvas is clipped to the shape's extent (PIL's fill of a pixel does not
    depend on the canvas size), so huge images cost no huge temporary.
    """
    import PIL.Image
    import PIL.ImageDraw

    xy = [(float(p[0]), float(p[1])) for p in points]
    full = np.zeros((height, width), dtype=bool)
    if not xy:
        return full
    if shape_type == "circle":
        (cx, cy), (px, py) = xy
        d = math.hypot(cx - px, cy - py)
        xmax, ymax = cx + d, cy + d
    else:
        xmax = max(p[0] for p in xy)
        ymax = max(p[1] for p in xy)
    cw = int(min(width, max(0, math.ceil(xmax) + 2)))
    ch = int(min(height, max(0, math.ceil(ymax) + 2)))
    if cw <= 0 or ch <= 0:
        return full
    canvas = PIL.Image.new("L", (cw, ch), 0)
    draw = PIL.ImageDraw.Draw(canvas)
    if shape_type == "circle":
        draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=1, fill=1)
    elif shape_type == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=1, fill=1)
    elif shape_type in (None, "polygon", "oriented_rectangle"):
        draw.polygon(xy=xy, outline=1, fill=1)
    else:
        raise ValueError(f"shape_type={shape_type!r} is not an area shape")
    full[:ch, :cw] = np.asarray(canvas, dtype=np.uint8) > 0
    return full


# --- shape <-> Instance --------------------------------------------------------------

def instance_to_shape(inst: Instance, group_id: Optional[int] = None) -> Optional[dict]:
    """One labelme `mask` shape for an instance; None when its mask is empty.

    The crop is tightened first (labelme draws the mask into its bbox), so padding
    around the set pixels is not written.
    """
    t = inst.copy().tight() if inst.mask.size else inst
    if t.mask.size == 0 or not t.mask.any():
        return None
    return {
        "label": inst.label,
        "points": [[t.x0, t.y0], [t.x0 + t.width - 1, t.y0 + t.height - 1]],
        "group_id": group_id,
        "description": "",
        "shape_type": "mask",
        "flags": {},
        "mask": mask_to_b64(t.mask),
        "maskloop": {"id": inst.id, "score": inst.score, "source": inst.source, "model": inst.model,
                     **({"object": inst.object_id} if inst.object_id else {})},
    }


def _check_points(shape: dict, path, field) -> list:
    pts = shape.get("points")
    if not isinstance(pts, list) or not pts:
        raise FormatError("points must be a non-empty list of [x, y]", path, f"{field}.points")
    for p in pts:
        if (type(p) is not list and type(p) is not tuple) or len(p) != 2 or not (_finite(p[0]) and _finite(p[1])):
            raise FormatError(f"points must be a list of [x, y] numbers, got {p!r}", path, f"{field}.points")
    return pts


def _finite(v) -> bool:
    t = type(v)
    return (t is int) or (t is float and math.isfinite(v))


def _maskloop_fields(shape: dict, source: str, path, field) -> dict:
    """id / score / source / model from the shape's "maskloop" key (validated)."""
    ml = shape.get("maskloop")
    out = {"source": source}
    if ml is None:
        return out
    if not isinstance(ml, dict):
        raise FormatError("must be an object", path, f"{field}.maskloop")
    if ml.get("id") is not None:
        if not isinstance(ml["id"], str) or not ml["id"]:
            raise FormatError("must be a non-empty string", path, f"{field}.maskloop.id")
        out["id"] = ml["id"]
    if ml.get("score") is not None:
        s = ml["score"]
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise FormatError(f"must be a number, got {s!r}", path, f"{field}.maskloop.score")
        out["score"] = float(s)
    if ml.get("source") is not None:
        if ml["source"] not in SOURCES:
            raise FormatError(f"unknown source {ml['source']!r}", path, f"{field}.maskloop.source")
        out["source"] = ml["source"]
    if ml.get("model") is not None:
        out["model"] = str(ml["model"])
    if ml.get("object") is not None:
        if not isinstance(ml["object"], str) or not ml["object"]:
            raise FormatError("must be a non-empty string", path, f"{field}.maskloop.object")
        out["object_id"] = ml["object"]
    return out


def shape_to_instance(shape: dict, height: int, width: int, *, path=None, field: str = "shape",
                      source: str = "imported", keep_maskloop: bool = True) -> Optional[Instance]:
    """One labelme shape -> Instance (cropped mask), or None when it is not an area shape
    (point, line, linestrip) or covers no pixel inside the image.

    A `mask` shape must lie inside the image and its PNG must have the size of its
    bbox points (FormatError otherwise). `source` is used when the shape carries no
    "maskloop" key (or keep_maskloop is False).
    """
    if not isinstance(shape, dict):
        raise FormatError("shape must be an object", path, field)
    label = shape.get("label")
    if not isinstance(label, str):
        raise FormatError("label must be a string", path, f"{field}.label")
    label = label.strip()  # as the LabelSet stores names, so the two always match
    if not label:
        raise LabelError("label name is empty", path, f"{field}.label")
    st = shape.get("shape_type", "polygon")
    if st is None:
        st = "polygon"
    if not isinstance(st, str):
        raise FormatError("shape_type must be a string", path, f"{field}.shape_type")
    pts = _check_points(shape, path, field)
    if st in IGNORED_SHAPES:
        return None
    if st not in AREA_SHAPES:
        raise FormatError(f"unsupported shape_type {st!r}", path, f"{field}.shape_type")
    extra = _maskloop_fields(shape, source, path, field) if keep_maskloop else {"source": source}
    limits.check_points(pts, height, width, path, f"{field}.points")  # nothing drawn far outside

    if st == "mask":
        if len(pts) != 2:
            raise FormatError("a mask shape needs 2 points (bbox corners)", path, f"{field}.points")
        m64 = shape.get("mask")
        if not isinstance(m64, str):
            raise FormatError("a mask shape needs a base64 PNG", path, f"{field}.mask")
        (x1, y1), (x2, y2) = np.asarray(pts, dtype=np.float64).astype(int)  # as labelme does
        if x1 < 0 or y1 < 0 or x2 >= width or y2 >= height or x2 < x1 or y2 < y1:
            raise FormatError(f"mask [{x1},{y1}]-[{x2},{y2}] lies outside the {width}x{height} image",
                              path, f"{field}.points")
        mask = decode_mask_b64(m64, y2 - y1 + 1, x2 - x1 + 1, path, f"{field}.mask")
        if not mask.any():
            return None
        return Instance(mask=mask, x0=int(x1), y0=int(y1), label=label, **extra)

    if st == "circle" and len(pts) != 2:
        raise FormatError("a circle needs 2 points (centre, rim)", path, f"{field}.points")
    if st == "rectangle" and len(pts) != 2:
        raise FormatError("a rectangle needs 2 points", path, f"{field}.points")
    if st == "oriented_rectangle" and len(pts) != 4:
        raise FormatError("an oriented rectangle needs 4 points", path, f"{field}.points")
    if st == "polygon" and len(pts) < 3:
        raise FormatError("a polygon needs at least 3 points", path, f"{field}.points")
    if st == "circle":
        limits.circle_radius(pts[0], pts[1], height, width, path, f"{field}.points")
    full = shape_to_mask(height, width, pts, st)
    return Instance.from_full_mask(full, label, **extra)


def _union(instances: list[Instance]) -> Instance:
    x0 = min(i.x0 for i in instances)
    y0 = min(i.y0 for i in instances)
    x1 = max(i.x0 + i.width for i in instances)
    y1 = max(i.y0 + i.height for i in instances)
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for i in instances:
        m[i.y0 - y0:i.y0 - y0 + i.height, i.x0 - x0:i.x0 - x0 + i.width] |= i.mask
    first = instances[0]
    return first.copy(mask=m, x0=x0, y0=y0)


# A file with this many shapes is converted by a few threads (engine.formats.ordered_runs):
# decoding mask PNGs, most of the time, releases the GIL.
PARALLEL_MIN_SHAPES = 512


def _convert_one(shapes, height, width, path, source, keep_maskloop, k: int) -> Optional[Instance]:
    shape = shapes[k]
    if isinstance(shape, dict) and shape.get("label") == IGNORE_LABEL:
        return None
    return shape_to_instance(shape, height, width, path=path, field=f"shapes[{k}]", source=source,
                             keep_maskloop=keep_maskloop)


def shapes_to_instances(shapes, height: int, width: int, *, path=None, source: str = "imported",
                        keep_maskloop: bool = True, stats: Optional[Counter] = None) -> list[Instance]:
    """All shapes of a labelme file -> instances. Shapes with the same (label, group_id)
    join into one instance; `__ignore__` and non-area shapes are skipped and counted in
    `stats` ("ignored <type>", "ignored __ignore__", "empty")."""
    if not isinstance(shapes, list):
        raise FormatError("shapes must be a list", path, "shapes")
    stats = stats if stats is not None else Counter()
    groups: dict = {}
    order: list = []
    convert = partial(_convert_one, shapes, height, width, path, source, keep_maskloop)
    converted = in_order(convert, len(shapes), threaded=len(shapes) >= PARALLEL_MIN_SHAPES)
    for k, (shape, inst) in enumerate(zip(shapes, converted)):
        field = f"shapes[{k}]"
        if isinstance(shape, dict) and shape.get("label") == IGNORE_LABEL:
            stats[f"ignored {IGNORE_LABEL}"] += 1
            continue
        st = shape.get("shape_type") or "polygon"
        if inst is None:
            stats[f"ignored {st}" if st in IGNORED_SHAPES else "empty"] += 1
            continue
        gid = shape.get("group_id")
        if gid is not None and not isinstance(gid, int):
            raise FormatError("group_id must be an integer or null", path, f"{field}.group_id")
        key = (inst.label, gid) if gid is not None else ("#", k)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(inst)
    out = []
    for key in order:
        g = groups[key]
        out.append(g[0] if len(g) == 1 else _union(g))
        if len(g) > 1:
            stats["joined by group_id"] += len(g) - 1
    return out


# --- whole files ----------------------------------------------------------------------

def annotation_to_labelme(ann: ItemAnnotation, image_path_rel: str, labels: Optional[LabelSet] = None,
                          *, image_data: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    """An ItemAnnotation as a labelme JSON dict (one `mask` shape per instance).

    `image_path_rel` is the image path relative to the JSON file (posix separators).
    When `labels` is given, every instance's label must be in it (LabelError).
    `extra` is merged into the top-level "maskloop" key (e.g. source path, slice).
    """
    shapes = []
    for inst in ann.instances:
        if labels is not None and inst.label not in labels:
            raise LabelError(f"instance {inst.id} has unknown label {inst.label!r}", None, ann.item_id)
        s = instance_to_shape(inst)
        if s is not None:
            shapes.append(s)
    ml = {"format": MASKLOOP_FORMAT, "item": ann.item_id, "status": ann.status}
    if extra:
        ml.update(extra)
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path_rel,
        "imageData": image_data,
        "imageHeight": int(ann.height),
        "imageWidth": int(ann.width),
        "maskloop": ml,
    }


def _int_field(data: dict, key: str, path) -> Optional[int]:
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise FormatError(f"must be a positive integer, got {v!r}", path, key)
    return v


def labelme_to_annotation(data: dict, path=None, *, item_id: Optional[str] = None,
                          height: Optional[int] = None, width: Optional[int] = None,
                          status: Optional[str] = None, source: str = "imported",
                          keep_maskloop: bool = True, stats: Optional[Counter] = None) -> ItemAnnotation:
    """A labelme JSON dict -> ItemAnnotation.

    - height/width: the item's size; the file's imageHeight/imageWidth must agree when
      present (FormatError otherwise). One of the two sources must give the size.
    - item_id: default the file's "maskloop.item", else the file stem of `path`.
    - status: explicit, else the file's "maskloop.status", else "reviewed" (a labelme file
      made by a person is ground truth).
    - source: instance source for shapes without a "maskloop" key.
    - stats: a Counter that receives counts of skipped shapes.
    """
    if not isinstance(data, dict):
        raise FormatError("a labelme file must be a JSON object", path)
    if "shapes" not in data:
        raise FormatError("not a labelme file (no 'shapes')", path, "shapes")
    fh, fw = _int_field(data, "imageHeight", path), _int_field(data, "imageWidth", path)
    if height is not None and fh is not None and fh != height:
        raise FormatError(f"imageHeight {fh} differs from the image height {height}", path, "imageHeight")
    if width is not None and fw is not None and fw != width:
        raise FormatError(f"imageWidth {fw} differs from the image width {width}", path, "imageWidth")
    H = height if height is not None else fh
    W = width if width is not None else fw
    if H is None or W is None:
        raise FormatError("image size unknown (no imageHeight/imageWidth)", path, "imageHeight")
    limits.check_pixels(H, W, path, "imageHeight")
    ml = data.get("maskloop") if isinstance(data.get("maskloop"), dict) else {}
    if status is None:
        status = ml.get("status", "reviewed")
        if status not in STATUSES:
            raise FormatError(f"unknown status {status!r}", path, "maskloop.status")
    if item_id is None:
        item_id = ml.get("item") if isinstance(ml.get("item"), str) else (Path(path).stem if path else "")
    insts = shapes_to_instances(data["shapes"], H, W, path=path, source=source,
                                keep_maskloop=keep_maskloop, stats=stats)
    return ItemAnnotation(item_id, int(H), int(W), insts, status)


def image_path_of(data: dict, json_path) -> Path:
    """The image a labelme file points at: imagePath (Windows separators allowed)
    resolved relative to the JSON's folder."""
    ip = data.get("imagePath")
    if not isinstance(ip, str) or not ip:
        raise FormatError("imagePath must be a non-empty string", json_path, "imagePath")
    rel = PureWindowsPath(ip).as_posix()
    return Path(os.path.normpath(Path(json_path).parent / rel))


# --- import / export of labelme datasets ------------------------------------------------------

#: image files labelme's LabelFile reads as they are (besides 8-bit PNG/JPEG/BMP)
_LABELME_TIFF = (".tif", ".tiff")
_LABELME_8BIT = (".png", ".jpg", ".jpeg", ".bmp")


def find_labelme_files(path) -> tuple[Path, list[Path]]:
    """(dataset folder, labelme JSON files) for a file or a folder (searched recursively,
    hidden entries skipped)."""
    path = Path(path)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FormatError("no such file or folder", path)
    files = sorted(p for p in path.rglob("*.json")
                   if not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise FormatError("no labelme .json files in the folder", path)
    return path, files


def import_labelme(project, path, *, as_predictions: bool = False, progress=None, cancel=None):
    """Import labelme JSON files (a file, or a folder searched recursively).

    Each file's image: the project item named by its "maskloop.item" key, else the item of
    the file imagePath points at (relative to the JSON, inside the dataset folder), else the
    one item with that file name, else the image file is added to the project. A file whose
    image is missing but which embeds imageData has that image written to
    <project>/images/ and added. Validates every file before changing the project.
    """
    from . import ImportReport, ItemIndex, NewImages, _norm, apply_import, contained_path, read_json
    from .coco import match_by_name
    from ..fsutil import atomic_write_bytes
    from ..jobs import check, report

    root, files = find_labelme_files(path)
    rep = ImportReport("labelme", files=len(files))
    index = ItemIndex(project)
    new_images = NewImages()
    embedded: dict[str, tuple[Path, bytes]] = {}
    updates: dict = {}
    labels: list[str] = []
    source = "model" if as_predictions else "imported"
    for k, f in enumerate(files):
        check(cancel)
        report(progress, k, len(files), f.name)
        data = read_json(f, "labelme")
        if not isinstance(data, dict) or "shapes" not in data:
            if len(files) == 1:
                raise FormatError("not a labelme file (no 'shapes')", f, "shapes")
            rep.skipped["JSON files that are not labelme files"] += 1  # e.g. a COCO file alongside
            continue
        ml = data.get("maskloop") if isinstance(data.get("maskloop"), dict) else {}
        item = index.by_id(ml.get("item"))
        key = None
        hw = None
        if item is None:
            ip = data.get("imagePath")
            if not isinstance(ip, str) or not ip.strip():
                raise FormatError("imagePath must be a non-empty string", f, "imagePath")
            limits.check_file_name(ip, f, "imagePath")
            rel_dir = f.parent.relative_to(root).as_posix()
            rel = PureWindowsPath(ip).as_posix()
            img = contained_path(root, f"{rel_dir}/{rel}" if rel_dir != "." else rel, f, "imagePath")
            slice_index = ml.get("slice", 0) if isinstance(ml.get("slice", 0), int) else 0
            item = index.find(img, slice_index) or match_by_name(index, img, f, "imagePath")
            if item is None:
                if img.is_file():
                    hw = new_images.probe(img, f, "imagePath")
                    key = ("new", _norm(img))
                else:
                    emb = embedded_image(data, f)
                    if emb is None:
                        raise ImageReadError(f"image {ip!r} not found ({img}) and the file embeds no "
                                             f"imageData", f, "imagePath")
                    raw, ext, hw = emb
                    dest = _free_name(project.root / "images", img.stem, ext, raw, embedded)
                    embedded[_norm(dest)] = (dest, raw)
                    new_images.paths[_norm(dest)] = dest
                    new_images.shapes[_norm(dest)] = hw
                    key = ("new", _norm(dest))
        if item is not None:
            hw = (item.height, item.width)
            key = item.id
        ann = labelme_to_annotation(data, f, item_id="", height=hw[0], width=hw[1], status="reviewed",
                                    source=source, stats=rep.skipped)
        for inst in ann.instances:
            if as_predictions:
                inst.source = "model"
            if inst.label not in labels:
                labels.append(inst.label)
        updates.setdefault(key, []).extend(ann.instances)
    if not updates:
        raise FormatError("no labelme files (JSON with 'shapes') in the folder", path)
    rep.files = len(files) - rep.skipped["JSON files that are not labelme files"]
    report(progress, len(files), len(files), "")
    check(cancel)
    for dest, raw in embedded.values():
        atomic_write_bytes(dest, raw)
    new_labels = [n for n in labels if n not in project.labels]
    status = "predicted" if as_predictions else "reviewed"
    return apply_import(project, updates, rep, status=status, new_labels=new_labels,
                        new_images=new_images, progress=progress, cancel=cancel)


def _free_name(folder: Path, stem: str, ext: str, raw: bytes, planned: dict) -> Path:
    """folder/stem+ext, or stem_2+ext ... when that name holds other bytes."""
    from . import _norm
    n = 1
    while True:
        dest = folder / (f"{stem}{ext}" if n == 1 else f"{stem}_{n}{ext}")
        key = _norm(dest)
        if key in planned:
            if planned[key][1] == raw:
                return dest
        elif not dest.exists() or dest.read_bytes() == raw:
            return dest
        n += 1


def labelme_can_read(project, item) -> bool:
    """Whether labelme opens this item's image file as it is (a plain 8-bit PNG/JPEG/BMP,
    or a single-page TIFF, which labelme normalises for display)."""
    src = project.sources[item.source]
    if src.kind != "image":
        return False
    ext = Path(src.path).suffix.lower()
    if ext in _LABELME_TIFF:
        return True
    return ext in _LABELME_8BIT and src.dtype == "uint8"


def _write_labelme_image(project, item, dest_stem: Path) -> Path:
    """A slice (or an image labelme cannot read) as a file labelme opens: 8-bit PNG for
    uint8, else a single-page TIFF with the raw values (labelme normalises it for display,
    MaskLoop re-imports the raw values)."""
    from ..fsutil import atomic_write_bytes
    arr = project.load_image(item.id)
    if arr.dtype == np.uint8:
        from .coco import _encode_image_file
        ext, data = _encode_image_file(arr)
    else:
        import io as _io
        import tifffile
        bio = _io.BytesIO()
        tifffile.imwrite(bio, np.ascontiguousarray(arr))
        ext, data = ".tif", bio.getvalue()
    dest = dest_stem.with_suffix(ext)
    atomic_write_bytes(dest, data)
    return dest


def export_labelme(project, out, *, only_reviewed: bool = False, copy_images: bool = False,
                   split: Optional[float] = None, seed: int = 0, items=None,
                   progress=None, cancel=None):
    """One labelme JSON per item in folder `out` (`out/train`, `out/val` with split) that
    labelme's own LabelFile opens with the same masks.

    imagePath is relative to the JSON. Images labelme can read stay where they are unless
    copy_images; slices and images labelme cannot read are always written next to the
    JSON (`images/<item-id>.png|.tif`) so every exported file opens in labelme.
    """
    from . import ExportReport, check_export_target, selected_items, split_items
    from ..fsutil import atomic_copy, atomic_write_json
    from ..jobs import check, report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FormatError("labelme export needs a folder", out)
    if split is not None and not 0.0 < float(split) < 1.0:
        raise FormatError(f"--split must be between 0 and 1, got {split}", None, "split")
    check_export_target(project, out)
    chosen = selected_items(project, only_reviewed, items)
    if split is not None:
        train, val = split_items(chosen, float(split), seed)
        where = {i: out / "train" for i in train}
        where.update({i: out / "val" for i in val})
    else:
        where = {it.id: out for it in chosen}
    rep = ExportReport("labelme")
    total = len(chosen)
    for k, it in enumerate(chosen):
        check(cancel)
        report(progress, k, total, it.name)
        folder = where[it.id]
        ann = project.load_annotation(it.id)
        src = project.sources[it.source]
        spath = project.source_path(src)
        if not labelme_can_read(project, it):
            img = _write_labelme_image(project, it, folder / "images" / it.id)
            rep.copied_images += 1
        elif copy_images:
            img = folder / "images" / (it.id + spath.suffix.lower())
            atomic_copy(spath, img)
            rep.copied_images += 1
        else:
            img = spath
        try:
            rel = Path(os.path.relpath(os.path.abspath(img), os.path.abspath(folder))).as_posix()
        except ValueError:  # another drive (Windows)
            rel = Path(os.path.abspath(img)).as_posix()
        extra = {"slice": int(it.slice), "source": Path(os.path.abspath(spath)).as_posix()} \
            if src.n_slices > 1 or src.kind != "image" else {}
        data = annotation_to_labelme(ann, rel, project.labels, extra=extra)
        rep.annotations += len(data["shapes"])
        atomic_write_json(folder / f"{it.id}.json", data, indent=None)
        rep.images += 1
    rep.files = [out] if split is None else [out / "train", out / "val"]
    report(progress, total, total, "")
    return rep
