"""Label volumes in and out of a project: one volume per stack, instances linked as objects.

Import (`import_volume`): the volume is matched to a stack (`--stack`, else the one stack
it fits) by shape and, where both carry it, geometry (engine.formats.volume.align);
a stack without geometry (a plain TIFF stack) adopts the volume's. Then
- kind "instance": each value > 0 is one 3-D object (Cellpose / StarDist 3-D output);
- kind "class": each value is a class; each 3-D connected component (face-connected,
  scipy.ndimage.label) of a class is one object.
Each object becomes one instance per slice it touches, all carrying its object id. An
instance volume's object takes its value as id ("7") unless the stack already uses it;
other objects get the next free integers. Label names: `labels` (--labels 1=liver),
else the file's segment names, else `label` / the project's only label / "object" for
instance volumes and "class_<v>" for class volumes.

Export (`export_volumes`): one file per stack with the stack's geometry. Instance kind:
an object whose id is a positive integer is written with that value, the others get the
next free values in order of their first slice; instances without an object get their
own. Class kind: a label's value is the one it was imported with (kept in the manifest
settings as "volume_label_values"), else the next free one in label order. Where
instances overlap on a slice, the later one wins.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

from ..annotations import Instance
from ..errors import FormatError, LabelError, ProjectError
from ..jobs import check, report
from ..objects import find_stack, stack_items, stack_sources
from . import ExportReport, ImportReport, apply_import
from .volume import (KINDS, LabelVolume, align, describe, file_suffixes, module, read_volume, smallest_uint,
                     suffix_of)

SETTINGS_KEY = "volume_label_values"
DEFAULT_LABEL = "object"


# --- import ------------------------------------------------------------------------------

def _stack_name(project, s: int) -> str:
    src = project.sources[s]
    return src.name or Path(src.path).name


def _describe_stack(project, s: int) -> str:
    src = project.sources[s]
    return describe((src.n_slices, src.height, src.width), src.geometry)


def _series_uids(project, s: int) -> Optional[list[str]]:
    """SOP Instance UIDs of a DICOM series' slices in slice order (headers only)."""
    src = project.sources[s]
    if src.kind != "dicom_series":
        return None
    import pydicom
    folder = project.source_path(src)
    out = []
    for f in src.files:
        try:
            ds = pydicom.dcmread(str(folder / f), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except Exception:  # noqa: BLE001 - a series we cannot read is simply not this SEG's
            return None
        out.append(str(ds.get("SOPInstanceUID", "")))
    return out


def _fit(project, vol: LabelVolume, s: int, path):
    """(array aligned to stack s, geometry to adopt or None); FormatError when it does not fit."""
    src = project.sources[s]
    if "seg" in vol.extra:
        from .volume_dicomseg import pixels_for_series
        uids = _series_uids(project, s)
        if uids:
            arr = pixels_for_series(vol, uids, path)
            if arr is not None:
                return arr, None
        if vol.data.size == 0:
            raise FormatError(f"the DICOM-SEG does not reference stack {_stack_name(project, s)} and has no "
                              f"regular geometry of its own ({vol.extra.get('volume_error')})", path)
    return align(vol, (src.n_slices, src.height, src.width), src.geometry, path, _stack_name(project, s))


def match_stack(project, vol: LabelVolume, path, stack: Optional[str] = None):
    """(source index, aligned array, geometry to adopt or None)."""
    if stack is not None:
        s = find_stack(project, stack)
        return (s, *_fit(project, vol, s, path))
    cands = stack_sources(project)
    if not cands:
        raise ProjectError("the project has no stack or series to import a volume into; add the scan first",
                           project.manifest_path)
    fits, errors = [], []
    for s in cands:
        try:
            fits.append((s, *_fit(project, vol, s, path)))
        except FormatError as e:
            errors.append(e)
    if len(fits) == 1:
        return fits[0]
    if not fits:
        if len(errors) == 1:
            raise errors[0]
        stacks = "; ".join(f"{_stack_name(project, s)} {_describe_stack(project, s)}" for s in cands)
        raise FormatError(f"the volume ({describe(vol.data.shape, vol.geometry)}) fits no stack of the project "
                          f"({stacks})", path, "geometry")
    raise FormatError(f"the volume fits {len(fits)} stacks ({', '.join(_stack_name(project, f[0]) for f in fits)}); "
                      f"choose one with --stack", path)


def present_values(data: np.ndarray) -> np.ndarray:
    """The distinct values > 0, ascending. Slice by slice: np.bincount of a whole
    512x512x300 volume would first copy it to int64 (600 MB)."""
    if not data.size:
        return np.zeros(0, dtype=np.int64)
    if data.dtype.itemsize <= 2:
        counts = np.zeros(int(np.iinfo(data.dtype).max) + 1, np.int64)
        for plane in data:
            counts += np.bincount(plane.ravel(), minlength=counts.size)
        vals = np.flatnonzero(counts)
    else:
        vals = np.unique(np.concatenate([np.unique(plane) for plane in data]))
    return vals[vals > 0].astype(np.int64)


def _compact(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels 0..n, original value of each) — find_objects needs small values."""
    mx = int(data.max()) if data.size else 0
    present = present_values(data)
    if mx <= 4 * len(present) + 1024:
        return data, np.arange(mx + 1)
    lut_vals = np.concatenate([[0], present])
    return np.searchsorted(lut_vals, data).astype(np.int32), lut_vals


def _components(mask: np.ndarray) -> np.ndarray:
    """Face-connected components, in 16 bits when they fit (half the memory of scipy's
    default int32 on a 512x512x300 volume)."""
    from scipy import ndimage
    out = np.empty(mask.shape, np.uint16)
    try:
        ndimage.label(mask, output=out)
        return out
    except RuntimeError:   # more than 65535 components
        return ndimage.label(mask)[0]


def _objects(data: np.ndarray, kind: str, cancel=None):
    """Yield (value, z0, y0, x0, bool sub-volume) per 3-D object."""
    from scipy import ndimage
    if kind == "instance":
        lab, values = _compact(data)
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is not None:
                check(cancel)
                yield int(values[k]), sl, lab[sl] == k
        return
    for v in present_values(data):
        cc = _components(data == v)
        for k, sl in enumerate(ndimage.find_objects(cc), start=1):
            if sl is not None:
                check(cancel)
                yield int(v), sl, cc[sl] == k
        del cc


def volume_to_instances(data: np.ndarray, kind: str, label_of, taken_ids: set, *, source="imported",
                        cancel=None) -> tuple[list[list[Instance]], int]:
    """Per slice, the instances of the volume's objects; and the number of objects."""
    per_slice: list[list[Instance]] = [[] for _ in range(data.shape[0])]
    taken = set(taken_ids)
    next_free = max([int(t) for t in taken if t.isdigit()] + [0]) + 1
    n = 0
    pending = []
    for value, sl, sub in _objects(data, kind, cancel):
        oid = str(value) if kind == "instance" and str(value) not in taken else None
        if oid is not None:
            taken.add(oid)
        pending.append((oid, value, sl, sub))
    for oid, value, sl, sub in pending:
        if oid is None:
            while str(next_free) in taken:
                next_free += 1
            oid = str(next_free)
            taken.add(oid)
        n += 1
        label = label_of(value)
        z0, y0, x0 = sl[0].start, sl[1].start, sl[2].start
        for dz in range(sub.shape[0]):
            inst = Instance.from_full_mask(sub[dz], label, source=source, object_id=oid)
            if inst is not None:
                inst.x0 += x0
                inst.y0 += y0
                per_slice[z0 + dz].append(inst)
    return per_slice, n


def parse_label_map(text: str) -> dict:
    """'1=liver,2=spine' -> {1: 'liver', 2: 'spine'}; ValueError with the reason."""
    out = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        value, sep, name = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected VALUE=NAME, got {part!r}")
        try:
            v = int(value)
        except ValueError:
            raise ValueError(f"label value must be an integer, got {value!r}") from None
        if v <= 0:
            raise ValueError(f"label value must be positive, got {v}")
        if v in out:
            raise ValueError(f"value {v} given twice")
        out[v] = name.strip()
    if not out:
        raise ValueError("no VALUE=NAME pairs given")
    return out


def import_volume(project, path, *, stack: Optional[str] = None, kind: str = "instance",
                  labels: Optional[dict] = None, label: Optional[str] = None, as_predictions: bool = False,
                  volume_format: Optional[str] = None, progress=None, cancel=None) -> ImportReport:
    """Import a label volume into a stack as linked objects (see the module text)."""
    if kind not in KINDS:
        raise FormatError(f"unknown volume kind {kind!r} (known: {', '.join(KINDS)})", None, "kind")
    path = Path(path)
    report(progress, 0, 3, f"reading {path.name}")
    vol = read_volume(path, volume_format)
    s, data, adopt = match_stack(project, vol, path, stack)
    check(cancel)
    names = dict(vol.names)
    names.update(labels or {})
    if label is None and kind == "instance":
        known = project.labels.names()
        label = known[0] if len(known) == 1 else DEFAULT_LABEL
        if len(known) > 1 and not names:
            raise LabelError(f"the project has several labels ({', '.join(known)}); choose one with --label "
                             f"or name values with --labels", None, "label")

    def label_of(v: int) -> str:
        return names.get(v) or (label if kind == "instance" else f"class_{v}")

    items = stack_items(project, s)
    anns = [project.load_annotation(it.id) for it in items]
    taken = {i.object_id for a in anns for i in a.instances if i.object_id}
    source = "model" if as_predictions else "imported"
    report(progress, 1, 3, "finding objects")
    per_slice, n_objects = volume_to_instances(data, kind, label_of, taken, source=source, cancel=cancel)
    used = sorted({i.label for insts in per_slice for i in insts})
    for name in used:
        if not name.strip():
            raise LabelError("label name is empty", path)
    rep = ImportReport("volume", files=1)
    updates = {it.id: insts for it, insts in zip(items, per_slice) if insts}
    if not updates:
        raise FormatError("the volume holds no labelled voxel", path)
    # everything is validated: now change the project
    if adopt is not None:
        project.sources[s] = dataclasses.replace(project.sources[s], geometry=adopt)
    if kind == "class":
        _remember_values(project, {int(v): label_of(int(v)) for v in present_values(data)})
    report(progress, 2, 3, "saving")
    rep = apply_import(project, updates, rep, status="predicted" if as_predictions else "reviewed",
                       new_labels=[n for n in used if n not in project.labels], progress=progress, cancel=cancel)
    rep.objects = n_objects  # read by the CLI's summary line
    return rep


def _remember_values(project, value_names: dict) -> None:
    """Store each class label's value (first import wins) for exports."""
    stored = dict(project.settings.get(SETTINGS_KEY) or {})
    used = set(stored.values())
    for v, name in sorted(value_names.items()):
        if name not in stored and int(v) not in used:
            stored[name] = int(v)
            used.add(int(v))
    project.settings[SETTINGS_KEY] = stored


# --- export ------------------------------------------------------------------------------------

def class_values(project) -> dict:
    """label name -> value in class volumes."""
    stored = {k: int(v) for k, v in (project.settings.get(SETTINGS_KEY) or {}).items() if k in project.labels}
    used = set(stored.values())
    nxt = 1
    for name in project.labels.names():
        if name in stored:
            continue
        while nxt in used:
            nxt += 1
        stored[name] = nxt
        used.add(nxt)
    return stored


def stack_volume(project, s: int, kind: str = "instance", only_reviewed: bool = False) -> LabelVolume:
    """The label volume of stack s from its annotations."""
    src = project.sources[s]
    items = stack_items(project, s)
    statuses = project.statuses() if only_reviewed else {}
    anns = [project.load_annotation(it.id) for it in items]
    if only_reviewed:
        anns = [a if statuses.get(a.item_id) == "reviewed" else dataclasses.replace(a, instances=[]) for a in anns]
    names: dict = {}
    if kind == "class":
        value_of = class_values(project)
        names = {v: n for n, v in value_of.items()}

        def value(inst):
            return value_of[inst.label]
    else:
        ids = [i.object_id for a in anns for i in a.instances if i.object_id]
        fixed = {o for o in set(ids) if o.isdigit() and o == str(int(o)) and 0 < int(o) < 2 ** 32}
        value_of = {o: int(o) for o in fixed}
        nxt = max(value_of.values(), default=0) + 1
        for o in dict.fromkeys(ids):            # first-slice order
            if o not in value_of:
                value_of[o] = nxt
                nxt += 1

        def value(inst):
            nonlocal nxt
            if inst.object_id in value_of:
                return value_of[inst.object_id]
            nxt += 1
            return nxt - 1
    vals = [[(value(i), i) for i in a.instances] for a in anns]
    top = max((v for row in vals for v, _ in row), default=0)
    data = np.zeros((src.n_slices, src.height, src.width), dtype=smallest_uint(top))
    for it, row in zip(items, vals):
        for v, inst in row:
            inst.paste_into(data[it.slice], v)
            if kind == "instance":
                names[v] = inst.label
    if kind == "class":   # name only the classes present (Slicer lists every named segment)
        present = {v for row in vals for v, _ in row}
        names = {v: n for v, n in names.items() if v in present}
    return LabelVolume(data, src.geometry, names, {})


def _reference(project, s: int):
    src = project.sources[s]
    if src.kind != "dicom_series":
        return None
    import pydicom
    folder = project.source_path(src)
    return [pydicom.dcmread(str(folder / f), stop_before_pixels=True) for f in src.files]


def export_volumes(project, out, *, volume_format: str = "nrrd", kind: str = "instance",
                   stack: Optional[str] = None, only_reviewed: bool = False, progress=None,
                   cancel=None) -> ExportReport:
    """One label volume per stack (or the named one). OUT: a folder (one file per stack,
    named after it) or, for one stack, a file with the format's suffix."""
    if kind not in KINDS:
        raise FormatError(f"unknown volume kind {kind!r} (known: {', '.join(KINDS)})", None, "kind")
    mod = module(volume_format)
    sources = [find_stack(project, stack)] if stack is not None else stack_sources(project)
    if not sources:
        raise ProjectError("the project has no stack or series to export as a volume "
                           "(use --format labelmap for 2-D images)", project.manifest_path)
    out = Path(out)
    suffix = suffix_of(volume_format)
    as_file = any(out.name.lower().endswith(suf) for suf in file_suffixes(volume_format))
    if as_file and len(sources) > 1:
        raise FormatError(f"the project has {len(sources)} stacks: give a folder, or one --stack", out)
    from ..project import safe_stem
    targets = [(s, out if as_file else out / f"{safe_stem(_stack_name(project, s))}{suffix}") for s in sources]
    refs = {}
    if volume_format == "dicom-seg":   # check every stack before writing any file
        for s, target in targets:
            refs[s] = _reference(project, s)
            if refs[s] is None:
                raise FormatError(f"DICOM-SEG needs a DICOM series to reference, but stack "
                                  f"{_stack_name(project, s)} is a {project.sources[s].kind}; export it with "
                                  f"--volume-format nrrd, nifti or tiff", target)
    rep = ExportReport("volume")
    for k, (s, target) in enumerate(targets):
        check(cancel)
        report(progress, k, len(targets), _stack_name(project, s))
        vol = stack_volume(project, s, kind, only_reviewed)
        mod.write(target, vol, reference=refs.get(s))
        rep.files.append(target)
        rep.images += vol.data.shape[0]
        rep.annotations += len(present_values(vol.data))
    report(progress, len(targets), len(targets), "")
    return rep
