"""One table of the annotation formats: name -> importer / exporter and the options each
takes. The CLI builds its --format choices and option checks from it; the GUI's import
and export dialogs use it the same way (`run_import`, `run_export`).

Option names are the keyword arguments of the engine functions (`as_predictions`,
`volume_format`, ...); the CLI spells them with dashes. Every importer and exporter
also takes `progress` and `cancel`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

from ..errors import FormatError


@dataclass(frozen=True)
class FormatSpec:
    name: str
    description: str
    importer: Optional[str] = None          # "module:function" under engine.formats
    exporter: Optional[str] = None
    import_options: tuple = ()
    export_options: tuple = ()

    def function(self, which: str):
        ref = self.importer if which == "import" else self.exporter
        if ref is None:
            raise FormatError(f"format {self.name!r} cannot be {which}ed", None, "format")
        mod, _, fn = ref.partition(":")
        return getattr(importlib.import_module(f".{mod}", __package__), fn)

    def options(self, which: str) -> tuple:
        return self.import_options if which == "import" else self.export_options


FORMATS: dict[str, FormatSpec] = {f.name: f for f in (
    FormatSpec("coco", "COCO instances JSON (RLE or polygons)",
               "coco:import_coco", "coco:export_coco",
               ("images_dir", "as_predictions"),
               ("only_reviewed", "copy_images", "split", "polygons")),
    FormatSpec("labelme", "labelme JSON, one file per image",
               "labelme:import_labelme", "labelme:export_labelme",
               ("as_predictions",),
               ("only_reviewed", "copy_images", "split")),
    FormatSpec("labelmap", "integer label images, one per 2-D item (Cellpose, StarDist, ImageJ)",
               "labelmap:import_labelmap", "labelmap:export_labelmap",
               ("label", "as_predictions"),
               ("only_reviewed",)),
    FormatSpec("volume", "label volumes per stack: NRRD, NIfTI, TIFF, DICOM-SEG (3D Slicer, ITK-SNAP)",
               "volume_project:import_volume", "volume_project:export_volumes",
               ("stack", "kind", "labels", "label", "as_predictions", "volume_format"),
               ("stack", "kind", "volume_format", "only_reviewed")),
)}


def import_formats() -> tuple:
    return tuple(n for n, f in FORMATS.items() if f.importer)


def export_formats() -> tuple:
    return tuple(n for n, f in FORMATS.items() if f.exporter)


def spec(name: str) -> FormatSpec:
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})", None, "format") from None


def formats_with(option: str, which: str) -> tuple:
    return tuple(n for n, f in FORMATS.items() if option in f.options(which))


def check_options(name: str, which: str, options: dict) -> None:
    """FormatError naming the first option the format does not take."""
    allowed = spec(name).options(which)
    for key in options:
        if key not in allowed:
            takers = formats_with(key, which)
            raise FormatError(f"{key} applies to --format {'|'.join(takers) or 'none'} only", None, key)


def run_import(name: str, project, path, *, progress=None, cancel=None, **options):
    """Import `path` with format `name`; options not given (None/False) are left out."""
    options = {k: v for k, v in options.items() if v not in (None, False)}
    check_options(name, "import", options)
    return spec(name).function("import")(project, path, progress=progress, cancel=cancel, **options)


def run_export(name: str, project, out, *, progress=None, cancel=None, **options):
    options = {k: v for k, v in options.items() if v not in (None, False)}
    check_options(name, "export", options)
    return spec(name).function("export")(project, out, progress=progress, cancel=cancel, **options)
