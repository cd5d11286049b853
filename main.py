"""MaskLoop entry point: no arguments (or just a project folder) -> GUI; subcommands -> CLI."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from engine.cli import SUBCOMMANDS
    if argv and (argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help")):
        from engine.cli import run
        return run(argv)
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        from engine.cli import run
        return run(argv)  # lets argparse report the usage error (exit 2)
    from gui.app import run_gui
    return run_gui(argv[0] if argv else None)


if __name__ == "__main__":
    sys.exit(main())
