"""The command line of DESIGN.md section 6.

Each group of subcommands lives in its own module with a `register(subparsers)`
function; a subcommand handler takes the parsed args and returns an exit status.
Exit status: 0 success, 2 usage error (argparse), 1 failure with one line on stderr.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import MaskLoopError

# The module that registers each subcommand. `run` imports only the one the command line
# names, so a quick command pays for its own imports only (`info` on 100,000 items: no
# scipy/skimage from the measure commands, no format registry; issue 15).
GROUPS = {
    "data_cmds": ("new", "add", "import", "export", "info"),
    "volume_cmds": ("link",),
    "model_cmds": ("segment", "train", "evaluate", "demo"),
    "measure_cmds": ("measure", "scale"),
    "rank_cmds": ("rank",),
}
SUBCOMMANDS = tuple(name for names in GROUPS.values() for name in names)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `command` (one of SUBCOMMANDS) only what parsing
    that subcommand needs (the same parser for it; `maskloop -h` lists all)."""
    import importlib
    parser = argparse.ArgumentParser(
        prog="maskloop",
        description="MaskLoop: segment CT and microscopy images, correct by hand, retrain. "
                    "Without a subcommand the GUI starts (optionally on PROJECT).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = command if command in SUBCOMMANDS else None
    for module, names in GROUPS.items():
        if only is not None and only not in names:
            continue
        mod = importlib.import_module(f".{module}", __name__)
        if module == "data_cmds":
            mod.register(sub, only=only)  # import/export's choices need the format registry
        else:
            mod.register(sub)
    return parser


def run(argv: list[str]) -> int:
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        return 2
    from .argtypes import cross_checks
    if cross_checks(args):  # options that must agree with each other (exit 2, as argparse)
        return 2
    try:
        return int(args.func(args) or 0)
    except MaskLoopError as e:
        print(f"maskloop {args.command}: error: {e.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"maskloop {args.command}: cancelled", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"maskloop {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
