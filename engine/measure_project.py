"""Measuring a project: which items, in which unit, at which level (instance, object, item, stack).

Everything is checked before any measuring starts (unknown items, missing images, missing
scales), and nothing is written here: the caller writes the finished table (write_csv is
atomic), so a failure or a cancel leaves no half-written output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .errors import ImageReadError, MaskLoopError, ProjectError
from .jobs import check, report
from .measure import LEVELS, Table, Units, instance_columns, measure_instances, summarise, summary_columns, union_areas
from .measure3d import measure_objects, object_columns, pieces_of
from .units import PIXELS, UnitError, auto_unit, canonical_unit, scale_of

SCALE_HINT = "set one with: maskloop scale PROJECT --pixel-size 0.65um [--source S]"


def select_items(project, items: Optional[Sequence[str]] = None, only_reviewed: bool = False) -> list:
    """The project's items to measure, in project order; unknown ids are an error."""
    if items and list(items) != ["all"]:
        wanted = list(dict.fromkeys(items))
        chosen = [project.item(i) for i in wanted]  # ProjectError names an unknown id
        order = {it.id: k for k, it in enumerate(project.items)}
        chosen.sort(key=lambda it: order[it.id])
    else:
        chosen = list(project.items)
    if only_reviewed:
        st = project.statuses()
        chosen = [it for it in chosen if st.get(it.id) == "reviewed"]
    return chosen


def check_images(project, items) -> None:
    """An item whose image file is gone is an error that names the item, before any work."""
    seen = set()
    for it in items:
        if it.source in seen:
            continue
        seen.add(it.source)
        src = project.sources[it.source]
        path = project.source_path(src)
        missing = not path.exists() or (src.kind == "dicom_series" and
                                        not all((path / f).exists() for f in src.files))
        if missing:
            raise ImageReadError(f"the image of item {it.id!r} is missing", path)


def choose_units(project, source_indices, unit: Optional[str] = None, need_slices: bool = False):
    """One Units for the whole table, the scale of each source, and notes for the user."""
    scales = {k: scale_of(project, k) for k in sorted(set(source_indices))}
    name = lambda k: project.sources[k].name or Path(project.sources[k].path).name  # noqa: E731
    cts = [project.sources[k].modality == "CT" for k in scales]
    intensity = "HU" if cts and all(cts) else "raw"
    notes: list[str] = []
    if unit is not None and unit != PIXELS:
        unit = canonical_unit(unit)
    if unit == PIXELS:
        return Units(PIXELS, intensity), scales, ["measured in pixels (as asked)"]
    known = [k for k, s in scales.items() if s.known]
    if not known and unit is not None:
        raise UnitError(f"lengths in {unit} were asked for, but these images have no scale: {SCALE_HINT}",
                        project.manifest_path, "--unit")
    if not known:
        notes.append(f"no physical scale for these images: measurements are in pixels ({SCALE_HINT})")
        return Units(PIXELS, intensity), scales, notes
    missing = [k for k in scales if k not in known]
    if missing:
        raise UnitError(f"image {name(missing[0])!r} has no scale while others have one: {SCALE_HINT}, "
                        f"or measure in pixels with --unit px", project.manifest_path, "settings.scale")
    if need_slices:
        for k in known:
            if project.sources[k].n_slices > 1 and scales[k].slice_mm is None:
                raise UnitError(f"stack {name(k)!r} has a pixel size but no slice spacing: set it with "
                                f"maskloop scale PROJECT --pixel-size .. --slice-spacing 2um --source S, "
                                f"or measure in pixels with --unit px", project.manifest_path, "settings.scale")
    if unit is None:
        preferred = [scales[k].unit for k in known if scales[k].unit]
        unit = preferred[0] if preferred else auto_unit(v for k in known for v in scales[k].pixel_mm)
    by_origin: dict[str, list] = {}
    for k in known:
        by_origin.setdefault(scales[k].origin, []).append(name(k))
    for origin, names in by_origin.items():
        who = ", ".join(names) if len(names) <= 3 else f"{len(names)} images"
        notes.append(f"scale from {origin}: {who}")
    return Units(unit, intensity), scales, notes


def _spacing3d(units: Units, scale, n_slices: int) -> tuple[float, float, float]:
    dy, dx = units.spacing2d(scale)
    if units.length == PIXELS:
        return (1.0, dy, dx)
    dz = scale.slice_mm * units.per_mm() if scale.slice_mm is not None else dy  # a single slice
    return (dz, dy, dx)


