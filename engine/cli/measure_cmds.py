"""Measurement subcommands: measure and scale (DESIGN.md section 6).

    maskloop measure PROJECT OUT.csv [--level instance|object|item|stack] [--items ID ...]
                     [--only-reviewed] [--unit nm|um|mm|cm|m|px] [--plots DIR]
    maskloop scale PROJECT --pixel-size 0.65um [--slice-spacing 2um] [--source S]
    maskloop scale PROJECT --show

Nothing is written until the whole table is measured: a bad item, a missing image or a
Ctrl+C leaves no CSV (and no plots) behind.
"""
from __future__ import annotations

import sys

from ..jobs import TerminalProgress
from ..measure import LEVELS
from ..units import CANONICAL, PIXELS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "measure", help="measure instances, 3-D objects, items or stacks into a CSV",
        description="Measure the project's masks with scikit-image: one CSV row per instance, 3-D "
                    "object, item x label or stack x label. Column names carry their unit; without a "
                    "scale (from the data or `maskloop scale`) lengths are in pixels, and this says so.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("out", metavar="OUT.csv")
    p.add_argument("--level", choices=LEVELS, default="instance",
                   help="instance (default): one row per 2-D instance; object: per 3-D object; item: per "
                        "item and label (count, area fraction, sizes); stack: per stack and label "
                        "(count, volume fraction, sizes)")
    p.add_argument("--items", nargs="+", default=None, metavar="ID", help="item ids to measure (default all)")
    p.add_argument("--only-reviewed", action="store_true", help="measure reviewed items only")
    p.add_argument("--unit", choices=CANONICAL + (PIXELS,), default=None,
                   help="length unit of the columns (default: the unit the scale was given in, or one "
                        "that suits the pixel size; px forces pixels)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="also write size_distribution.png, gradation.png and fractions.png to DIR")
    p.set_defaults(func=cmd_measure)

    p = subparsers.add_parser(
        "scale", help="set the physical pixel size where the data has none",
        description="Set the pixel size (and slice spacing) of the whole project or of one source. "
                    "Units: nm, um (or µm), mm, cm, m. A source's own setting wins over the data's "
                    "scale (DICOM PixelSpacing, TIFF tags), which wins over the project's setting.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--pixel-size", default=None, metavar="LENGTH", help="e.g. 0.65um or 0.5mm")
    p.add_argument("--slice-spacing", default=None, metavar="LENGTH", help="distance between slices, e.g. 2um")
    p.add_argument("--source", default=None, metavar="S",
                   help="only this source (its name, path, index, or the id of one of its items)")
    p.add_argument("--show", action="store_true", help="print the scale of every source and change nothing")
    p.set_defaults(func=cmd_scale)


def cmd_measure(args) -> int:
    from ..measure import write_csv
    from ..measure_plots import save_plots
    from ..measure_project import measure_project
    from ..project import Project
    project = Project.open(args.project)
    table = measure_project(project, args.level, items=args.items, only_reviewed=args.only_reviewed,
                            unit=args.unit, progress=TerminalProgress("measure"))
    colors = lambda name: project.labels.get(name).color if name in project.labels else (128, 128, 128)  # noqa: E731
    if args.plots:
        save_plots(table, args.plots, colors)
    write_csv(table, args.out)
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    unit = table.units.length
    print(f"{len(table.rows)} {args.level} rows, lengths in {'pixels' if unit == PIXELS else unit} -> {args.out}"
          + (f"; plots in {args.plots}" if args.plots else ""))
    return 0


def cmd_scale(args) -> int:
    from ..project import Project
    from ..units import describe, scale_of, set_scale
    project = Project.open(args.project)
    if not args.show:
        if args.pixel_size is None:
            print("maskloop scale: error: --pixel-size is required (or --show)", file=sys.stderr)
            return 2
        set_scale(project, args.pixel_size, args.slice_spacing, args.source)
    for k, src in enumerate(project.sources):
        print(f"{src.name or src.path}: {describe(scale_of(project, k))}")
    return 0
