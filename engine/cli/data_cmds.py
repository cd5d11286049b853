"""Data subcommands: new, add, import, export, info (DESIGN.md section 6).

    maskloop new PROJECT [--labels a,b] [--images PATH ...]
    maskloop add PROJECT PATH ...
    maskloop import PROJECT FILE_OR_DIR --format coco|labelme|labelmap|volume [--label NAME]
                    [--as-predictions] [--images DIR] [--stack S] [--labels 1=a,2=b]
                    [--kind instance|class] [--volume-format F]
    maskloop export PROJECT OUT --format coco|labelme|labelmap|volume [--only-reviewed]
                    [--copy-images] [--split 0.8] [--polygons] [--stack S] [--kind K]
                    [--volume-format nrrd|nifti|tiff|dicom-seg]

Formats and the options each takes come from engine.formats.registry (one table).
    maskloop info PROJECT

Handlers return an exit status; MaskLoopError is turned into exit 1 with one line on
stderr by engine.cli.run. Nothing here imports torch or Qt.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ..errors import FormatError, ProjectError
from ..jobs import TerminalProgress
from .argtypes import number, usage_error


_fraction = number(float, 0.0, 1.0, low_open=True, high_open=True, meaning=" (the train fraction)")


def _labels(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no label names given")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"duplicate label names in {text!r}")
    return names


def register(subparsers, only: str | None = None) -> None:
    """Add new, add, import, export and info; with `only`, just that one (import and export
    build their --format choices from the format registry, which info need not load)."""
    if only in (None, "new", "add"):
        _register_new_add(subparsers)
    if only in (None, "import", "export"):
        _register_import_export(subparsers)
    if only in (None, "info"):
        _register_info(subparsers)
    if only not in (None, "new", "add", "import", "export", "info"):
        raise ValueError(f"not a data command: {only!r}")


def _register_new_add(subparsers) -> None:
    p = subparsers.add_parser("new", help="create a project",
                              description="Create a MaskLoop project folder, optionally with labels and images.")
    p.add_argument("project", metavar="PROJECT", help="project folder to create")
    p.add_argument("--labels", type=_labels, default=None, metavar="a,b",
                   help="comma-separated class names")
    p.add_argument("--images", nargs="+", default=[], metavar="PATH",
                   help="image files, folders, TIFF stacks or DICOM series to add")
    p.set_defaults(func=cmd_new)

    p = subparsers.add_parser("add", help="add images to a project",
                              description="Add image files, folders, TIFF stacks or DICOM series.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_add)


def _register_import_export(subparsers) -> None:
    from ..formats import registry
    p = subparsers.add_parser("import", help="import annotations (COCO, labelme, label maps, label volumes)",
                              description="Import annotations. Imported annotations count as reviewed "
                                          "ground truth unless --as-predictions. Bad input changes nothing. "
                                          "--format volume reads a label volume (NRRD, NIfTI, TIFF stack, "
                                          "DICOM-SEG) into the stack it fits, as linked 3-D objects.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("source", metavar="FILE_OR_DIR")
    p.add_argument("--format", required=True, choices=registry.import_formats())
    p.add_argument("--label", default=None, metavar="NAME",
                   help="class of the imported label maps or instance volume (labelmap, volume)")
    p.add_argument("--as-predictions", action="store_true",
                   help="import as unreviewed model output (status predicted, source model)")
    p.add_argument("--images", dest="images_dir", default=None, metavar="DIR",
                   help="folder the COCO file names are relative to (default: the JSON's folder)")
    _volume_options(p)
    p.add_argument("--labels", type=_label_values, default=None, metavar="1=a,2=b",
                   help="volume: names of the label values (default: the file's segment names)")
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser("export", help="export annotations (COCO, labelme, label maps, label volumes)",
                              description="Export annotations as COCO JSON (OUT: a .json file, or a folder "
                                          "that gets annotations.json) or labelme JSON (OUT: a folder, one "
                                          "file per item). With --split, COCO writes <stem>_train.json and "
                                          "<stem>_val.json (train.json and val.json in a folder OUT) and "
                                          "labelme writes OUT/train and OUT/val; the split is seeded and "
                                          "reproducible. --format labelmap writes one label image per item "
                                          "(OUT/<item>_masks.tif); --format volume one label volume per "
                                          "stack with its voxel geometry (OUT: a folder, or a file for one "
                                          "stack).")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--format", required=True, choices=registry.export_formats())
    p.add_argument("--only-reviewed", action="store_true", help="export reviewed items only")
    p.add_argument("--copy-images", action="store_true",
                   help="write the images next to the export so it stands alone")
    p.add_argument("--split", type=_fraction, default=None, metavar="0.8",
                   help="write train and val parts, this fraction of images in train (seeded; the slices "
                        "of a stack or series stay on one side)")
    p.add_argument("--polygons", action="store_true", help="COCO: polygons instead of compressed RLE")
    _volume_options(p)
    p.set_defaults(func=cmd_export)


def _register_info(subparsers) -> None:
    p = subparsers.add_parser("info", help="summary of a project",
                              description="Counts per status and label, models, active model.")
    p.add_argument("project", metavar="PROJECT")
    p.set_defaults(func=cmd_info)


def cmd_new(args) -> int:
    from .. import imageio
    from ..project import Project
    root = Path(args.project)
    existed = root.exists()
    for p in args.images:  # read every image header before anything is created
        if not Path(p).exists():
            raise ProjectError("no such file or folder", p)
        imageio.probe(p)
    proj = Project.create(root, args.labels)
    items = []
    if args.images:
        try:
            items = proj.add(args.images, progress=TerminalProgress("adding"))
        except BaseException:
            if not existed:  # leave no half-made project behind (only what we created)
                _remove_new_project(root)
            raise
    print(f"created project {root} with {len(proj.labels)} label(s) and {len(items)} item(s)")
    return 0


def _remove_new_project(root: Path) -> None:
    import shutil
    shutil.rmtree(root, ignore_errors=True)


def cmd_add(args) -> int:
    from ..project import Project
    proj = Project.open(args.project)
    before = len(proj.items)
    items = proj.add(args.paths, progress=TerminalProgress("adding"))
    print(f"added {len(items)} item(s); the project has {before + len(items)}")
    return 0


def _volume_options(p) -> None:
    from ..formats.volume import FORMATS, KINDS
    p.add_argument("--stack", default=None, metavar="S", help="volume: the stack or series (name or index)")
    p.add_argument("--kind", choices=KINDS, default=None,
                   help="volume: instance (each value one object, default) or class (each value one "
                        "class, each 3-D connected part one object)")
    p.add_argument("--volume-format", choices=tuple(FORMATS), default=None,
                   help="volume file format (import: default from the file; export: default nrrd)")


def _label_values(text: str) -> dict:
    from ..formats.volume_project import parse_label_map
    try:
        return parse_label_map(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_OPTIONS = ("label", "as_predictions", "images_dir", "stack", "kind", "volume_format", "labels",
            "only_reviewed", "copy_images", "split", "polygons")


def _given(args, which: str):
    """The options the user gave, or a usage error naming one the format does not take."""
    from ..formats import registry
    given = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k, None) not in (None, False)}
    allowed = registry.spec(args.format).options(which)
    for key in given:
        if key not in allowed:
            takers = "|".join(registry.formats_with(key, which))
            flag = "--images" if key == "images_dir" else "--" + key.replace("_", "-")
            return None, usage_error(which, f"{flag} applies to --format {takers} only")
    return given, 0


def cmd_import(args) -> int:
    from ..formats import registry
    from ..project import Project
    options, status = _given(args, "import")
    if options is None:
        return status
    proj = Project.open(args.project)
    src = Path(args.source)
    if not src.exists():
        raise FormatError("no such file or folder", src)
    if args.format == "coco" and src.is_dir():
        raise FormatError("a COCO import needs the .json file, not a folder", src)
    rep = registry.run_import(args.format, proj, src, progress=TerminalProgress("importing"), **options)
    line = rep.summary()
    if getattr(rep, "objects", None) is not None:
        line += f"; the volume holds {rep.objects} 3-D object(s)"
    print(line)
    return 0


def cmd_export(args) -> int:
    from ..formats import registry
    from ..project import Project
    options, status = _given(args, "export")
    if options is None:
        return status
    proj = Project.open(args.project)
    rep = registry.run_export(args.format, proj, args.out, progress=TerminalProgress("exporting"), **options)
    if args.format == "coco" and not args.copy_images:
        slices = sum(1 for it in proj.items if proj.sources[it.source].n_slices > 1)
        if slices:
            print(f"note: {slices} item(s) are slices of stacks; their file_name is the stack file "
                  f"(see 'slice'). Use --copy-images for a dataset other tools can read.",
                  file=sys.stderr)
    if args.format == "volume":
        print(f"exported {rep.annotations} label value(s) in {len(rep.files)} volume(s): "
              + ", ".join(str(f) for f in rep.files))
    else:
        print(rep.summary())
    return 0


def project_info(proj) -> dict:
    """Counts per status and label, instances, models and the active model. The counts come
    from the project's annotation index: one folder listing, files re-read only when they
    changed outside it (so 100,000 items take about a second)."""
    counts = proj.annotation_counts()
    per_status = Counter(c.status for c in counts.values())
    per_status["new"] += len(proj.items) - len(counts)
    per_label: Counter = Counter()
    for c in counts.values():
        per_label.update(c.labels)
    instances = sum(per_label.values())
    return {
        "root": str(proj.root),
        "items": len(proj.items),
        "sources": len(proj.sources),
        "status": {s: per_status.get(s, 0) for s in ("new", "predicted", "reviewed")},
        "labels": {name: per_label.get(name, 0) for name in proj.labels.names()},
        "instances": instances,
        "models": [m["run"] for m in proj.list_models()],
        "active_model": proj.active_model,
    }


def cmd_info(args) -> int:
    from ..project import Project
    proj = Project.open(args.project)
    info = project_info(proj)
    print(f"project: {info['root']}")
    print(f"items: {info['items']} from {info['sources']} source(s)")
    from ..imageio import describe_source
    # each stack/series (and each image with a physical size) with its voxel size in mm/µm;
    # plain pictures only counted, so a project of 10,000 photos stays readable
    plain = 0
    for src in proj.sources:
        if src.n_slices > 1 or src.geometry is not None:
            print(f"  {describe_source(src)}")
        else:
            plain += 1
    if plain:
        print(f"  {plain} image(s) without a physical size")
    print("status: " + ", ".join(f"{k} {v}" for k, v in info["status"].items()))
    print(f"instances: {info['instances']}")
    if info["labels"]:
        print("labels:")
        for name, n in info["labels"].items():
            print(f"  {name}: {n}")
    else:
        print("labels: none")
    print("models: " + (", ".join(info["models"]) if info["models"] else "none"))
    print(f"active model: {info['active_model'] or 'none'}")
    return 0
