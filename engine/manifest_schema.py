"""Field-by-field checks of the files MaskLoop reads as its own (one place).

- `validate_manifest`: maskloop.json, every field, before any object is built from it.
- `validate_annotation_top`: the top level of a project annotation file (the shapes
  themselves are checked by formats.labelme as they are decoded).
- `check_name`: the one rule for a name MaskLoop makes that becomes part of a path (item
  ids); `check_component` for names it takes from elsewhere (run ids, the file names of a
  DICOM series): one path component, nothing more. Used where such a name is read: the
  manifest, annotation files and import sources.

Errors name the file and the field ("items[3].height: must be an integer ≥ 1, got 'abc'").
A manifest that passes here cannot make Project.open raise anything but a MaskLoopError.
"""
from __future__ import annotations

import re
from typing import Optional, Type

from .errors import MaskLoopError, ProjectError
from .manifest_ranges import ID_SLOT, NAME_SLOT, RANGE_VERSION, RUN_KEYS, is_run, run_ids

FORMAT = "maskloop-project"
FORMAT_VERSION = RANGE_VERSION  # 2: items[] may hold runs of slices (manifest_ranges)
STATUSES = ("new", "predicted", "reviewed")

# letters, digits, '.', '_', '-'; not starting with '.', so never '.', '..' or a hidden file
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


def is_safe_name(value) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(value, path=None, field: Optional[str] = None, what: str = "item id",
               error: Type[MaskLoopError] = ProjectError) -> str:
    """`value` when it is a safe single path component; `error` naming file and field otherwise."""
    if not is_safe_name(value):
        raise error(f"{what} {value!r} is not a safe file name (1-200 letters, digits, '.', '_' "
                    f"or '-', not starting with '.'; no '/' or '..')", path, field)
    return value


def check_component(value, path=None, field: Optional[str] = None, what: str = "file name",
                    error: Type[MaskLoopError] = ProjectError) -> str:
    """`value` when it is one path component (no '/', '\\', NUL, not '.' or '..')."""
    if (not isinstance(value, str) or not value or len(value) > 255 or value in (".", "..")
            or any(c in value for c in "/\\\0")):
        raise error(f"{what} {value!r} is not a plain file name (one path component: no '/', "
                    f"'\\' or '..')", path, field)
    return value


def _fail(path, field, msg):
    raise ProjectError(msg, path, field)


def _int(d: dict, key: str, path, field: str, lo: int = 0, hi: Optional[int] = None,
         default=None, required: bool = True) -> int:
    if key not in d:
        if required:
            _fail(path, f"{field}.{key}", "missing")
        return default
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f"≥ {lo}" if hi is None else f"between {lo} and {hi}"
        _fail(path, f"{field}.{key}", f"must be an integer {rng}, got {v!r}")
    return v


def _str(d: dict, key: str, path, field: str, required: bool = True, nonempty: bool = False):
    if key not in d:
        if required:
            _fail(path, f"{field}.{key}", "missing")
        return None
    v = d[key]
    if not isinstance(v, str) or (nonempty and not v.strip()):
        _fail(path, f"{field}.{key}", f"must be a {'non-empty ' if nonempty else ''}string, got {v!r}")
    return v


def _list(v, path, field: str) -> list:
    if not isinstance(v, list):
        _fail(path, field, f"must be a list, got {type(v).__name__}")
    return v


def _dict(v, path, field: str) -> dict:
    if not isinstance(v, dict):
        _fail(path, field, f"must be an object, got {type(v).__name__}")
    return v


