"""The command line of DESIGN.md section 6.

Each group of subcommands lives in its own module with a `register(subparsers)`
function; a subcommand handler takes the parsed args and returns an exit status.
Exit status: 0 success, 2 usage error (argparse), 1 failure with one line on stderr.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import MaskLoopError

SUBCOMMANDS = ("new", "add", "import", "export", "info", "link", "segment", "train", "evaluate",
               "measure", "scale", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskloop",
        description="MaskLoop: segment CT and microscopy images, correct by hand, retrain. "
                    "Without a subcommand the GUI starts (optionally on PROJECT).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import data_cmds
    data_cmds.register(sub)
    from . import volume_cmds
    volume_cmds.register(sub)
    try:
        from . import model_cmds
    except ImportError:  # the model commands are added by the engine work
        model_cmds = None
    if model_cmds is not None:
        model_cmds.register(sub)
    from . import measure_cmds
    measure_cmds.register(sub)
    return parser


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
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
