"""Data subcommands: new, add, import, export, info (DESIGN.md section 6).

    maskloop new PROJECT [--labels a,b] [--images PATH ...]
    maskloop add PROJECT PATH ...
    maskloop import PROJECT FILE_OR_DIR --format coco|labelme|labelmap [--label NAME]
                    [--as-predictions] [--images DIR]
    maskloop export PROJECT OUT --format coco|labelme [--only-reviewed] [--copy-images]
                    [--split 0.8] [--polygons]
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


def register(subparsers) -> None:
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

    p = subparsers.add_parser("import", help="import annotations (COCO, labelme, label maps)",
                              description="Import annotations. Imported annotations count as reviewed "
                                          "ground truth unless --as-predictions. Bad input changes nothing.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("source", metavar="FILE_OR_DIR")
    p.add_argument("--format", required=True, choices=("coco", "labelme", "labelmap"))
    p.add_argument("--label", default=None, metavar="NAME",
                   help="class of the imported label maps (labelmap only)")
    p.add_argument("--as-predictions", action="store_true",
                   help="import as unreviewed model output (status predicted, source model)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="folder the COCO file names are relative to (default: the JSON's folder)")
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser("export", help="export annotations (COCO, labelme)",
                              description="Export annotations as COCO JSON (OUT: a .json file, or a folder "
                                          "that gets annotations.json) or labelme JSON (OUT: a folder, one "
                                          "file per item). With --split, COCO writes <stem>_train.json and "
                                          "<stem>_val.json (train.json and val.json in a folder OUT) and "
                                          "labelme writes OUT/train and OUT/val; the split is seeded and "
                                          "reproducible.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--format", required=True, choices=("coco", "labelme"))
    p.add_argument("--only-reviewed", action="store_true", help="export reviewed items only")
    p.add_argument("--copy-images", action="store_true",
                   help="write the images next to the export so it stands alone")
    p.add_argument("--split", type=_fraction, default=None, metavar="0.8",
                   help="write train and val parts, this fraction of items in train (seeded)")
    p.add_argument("--polygons", action="store_true", help="COCO: polygons instead of compressed RLE")
    p.set_defaults(func=cmd_export)

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


def cmd_import(args) -> int:
    from ..project import Project
    if args.label is not None and args.format != "labelmap":
        return usage_error("import", "--label applies to --format labelmap only")
    if args.images is not None and args.format != "coco":
        return usage_error("import", "--images applies to --format coco only")
    proj = Project.open(args.project)
    src = Path(args.source)
    if not src.exists():
        raise FormatError("no such file or folder", src)
    progress = TerminalProgress("importing")
    if args.format == "coco":
        from ..formats.coco import import_coco
        if src.is_dir():
            raise FormatError("a COCO import needs the .json file, not a folder", src)
        rep = import_coco(proj, src, images_dir=args.images, as_predictions=args.as_predictions,
                          progress=progress)
    elif args.format == "labelme":
        from ..formats.labelme import import_labelme
        rep = import_labelme(proj, src, as_predictions=args.as_predictions, progress=progress)
    else:
        from ..formats.labelmap import import_labelmap
        rep = import_labelmap(proj, src, label=args.label, as_predictions=args.as_predictions,
                              progress=progress)
    print(rep.summary())
    return 0


def cmd_export(args) -> int:
    from ..project import Project
    if args.polygons and args.format != "coco":
        return usage_error("export", "--polygons applies to --format coco only")
    proj = Project.open(args.project)
    progress = TerminalProgress("exporting")
    if args.format == "coco":
        from ..formats.coco import export_coco
        rep = export_coco(proj, args.out, polygons=args.polygons, only_reviewed=args.only_reviewed,
                          copy_images=args.copy_images, split=args.split, progress=progress)
        if not args.copy_images:
            slices = sum(1 for it in proj.items if proj.sources[it.source].n_slices > 1)
            if slices:
                print(f"note: {slices} item(s) are slices of stacks; their file_name is the stack file "
                      f"(see 'slice'). Use --copy-images for a dataset other tools can read.",
                      file=sys.stderr)
    else:
        from ..formats.labelme import export_labelme
        rep = export_labelme(proj, args.out, only_reviewed=args.only_reviewed,
                             copy_images=args.copy_images, split=args.split, progress=progress)
    print(rep.summary())
    return 0


def project_info(proj) -> dict:
    """Counts per status and label, instances, models and the active model."""
    statuses = proj.statuses()
    per_status = Counter(statuses.values())
    per_label: Counter = Counter()
    instances = 0
    for it in proj.items:
        if not proj.annotation_path(it.id).exists():
            continue
        ann = proj.load_annotation(it.id)
        for inst in ann.instances:
            per_label[inst.label] += 1
            instances += 1
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