def validate_manifest(data, path) -> None:
    """Raise ProjectError naming `path` and the field at fault; return when `data` is a
    manifest this version can open."""
    d = _dict(data, path, "manifest")
    if d.get("format") != FORMAT:
        _fail(path, "format", f"not a MaskLoop manifest (format must be {FORMAT!r})")
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(path, "version", f"must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        _fail(path, "version", f"written by a newer MaskLoop (format {version}; this one reads "
                               f"up to {FORMAT_VERSION})")
    for k, lab in enumerate(_list(d.get("labels", []), path, "labels")):
        f = f"labels[{k}]"
        _dict(lab, path, f)
        _int(lab, "id", path, f)
        _str(lab, "name", path, f, nonempty=True)
        color = lab.get("color")
        if (not isinstance(color, list) or len(color) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            _fail(path, f"{f}.color", f"must be three integers 0-255, got {color!r}")
        if "visible" in lab and not isinstance(lab["visible"], bool):
            _fail(path, f"{f}.visible", f"must be true or false, got {lab['visible']!r}")
    n_slices = []
    for k, src in enumerate(_list(d.get("sources", []), path, "sources")):
        f = f"sources[{k}]"
        _dict(src, path, f)
        _str(src, "kind", path, f, nonempty=True)
        _str(src, "path", path, f, nonempty=True)
        n_slices.append(_int(src, "n_slices", path, f, lo=1))
        _int(src, "height", path, f, lo=1)
        _int(src, "width", path, f, lo=1)
        for j, name in enumerate(_list(src.get("files", []), path, f"{f}.files")):
            check_component(name, path, f"{f}.files[{j}]", "series file name")
    seen = set()
    for k, it in enumerate(_list(d.get("items", []), path, "items")):
        f = f"items[{k}]"
        _dict(it, path, f)
        if is_run(it):
            _check_run(it, path, f, n_slices, seen)
            continue
        if "id" not in it:
            _fail(path, f"{f}.id", "missing")
        item_id = check_name(it["id"], path, f"{f}.id")
        if item_id in seen:
            _fail(path, f"{f}.id", f"duplicate item id {item_id!r}")
        seen.add(item_id)
        s = _int(it, "source", path, f, hi=len(n_slices) - 1) if n_slices else \
            _fail(path, f"{f}.source", "refers to a source, but the manifest has none")
        _int(it, "slice", path, f, hi=n_slices[s] - 1)
        _str(it, "name", path, f)
        _int(it, "height", path, f, lo=1)
        _int(it, "width", path, f, lo=1)
    active = d.get("active_model")
    if active is not None:
        check_component(active, path, "active_model", "run id")
    if d.get("settings") is not None:
        _dict(d["settings"], path, "settings")


def _check_run(run: dict, path, f: str, n_slices: list, seen: set) -> None:
    """A run of a stack's slices (engine/manifest_ranges.py)."""
    extra = sorted(set(run) - RUN_KEYS)
    if extra:
        _fail(path, f"{f}.{extra[0]}", "not a field of a run of slices")
    s = _int(run, "source", path, f, hi=len(n_slices) - 1) if n_slices else \
        _fail(path, f"{f}.source", "refers to a source, but the manifest has none")
    first = _int(run, "first", path, f, hi=n_slices[s] - 1)
    _int(run, "count", path, f, lo=1, hi=n_slices[s] - first)
    for key, slot in (("id", ID_SLOT), ("name", NAME_SLOT)):
        if _str(run, key, path, f).count(slot) != 1:
            _fail(path, f"{f}.{key}", f"must hold {slot} exactly once, got {run[key]!r}")
    _int(run, "height", path, f, lo=1)
    _int(run, "width", path, f, lo=1)
    ids = run_ids(run)
    for item_id in (ids[0], ids[-1]):  # they differ only in digits; the last is the longest
        check_name(item_id, path, f"{f}.id")
    dup = seen.intersection(ids)
    if dup or len(set(ids)) != len(ids):
        _fail(path, f"{f}.id", f"duplicate item id {min(dup) if dup else ids[0]!r}")
    seen.update(ids)


def validate_annotation_top(data, path, item_id: Optional[str] = None) -> None:
    """The top level of a project annotation file (labelme JSON with a "maskloop" block)."""
    from .errors import FormatError
    if not isinstance(data, dict):
        raise FormatError(f"an annotation file must hold a JSON object, got {type(data).__name__}", path)
    if not isinstance(data.get("shapes", []), list):
        raise FormatError(f"must be a list, got {type(data['shapes']).__name__}", path, "shapes")
    for key in ("imageHeight", "imageWidth"):
        v = data.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise FormatError(f"must be a positive integer, got {v!r}", path, key)
    ml = data.get("maskloop")
    if ml is None:
        return
    if not isinstance(ml, dict):
        raise FormatError(f"must be an object, got {type(ml).__name__}", path, "maskloop")
    if "status" in ml and ml["status"] not in STATUSES:
        raise FormatError(f"must be one of {', '.join(STATUSES)}, got {ml['status']!r}", path, "maskloop.status")
    if "item" in ml and ml["item"] is not None:
        check_name(ml["item"], path, "maskloop.item", error=FormatError)
