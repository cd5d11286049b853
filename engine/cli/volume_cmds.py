"""3-D object subcommands.

    maskloop link PROJECT [--stack S] [--min-iou 0.3]

Links the instances on a stack's slices into 3-D objects (engine.objects): one-to-one by
best IoU between adjacent slices, then forks, merges and caps. Existing object ids are
kept where the objects stay the same.
"""
from __future__ import annotations

from ..jobs import TerminalProgress
from .argtypes import number

_iou = number(float, 0.0, 1.0, low_open=True, meaning=" (the minimum IoU)")


def register(subparsers) -> None:
    p = subparsers.add_parser("link", help="link instances across slices into 3-D objects",
                              description="Link instances of the same label on adjacent slices of each "
                                          "stack (or --stack S) into 3-D objects: one-to-one by best IoU "
                                          "(at least --min-iou), then an instance without a partner joins a "
                                          "neighbour that covers half of it (forks, merges, the caps of "
                                          "round bodies).")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--stack", default=None, metavar="S", help="the stack or series (name or index)")
    p.add_argument("--min-iou", type=_iou, default=0.3, metavar="0.3")
    p.set_defaults(func=cmd_link)


def cmd_link(args) -> int:
    from ..objects import link_project
    from ..project import Project
    proj = Project.open(args.project)
    res = link_project(proj, args.stack, args.min_iou, progress=TerminalProgress("linking"))
    print(f"linked {res['instances']} instance(s) into {res['objects']} object(s) on {res['stacks']} stack(s); "
          f"{res['items_changed']} slice(s) changed")
    return 0