def _meta(project, it) -> dict:
    src = project.sources[it.source]
    return {"image": src.name or Path(src.path).name, "item": it.id, "slice": it.slice}


def _load(project, it):
    try:
        return project.load_annotation(it.id), project.load_image(it.id)
    except ImageReadError as e:
        raise ImageReadError(f"item {it.id!r}: {e.message}", e.path, e.field) from None


def measure_project(project, level: str = "instance", items: Optional[Sequence[str]] = None,
                    only_reviewed: bool = False, unit: Optional[str] = None,
                    progress=None, cancel=None) -> Table:
    """Measure the chosen items at `level` and return the table (nothing is written)."""
    if level not in LEVELS:
        raise MaskLoopError(f"unknown level {level!r} (use one of: {', '.join(LEVELS)})", field="--level")
    chosen = select_items(project, items, only_reviewed)
    if not chosen:
        raise ProjectError("no items to measure" + (" (none is reviewed)" if only_reviewed else ""),
                           project.manifest_path)
    check_images(project, chosen)
    three_d = level in ("object", "stack")
    units, scales, notes = choose_units(project, [it.source for it in chosen], unit, need_slices=three_d)
    labels = project.labels.names()
    size_level, sum_level = ("object", "stack") if three_d else ("instance", "item")
    sizes = Table(size_level, (object_columns if three_d else instance_columns)(units), [], units, notes)
    sums = Table(sum_level, summary_columns(units, sum_level), [], units, notes)
    by_source: dict[int, list] = {}
    for it in chosen:
        by_source.setdefault(it.source, []).append(it)
    done, total = 0, len(chosen)
    report(progress, 0, total, "measuring")
    for s_index, its in by_source.items():
        scale, src = scales[s_index], project.sources[s_index]
        spacing2d = units.spacing2d(scale)
        pieces, covered, total_px = [], {}, 0
        for it in sorted(its, key=lambda i: i.slice):
            check(cancel)
            ann, image = _load(project, it)
            meta = _meta(project, it)
            areas = union_areas(ann.instances, ann.shape)
            if three_d:
                pieces += pieces_of(ann, image, it.slice)
                for lab, n in areas.items():
                    covered[lab] = covered.get(lab, 0) + n
                total_px += ann.height * ann.width
            else:
                rows = measure_instances(ann.instances, image, spacing2d, units, meta)
                sizes.rows += rows
                sums.rows += summarise(rows, areas, ann.height * ann.width, spacing2d[0] * spacing2d[1],
                                       units, "item", meta, _labels_present(labels, ann.instances))
            done += 1
            report(progress, done, total, it.id)
        if three_d:
            meta = {"image": src.name or Path(src.path).name}
            spacing = _spacing3d(units, scale, src.n_slices)
            rows = measure_objects(pieces, spacing, units, meta, cancel)
            sizes.rows += rows
            sums.rows += summarise(rows, covered, total_px, spacing[0] * spacing[1] * spacing[2], units,
                                   "stack", meta, _labels_present(labels, [p.instance for p in pieces]))
    main, other = (sizes, sums) if level == size_level else (sums, sizes)
    main.companion = other
    return main


def _labels_present(labels: list[str], instances) -> list[str]:
    """Every project label, so an item without rock still reports a rock fraction of 0."""
    extra = [i.label for i in instances if i.label not in labels]
    return list(labels) + list(dict.fromkeys(extra))


def measure_item(project, item_id: str, ann, image, unit: Optional[str] = None) -> Table:
    """The instance table of one item as it is in memory (unsaved edits included), with its
    per-label summary as the companion: what the GUI shows for the current item."""
    it = project.item(item_id)
    units, scales, notes = choose_units(project, [it.source], unit)
    spacing2d = units.spacing2d(scales[it.source])
    meta = _meta(project, it)
    rows = measure_instances(ann.instances, image, spacing2d, units, meta)
    table = Table("instance", instance_columns(units), rows, units, notes)
    summary = summarise(rows, union_areas(ann.instances, ann.shape), ann.height * ann.width,
                        spacing2d[0] * spacing2d[1], units, "item", meta,
                        _labels_present(project.labels.names(), ann.instances))
    table.companion = Table("item", summary_columns(units, "item"), summary, units, notes, table)
    return table
